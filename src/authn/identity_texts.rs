//! What every request of a signed-in user copies out of the account: the name and roles for
//! its audit record, and the `X-Wardgate-User` / `X-Wardgate-Roles` values for the backend.
//!
//! Made once per account and then shared by reference count, instead of being re-allocated
//! (name, each role, the joined roles, two header values) on every request. An account is
//! never changed in place — a change replaces the `Arc<User>` — and a clone starts with an
//! empty cache, so the texts cannot go stale.

use std::sync::{Arc, OnceLock};

use http::HeaderValue;

use super::users::User;
use crate::audit::record::Text;

/// The shared per-account texts (see the module doc).
#[derive(Debug)]
pub struct IdentityTexts {
    /// Login name.
    pub name: Text,
    /// Roles, as the audit record lists them.
    pub roles: Arc<[String]>,
    /// The `work_hours` claim, for the out-of-hours detection rule.
    pub work_hours: Option<Text>,
    /// `X-Wardgate-User` (absent when the name is not a valid header value).
    pub user_header: Option<HeaderValue>,
    /// `X-Wardgate-Roles`: the roles joined with `,`.
    pub roles_header: Option<HeaderValue>,
}

impl IdentityTexts {
    fn of(user: &User) -> IdentityTexts {
        IdentityTexts {
            name: Text::from(user.name.as_str()),
            roles: Arc::from(user.roles.as_slice()),
            work_hours: user
                .claims
                .get("work_hours")
                .map(|h| Text::from(h.as_str())),
            user_header: HeaderValue::from_str(&user.name).ok(),
            roles_header: HeaderValue::from_str(&user.roles.join(",")).ok(),
        }
    }
}

impl User {
    /// The texts each request of this account copies, made on first use and then shared.
    pub fn identity_texts(&self) -> &Arc<IdentityTexts> {
        self.identity_cache.get(self)
    }
}

/// The lazily made [`IdentityTexts`] of one account. Not part of the account's data: it is
/// never (de)serialized, every cache compares equal, and a clone starts empty (the clone is
/// about to be edited).
#[derive(Debug, Default)]
pub struct IdentityCache(OnceLock<Arc<IdentityTexts>>);

impl IdentityCache {
    /// The texts of `user` (the account this cache belongs to), made on first use.
    fn get(&self, user: &User) -> &Arc<IdentityTexts> {
        self.0.get_or_init(|| Arc::new(IdentityTexts::of(user)))
    }
}

impl Clone for IdentityCache {
    fn clone(&self) -> Self {
        IdentityCache::default()
    }
}

impl PartialEq for IdentityCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for IdentityCache {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_follow_the_account_and_a_clone_does_not_inherit_them() {
        let mut user = User {
            name: "dr.grey".into(),
            roles: vec!["clinician".into(), "oncology".into()],
            ..User::default()
        };
        user.claims.insert("work_hours".into(), "08-18".into());
        let texts = Arc::clone(user.identity_texts());
        assert_eq!(&*texts.name, "dr.grey");
        assert_eq!(&*texts.roles, ["clinician", "oncology"]);
        assert_eq!(texts.work_hours.as_deref(), Some("08-18"));
        assert_eq!(
            texts.roles_header.as_ref().map(|v| v.as_bytes()),
            Some(&b"clinician,oncology"[..])
        );
        assert!(
            Arc::ptr_eq(&texts, user.identity_texts()),
            "made once, then shared"
        );

        let mut edited = user.clone();
        edited.roles = vec!["patient".into()];
        assert_eq!(&*edited.identity_texts().roles, ["patient"]);
        assert_eq!(
            edited
                .identity_texts()
                .user_header
                .as_ref()
                .map(|v| v.as_bytes()),
            Some(&b"dr.grey"[..])
        );
        assert_eq!(
            user,
            user.clone(),
            "the cache is not part of the account's data"
        );
        let bad = User {
            name: "line\nbreak".into(),
            ..User::default()
        };
        assert!(bad.identity_texts().user_header.is_none());
    }
}
