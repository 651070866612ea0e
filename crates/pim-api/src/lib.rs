//! The PIM resources (five written by people, and the operator's grant ledger) in `pim.dev/v1alpha1`, and the CRDs generated from them.

// kube's `printcolumn(name = .., type_ = ..)` repeats keys across columns, which clippy
// mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
pub mod access_policy;
#[allow(clippy::duplicated_attributes)]
pub mod access_review;
#[allow(clippy::duplicated_attributes)]
pub mod activation_request;
pub mod cel;
pub mod common;
pub mod conditions;
pub mod crd;
pub mod delivery;
#[allow(clippy::duplicated_attributes)]
pub mod eligible_assignment;
#[allow(clippy::duplicated_attributes)]
pub mod pim_grant;
#[allow(clippy::duplicated_attributes)]
pub mod pim_group;

pub use access_policy::{AccessPolicy, AccessPolicySpec, AccessPolicyStatus};
pub use access_review::{AccessReview, AccessReviewSpec, AccessReviewStatus};
pub use activation_request::{
    ActivationRequest, ActivationRequestSpec, ActivationRequestStatus, Phase,
};
pub use common::{Principal, PrincipalRef, Role};
pub use eligible_assignment::{
    EligibleAssignment, EligibleAssignmentSpec, EligibleAssignmentStatus,
};
pub use pim_grant::{PimGrant, PimGrantSpec};
pub use pim_group::{PimGroup, PimGroupSpec, PimGroupStatus};
