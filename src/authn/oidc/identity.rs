//! From a verified ID token to the Wardgate identity policies see.
//!
//! The provider's claims become a user name (`username_claim`), roles, groups, a display name
//! and custom claims through the provider's `claims` mapping, so a policy written for local
//! accounts (`roles = ["clinician"]`, `match = { patient_id = "claim:patient_id" }`) applies
//! unchanged to staff who sign in through the hospital's identity provider.

use serde_json::Value;

use crate::authn::users::User;
use crate::config::oidc::ProviderConfig;

/// Longest user name accepted from a provider (as for local logins).
const MAX_USERNAME: usize = 128;

/// What the ID token says about the user, mapped for Wardgate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    /// The account as policies see it.
    pub user: User,
    /// The provider's `sub`.
    pub subject: String,
    /// The provider's `sid`, if sent.
    pub provider_sid: Option<String>,
    /// The provider's `amr` values.
    pub amr: Vec<String>,
    /// Whether `amr`/`acr` show a second factor per `mfa_amr`/`mfa_acr`.
    pub second_factor: bool,
    /// When the provider authenticated the user (`auth_time`), if it said.
    pub auth_time: Option<u64>,
}

/// Maps the verified claims (as JSON) of `provider`. `Err` says which claim is missing or
/// unusable, in words for the audit record.
pub fn map(provider: &ProviderConfig, claims: &Value) -> Result<Mapped, String> {
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    let subject = text("sub").ok_or("the ID token has no sub")?.to_string();
    let name = text(&provider.username_claim)
        .ok_or_else(|| format!("the ID token has no `{}` claim", provider.username_claim))?
        .to_string();
    if name.is_empty() || name.len() > MAX_USERNAME || name.chars().any(char::is_control) {
        return Err(format!(
            "`{}` is not a usable user name",
            provider.username_claim
        ));
    }
    let mut user = User {
        name,
        ..User::default()
    };
    for (attribute, claim) in &provider.claims {
        let Some(value) = claims.get(claim) else {
            continue;
        };
        match attribute.as_str() {
            "roles" => user.roles = strings(value),
            "groups" => user.groups = strings(value),
            "display_name" => user.display_name = strings(value).join(" "),
            custom => {
                if let Some(value) = scalar(value) {
                    user.claims.insert(custom.to_string(), value);
                }
            }
        }
    }
    let amr: Vec<String> = claims.get("amr").map(strings).unwrap_or_default();
    let acr = text("acr");
    let second_factor = amr.iter().any(|m| provider.mfa_amr.contains(m))
        || acr.is_some_and(|acr| provider.mfa_acr.iter().any(|a| a == acr));
    Ok(Mapped {
        user,
        subject,
        provider_sid: text("sid").map(str::to_string),
        amr,
        second_factor,
        auth_time: claims.get("auth_time").and_then(Value::as_u64),
    })
}

/// A claim as a list of strings: an array of strings, or one string.
fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => items.iter().filter_map(scalar).collect(),
        other => scalar(other).into_iter().collect(),
    }
}

/// A string, number or boolean claim as text; anything else is ignored.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn provider() -> ProviderConfig {
        ProviderConfig {
            name: "hospital".into(),
            display_name: "Hospital".into(),
            issuer: "https://idp.example".into(),
            client_id: "wardgate".into(),
            client_secret_file: "secret".into(),
            ca_file: None,
            scopes: vec![],
            claims: [
                ("roles".to_string(), "wardgate_roles".to_string()),
                ("groups".to_string(), "groups".to_string()),
                ("display_name".to_string(), "name".to_string()),
                ("employee_id".to_string(), "emp".to_string()),
            ]
            .into(),
            mfa_amr: vec!["mfa".into()],
            mfa_acr: vec!["urn:mfa".into()],
            username_claim: "preferred_username".into(),
            clock_skew: std::time::Duration::from_secs(60),
        }
    }

    #[test]
    fn claims_become_roles_groups_and_custom_claims() {
        let mapped = map(
            &provider(),
            &json!({"sub": "s1", "preferred_username": "drsmith", "wardgate_roles": ["clinician"],
                    "groups": "cardiology", "name": "Dr Smith", "emp": 42, "amr": ["pwd", "mfa"],
                    "sid": "op-session"}),
        )
        .expect("mapped");
        assert_eq!(mapped.user.name, "drsmith");
        assert_eq!(mapped.user.roles, vec!["clinician"]);
        assert_eq!(mapped.user.groups, vec!["cardiology"]);
        assert_eq!(mapped.user.display_name, "Dr Smith");
        assert_eq!(
            mapped.user.claims.get("employee_id").map(String::as_str),
            Some("42")
        );
        assert!(mapped.user.password.is_empty() && mapped.user.totp_secret.is_none());
        assert_eq!(mapped.provider_sid.as_deref(), Some("op-session"));
        assert!(mapped.second_factor);
    }

    #[test]
    fn second_factor_needs_a_listed_amr_or_acr() {
        let base = json!({"sub": "s", "preferred_username": "n", "amr": ["pwd"]});
        assert!(!map(&provider(), &base).expect("mapped").second_factor);
        let mut with_acr = base.clone();
        with_acr["acr"] = json!("urn:mfa");
        assert!(map(&provider(), &with_acr).expect("mapped").second_factor);
        let mut no_amr = base;
        no_amr["amr"] = json!(null);
        assert!(!map(&provider(), &no_amr).expect("mapped").second_factor);
    }

    #[test]
    fn missing_or_unusable_names_are_refused() {
        assert!(map(&provider(), &json!({"sub": "s"})).is_err());
        assert!(map(&provider(), &json!({"preferred_username": "n"})).is_err());
        assert!(map(&provider(), &json!({"sub": "s", "preferred_username": ""})).is_err());
        assert!(map(
            &provider(),
            &json!({"sub": "s", "preferred_username": "a\nb"})
        )
        .is_err());
    }
}
