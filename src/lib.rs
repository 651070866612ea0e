//! pim-operator: Privileged Identity Management (just-in-time privileged access) for
//! Kubernetes. The resources are the `pim-api` crate, the pure decision logic the `pim-core`
//! crate (re-exported here as `api`, `core`, `engine` and `checks`); this crate holds the
//! shells: controllers, directories, the webhook, notifications, audit, the CLI and the
//! binaries (docs/architecture.md).

pub use pim_api as api;
pub use pim_core::{checks, core, engine};

pub mod attestation;
pub mod audit;
pub mod cli;
pub mod clock;
pub mod config;
pub mod controller;
pub mod directory;
pub mod http;
pub mod kubectl_pim;
pub mod lenient;
pub mod logging;
pub mod manifests;
pub mod metrics;
pub mod notify;
pub mod operator;
pub mod simulate;
pub mod startup;
pub mod stdout;
pub mod webhook;
