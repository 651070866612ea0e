//! One object of any of our five kinds, as the checks receive it.

use kube::Resource;

use crate::api::{AccessPolicy, AccessReview, ActivationRequest, EligibleAssignment, PimGroup};
use crate::engine::Catalog;

/// The five PIM kinds people write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    AccessPolicy,
    PimGroup,
    EligibleAssignment,
    ActivationRequest,
    AccessReview,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::AccessPolicy,
        Kind::PimGroup,
        Kind::EligibleAssignment,
        Kind::ActivationRequest,
        Kind::AccessReview,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::AccessPolicy => "AccessPolicy",
            Kind::PimGroup => "PimGroup",
            Kind::EligibleAssignment => "EligibleAssignment",
            Kind::ActivationRequest => "ActivationRequest",
            Kind::AccessReview => "AccessReview",
        }
    }

    pub fn from_name(kind: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == kind)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A decoded object of one of the four kinds.
// One per document or admission review, short-lived: boxing would only add indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum PimObject {
    AccessPolicy(AccessPolicy),
    PimGroup(PimGroup),
    EligibleAssignment(EligibleAssignment),
    ActivationRequest(ActivationRequest),
    AccessReview(AccessReview),
}

impl PimObject {
    pub fn kind(&self) -> Kind {
        match self {
            PimObject::AccessPolicy(_) => Kind::AccessPolicy,
            PimObject::PimGroup(_) => Kind::PimGroup,
            PimObject::EligibleAssignment(_) => Kind::EligibleAssignment,
            PimObject::ActivationRequest(_) => Kind::ActivationRequest,
            PimObject::AccessReview(_) => Kind::AccessReview,
        }
    }

    pub fn name(&self) -> &str {
        let meta = match self {
            PimObject::AccessPolicy(o) => o.meta(),
            PimObject::PimGroup(o) => o.meta(),
            PimObject::EligibleAssignment(o) => o.meta(),
            PimObject::ActivationRequest(o) => o.meta(),
            PimObject::AccessReview(o) => o.meta(),
        };
        meta.name.as_deref().unwrap_or_default()
    }

    /// Adds the object to a catalog, replacing one of the same kind and name.
    pub fn insert_into(&self, catalog: &mut Catalog) {
        match self.clone() {
            PimObject::AccessPolicy(o) => catalog.insert_policy(o),
            PimObject::PimGroup(o) => catalog.insert_group(o),
            PimObject::EligibleAssignment(o) => catalog.insert_assignment(o),
            PimObject::ActivationRequest(o) => catalog.insert_request(o),
            PimObject::AccessReview(o) => catalog.insert_review(o),
        }
    }
}
