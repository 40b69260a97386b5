//! The session inventory on the admin listener: `GET /sessions[?user=U]` and
//! `POST /sessions/revoke` (`{"user"}` or `{"id"}`), behind the admin token.
//!
//! The admin listener speaks plain HTTP (probes and metrics scrapers need no secret), so the
//! token API answers only connections from this host (`wardgate session`, or `kubectl exec`):
//! a token sent from elsewhere has crossed the network in clear text, and is refused.
//!
//! Session ids are bearer secrets, so they never leave Wardgate: the inventory shows the same
//! hash the audit trail records (`session`), and revocation by id takes that hash. Revocation
//! goes through the state store, so it holds on every replica on the next request, and each
//! replica's live-connection checker closes the user's open sockets within a second.

use std::collections::HashMap;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::app::App;
use crate::audit::record::session_hash;
use crate::body::{self, Body};

/// Largest revoke request body.
const MAX_BODY: usize = 4096;

/// Whether `path` belongs to this module.
pub fn handles(path: &str) -> bool {
    path == "/sessions" || path == "/sessions/revoke"
}

/// Where an admin connection comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// This host: loopback, or one of this host's own addresses (the connection's source is
    /// the address it reached, as when the CLI dials an admin listener bound to one interface).
    ThisHost,
    /// Another host: its requests crossed a network.
    Remote(SocketAddr),
}

impl Caller {
    /// Classifies a connection from `peer` accepted on `local`.
    pub fn of(peer: SocketAddr, local: SocketAddr) -> Caller {
        let peer_ip = peer.ip().to_canonical();
        if peer_ip.is_loopback() || peer_ip == local.ip().to_canonical() {
            Caller::ThisHost
        } else {
            Caller::Remote(peer)
        }
    }
}

/// Answers one session-API request.
pub async fn answer(
    req: Request<hyper::body::Incoming>,
    app: &App,
    caller: Caller,
) -> Response<Body> {
    if let Caller::Remote(peer) = caller {
        tracing::warn!(target: "wardgate::security", %peer, "admin API request from another host refused: the admin listener has no TLS, so a token sent from there crossed the network in clear text (rotate it if one was sent)");
        return json(
            StatusCode::FORBIDDEN,
            r#"{"error":"admin API answers only on this host: run wardgate session there"}"#,
        );
    }
    if let Some(refusal) = refuse_without_token(&req, app) {
        return refusal;
    }
    let (parts, incoming) = req.into_parts();
    match (&parts.method, parts.uri.path()) {
        (&Method::GET, "/sessions") => {
            let user = parts.uri.query().and_then(|q| {
                serde_urlencoded::from_str::<HashMap<String, String>>(q)
                    .ok()
                    .and_then(|mut m| m.remove("user"))
            });
            list(app, user.as_deref()).await
        }
        (&Method::POST, "/sessions/revoke") => {
            let bytes = match Limited::new(incoming, MAX_BODY).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(_) => return json(StatusCode::PAYLOAD_TOO_LARGE, r#"{"error":"too_large"}"#),
            };
            revoke(app, &bytes).await
        }
        _ => json(
            StatusCode::METHOD_NOT_ALLOWED,
            r#"{"error":"method_not_allowed"}"#,
        ),
    }
}

/// The refusal for a request without the right admin token (compared in constant time).
fn refuse_without_token(req: &Request<hyper::body::Incoming>, app: &App) -> Option<Response<Body>> {
    let Some(expected) = app.admin_token.as_deref() else {
        return Some(json(
            StatusCode::FORBIDDEN,
            r#"{"error":"admin API disabled: set [admin] token_file"}"#,
        ));
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
        None
    } else {
        tracing::warn!(target: "wardgate::security", "admin API request with a missing or wrong token");
        let mut refusal = json(StatusCode::UNAUTHORIZED, r#"{"error":"unauthorized"}"#);
        refusal.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        Some(refusal)
    }
}

async fn list(app: &App, user: Option<&str>) -> Response<Body> {
    let sessions = match app.state.list_sessions(user).await {
        Ok(sessions) => sessions,
        Err(err) => return unavailable(&err),
    };
    let sockets = app.live.count_by_session();
    let lifetime = app.config.auth.max_lifetime.as_secs();
    let mut rows: Vec<serde_json::Value> = sessions
        .iter()
        .map(|s| {
            serde_json::json!({
                "id": session_hash(&s.id),
                "user": s.user,
                "source_ip": s.source_ip,
                "auth_time": s.auth_time,
                "created": s.created,
                "last_seen": s.last_seen,
                "expires_at": s.created + lifetime,
                "amr": s.amr,
                "open_sockets": sockets.get(&*s.id).copied().unwrap_or(0),
            })
        })
        .collect();
    rows.sort_by(|a, b| {
        (a["user"].as_str(), a["created"].as_u64())
            .cmp(&(b["user"].as_str(), b["created"].as_u64()))
    });
    json(
        StatusCode::OK,
        &serde_json::json!({ "sessions": rows }).to_string(),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    user: Option<String>,
    id: Option<String>,
}

async fn revoke(app: &App, body: &Bytes) -> Response<Body> {
    let request: RevokeRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(_) => {
            return json(
                StatusCode::BAD_REQUEST,
                r#"{"error":"expected {\"user\":NAME} or {\"id\":SESSION}"}"#,
            )
        }
    };
    let outcome = match (request.user, request.id) {
        (Some(user), None) => app.state.revoke_user(&user).await.map(|n| (user, n)),
        (None, Some(id_hash)) => match app.state.list_sessions(None).await {
            Err(err) => Err(err),
            Ok(sessions) => match sessions
                .into_iter()
                .find(|s| *session_hash(&s.id) == *id_hash)
            {
                None => return json(StatusCode::NOT_FOUND, r#"{"error":"no such session"}"#),
                Some(session) => app
                    .state
                    .revoke_session(&session.id)
                    .await
                    .map(|found| (session.user.to_string(), usize::from(found))),
            },
        },
        _ => {
            return json(
                StatusCode::BAD_REQUEST,
                r#"{"error":"give exactly one of user or id"}"#,
            )
        }
    };
    match outcome {
        Ok((user, revoked)) => {
            let mut record = crate::audit::AuditRecord::new("logout");
            record.user = Some(user.as_str().into());
            record.reason =
                Some(format!("{revoked} session(s) revoked by an administrator").into());
            app.audit.submit_kept(record);
            tracing::info!(target: "wardgate::security", event = "logout", user, revoked, "sessions revoked by an administrator");
            json(
                StatusCode::OK,
                &serde_json::json!({ "revoked": revoked }).to_string(),
            )
        }
        Err(err) => unavailable(&err),
    }
}

fn unavailable(err: &crate::state::StateError) -> Response<Body> {
    tracing::error!(error = %err, "session API: state store unavailable");
    json(
        StatusCode::SERVICE_UNAVAILABLE,
        r#"{"error":"state_store_unavailable"}"#,
    )
}

fn json(status: StatusCode, text: &str) -> Response<Body> {
    let mut response = Response::new(body::full(text.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::Caller;

    fn caller(peer: &str, local: &str) -> Caller {
        Caller::of(
            peer.parse().expect("peer address"),
            local.parse().expect("local address"),
        )
    }

    #[test]
    fn only_connections_from_this_host_reach_the_token_api() {
        assert_eq!(
            caller("127.0.0.1:50000", "127.0.0.1:9090"),
            Caller::ThisHost
        );
        assert_eq!(caller("127.0.0.7:50000", "0.0.0.0:9090"), Caller::ThisHost);
        assert_eq!(caller("[::1]:50000", "[::]:9090"), Caller::ThisHost);
        // An IPv4 client on a dual-stack listener arrives as an IPv4-mapped address.
        assert_eq!(
            caller("[::ffff:127.0.0.1]:50000", "[::ffff:127.0.0.1]:9090"),
            Caller::ThisHost
        );
        // The CLI dialing a listener bound to one interface comes from that interface.
        assert_eq!(caller("10.0.0.5:50000", "10.0.0.5:9090"), Caller::ThisHost);
        assert_eq!(
            caller("[::ffff:10.0.0.5]:50000", "10.0.0.5:9090"),
            Caller::ThisHost
        );
        let remote = "10.0.0.9:50000".parse().expect("address");
        assert_eq!(
            caller("10.0.0.9:50000", "10.0.0.5:9090"),
            Caller::Remote(remote)
        );
        let mapped = "[::ffff:10.0.0.9]:50000".parse().expect("address");
        assert_eq!(
            caller("[::ffff:10.0.0.9]:50000", "[::]:9090"),
            Caller::Remote(mapped)
        );
    }
}
