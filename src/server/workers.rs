//! The serving threads: one single-threaded tokio runtime per core, each serving whole
//! connections handed to it by the accept loop.
//!
//! Why not one multi-threaded runtime: with work stealing, a request's tasks (the client
//! connection, the upstream connection, the response body) hop between threads, and every hop
//! is a cross-thread wake-up. Measured on the stack floor (`examples/floor_proxy.rs`), a
//! runtime per core with its own upstream client served 1.08–1.21x the requests on HTTP/1.1
//! and 1.23x on HTTP/2. A connection stays on one thread for its whole life, and so do the
//! upstream connections its requests use (each serving thread has its own upstream pool,
//! picked by [`index`]).
//!
//! Why one listener and a hand-off rather than `SO_REUSEPORT` listeners: a second Wardgate
//! started by mistake on the same port must fail with "address in use", not silently take half
//! of the traffic; and round-robin hand-off spreads a few long-lived connections evenly where
//! the kernel's hash may not.
//!
//! At shutdown, once draining is over, [`Workers::stop`] ends each serving runtime and drops
//! it with every task still on it: that is what runs the `Drop` of requests, response streams
//! and tunnels still open, whose audit completions say they were cut off at shutdown. Left
//! running, the runtimes would keep those tasks (and their missing completions) until exit.
//!
//! Everything else (admin, reload, signals, health checks, continuous validation) stays on the
//! main runtime, and password hashes run on their own low-priority threads
//! (`authn/password.rs`).

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::watch;

thread_local! {
    /// 0 on every thread but the serving threads, which are 1..=count.
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// Which serving thread runs the caller (0: not a serving thread), for per-thread resources
/// such as upstream client pools.
pub fn index() -> usize {
    INDEX.with(Cell::get)
}

/// Handles of the serving runtimes, and where the next connection goes.
pub struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
    stop: watch::Sender<bool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Workers {
    /// Starts `count` serving threads (at least one). They run until [`Workers::stop`]: the
    /// main runtime decides when draining is over.
    pub fn start(count: usize) -> std::io::Result<Workers> {
        let (stop, stopped) = watch::channel(false);
        let mut handles = Vec::new();
        let mut threads = Vec::new();
        for number in 1..=count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .thread_name(format!("wardgate-serve-{number}"))
                .build()?;
            handles.push(runtime.handle().clone());
            let mut stopped = stopped.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("wardgate-serve-{number}"))
                    .spawn(move || {
                        INDEX.with(|index| index.set(number));
                        runtime.block_on(async {
                            let _ = stopped.wait_for(|stop| *stop).await;
                        });
                        // Drops every task still on this thread, running their `Drop`s,
                        // without waiting for blocking work it started (a name lookup).
                        runtime.shutdown_background();
                    })?,
            );
        }
        Ok(Workers {
            handles,
            next: AtomicUsize::new(0),
            stop,
            threads: Mutex::new(threads),
        })
    }

    /// Ends every serving runtime, dropping the connections, requests and streams still on it,
    /// and waits up to `wait` for the threads to finish. Returns how many did not (a task
    /// blocking its thread): their tasks are never dropped, and they are left behind rather
    /// than joined, so they cannot hold up the exit.
    pub async fn stop(&self, wait: Duration) -> usize {
        let _ = self.stop.send(true);
        let threads = std::mem::take(
            &mut *self
                .threads
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        let deadline = tokio::time::Instant::now() + wait;
        while threads.iter().any(|thread| !thread.is_finished())
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        threads
            .iter()
            .filter(|thread| !thread.is_finished())
            .count()
    }

    /// How many serving threads run.
    pub fn count(&self) -> usize {
        self.handles.len()
    }

    /// Runs `task` on the next serving thread, round-robin.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let next = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        drop(self.handles[next].spawn(task));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tasks go round-robin to the serving threads, and code on a serving thread knows which
    /// one it is (that picks its upstream pool); other threads are 0.
    #[test]
    fn tasks_run_round_robin_on_numbered_threads() {
        let workers = Workers::start(2).expect("start");
        assert_eq!(workers.count(), 2);
        assert_eq!(index(), 0);
        let (report, seen) = std::sync::mpsc::channel();
        for _ in 0..4 {
            let report = report.clone();
            workers.spawn(async move {
                let name = std::thread::current().name().map(str::to_string);
                let _ = report.send((index(), name));
            });
        }
        let mut got: Vec<(usize, Option<String>)> = (0..4)
            .map(|_| {
                seen.recv_timeout(std::time::Duration::from_secs(5))
                    .expect("task ran")
            })
            .collect();
        got.sort();
        let name = |n: usize| Some(format!("wardgate-serve-{n}"));
        assert_eq!(
            got,
            vec![(1, name(1)), (1, name(1)), (2, name(2)), (2, name(2))]
        );
    }

    /// Stopping drops the tasks still running (so their `Drop`s, which write audit
    /// completions, run) and joins the threads.
    #[tokio::test]
    async fn stop_drops_the_tasks_left_on_the_threads() {
        struct Dropped(std::sync::mpsc::Sender<&'static str>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                let _ = self.0.send("dropped");
            }
        }
        let workers = Workers::start(2).expect("start");
        let (report, seen) = std::sync::mpsc::channel();
        for _ in 0..2 {
            let guard = Dropped(report.clone());
            workers.spawn(async move {
                let _guard = guard;
                std::future::pending::<()>().await;
            });
        }
        drop(report);
        assert_eq!(workers.stop(std::time::Duration::from_secs(5)).await, 0);
        for _ in 0..2 {
            let dropped = seen.recv_timeout(std::time::Duration::from_secs(1));
            assert_eq!(dropped, Ok("dropped"));
        }
    }

    /// A thread blocked by its task is reported and left behind, not waited for: shutdown
    /// must not hang on it.
    #[tokio::test]
    async fn stop_leaves_a_blocked_thread_behind() {
        let workers = Workers::start(1).expect("start");
        let (release, blocked) = std::sync::mpsc::channel::<()>();
        let (started, running) = std::sync::mpsc::channel();
        workers.spawn(async move {
            let _ = started.send(());
            let _ = blocked.recv();
        });
        running
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("the task runs");
        let stuck = workers.stop(std::time::Duration::from_millis(200)).await;
        assert_eq!(stuck, 1);
        drop(release);
    }
}
