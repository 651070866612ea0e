//! The resource types the fake server serves: our CRDs (read from `api::crd::all()`, so nothing
//! is written down twice) and the few built-in types the operator touches. Each entry says how
//! the type behaves: scope, status subresource, generation, which verbs, and its schema.

use std::any::TypeId;
use std::sync::Arc;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::{NamespaceResourceScope, Resource};

use super::schema::SchemaNode;
use super::table::Convertor;

/// Verbs of an ordinary resource, as discovery lists them.
pub(crate) const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// One served resource type (one group/version/plural).
#[derive(Debug)]
pub(crate) struct ResourceType {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub list_kind: String,
    pub namespaced: bool,
    pub status_subresource: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// A custom resource: pruned, defaulted and validated against its schema, `generation`
    /// tracked, PUT needs a resourceVersion, no strategic merge patch.
    pub custom: bool,
    /// Only `create` is served (a virtual resource such as SelfSubjectReview; nothing is stored).
    pub create_only: bool,
    pub schema: SchemaNode,
    /// How a Table answer is built: custom resources only (built-ins answer JSON).
    pub table: Option<Convertor>,
}

impl ResourceType {
    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural.group` (or `plural`), the name error messages use.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Kind.group` (or `Kind`), the name validation errors use.
    pub fn kind_qualified(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    pub fn verbs(&self) -> Vec<&'static str> {
        if self.create_only {
            vec!["create"]
        } else {
            ALL_VERBS.to_vec()
        }
    }

    /// Whether the type tracks `metadata.generation` (custom resources do; of the built-ins we
    /// serve, none does).
    pub fn uses_generation(&self) -> bool {
        self.custom
    }

    /// Whether a PUT without `metadata.resourceVersion` is allowed (built-ins: yes; CRDs: no).
    pub fn unconditional_update(&self) -> bool {
        !self.custom
    }

    /// Reads the storage version of a CRD. `None` if the CRD has no storage version.
    pub fn from_crd(crd: &CustomResourceDefinition) -> Option<Self> {
        let spec = &crd.spec;
        let version = spec
            .versions
            .iter()
            .find(|v| v.storage)
            .or_else(|| spec.versions.iter().find(|v| v.served))?;
        let openapi = version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .and_then(|s| serde_json::to_value(s).ok())
            .unwrap_or(serde_json::Value::Null);
        let names = &spec.names;
        Some(Self {
            group: spec.group.clone(),
            version: version.name.clone(),
            plural: names.plural.clone(),
            singular: names
                .singular
                .clone()
                .unwrap_or_else(|| names.kind.to_lowercase()),
            kind: names.kind.clone(),
            list_kind: names
                .list_kind
                .clone()
                .unwrap_or_else(|| format!("{}List", names.kind)),
            namespaced: spec.scope == "Namespaced",
            status_subresource: version
                .subresources
                .as_ref()
                .is_some_and(|s| s.status.is_some()),
            short_names: names.short_names.clone().unwrap_or_default(),
            categories: names.categories.clone().unwrap_or_default(),
            custom: true,
            create_only: false,
            schema: SchemaNode::custom_root(&openapi),
            table: Some(Convertor::new(
                version
                    .additional_printer_columns
                    .as_deref()
                    .unwrap_or_default(),
            )),
        })
    }

    /// A built-in type, its identity taken from k8s-openapi.
    fn builtin<K>(short_names: &[&str]) -> Self
    where
        K: Resource,
        K::Scope: 'static,
    {
        Self {
            group: K::GROUP.to_string(),
            version: K::VERSION.to_string(),
            plural: K::URL_PATH_SEGMENT.to_string(),
            singular: K::KIND.to_lowercase(),
            kind: K::KIND.to_string(),
            list_kind: format!("{}List", K::KIND),
            namespaced: TypeId::of::<K::Scope>() == TypeId::of::<NamespaceResourceScope>(),
            status_subresource: false,
            short_names: short_names.iter().map(|s| s.to_string()).collect(),
            categories: Vec::new(),
            custom: false,
            create_only: false,
            schema: SchemaNode::builtin_root(),
            table: None,
        }
    }
}

/// Index of a type in the registry; the first component of every storage key.
pub(crate) type TypeIdx = usize;

/// All served types, in discovery order.
#[derive(Debug)]
pub(crate) struct Registry {
    types: Vec<Arc<ResourceType>>,
}

impl Registry {
    /// Our CRDs, any extra CRDs, and the built-ins.
    pub fn new(crds: &[CustomResourceDefinition]) -> Self {
        use k8s_openapi::api::admissionregistration::v1::{
            MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
        };
        use k8s_openapi::api::apps::v1::Deployment;
        use k8s_openapi::api::authentication::v1::SelfSubjectReview;
        use k8s_openapi::api::coordination::v1::Lease;
        use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
        use k8s_openapi::api::core::v1::{Service, ServiceAccount};
        use k8s_openapi::api::events::v1::Event;
        use k8s_openapi::api::networking::v1::NetworkPolicy;
        use k8s_openapi::api::policy::v1::PodDisruptionBudget;
        use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};

        let mut types: Vec<ResourceType> = crds.iter().filter_map(ResourceType::from_crd).collect();
        let mut namespace = ResourceType::builtin::<Namespace>(&["ns"]);
        namespace.status_subresource = true;
        types.push(namespace);
        types.push(ResourceType::builtin::<ConfigMap>(&["cm"]));
        types.push(ResourceType::builtin::<Secret>(&[]));
        types.push(ResourceType::builtin::<Lease>(&[]));
        types.push(ResourceType::builtin::<Event>(&["ev"]));
        types.push(ResourceType::builtin::<ClusterRole>(&[]));
        types.push(ResourceType::builtin::<ClusterRoleBinding>(&[]));
        types.push(ResourceType::builtin::<Role>(&[]));
        types.push(ResourceType::builtin::<RoleBinding>(&[]));
        // What the chart and the kustomize base install (stored as given; nothing runs them).
        types.push(ResourceType::builtin::<ServiceAccount>(&["sa"]));
        types.push(ResourceType::builtin::<Service>(&["svc"]));
        types.push(ResourceType::builtin::<Deployment>(&["deploy"]));
        types.push(ResourceType::builtin::<PodDisruptionBudget>(&["pdb"]));
        types.push(ResourceType::builtin::<NetworkPolicy>(&["netpol"]));
        types.push(ResourceType::builtin::<CustomResourceDefinition>(&[
            "crd", "crds",
        ]));
        // Admission webhooks are called from what these say (see `admission`), and the
        // operator writes its CA into them (webhook::certs).
        types.push(ResourceType::builtin::<MutatingWebhookConfiguration>(&[]));
        types.push(ResourceType::builtin::<ValidatingWebhookConfiguration>(&[]));
        let mut review = ResourceType::builtin::<SelfSubjectReview>(&[]);
        review.create_only = true;
        types.push(review);
        // A later duplicate (same group/version/plural) would be unreachable: keep the first.
        let mut seen = std::collections::HashSet::new();
        types.retain(|t| seen.insert((t.group.clone(), t.version.clone(), t.plural.clone())));
        Self {
            types: types.into_iter().map(Arc::new).collect(),
        }
    }

    pub fn get(&self, idx: TypeIdx) -> Option<&Arc<ResourceType>> {
        self.types.get(idx)
    }

    pub fn iter(&self) -> impl Iterator<Item = (TypeIdx, &Arc<ResourceType>)> {
        self.types.iter().enumerate()
    }

    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<TypeIdx> {
        self.types
            .iter()
            .position(|t| t.group == group && t.version == version && t.plural == plural)
    }

    /// Finds a type by `plural` or `plural.group` (what the test helpers accept).
    pub fn by_name(&self, name: &str) -> Option<TypeIdx> {
        self.types
            .iter()
            .position(|t| t.qualified() == name)
            .or_else(|| {
                let mut matches = self
                    .types
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| t.plural == name);
                match (matches.next(), matches.next()) {
                    (Some((i, _)), None) => Some(i),
                    _ => None,
                }
            })
    }

    /// The API groups (other than core), in order of first appearance, with their versions.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for t in &self.types {
            if t.group.is_empty() {
                continue;
            }
            match groups.iter_mut().find(|(g, _)| *g == t.group) {
                Some((_, versions)) => {
                    if !versions.contains(&t.version) {
                        versions.push(t.version.clone());
                    }
                }
                None => groups.push((t.group.clone(), vec![t.version.clone()])),
            }
        }
        groups
    }
}
