//! Reconciliation without I/O. Given a snapshot of our objects and what the directory reported,
//! it decides each request's status and each group's membership changes. The controller wraps it
//! with the Kubernetes API and a directory; `simulate` runs it on virtual time.

pub mod alerts;
pub mod attestation;
pub mod catalog;
pub mod group;
pub mod request;
pub mod review;

pub use attestation::{Attestor, SignedAttestor, TrustAsWritten};
pub use catalog::{Catalog, Proof, ResolvedTarget, stamped_groups};
pub use group::{GroupOutcome, LedgerOutcome, plan_with_ledger, reconcile_group};
pub use request::{DirectoryObservation, RequestOutcome, proven_request_grant, reconcile_request};

#[cfg(test)]
mod tests;
