//! Who is calling, as the API server authenticated them (`AdmissionRequest.userInfo`), and who
//! the operator itself is (SelfSubjectReview).

use std::time::Duration;

use k8s_openapi::api::authentication::v1::{SelfSubjectReview, UserInfo};
use kube::api::{Api, PostParams};

use super::config::MfaClaim;

/// The authenticated caller of one admission request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub username: String,
    pub uid: Option<String>,
    pub groups: Vec<String>,
    /// `claim=value` when the caller's credentials carry MFA evidence.
    pub mfa: Option<String>,
    /// `userInfo.extra`, for the policies' required claims.
    pub extra: std::collections::BTreeMap<String, Vec<String>>,
    /// When the caller signed in, from the configured `webhook.authTimeClaim`.
    pub authenticated_at: Option<jiff::Timestamp>,
}

/// Why a caller may not act on ActivationRequests at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallerError {
    #[error("the request carries no authenticated username")]
    Anonymous,
    #[error(
        "{0:?} is a service account or system identity; activation requests and approvals are made by people, with their own credentials"
    )]
    NotAPerson(String),
}

impl Caller {
    pub fn from_user_info(user: &UserInfo, mfa: &MfaClaim) -> Result<Caller, CallerError> {
        Caller::from_user_info_with(user, mfa, None)
    }

    /// As [`Caller::from_user_info`], reading the sign-in time from `auth_time_key`: Unix
    /// seconds, as OIDC's `auth_time` is. A value that is not one is ignored (no sign-in time).
    pub fn from_user_info_with(
        user: &UserInfo,
        mfa: &MfaClaim,
        auth_time_key: Option<&str>,
    ) -> Result<Caller, CallerError> {
        let username = user
            .username
            .as_deref()
            .filter(|u| !u.is_empty())
            .ok_or(CallerError::Anonymous)?;
        if username == "system:anonymous" {
            return Err(CallerError::Anonymous);
        }
        if username.starts_with("system:") {
            return Err(CallerError::NotAPerson(username.to_owned()));
        }
        let evidence = user
            .extra
            .as_ref()
            .and_then(|extra| extra.get(&mfa.key))
            .and_then(|values| values.iter().find(|v| mfa.values.contains(v)))
            .map(|v| format!("{}={v}", mfa.key));
        let extra: std::collections::BTreeMap<String, Vec<String>> =
            user.extra.clone().unwrap_or_default().into_iter().collect();
        let authenticated_at = auth_time_key
            .and_then(|key| extra.get(key))
            .and_then(|values| values.first())
            .and_then(|v| unix_seconds(v.trim()))
            .and_then(|seconds| jiff::Timestamp::from_second(seconds).ok());
        Ok(Caller {
            username: username.to_owned(),
            uid: user.uid.clone().filter(|u| !u.is_empty()),
            groups: user.groups.clone().unwrap_or_default(),
            mfa: evidence,
            extra,
            authenticated_at,
        })
    }
}

/// Unix seconds as a claim mapping may render them: `1732000123`, or `1.732000123e+09` when a
/// CEL `string()` was applied to the JSON number (the API server decodes numbers as doubles).
fn unix_seconds(text: &str) -> Option<i64> {
    text.parse::<i64>().ok().or_else(|| {
        text.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite() && f.abs() < 1e15)
            .map(|f| f.floor() as i64)
    })
}

/// The operator could not learn its own username; it does not start without it.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot learn the operator's own username from the SelfSubjectReview API (authentication.k8s.io/v1, Kubernetes 1.28 or later; needs `create` on selfsubjectreviews, which the built-in system:basic-user role grants): {0}. The admission webhook lets only that username move the {finalizer} finalizer, so the operator does not start without it",
    finalizer = crate::api::activation_request::FINALIZER
)]
pub struct OperatorIdentityError(String);

/// Attempts at the SelfSubjectReview before giving up, with the wait doubling from the first.
const IDENTITY_ATTEMPTS: u32 = 5;
const IDENTITY_FIRST_WAIT: Duration = Duration::from_millis(250);

/// The username the API server authenticates the operator's own credentials as (the pod's
/// service account in a cluster, the kubeconfig user outside one), from the SelfSubjectReview
/// API. Transient failures are retried with backoff; a refusal (4xx other than 429) is final.
/// There is no fallback: without an answer the webhook could not tell the operator's finalizer
/// writes from anyone else's.
pub async fn operator_username(client: &kube::Client) -> Result<String, OperatorIdentityError> {
    let api: Api<SelfSubjectReview> = Api::all(client.clone());
    let mut wait = IDENTITY_FIRST_WAIT;
    let mut attempt = 1;
    let review = loop {
        match api
            .create(&PostParams::default(), &SelfSubjectReview::default())
            .await
        {
            Ok(review) => break review,
            Err(e) => {
                let refused = matches!(&e, kube::Error::Api(s) if (400..500).contains(&s.code) && s.code != 429);
                if refused || attempt >= IDENTITY_ATTEMPTS {
                    return Err(OperatorIdentityError(format!(
                        "{e} (after {attempt} attempt{})",
                        if attempt == 1 { "" } else { "s" }
                    )));
                }
                tracing::warn!(error = %e, attempt, "cannot ask the API server who the operator is yet; retrying");
                tokio::time::sleep(wait).await;
                wait *= 2;
                attempt += 1;
            }
        }
    };
    review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| OperatorIdentityError("the answer carries no username".to_owned()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn sign_in_times_are_read_as_integers_or_as_cel_renders_doubles() {
        assert_eq!(unix_seconds("1732000123"), Some(1_732_000_123));
        assert_eq!(unix_seconds("1.732000123e+09"), Some(1_732_000_123));
        assert_eq!(unix_seconds("soon"), None);
        assert_eq!(unix_seconds("inf"), None);
    }

    use std::collections::BTreeMap;

    use super::*;

    fn user(name: &str, extra: &[(&str, &[&str])]) -> UserInfo {
        UserInfo {
            username: Some(name.into()),
            uid: Some("u1".into()),
            groups: Some(vec!["devs".into()]),
            extra: Some(
                extra
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                    .collect::<BTreeMap<_, _>>(),
            ),
        }
    }

    #[test]
    fn people_pass_and_machines_do_not() {
        let mfa = MfaClaim::default();
        let caller = Caller::from_user_info(&user("oidc:alice", &[]), &mfa).unwrap();
        assert_eq!(caller.username, "oidc:alice");
        assert_eq!(caller.mfa, None);
        for name in [
            "system:serviceaccount:ci:deployer",
            "system:node:n1",
            "system:admin",
        ] {
            assert_eq!(
                Caller::from_user_info(&user(name, &[]), &mfa),
                Err(CallerError::NotAPerson(name.into()))
            );
        }
        assert_eq!(
            Caller::from_user_info(&user("", &[]), &mfa),
            Err(CallerError::Anonymous)
        );
        assert_eq!(
            Caller::from_user_info(&user("system:anonymous", &[]), &mfa),
            Err(CallerError::Anonymous)
        );
    }

    #[test]
    fn mfa_evidence_needs_the_configured_claim_and_value() {
        let mfa = MfaClaim::default();
        let with = |extra: &[(&str, &[&str])]| {
            Caller::from_user_info(&user("alice", extra), &mfa)
                .unwrap()
                .mfa
        };
        assert_eq!(with(&[("amr", &["pwd", "mfa"])]), Some("amr=mfa".into()));
        assert_eq!(with(&[("amr", &["pwd"])]), None);
        assert_eq!(with(&[("acrs", &["mfa"])]), None);
        let acrs = MfaClaim {
            key: "acrs".into(),
            values: vec!["c1".into()],
        };
        let caller = Caller::from_user_info(&user("alice", &[("acrs", &["c1"])]), &acrs).unwrap();
        assert_eq!(caller.mfa, Some("acrs=c1".into()));
    }
}
