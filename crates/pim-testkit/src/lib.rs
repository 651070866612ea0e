//! pim-operator's test infrastructure (issue 22), a dev-dependency only, so that the product
//! builds without it:
//! - [`fake_apiserver`]: an in-process or standalone Kubernetes API server for the integration
//!   tests, the load harness and `hack/kind-e2e.sh --fake-apiserver`;
//! - [`loadtest`]: the load harness's world (`cargo bench --bench loadtest`);
//! - [`admission`] and [`admission_load`]: AdmissionReviews as the API server sends them, and the
//!   webhook's latency harness (`cargo bench --bench admission`);
//! - shared test support: [`operator`] (the operator on a manual clock against the fake API
//!   server), [`graph`] (the Microsoft Graph look-alike), [`slapd`] and [`ldap_proxy`] (a real
//!   OpenLDAP and an Active Directory stand-in in front of it), [`smtp`] (a real SMTP server),
//!   [`local`] (loopback helpers) and the one [`eventually`].

// The operator's modules under the paths the fake API server and the harness were written
// against (`crate::api`, `crate::clock`, ...).
pub(crate) use pim_operator::{api, clock, config, controller, core, directory, engine, metrics};

pub mod admission;
pub mod admission_load;
mod eventually;
pub mod fake_apiserver;
pub mod graph;
pub mod ldap_proxy;
pub mod loadtest;
pub mod local;
pub mod operator;
pub mod slapd;
pub mod smtp;

pub use eventually::{WAIT, eventually, eventually_within};
