//! Condition types and reasons: the words operators read in `kubectl get` and `kubectl wait`.
//! Every reason the operator writes is a constant here.

/// Condition types.
pub mod types {
    // ActivationRequest
    pub const VALIDATED: &str = "Validated";
    pub const APPROVED: &str = "Approved";
    pub const ACTIVE: &str = "Active";
    /// True once the request is finished and grants nothing any more, whatever the cause.
    pub const EXPIRED: &str = "Expired";
    // PimGroup and AccessPolicy
    pub const READY: &str = "Ready";
    pub const IN_SYNC: &str = "InSync";
    /// PimGroup with a managed owner role, on a directory that keeps a group's last owner:
    /// False while no owner but just-in-time ones is in the group.
    pub const OWNERS_REMOVABLE: &str = "OwnersRemovable";
    // EligibleAssignment
    pub const VALID: &str = "Valid";
    pub const EFFECTIVE: &str = "Effective";
    // AccessPolicy: whether the MFA it asks for can be seen at all.
    pub const MFA_CLAIM: &str = "MfaClaim";
    // Alerts of the policy's `alerts` (also the reason when True).
    /// ActivationRequest: the activation that reached `alerts.activatedTooOften`.
    pub const ACTIVATED_TOO_OFTEN: &str = "ActivatedTooOften";
    /// ActivationRequest: activated with no approval under a policy with `alerts.critical`.
    pub const ACTIVATED_WITHOUT_APPROVAL: &str = "ActivatedWithoutApproval";
    /// EligibleAssignment: not activated for `alerts.notActivatedFor`.
    pub const STALE: &str = "Stale";
    // AccessReview (also `Valid`).
    /// True while an instance takes decisions.
    pub const IN_PROGRESS: &str = "InProgress";
}

/// Condition reasons (CamelCase, as Kubernetes API conventions ask).
pub mod reasons {
    // The MfaClaim condition of an AccessPolicy.
    pub const MFA_NOT_REQUIRED: &str = "MfaNotRequired";
    pub const MFA_CLAIM_CONFIGURED: &str = "MfaClaimConfigured";
    pub const MFA_CLAIM_NOT_CONFIGURED: &str = "MfaClaimNotConfigured";
    // Validation of a request.
    pub const VALID: &str = "Valid";
    pub const AWAITING_VALIDATION: &str = "AwaitingValidation";
    pub const JUSTIFICATION_REQUIRED: &str = "JustificationRequired";
    pub const TICKET_REQUIRED: &str = "TicketRequired";
    pub const MFA_REQUIRED: &str = "MfaRequired";
    /// The sign-in lacks a claim the policy requires, or is too old.
    pub const AUTHENTICATION_REQUIREMENTS_NOT_MET: &str = "AuthenticationRequirementsNotMet";
    pub const INVALID_DURATION: &str = "InvalidDuration";
    pub const DURATION_EXCEEDS_MAXIMUM: &str = "DurationExceedsMaximum";
    pub const INVALID_START_TIME: &str = "InvalidStartTime";
    pub const NOT_ELIGIBLE: &str = "NotEligible";
    pub const PRINCIPAL_MISSING: &str = "PrincipalMissing";
    pub const UNVERIFIED_REQUESTER: &str = "UnverifiedRequester";
    /// The stamped principal is not what the requester's username maps to in the group's
    /// directory now (the mapping or the group's directory changed since admission).
    pub const PRINCIPAL_MISMATCH: &str = "PrincipalMismatch";
    /// Some approval entries carry no valid webhook signature; they count for nothing.
    pub const UNVERIFIED_APPROVAL: &str = "UnverifiedApproval";
    pub const ATTESTATION_KEY_MISSING: &str = "AttestationKeyMissing";
    pub const GROUP_NOT_FOUND: &str = "GroupNotFound";
    pub const POLICY_NOT_FOUND: &str = "PolicyNotFound";
    pub const ROLE_NOT_MANAGED: &str = "RoleNotManaged";
    pub const INVALID_POLICY: &str = "InvalidPolicy";

    // Approval.
    pub const APPROVAL_NOT_REQUIRED: &str = "ApprovalNotRequired";
    pub const WAITING_FOR_APPROVAL: &str = "WaitingForApproval";
    pub const APPROVED: &str = "Approved";
    pub const DENIED: &str = "Denied";
    pub const TIMED_OUT: &str = "TimedOut";

    // Activation.
    pub const SCHEDULED: &str = "Scheduled";
    pub const PROVISIONING: &str = "Provisioning";
    pub const ACTIVE: &str = "Active";
    pub const NOT_STARTED: &str = "NotStarted";
    pub const EXPIRED: &str = "Expired";
    pub const DEACTIVATED: &str = "Deactivated";
    /// The ActivationRequest was deleted before it ended.
    pub const DELETED: &str = "Deleted";
    pub const REJECTED: &str = "Rejected";
    pub const ELIGIBILITY_ENDED: &str = "EligibilityEnded";
    pub const POLICY_REMOVED: &str = "PolicyRemoved";
    pub const GROUP_REMOVED: &str = "GroupRemoved";
    pub const REVOCATION_OVERDUE: &str = "RevocationOverdue";
    /// The access has ended; the directory has not confirmed the removal yet.
    pub const REVOCATION_PENDING: &str = "RevocationPending";
    /// The stored status claims an approval the signed approvals do not prove.
    pub const APPROVAL_NOT_PROVEN: &str = "ApprovalNotProven";
    pub const DIRECTORY_FAILED: &str = "DirectoryFailed";
    pub const IN_PROGRESS: &str = "InProgress";

    // Extensions (`spec.extends`).
    /// The window ended, and an extension holds the access on.
    pub const EXTENDED: &str = "Extended";
    /// The request an extension names is not running (never granted, ended early, gone), or is
    /// for someone or something else.
    pub const EXTENDED_REQUEST_NOT_RUNNING: &str = "ExtendedRequestNotRunning";
    /// The extension would add nothing: the original already runs to the policy's maximum from
    /// its start (and the policy does not allow renewal), or to the eligibility's end.
    pub const EXTENSION_BEYOND_MAXIMUM: &str = "ExtensionBeyondMaximum";

    // Assignments.
    pub const EXCEEDS_POLICY: &str = "ExceedsPolicy";
    pub const INVALID_SCHEDULE: &str = "InvalidSchedule";
    pub const INVALID_PRINCIPAL: &str = "InvalidPrincipal";
    pub const NOT_YET_STARTED: &str = "NotYetStarted";
    pub const WITHIN_SCHEDULE: &str = "WithinSchedule";
    pub const SCHEDULE_ENDED: &str = "ScheduleEnded";
    /// `Stale=False`: activated (or in effect) within `alerts.notActivatedFor`.
    pub const ACTIVATED_RECENTLY: &str = "ActivatedRecently";
    /// `Effective=False`: an access review denied the assignment; remove its manifest.
    pub const REVIEW_DENIED: &str = "ReviewDenied";

    // AccessReview.
    pub const TAKING_DECISIONS: &str = "TakingDecisions";
    pub const NOT_RUNNING: &str = "NotRunning";
    /// `Valid=True`, but some decisions carry no valid signature and are ignored.
    pub const UNVERIFIED_DECISIONS: &str = "UnverifiedDecisions";
    /// `Valid=True`, but more assignments are in scope than one instance reviews.
    pub const SCOPE_TOO_LARGE: &str = "ScopeTooLarge";

    // PimGroup.
    pub const GROUP_RESOLVED: &str = "GroupResolved";
    pub const DIRECTORY_NOT_CONFIGURED: &str = "DirectoryNotConfigured";
    pub const DIRECTORY_ERROR: &str = "DirectoryError";
    pub const CONVERGED: &str = "Converged";
    pub const UNEXPLAINED_MEMBERS: &str = "UnexplainedMembers";
    /// `standingAccess: Adopt` keeps members no grant explains, listed for review.
    pub const ADOPTING: &str = "Adopting";
    /// `protectLastMember` keeps a role's last member although no grant explains it.
    pub const LAST_MEMBER_KEPT: &str = "LastMemberKept";
    pub const CONVERGING: &str = "Converging";
    pub const LAST_OWNER_KEPT: &str = "LastOwnerKept";
    pub const ANOTHER_OWNER_STAYS: &str = "AnotherOwnerStays";
    pub const NO_LAST_OWNER_KEPT: &str = "NoLastOwnerKept";

    // Any kind: the object does not decode into its type (a webhook bypassed, a schema change).
    pub const MALFORMED: &str = "Malformed";

    /// The reasons an ActivationRequest's conditions carry, so that a stored one can be mapped
    /// back to its constant ([`request_reason`]).
    pub const REQUEST_REASONS: &[&str] = &[
        VALID,
        AWAITING_VALIDATION,
        JUSTIFICATION_REQUIRED,
        TICKET_REQUIRED,
        MFA_REQUIRED,
        AUTHENTICATION_REQUIREMENTS_NOT_MET,
        INVALID_DURATION,
        DURATION_EXCEEDS_MAXIMUM,
        INVALID_START_TIME,
        NOT_ELIGIBLE,
        PRINCIPAL_MISSING,
        UNVERIFIED_REQUESTER,
        PRINCIPAL_MISMATCH,
        UNVERIFIED_APPROVAL,
        ATTESTATION_KEY_MISSING,
        GROUP_NOT_FOUND,
        POLICY_NOT_FOUND,
        ROLE_NOT_MANAGED,
        INVALID_POLICY,
        APPROVAL_NOT_REQUIRED,
        WAITING_FOR_APPROVAL,
        APPROVED,
        DENIED,
        TIMED_OUT,
        SCHEDULED,
        PROVISIONING,
        ACTIVE,
        NOT_STARTED,
        EXPIRED,
        DEACTIVATED,
        DELETED,
        REJECTED,
        ELIGIBILITY_ENDED,
        POLICY_REMOVED,
        GROUP_REMOVED,
        REVOCATION_OVERDUE,
        REVOCATION_PENDING,
        APPROVAL_NOT_PROVEN,
        DIRECTORY_FAILED,
        IN_PROGRESS,
        EXTENDED,
        EXTENDED_REQUEST_NOT_RUNNING,
        EXTENSION_BEYOND_MAXIMUM,
    ];

    /// A stored request reason as our constant; `None` for one we never write.
    pub fn request_reason(stored: &str) -> Option<&'static str> {
        REQUEST_REASONS.iter().copied().find(|r| *r == stored)
    }
}

/// Reasons of the Events the operator records beside the conditions (a phase's reason is the
/// condition's).
pub mod event_reasons {
    /// The directory refused to remove a member whose access ended.
    pub const REVOCATION_REFUSED: &str = "RevocationRefused";
    /// A request's stored status claims more than its signed inputs prove.
    pub const STATUS_NOT_PROVEN: &str = "StatusNotProven";
}

#[cfg(test)]
mod tests {
    use super::reasons;

    /// Every request reason the operator writes maps back to itself, so a finished request
    /// keeps its reason (issue 22: the list used to live apart from the constants and missed
    /// two).
    #[test]
    fn every_request_reason_maps_back() {
        for reason in [
            reasons::AUTHENTICATION_REQUIREMENTS_NOT_MET,
            reasons::DELETED,
            reasons::PRINCIPAL_MISMATCH,
            reasons::EXPIRED,
        ] {
            assert_eq!(reasons::request_reason(reason), Some(reason));
        }
        assert_eq!(reasons::request_reason("SomethingElse"), None);
        let mut sorted = reasons::REQUEST_REASONS.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            reasons::REQUEST_REASONS.len(),
            "no reason twice"
        );
    }
}
