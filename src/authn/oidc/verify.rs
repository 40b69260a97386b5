//! The two steps of a callback that talk to the provider: exchanging the code (with the PKCE
//! verifier) for tokens, and validating the ID token completely: signature with
//! [`ALLOWED_ALGS`] (fetching the key set again when the token names an unknown key), `iss`,
//! `aud`, `azp`, `exp` and `iat` within the provider's `clock_skew`, and `nonce`.

use std::sync::Arc;

use http::StatusCode;
use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, Nonce, PkceCodeVerifier, RequestTokenError,
    SignatureVerificationError, TokenResponse as _,
};

use super::login::{refuse, Refusal, TRY_AGAIN};
use super::{Discovered, Provider, ALLOWED_ALGS};
use crate::state::{unix_now, SsoFlow};

/// An ID token issued longer ago than this (plus the clock skew) is refused.
const MAX_TOKEN_AGE: u64 = 600;

pub(super) async fn exchange(
    provider: &Provider,
    found: &Discovered,
    code: String,
    flow: &SsoFlow,
) -> Result<super::TokenResponse, Refusal> {
    let client = provider.client(found);
    let request = client
        .exchange_code(AuthorizationCode::new(code))
        .map_err(|e| {
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                TRY_AGAIN,
                format!("the provider has no token endpoint: {e}"),
            )
        })?;
    request
        .set_pkce_verifier(PkceCodeVerifier::new(flow.pkce_verifier.clone()))
        .request_async(provider.http())
        .await
        .map_err(|e| match e {
            RequestTokenError::ServerResponse(answer) => refuse(
                StatusCode::UNAUTHORIZED,
                TRY_AGAIN,
                format!("code exchange refused: {}", answer.error().as_ref()),
            ),
            other => refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "Your organization's sign-in service cannot be reached right now. Please try again.",
                format!("code exchange failed: {}", super::error_chain(&other)),
            ),
        })
}

/// Validates the ID token; on an unknown key, fetches the provider's keys once and retries.
pub(super) async fn verified_claims(
    provider: &Provider,
    mut found: Arc<Discovered>,
    tokens: &super::TokenResponse,
    flow: &SsoFlow,
) -> Result<serde_json::Value, Refusal> {
    let id_token = tokens
        .id_token()
        .ok_or_else(|| refuse(StatusCode::UNAUTHORIZED, TRY_AGAIN, "no ID token"))?;
    let nonce = Nonce::new(flow.nonce.clone());
    let skew = provider.config.clock_skew.as_secs();
    let mut refreshed = false;
    loop {
        let client = provider.client(&found);
        let now = unix_now();
        let verifier = client
            .id_token_verifier()
            .set_allowed_algs(ALLOWED_ALGS)
            // Leeway for the provider's clock on `exp`.
            .set_time_fn(move || chrono_from_unix(now.saturating_sub(skew)))
            .set_issue_time_verifier_fn(move |iat| {
                let iat = u64::try_from(iat.timestamp()).unwrap_or(0);
                if iat > now + skew {
                    Err(format!(
                        "issued {}s in the future: check the clocks of Wardgate and the provider",
                        iat - now
                    ))
                } else if iat + MAX_TOKEN_AGE + skew < now {
                    Err(format!("issued {}s ago", now - iat))
                } else {
                    Ok(())
                }
            });
        match id_token.claims(&verifier, &nonce) {
            Ok(claims) => {
                if let Some(azp) = claims.authorized_party() {
                    if azp.as_str() != provider.config.client_id {
                        return Err(refuse(
                            StatusCode::UNAUTHORIZED,
                            TRY_AGAIN,
                            "azp is another client",
                        ));
                    }
                }
                return serde_json::to_value(claims).map_err(|e| {
                    refuse(StatusCode::UNAUTHORIZED, TRY_AGAIN, format!("claims: {e}"))
                });
            }
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) if !refreshed => {
                refreshed = true;
                found = provider.refresh_keys(&found).await.ok_or_else(|| {
                    refuse(
                        StatusCode::UNAUTHORIZED,
                        TRY_AGAIN,
                        "ID token signed with an unknown key (keys fetched moments ago)",
                    )
                })?;
            }
            Err(error) => {
                return Err(refuse(
                    StatusCode::UNAUTHORIZED,
                    TRY_AGAIN,
                    format!("ID token refused: {}", super::error_chain(&error)),
                ))
            }
        }
    }
}

fn chrono_from_unix(seconds: u64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(i64::try_from(seconds).unwrap_or(0), 0).unwrap_or_default()
}
