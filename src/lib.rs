//! pim-operator: Privileged Identity Management (just-in-time privileged access) for
//! Kubernetes. `api` holds the resources, `core` the pure decision logic.

pub mod api;
pub mod attestation;
pub mod audit;
pub mod checks;
pub mod cli;
pub mod clock;
pub mod config;
pub mod controller;
pub mod core;
pub mod directory;
pub mod engine;
#[cfg(feature = "fake-apiserver")]
pub mod fake_apiserver;
pub mod http;
pub mod kubectl_pim;
pub mod lenient;
#[cfg(feature = "fake-apiserver")]
pub mod loadtest;
pub mod logging;
pub mod manifests;
pub mod metrics;
pub mod notify;
pub mod operator;
pub mod simulate;
pub mod startup;
pub mod stdout;
pub mod webhook;
