//! Route policies: `allow` and `deny` rules compiled at load, evaluated per request.
//!
//! A rule matches when *every* condition it names holds (within one condition, any listed
//! value will do). The decision is default deny: any matching `deny` rule wins over every
//! `allow`; otherwise the first matching `allow` rule admits the request; otherwise nothing
//! does. The decision names the rule and gives a reason, for the audit record and for
//! `wardgate policy check` — never for the client, which only sees 403.

use std::collections::BTreeMap;
use std::net::IpAddr;

use http::Method;
use ipnet::IpNet;

use crate::audit::Text;
use crate::gate::context::ClientIdentity;

/// One compiled rule.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rule {
    /// `ROUTE/allow[INDEX]`, or `ROUTE/NAME` when the rule has a name.
    pub id: Text,
    /// Usernames (any of).
    pub users: Vec<String>,
    /// Roles (any of).
    pub roles: Vec<String>,
    /// Groups (any of).
    pub groups: Vec<String>,
    /// Claims that must all have these values.
    pub claims: BTreeMap<String, String>,
    /// Client-certificate subjects or SANs (any of), for service callers and devices.
    pub client_certs: Vec<String>,
    /// Any signed-in user.
    pub authenticated: bool,
    /// Methods (any of); empty = all.
    pub methods: Vec<Method>,
    /// Source networks (any of); empty = all.
    pub networks: Vec<IpNet>,
    /// Path parameter → claim whose value it must equal.
    pub bindings: BTreeMap<String, String>,
    /// The session must have used a second factor (default true).
    pub mfa: bool,
    /// Time-of-day window in UTC minutes `[start, end)`; wraps past midnight when start > end.
    pub hours: Option<(u16, u16)>,
}

/// Parses `"HH:MM-HH:MM"` into minutes of the day.
pub fn parse_hours(text: &str) -> Option<(u16, u16)> {
    let minutes = |part: &str| -> Option<u16> {
        let (h, m) = part.trim().split_once(':')?;
        let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60).then_some(h * 60 + m)
    };
    let (start, end) = text.split_once('-')?;
    let window = (minutes(start)?, minutes(end)?);
    (window.0 != window.1).then_some(window)
}

/// Who is asking, as far as policy is concerned.
#[derive(Debug, Clone, Default)]
pub struct Subject<'a> {
    /// Username, for a signed-in user.
    pub user: Option<&'a str>,
    /// Roles.
    pub roles: &'a [String],
    /// Groups.
    pub groups: &'a [String],
    /// Claims.
    pub claims: Option<&'a BTreeMap<String, String>>,
    /// Authentication methods of the session.
    pub amr: &'a [String],
    /// Verified client certificate.
    pub client_cert: Option<&'a ClientIdentity>,
}

/// The request facts rules look at.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    /// Method.
    pub method: &'a Method,
    /// Source address.
    pub source: IpAddr,
    /// Path parameters captured by the route.
    pub params: &'a [(Text, Text)],
    /// Minute of the day, UTC.
    pub minute_of_day: u16,
}

impl Facts<'_> {
    /// The UTC minute of the day at Unix time `now`.
    pub fn minute_at(now: u64) -> u16 {
        u16::try_from((now % 86_400) / 60).unwrap_or(0)
    }
}

/// A route's compiled policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    /// Allow rules in file order.
    pub allow: Vec<Rule>,
    /// Deny rules in file order.
    pub deny: Vec<Rule>,
}

/// The outcome of evaluating a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed by this rule.
    Allow {
        /// Rule id.
        rule: Text,
    },
    /// Denied.
    Deny {
        /// The deny rule that matched, if one did.
        rule: Option<Text>,
        /// Why, in words.
        reason: String,
    },
}

impl Rule {
    /// Whether every condition of the rule holds.
    pub fn matches(&self, subject: &Subject<'_>, facts: &Facts<'_>) -> bool {
        let any = |wanted: &[String], have: &[String]| {
            wanted.is_empty() || wanted.iter().any(|w| have.contains(w))
        };
        let user_ok = self.users.is_empty()
            || subject
                .user
                .is_some_and(|u| self.users.iter().any(|w| w == u));
        let cert_ok = self.client_certs.is_empty()
            || subject.client_cert.is_some_and(|cert| {
                self.client_certs.iter().any(|wanted| {
                    *wanted == cert.subject || cert.sans.iter().any(|san| san == wanted)
                })
            });
        let claims_ok = self
            .claims
            .iter()
            .all(|(key, value)| subject.claims.and_then(|c| c.get(key)) == Some(value));
        let bindings_ok = self.bindings.iter().all(|(param, claim)| {
            let captured = facts
                .params
                .iter()
                .find(|(name, _)| **name == **param)
                .map(|(_, v)| v);
            let expected = subject.claims.and_then(|c| c.get(claim));
            matches!((captured, expected), (Some(a), Some(b)) if **a == **b)
        });
        let signed_in = subject.user.is_some();
        let identity_named = !self.users.is_empty()
            || !self.roles.is_empty()
            || !self.groups.is_empty()
            || !self.claims.is_empty()
            || !self.bindings.is_empty()
            || self.authenticated;
        let mfa_ok = !self.mfa || !signed_in || crate::authn::session::two_factor(subject.amr);
        user_ok
            && cert_ok
            && claims_ok
            && bindings_ok
            && (!identity_named || signed_in)
            && any(&self.roles, subject.roles)
            && any(&self.groups, subject.groups)
            && mfa_ok
            && (self.methods.is_empty() || self.methods.contains(facts.method))
            && (self.networks.is_empty()
                || self.networks.iter().any(|net| net.contains(&facts.source)))
            && self.hours.is_none_or(|(start, end)| {
                let minute = facts.minute_of_day;
                if start < end {
                    (start..end).contains(&minute)
                } else {
                    minute >= start || minute < end
                }
            })
    }
}

impl Policy {
    /// Default deny; a matching deny rule wins over any allow.
    pub fn decide(&self, subject: &Subject<'_>, facts: &Facts<'_>) -> Decision {
        if let Some(rule) = self.deny.iter().find(|rule| rule.matches(subject, facts)) {
            return Decision::Deny {
                rule: Some(Text::clone(&rule.id)),
                reason: format!("denied by rule {}", rule.id),
            };
        }
        match self.allow.iter().find(|rule| rule.matches(subject, facts)) {
            Some(rule) => Decision::Allow {
                rule: Text::clone(&rule.id),
            },
            None => Decision::Deny {
                rule: None,
                reason: "no allow rule matches".into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_windows_parse_and_wrap_midnight() {
        assert_eq!(parse_hours("08:00-18:00"), Some((480, 1080)));
        assert_eq!(parse_hours("22:00-06:30"), Some((1320, 390)));
        for bad in ["8-18", "25:00-01:00", "08:00-08:00", "08:60-09:00", ""] {
            assert_eq!(parse_hours(bad), None, "{bad}");
        }
        let night = Rule {
            id: "r".into(),
            authenticated: true,
            hours: parse_hours("22:00-06:00"),
            ..Rule::default()
        };
        let subject = Subject {
            user: Some("u"),
            ..Subject::default()
        };
        let at = |minute| Facts {
            method: &Method::GET,
            source: IpAddr::from([127, 0, 0, 1]),
            params: &[],
            minute_of_day: minute,
        };
        assert!(night.matches(&subject, &at(23 * 60)));
        assert!(night.matches(&subject, &at(5 * 60)));
        assert!(!night.matches(&subject, &at(12 * 60)));
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn deny_wins_bindings_hold_and_default_is_deny() {
        let patient_rule = Rule {
            id: "records/allow[1]".into(),
            roles: strings(&["patient"]),
            bindings: [("patient_id".to_string(), "patient_id".to_string())].into(),
            mfa: true,
            ..Rule::default()
        };
        let clinician_rule = Rule {
            id: "records/allow[0]".into(),
            roles: strings(&["clinician"]),
            mfa: true,
            ..Rule::default()
        };
        let deny_interns = Rule {
            id: "records/deny[0]".into(),
            groups: strings(&["interns"]),
            mfa: true,
            ..Rule::default()
        };
        let policy = Policy {
            allow: vec![clinician_rule, patient_rule],
            deny: vec![deny_interns],
        };
        let claims: BTreeMap<String, String> = [("patient_id".to_string(), "7".to_string())].into();
        let amr = strings(&["pwd", "otp"]);
        let patient_roles = strings(&["patient"]);
        let clinician_roles = strings(&["clinician"]);
        let interns = strings(&["interns"]);
        let patient = Subject {
            user: Some("pat"),
            roles: &patient_roles,
            claims: Some(&claims),
            amr: &amr,
            ..Subject::default()
        };
        let own = [(Text::from("patient_id"), Text::from("7"))];
        let other = [(Text::from("patient_id"), Text::from("8"))];
        let facts = |params: &'static [(Text, Text)]| Facts {
            method: &Method::GET,
            source: IpAddr::from([127, 0, 0, 1]),
            params,
            minute_of_day: 600,
        };
        let own: &'static [(Text, Text)] = Box::leak(Box::new(own));
        let other: &'static [(Text, Text)] = Box::leak(Box::new(other));
        assert_eq!(
            policy.decide(&patient, &facts(own)),
            Decision::Allow {
                rule: "records/allow[1]".into()
            }
        );
        assert!(matches!(
            policy.decide(&patient, &facts(other)),
            Decision::Deny { rule: None, .. }
        ));
        let clinician = Subject {
            user: Some("doc"),
            roles: &clinician_roles,
            amr: &amr,
            ..Subject::default()
        };
        assert_eq!(
            policy.decide(&clinician, &facts(other)),
            Decision::Allow {
                rule: "records/allow[0]".into()
            }
        );
        let intern = Subject {
            user: Some("int"),
            roles: &clinician_roles,
            groups: &interns,
            amr: &amr,
            ..Subject::default()
        };
        assert_eq!(
            policy.decide(&intern, &facts(own)),
            Decision::Deny {
                rule: Some("records/deny[0]".into()),
                reason: "denied by rule records/deny[0]".into()
            }
        );
        let anonymous = Subject::default();
        assert!(matches!(
            policy.decide(&anonymous, &facts(own)),
            Decision::Deny { .. }
        ));
    }
}
