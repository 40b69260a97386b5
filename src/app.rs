//! `App`: everything built from one validated `Config`, shared by requests behind an `Arc`.
//!
//! Reload builds a whole new `App` aside and swaps it in; requests in flight keep the `App`
//! they started with, so a reload never changes the rules halfway through a request.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::Config;
use crate::gate::route::RouteTable;
use crate::proxy::health;
use crate::proxy::upstream::UpstreamPool;

/// The running configuration in compiled form.
#[derive(Debug)]
pub struct App {
    /// The validated config this was built from.
    pub config: Arc<Config>,
    /// Routes in precedence order.
    pub routes: RouteTable,
    pools: HashMap<String, Arc<UpstreamPool>>,
}

impl App {
    /// Builds the route table and upstream pools (starting their health checks).
    /// Must run inside the tokio runtime.
    pub fn build(config: Config) -> Result<App, String> {
        let mut pools = HashMap::new();
        for (name, upstream) in &config.upstreams {
            let pool = Arc::new(UpstreamPool::new(name, upstream, &config.proxy)?);
            health::spawn(&pool);
            pools.insert(name.clone(), pool);
        }
        Ok(App {
            routes: RouteTable::new(&config.routes),
            pools,
            config: Arc::new(config),
        })
    }

    /// The pool a route forwards to.
    pub fn pool(&self, name: &str) -> Option<&Arc<UpstreamPool>> {
        self.pools.get(name)
    }
}
