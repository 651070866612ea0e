//! The checks of our four kinds, shared by `pim-operator validate` and the admission webhook:
//! one implementation, so that a pull request and the cluster refuse the same things.
//!
//! - [`schema`]: the CRD's openAPIV3Schema, its CEL rules and decoding into the Rust types;
//! - [`semantic`]: one object against a [`crate::engine::Catalog`] of the others: references,
//!   policy caps, schedules, requests against their policy, conflicting PimGroups;
//! - [`duplicate_name`]: the one check that only a set of manifests can fail, since the API
//!   server keeps names unique;
//! - [`last_member`]: a change that ends the last grant of a `protectLastMember` PimGroup;
//! - [`onboarding`]: `standingAccess: Remove` on a group the operator has not shown anyone yet,
//!   given the object as the cluster has it;
//! - [`stamped`]: fields of a request that only the admission webhook writes, written in a
//!   manifest (`validate` only).
//!
//! Every check returns [`Finding`]s named by field path; none reads the clock or a file.

pub mod finding;
pub mod last_member;
pub mod object;
pub mod onboarding;
pub mod openapi;
pub mod references;
pub mod schema;
pub mod semantic;
pub mod stamped;

pub use finding::{Finding, Rule, Severity, rules};
pub use object::{Kind, PimObject};
pub use schema::{Checked, SchemaChecker, SchemaError};
pub use semantic::check_object;

/// A second definition of `kind`/`name`; `first` says where the first one is.
pub fn duplicate_name(kind: Kind, name: &str, first: &str) -> Finding {
    Finding::new(
        rules::DUPLICATE_NAME,
        "metadata.name",
        format!("{kind} {name:?} is already defined at {first}"),
    )
    .on(kind.as_str(), Some(name))
}
