//! pim-operator's pure core (issue 22): no kube client, no tokio, no network; time is an
//! argument.
//!
//! - [`core`]: durations, policy evaluation, the request state machine, desired membership;
//! - [`engine`]: one pass over a request or a group, from a snapshot of the objects;
//! - [`checks`]: what `pim-operator validate` and the admission webhook check;
//! - [`attestation`]: the webhook's signatures and their verification.

/// The resources, as `crate::api` for the modules here.
pub use pim_api as api;

pub mod attestation;
pub mod checks;
pub mod core;
pub mod engine;
