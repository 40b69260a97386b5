//! Stage 7, forward: send a permitted request to its upstream and stream the answer back.
//!
//! Bodies stream both ways and are never buffered whole; the request body is cut at the
//! route's `max_body` (413). A failed connection ejects the target and, for requests without
//! a body and with a safe method, is retried once on the next target: nothing reached the
//! backend, so the retry cannot repeat an action. Unreachable backend: 502; no response head
//! within `response_timeout`: 504.

use http::{Method, Request, Response, StatusCode, Uri};
use http_body::Body as _;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::app::App;
use crate::audit::AuditTicket;
use crate::authz::Permit;
use crate::body::{self, Body};
use crate::gate::context::RequestCtx;
use crate::gate::error::GateError;
use crate::gate::target::RequestTarget;

pub mod assertion;
pub mod client;
pub mod headers;
pub mod health;
pub mod recorded;
pub mod upgrade;
pub mod upstream;

/// Forwards `req` under `permit`; the permit proves stages 2–5 allowed it.
pub async fn forward(
    app: &App,
    ctx: &mut RequestCtx,
    permit: &Permit,
    ticket: &mut AuditTicket,
    target: &RequestTarget,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, GateError> {
    let route = permit.route();
    let pool = app
        .pool(&route.upstream)
        .ok_or_else(|| GateError::Internal(format!("route {} has no pool", route.name)))?;
    if req.body().size_hint().lower() > route.max_body {
        return Err(GateError::BodyTooLarge);
    }
    // Only WebSocket upgrades are tunnelled. Any other protocol (`h2c` above all) is dropped
    // with the hop-by-hop headers and the request forwarded as plain HTTP: a tunnel to a
    // protocol Wardgate does not speak would carry later requests past routing, policy and
    // audit.
    let upgrade = upgrade::is_upgrade(&req) && upgrade::is_websocket(&req);
    let websocket = upgrade;
    if websocket {
        // Messages are relayed one by one; compression extensions are not negotiated.
        req.headers_mut().remove("sec-websocket-extensions");
    }
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, incoming) = req.into_parts();
    headers::prepare_request(
        &mut parts.headers,
        ctx,
        target,
        &app.config.listen,
        &app.config.proxy,
        upgrade,
    );
    if permit.break_glass().is_some() {
        parts.headers.insert(
            headers::X_WARDGATE_BREAK_GLASS,
            http::HeaderValue::from_static("1"),
        );
    }
    let signed_in = matches!(permit.caller(), crate::authn::Caller::User(..));
    headers::remove_credentials(&mut parts.headers, signed_in);
    if let crate::authn::Caller::User(principal, _) = permit.caller() {
        headers::set_identity(&mut parts.headers, principal);
        let issuer = &app.config.listen.public_url;
        if let Some(assertion) = app.assertions.assertion(
            principal,
            &route.upstream,
            issuer,
            crate::state::unix_now(),
            permit.break_glass().is_some(),
        ) {
            parts
                .headers
                .insert(headers::X_WARDGATE_ASSERTION, assertion);
        }
    }
    let client_h2 = parts.version == http::Version::HTTP_2;
    parts.version = http::Version::HTTP_11;
    let bodyless = incoming.is_end_stream();
    let retryable =
        bodyless && matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    let limited = Limited::new(
        incoming,
        usize::try_from(route.max_body).unwrap_or(usize::MAX),
    )
    .map_err(Into::into)
    .boxed();
    let mut body = Some(if bodyless {
        limited
    } else {
        body::IdleTimeout::wrap(limited, app.config.limits.body_read_timeout)
    });

    let mut attempts = if retryable {
        pool.targets.len().min(2)
    } else {
        1
    };
    let method = parts.method.clone();
    // The head is copied only when a retry could need it again.
    let mut next_parts = Some(parts);
    loop {
        attempts -= 1;
        let chosen = pool
            .pick()
            .ok_or_else(|| GateError::UpstreamUnreachable("empty pool".into()))?;
        ctx.upstream = Some(std::sync::Arc::clone(&chosen.label));
        // The request target on the wire: the path and query alone (origin-form).
        let uri = Uri::try_from(target.path_and_query())
            .map_err(|_| GateError::BadRequest("target cannot be forwarded"))?;
        let Some(mut attempt_parts) = next_parts.take() else {
            return Err(GateError::Internal("request head already sent".into()));
        };
        if attempts > 0 {
            next_parts = Some(attempt_parts.clone());
        }
        attempt_parts.uri = uri;
        let upstream_req =
            Request::from_parts(attempt_parts, body.take().unwrap_or_else(body::empty));
        let sent = tokio::time::timeout(
            app.config.proxy.response_timeout,
            pool.client().send(&chosen.origin, upstream_req),
        )
        .await;
        let mut response = match sent {
            Err(_) => return Err(GateError::UpstreamTimeout),
            Ok(Ok(response)) => response,
            Ok(Err(err)) if err.is_connect() => {
                pool.eject(chosen);
                if attempts > 0 {
                    continue;
                }
                return Err(GateError::UpstreamUnreachable(
                    crate::telemetry::error_chain(&err),
                ));
            }
            Ok(Err(err)) if caused_by::<http_body_util::LengthLimitError>(&err) => {
                return Err(GateError::BodyTooLarge)
            }
            Ok(Err(err)) if caused_by::<body::BodyIdle>(&err) => {
                return Err(GateError::BodyTimeout)
            }
            Ok(Err(err)) => {
                return Err(GateError::UpstreamFailed(crate::telemetry::error_chain(
                    &err,
                )))
            }
        };
        pool.restore(chosen);
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        if switching && !upgrade {
            return Err(GateError::UpstreamFailed(
                "backend switched protocols without a WebSocket upgrade being asked".into(),
            ));
        }
        headers::remove_hop_by_hop(response.headers_mut(), switching);
        if client_h2 {
            headers::detach_values(response.headers_mut());
        }
        // Registration allocates (session, user, route, path): only for what can outlive the
        // request, never for the common short response.
        let opened = || live_opened(permit, ctx, target, &method, websocket);
        let response = match (switching, client_upgrade) {
            (true, Some(client_upgrade)) => {
                response.headers_mut().remove("sec-websocket-extensions");
                let upstream_upgrade = hyper::upgrade::on(&mut response);
                let tunnel = upgrade::Tunnel {
                    route: route.name.to_string(),
                    idle: app.config.proxy.websocket_idle_timeout,
                    pings_are_activity: app.config.proxy.websocket_pings_are_activity,
                    max_message: app.config.proxy.websocket_max_message,
                    connection: std::sync::Arc::clone(&ctx.conn),
                    counted: app.live.tunnel_opened(),
                    live: opened().map(|opened| app.live.register(opened)),
                    completion: ticket.take_completion().map(|mut record| {
                        record.status = Some(StatusCode::SWITCHING_PROTOCOLS.as_u16());
                        crate::audit::open::OpenAccess::hold(&app.audit, record, ctx.started)
                    }),
                };
                tokio::spawn(tunnel.run(client_upgrade, upstream_upgrade));
                response.map(|_| body::empty())
            }
            _ => response.map(|incoming| {
                let streamed = body::IdleTimeout::wrap_upstream(
                    incoming.map_err(body::BoxError::from),
                    app.config.proxy.upstream_idle_timeout,
                );
                if !crate::live::stream::Revocable::may_last(&streamed) {
                    return streamed;
                }
                match opened() {
                    Some(opened) => {
                        crate::live::stream::Revocable::wrap(streamed, &app.live, opened)
                    }
                    None => streamed,
                }
            }),
        };
        let Some(mut record) = ticket.take_completion() else {
            return Ok(response);
        };
        record.status = Some(response.status().as_u16());
        let started = ctx.started;
        let auditor = std::sync::Arc::clone(&app.audit);
        return Ok(response
            .map(|inner| recorded::RecordedBody::new(inner, auditor, record, started).boxed()));
    }
}

/// What continuous validation needs to know about a connection opened by a signed-in user or
/// a certificate-only service (a public route's anonymous connections are not re-checked).
fn live_opened(
    permit: &Permit,
    ctx: &RequestCtx,
    target: &RequestTarget,
    method: &Method,
    websocket: bool,
) -> Option<crate::live::Opened> {
    let holder = match permit.caller() {
        crate::authn::Caller::User(principal, _) => crate::live::Holder::Session {
            session_id: principal.session_id.to_string(),
            user: principal.user.name.clone(),
        },
        crate::authn::Caller::Service(identity) => crate::live::Holder::Service {
            subject: identity.subject.clone(),
        },
        crate::authn::Caller::Anonymous => return None,
    };
    Some(crate::live::Opened {
        holder,
        route: permit.route().name.to_string(),
        method: method.clone(),
        host: target.host.to_string(),
        path: target.path.to_string(),
        conn: std::sync::Arc::clone(&ctx.conn),
        kind: if websocket {
            crate::live::Kind::WebSocket
        } else {
            crate::live::Kind::Stream
        },
    })
}

/// Whether `E` is somewhere in the error's source chain.
fn caused_by<E: std::error::Error + 'static>(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(current) = source {
        if current.is::<E>() {
            return true;
        }
        source = current.source();
    }
    false
}
