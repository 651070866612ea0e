//! What can go wrong in `kubectl pim`, each with a message that says what to do next.

use kube::core::Status;

use crate::api::Phase;
use crate::audit::export::AuditError;

/// Exit code of a successful command.
pub const EXIT_OK: u8 = 0;
/// Exit code of a failed command, or of a request that ended without access (`--wait`).
pub const EXIT_FAILED: u8 = 1;
/// Exit code of a command line that does not parse.
pub const EXIT_USAGE: u8 = 2;
/// Exit code of `activate --wait` when the timeout passes first; the request carries on.
pub const EXIT_TIMEOUT: u8 = 3;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line does not parse; the text is clap's, with usage.
    #[error("{0}")]
    Usage(String),
    #[error("cannot connect to the cluster: {0}\nCheck KUBECONFIG, --kubeconfig or --context.")]
    Connect(String),
    #[error(
        "cannot learn who you are from the SelfSubjectReview API (authentication.k8s.io/v1, \
         Kubernetes 1.28 or later): {0}"
    )]
    Identity(String),
    /// A call to the API server failed; the text is built by [`describe_api_error`].
    #[error("{0}")]
    Api(String),
    #[error(
        "there is no ActivationRequest named {0:?}.\n`kubectl pim status` lists your requests; \
         `kubectl pim pending` lists the ones waiting for you."
    )]
    NotFound(String),
    /// Something the user asked for cannot work; checked before anything is written.
    #[error("{0}")]
    Invalid(String),
    /// The caller holds no assignment that lets them activate; the text lists what they hold.
    #[error("{0}")]
    NotEligible(String),
    #[error(
        "you already decided on {name}: {decision}{at}. A recorded decision cannot be changed; \
         if it was a mistake, ask the requester to withdraw the request (kubectl pim deactivate) \
         and create a new one."
    )]
    AlreadyDecided {
        name: String,
        decision: String,
        at: String,
    },
    #[error(
        "{name} has already ended ({phase}); nothing can change it now. A new elevation is a new \
         request: kubectl pim activate GROUP ..."
    )]
    Finished { name: String, phase: Phase },
    #[error(
        "{name} was requested by {requester:?}, not by you ({you:?}); only the requester can end \
         it early."
    )]
    NotYours {
        name: String,
        requester: String,
        you: String,
    },
    #[error("{name} ended {phase}{detail}")]
    RequestEnded {
        name: String,
        phase: Phase,
        /// `: Reason: message`, or empty.
        detail: String,
    },
    #[error("{name} was deleted while waiting for it")]
    Deleted { name: String },
    #[error(
        "gave up waiting after {timeout}: {name} is still {phase}. It carries on without you; \
         follow it with `kubectl pim status {name}`, or wait longer with --timeout."
    )]
    WaitTimeout {
        name: String,
        phase: String,
        timeout: String,
    },
    #[error("audit export: {0}")]
    Audit(#[from] AuditError),
    #[error("cannot write the output: {0}")]
    Io(#[from] std::io::Error),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => EXIT_USAGE,
            CliError::WaitTimeout { .. } => EXIT_TIMEOUT,
            _ => EXIT_FAILED,
        }
    }

    /// A failed API call, described for a person: `action` is what we tried, e.g.
    /// "create the ActivationRequest".
    pub fn api(action: &str, error: kube::Error) -> CliError {
        CliError::Api(describe_api_error(action, &error))
    }
}

/// The status the API server answered with, if the error is one.
pub fn api_status(error: &kube::Error) -> Option<&Status> {
    match error {
        kube::Error::Api(status) => Some(status),
        _ => None,
    }
}

pub fn is_forbidden(error: &kube::Error) -> bool {
    api_status(error).is_some_and(|s| s.is_forbidden())
}

pub fn is_not_found(error: &kube::Error) -> bool {
    api_status(error).is_some_and(|s| s.is_not_found())
}

/// What the API server said, in a form that names the refused field and rule and what to do.
/// An admission webhook's denial ("admission webhook ... denied the request: FIELD: RULE") is
/// printed as is, on its own line.
pub fn describe_api_error(action: &str, error: &kube::Error) -> String {
    let Some(status) = api_status(error) else {
        return format!(
            "cannot {action}: {error}\nIs the cluster reachable? Check KUBECONFIG or --context."
        );
    };
    let mut text = String::new();
    let message = status.message.trim();
    if message.contains("admission webhook") {
        text.push_str(&format!(
            "the admission webhook refused to {action}:\n  {message}"
        ));
    } else if status.is_forbidden() {
        text.push_str(&format!(
            "the API server refused to {action} (403 Forbidden):\n  {message}\nIf this is \
             RBAC, ask your platform team for the pim-requester (or, to decide, pim-approver) \
             ClusterRole."
        ));
    } else {
        let code = match status.code {
            0 => String::new(),
            code => format!(" ({code} {})", status.reason),
        };
        text.push_str(&format!(
            "the API server refused to {action}{code}:\n  {message}"
        ));
    }
    if let Some(details) = &status.details {
        for cause in &details.causes {
            if !cause.message.is_empty() && !message.contains(cause.message.as_str()) {
                text.push_str(&format!("\n  {}: {}", cause.field, cause.message));
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_denial_is_shown_as_the_server_said_it() {
        let status = Status::failure(
            "admission webhook \"activationrequests.pim.dev\" denied the request: \
             spec.approvals[approver=bob]: you cannot approve or deny your own request",
            "Forbidden",
        )
        .with_code(403);
        let text = describe_api_error("approve r", &kube::Error::Api(Box::new(status)));
        assert_eq!(
            text,
            "the admission webhook refused to approve r:\n  admission webhook \
             \"activationrequests.pim.dev\" denied the request: spec.approvals[approver=bob]: \
             you cannot approve or deny your own request"
        );

        let rbac =
            Status::failure("activationrequests.pim.dev is forbidden", "Forbidden").with_code(403);
        let text = describe_api_error("create", &kube::Error::Api(Box::new(rbac)));
        assert!(
            text.contains("403 Forbidden") && text.contains("pim-requester"),
            "{text}"
        );
    }
}
