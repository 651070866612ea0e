//! The integration tests, in one binary so that the suite links the library a few times rather
//! than once per file (issue 22). Each module is one former `tests/NAME.rs`; run one with
//! `cargo test --test it NAME::`. `tests/audit.rs` stays apart (it captures the process's
//! log), and `tests/simulation/` is its own binary.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../support/mod.rs"]
mod support;

mod access_review;
mod admission_smoke;
mod alerts;
mod closed_pipe;
mod columns;
mod config_reference;
mod controller;
mod crds;
mod deploy;
mod docs;
mod entra;
mod extend;
mod fake_apiserver;
mod fuzz_corpus;
mod kind_e2e;
mod kubectl_pim;
mod kubernetes_directory;
mod ldap;
mod load_smoke;
mod manifests;
mod notify;
mod oidc_users;
mod onboarding;
mod retention;
mod run;
mod simulate;
mod startup;
mod validate;
mod webhook;
mod webhook_certs;
