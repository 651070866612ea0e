//! pim-operator's test infrastructure (issue 22), a dev-dependency only, so that the product
//! builds without it:
//! - [`fake_apiserver`]: an in-process or standalone Kubernetes API server for the integration
//!   tests, the load harness and `hack/kind-e2e.sh --fake-apiserver`;
//! - [`loadtest`]: the load harness's world (`cargo bench --bench loadtest`).

// The operator's modules under the paths the fake API server and the harness were written
// against (`crate::api`, `crate::clock`, ...).
pub(crate) use pim_operator::{api, clock, config, controller, core, directory, engine, metrics};

pub mod fake_apiserver;
pub mod loadtest;
