//! pim-operator: Privileged Identity Management (just-in-time privileged access) for
//! Kubernetes. `api` holds the resources, `core` the pure decision logic.

pub mod api;
pub mod core;
#[cfg(feature = "fake-apiserver")]
pub mod fake_apiserver;
