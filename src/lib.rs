//! pim-operator: Privileged Identity Management (just-in-time privileged access) for
//! Kubernetes. `api` holds the resources, `core` the pure decision logic.

pub mod api;
pub mod core;
