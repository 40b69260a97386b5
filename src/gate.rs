//! The request pipeline, stage by stage, as plain function calls.
//!
//! ```text
//! client ──TLS(rustls)──▶ accept ─▶ normalize ─▶ route ─▶ authenticate ─▶ authorize ─▶ audit ─▶ forward ──▶ backend
//!                                     │            │          │               │            │         │
//!                                  400 on      404/deny   401 / login      403 +       503 if     502/504 +
//!                                 ambiguous    unknown    redirect        reason     audit down  audit record
//! ```
//! `accept` lives in `server/`; [`handle`] is called once per request with the connection's
//! facts and runs the rest top to bottom. Any stage may end the request with a [`GateError`];
//! [`respond`] turns that into the client's answer.

use std::convert::Infallible;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::app::App;
use crate::body::Body;
use crate::{audit, authn, authz, proxy, telemetry};

pub mod context;
pub mod error;
pub mod normalize;
pub mod respond;
pub mod route;
pub mod target;

use context::{ConnInfo, RequestCtx};
use error::GateError;
use normalize::PathError;
use target::RequestTarget;

/// Handles one request; never fails (every error becomes an answer).
pub async fn handle(
    app: Arc<App>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let mut ctx = RequestCtx::new(conn);
    ctx.browser = context::is_browser_navigation(&req);
    let method = req.method().clone();
    let raw_path = req.uri().path().to_string();
    let (mut response, error) = match pipeline(&app, &mut ctx, req).await {
        Ok(response) => (response, None),
        Err(error) => {
            let response = respond::error_response(&ctx, &error);
            audit::refused(&app, &ctx, &method, &error, response.status()).await;
            (response, Some(error))
        }
    };
    respond::finish(&mut response, &ctx, &app.config.response_headers);
    telemetry::request_done(&ctx, &method, &raw_path, response.status(), error.as_ref());
    Ok(response)
}

/// Stages 2–7 in diagram order.
async fn pipeline(
    app: &App,
    ctx: &mut RequestCtx,
    req: Request<Incoming>,
) -> Result<Response<Body>, GateError> {
    // 2. normalize: one canonical host + path, or 400.
    let target = RequestTarget::from_request(&req)?;
    ctx.set_return_path(&target);
    // Wardgate's own portal (/.wardgate/...) answers before any route: routes cannot claim it.
    if authn::portal::owns(&target.path) {
        return Box::pin(authn::portal::handle(app, ctx, &target, req)).await;
    }
    // 3. route: most specific route, or 404 (default deny); 400 if the path spelled with
    // other letter case or a trailing slash reaches a route that treats it differently
    // (refused as a request to that one if it holds PHI, so the refusal is audited).
    let matched = app
        .routes
        .lookup(&target.host, &target.path, req.method())
        .ok_or(GateError::NoRoute)?;
    ctx.route = Some(Arc::clone(&matched.route));
    ctx.note_route(&matched, &target);
    if let Some(other) =
        app.routes
            .variant_route(&target.host, &target.path, req.method(), &matched)
    {
        ctx.note_variant_route(&other, &target);
        return Err(PathError::RouteVariant.into());
    }
    // 4. authenticate: who is calling, or 401 / login redirect.
    let client_cert = ctx.conn.client_identity_under(app.client_trust);
    let caller = authn::authenticate(
        app,
        &matched.route,
        req.method(),
        req.headers(),
        client_cert.as_ref(),
    )
    .await?;
    ctx.note_caller(&caller);
    // 5. authorize: a Permit, or a refusal.
    let grant = authz::grant_for(app, &matched.route, &caller).await?;
    let permit = authz::authorize(
        &matched,
        caller,
        &ctx.conn,
        req.method(),
        crate::state::unix_now(),
        grant,
    )?;
    // 6. audit: a PHI access is recorded first, or refused (503).
    let mut ticket = audit::admit(app, ctx, &permit, &target, req.method()).await?;
    // 7. forward: stream to the upstream and back. An audited access that fails here is
    // completed with the error's status; one dropped before its answer leaves a completion
    // saying so (see `AuditTicket`).
    let forwarded = proxy::forward(app, ctx, &permit, &mut ticket, &target, req).await;
    if let Err(error) = &forwarded {
        ctx.access_completed = ticket.fail(error.status(), error, ctx.started);
    }
    forwarded
}
