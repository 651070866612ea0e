//! The pure PIM core: no Kubernetes client, no network, no clock. Every function that depends
//! on time takes `now` as an argument, so tests and `simulate` run on virtual time.

pub mod activation;
pub mod authentication;
pub mod duration;
pub mod eligibility;
pub mod extension;
pub mod identity;
pub mod ledger;
pub mod lifecycle;
pub mod membership;
pub mod policy;
pub mod status;
pub mod time;
pub mod violation;

#[cfg(test)]
mod tests;
