//! The CustomResourceDefinitions, generated from the Rust types.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use kube::CustomResourceExt;

use super::{
    AccessPolicy, AccessReview, ActivationRequest, EligibleAssignment, PimGrant, PimGroup,
};

/// String formats the Kubernetes API server knows for CRD schemas. schemars also emits
/// formats such as `uint32`, which Kubernetes would reject or silently ignore.
pub const SUPPORTED_FORMATS: &[&str] = &[
    "bsonobjectid",
    "uri",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "cidr",
    "mac",
    "uuid",
    "uuid3",
    "uuid4",
    "uuid5",
    "isbn",
    "isbn10",
    "isbn13",
    "creditcard",
    "ssn",
    "hexcolor",
    "rgbcolor",
    "byte",
    "password",
    "date",
    "duration",
    "datetime",
    "date-time",
    "int32",
    "int64",
    "float",
    "double",
];

/// All our CRDs, in a stable order, ready to apply.
pub fn all() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![
        AccessPolicy::crd(),
        PimGroup::crd(),
        EligibleAssignment::crd(),
        ActivationRequest::crd(),
        PimGrant::crd(),
        AccessReview::crd(),
    ];
    for crd in &mut crds {
        for version in &mut crd.spec.versions {
            if let Some(schema) = version
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut())
            {
                normalize(schema);
            }
        }
    }
    crds
}

/// Each CRD as `(file name, YAML)`: the layout of the top-level `crds/` folder.
pub fn files() -> Result<Vec<(String, String)>, serde_saphyr::SerializeError> {
    all()
        .into_iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            Ok((format!("{name}.yaml"), serde_saphyr::to_string(&crd)?))
        })
        .collect()
}

/// The CRDs as one multi-document YAML stream, as `pim-operator crds` prints it.
pub fn to_yaml() -> Result<String, serde_saphyr::SerializeError> {
    Ok(files()?
        .into_iter()
        .map(|(_, yaml)| format!("---\n{yaml}"))
        .collect())
}

/// Drops formats Kubernetes does not know, and `nullable` (with `null` in enums): without it the API server prunes an
/// explicit `null`, so CEL `has()` rules see an absent field rather than a present null.
fn normalize(schema: &mut JSONSchemaProps) {
    schema.nullable = None;
    // An optional enum lists `null` among its values; without `nullable` that is a contradiction.
    if let Some(values) = schema.enum_.as_mut() {
        values.retain(|v| !v.0.is_null());
    }
    if schema
        .format
        .as_deref()
        .is_some_and(|f| !SUPPORTED_FORMATS.contains(&f))
    {
        schema.format = None;
    }
    for child in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
        normalize(child);
    }
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
        JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
    };
    match schema.items.as_mut() {
        Some(JSONSchemaPropsOrArray::Schema(item)) => normalize(item),
        Some(JSONSchemaPropsOrArray::Schemas(items)) => items.iter_mut().for_each(normalize),
        None => {}
    }
    if let Some(JSONSchemaPropsOrBool::Schema(extra)) = schema.additional_properties.as_mut() {
        normalize(extra);
    }
    for list in [&mut schema.all_of, &mut schema.any_of, &mut schema.one_of]
        .into_iter()
        .flatten()
    {
        list.iter_mut().for_each(normalize);
    }
}
