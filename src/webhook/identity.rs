//! Who is calling, as the API server authenticated them (`AdmissionRequest.userInfo`).

use k8s_openapi::api::authentication::v1::UserInfo;

use super::config::MfaClaim;
use crate::config::UsernameMapping;

/// The authenticated caller of one admission request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub username: String,
    pub uid: Option<String>,
    pub groups: Vec<String>,
    /// `claim=value` when the caller's credentials carry MFA evidence.
    pub mfa: Option<String>,
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
        Ok(Caller {
            username: username.to_owned(),
            uid: user.uid.clone().filter(|u| !u.is_empty()),
            groups: user.groups.clone().unwrap_or_default(),
            mfa: evidence,
        })
    }

    /// The directory principal this caller acts as.
    pub fn principal(&self, mapping: &UsernameMapping) -> String {
        mapping.principal_for(&self.username)
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn usernames_map_to_principals() {
        let mapping = UsernameMapping {
            strip_prefix: Some("oidc:".into()),
            append_domain: Some("@contoso.com".into()),
        };
        let caller =
            Caller::from_user_info(&user("oidc:alice", &[]), &MfaClaim::default()).unwrap();
        assert_eq!(caller.principal(&mapping), "alice@contoso.com");
    }
}
