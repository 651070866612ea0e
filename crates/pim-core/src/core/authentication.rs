//! A policy's authentication requirements beyond MFA (an authentication context such as
//! Entra's `acrs` containing `c1`, and how recent the sign-in must be), and whether what the
//! admission webhook saw of a caller's credentials meets them. The webhook checks the caller's
//! own `userInfo.extra`; the controller checks the evidence the webhook signed.

use jiff::{SignedDuration, Timestamp};

use super::duration;
use crate::api::access_policy::ClaimRequirement;
use crate::api::activation_request::Authentication;

/// How far after the moment of acting a sign-in time may lie (clocks differ a little).
const FUTURE_SKEW: SignedDuration = SignedDuration::from_mins(5);

/// What a policy asks of a requester's or an approver's credentials.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Requirements {
    pub claims: Vec<ClaimRequirement>,
    /// How long before acting the caller may have signed in.
    pub max_age: Option<SignedDuration>,
}

impl Requirements {
    pub fn is_empty(&self) -> bool {
        self.claims.is_empty() && self.max_age.is_none()
    }

    /// The evidence to stamp for a caller whose `userInfo.extra` value for a key is given by
    /// `extra`: the first accepted value of each required claim, as `key=value`.
    pub fn evidence<'a>(
        &self,
        extra: impl Fn(&str) -> &'a [String],
        authenticated_at: Option<Timestamp>,
    ) -> Authentication {
        let claims = self
            .claims
            .iter()
            .filter_map(|r| {
                extra(&r.key)
                    .iter()
                    .find(|v| r.values.contains(v))
                    .map(|v| format!("{}={v}", r.key))
            })
            .collect();
        Authentication {
            claims,
            authenticated_at: authenticated_at
                .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time),
        }
    }

    /// What `evidence`, seen when the caller acted at `acted`, lacks; empty when it meets
    /// every requirement.
    pub fn unmet(&self, evidence: &Authentication, acted: Timestamp) -> Vec<String> {
        let mut out = Vec::new();
        for r in &self.claims {
            // Compared whole, never split: a `=` in a key or value cannot shift the boundary.
            let carried = r
                .values
                .iter()
                .any(|v| evidence.claims.contains(&format!("{}={v}", r.key)));
            if !carried {
                out.push(format!(
                    "userInfo.extra[{:?}] must hold one of {:?}",
                    r.key, r.values
                ));
            }
        }
        if let Some(max) = self.max_age {
            match evidence.authenticated_at.as_ref().map(|t| t.0) {
                None => out.push(format!(
                    "a sign-in within {} is required, and the credentials carry no sign-in time that could be read (the userInfo.extra key webhook.authTimeClaim names, in Unix seconds)",
                    duration::format(max)
                )),
                Some(at) if acted.duration_since(at) > max => out.push(format!(
                    "the sign-in at {at} is more than {} before {acted}",
                    duration::format(max)
                )),
                Some(at) if at.duration_since(acted) > FUTURE_SKEW => out.push(format!(
                    "the sign-in at {at} lies after {acted}: a clock or a claim is wrong"
                )),
                Some(_) => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn acrs_c1_fresh() -> Requirements {
        Requirements {
            claims: vec![ClaimRequirement {
                key: "pim.dev/acrs".into(),
                values: vec!["c1".into()],
            }],
            max_age: Some(SignedDuration::from_mins(15)),
        }
    }

    #[test]
    fn evidence_meets_requirements_only_with_the_claim_and_a_recent_sign_in() {
        let reqs = acrs_c1_fresh();
        let with = vec!["c2".to_owned(), "c1".to_owned()];
        let none: Vec<String> = Vec::new();
        let signed_in = t("2026-11-22T09:50:00Z");
        let ok = reqs.evidence(
            |k| if k == "pim.dev/acrs" { &with } else { &none },
            Some(signed_in),
        );
        assert_eq!(ok.claims, ["pim.dev/acrs=c1"]);
        assert!(reqs.unmet(&ok, t("2026-11-22T10:00:00Z")).is_empty());
        // Too long after the sign-in.
        let late = reqs.unmet(&ok, t("2026-11-22T10:06:00Z"));
        assert_eq!(late.len(), 1, "{late:?}");
        assert!(late[0].contains("more than 15m"), "{late:?}");
        // Without the claim, and without a sign-in time.
        let bare = reqs.evidence(|_| &none, None);
        let unmet = reqs.unmet(&bare, t("2026-11-22T10:00:00Z"));
        assert_eq!(unmet.len(), 2, "{unmet:?}");
        assert!(unmet[0].contains("pim.dev/acrs"), "{unmet:?}");
        assert!(unmet[1].contains("webhook.authTimeClaim"), "{unmet:?}");
        // A claim written with another key or value does not count.
        let forged = Authentication {
            claims: vec!["pim.dev/acrs=c2".into(), "other=c1".into()],
            authenticated_at: ok.authenticated_at.clone(),
        };
        assert_eq!(reqs.unmet(&forged, t("2026-11-22T10:00:00Z")).len(), 1);
        assert!(
            Requirements::default()
                .unmet(&bare, t("2026-11-22T10:00:00Z"))
                .is_empty()
        );
        // A sign-in in the future is a wrong clock or a wrong claim, not a fresh sign-in.
        let future = reqs.evidence(
            |k| if k == "pim.dev/acrs" { &with } else { &none },
            Some(t("2026-11-22T11:00:00Z")),
        );
        let unmet = reqs.unmet(&future, t("2026-11-22T10:00:00Z"));
        assert!(unmet[0].contains("lies after"), "{unmet:?}");
    }
}
