//! Watching without trusting the schema. A typed watch fails a whole list when one object does
//! not deserialize (a webhook bypassed, a schema change), which would stop the controller for
//! every object of that kind. `Lenient<K>` always deserializes: it keeps the metadata and either
//! the typed object or the reason it is malformed, so the reconciler can report it on that
//! object and the others carry on.

use std::borrow::Cow;
use std::sync::Arc;

use kube::core::{ObjectMeta, Resource};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone)]
pub struct Lenient<K> {
    pub metadata: ObjectMeta,
    /// Shared, so that snapshots of the caches cost a reference count, not a deep copy.
    pub parsed: Result<Arc<K>, String>,
    /// For a malformed object: the message of the `Malformed` condition already on it, if any.
    reported: Option<String>,
    /// For a malformed object: its status as stored, for what must outlive a broken spec (an
    /// AccessReview's denials).
    pub malformed_status: Option<serde_json::Value>,
}

impl<K> Lenient<K> {
    pub fn object(&self) -> Option<&K> {
        self.parsed.as_deref().ok()
    }

    /// Whether this problem is already reported on the object, so reporting it again would only
    /// cause another watch event.
    pub fn already_reported(&self, problem: &str) -> bool {
        self.reported
            .as_deref()
            .is_some_and(|m| m.contains(problem))
    }
}

impl<'de, K: DeserializeOwned> Deserialize<'de> for Lenient<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        let metadata = value
            .get("metadata")
            .cloned()
            .map(serde_json::from_value::<ObjectMeta>)
            .transpose()
            .map_err(serde::de::Error::custom)?
            .unwrap_or_default();
        let reported = value
            .pointer("/status/conditions")
            .and_then(|c| c.as_array())
            .and_then(|c| {
                c.iter().find(|c| {
                    c.get("reason").and_then(|r| r.as_str())
                        == Some(pim_api::conditions::reasons::MALFORMED)
                })
            })
            .and_then(|c| c.get("message").and_then(|m| m.as_str()).map(str::to_owned));
        let status = value.get("status").cloned();
        let parsed = serde_json::from_value::<K>(value)
            .map(Arc::new)
            .map_err(|e| e.to_string());
        let malformed_status = status.filter(|_| parsed.is_err());
        Ok(Lenient {
            metadata,
            parsed,
            reported,
            malformed_status,
        })
    }
}

impl<K: Serialize> Serialize for Lenient<K> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.parsed {
            Ok(object) => object.as_ref().serialize(serializer),
            Err(_) => serde_json::json!({ "metadata": self.metadata }).serialize(serializer),
        }
    }
}

impl<K: Resource<DynamicType = ()>> Resource for Lenient<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// A review as the catalog needs it: itself, or, when it no longer decodes, only its
/// denials (from the stored status): a broken spec must not make denied assignments grant.
pub fn review_for_catalog(
    review: &Lenient<pim_api::AccessReview>,
) -> Option<Arc<pim_api::AccessReview>> {
    if let Ok(object) = &review.parsed {
        return Some(object.clone());
    }
    let denied = review
        .malformed_status
        .as_ref()?
        .get("denied")
        .cloned()
        .and_then(|d| serde_json::from_value(d).ok())?;
    Some(Arc::new(pim_api::AccessReview {
        metadata: review.metadata.clone(),
        spec: Default::default(),
        status: Some(pim_api::access_review::AccessReviewStatus {
            denied,
            ..Default::default()
        }),
    }))
}

/// The annotation in which `kubectl apply` keeps a copy of the whole applied object.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

impl<K: Resource + Clone> Lenient<K> {
    /// Drops what no controller reads and what costs most memory in a cache of thousands of
    /// objects: `managedFields` and kubectl's last-applied copy. Safe because the operator
    /// never sends a cached object back whole; its writes are patches of the fields it owns.
    pub fn strip_unread(&mut self) {
        strip_unread(&mut self.metadata);
        if let Ok(object) = &mut self.parsed {
            // Fresh from the watch, so not shared: no copy is made.
            strip_unread(Arc::make_mut(object).meta_mut());
        }
    }
}

fn strip_unread(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = &mut meta.annotations {
        annotations.remove(LAST_APPLIED);
    }
}

/// Every well-formed object of a cluster-scoped kind, page by page; a malformed object is left
/// out rather than failing the list (for `kubectl pim` and the audit export, which list once
/// instead of watching).
pub async fn list_well_formed<K>(client: &kube::Client) -> Result<Vec<K>, kube::Error>
where
    K: Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: kube::Api<Lenient<K>> = kube::Api::all(client.clone());
    let mut out = Vec::new();
    let mut params = kube::api::ListParams::default().limit(500);
    loop {
        let page = api.list(&params).await?;
        out.extend(
            page.items
                .into_iter()
                .filter_map(|o| o.parsed.ok().map(|k| (*k).clone())),
        );
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ActivationRequest;

    /// A review whose spec no longer decodes still contributes its denials, and only them.
    #[test]
    fn a_malformed_review_keeps_its_denials() {
        let json = r#"{"apiVersion":"pim.dev/v1alpha1","kind":"AccessReview","metadata":{"name":"r","uid":"u"},"spec":{"scope":"everything"},"status":{"denied":[{"assignment":"ops-alice","uid":"a1","instance":"2026-11-02T09:00:00Z","at":"2026-11-04T09:00:00Z","by":"lead"}],"current":{"id":"x"}}}"#;
        let item: Lenient<crate::api::AccessReview> = serde_json::from_str(json).unwrap();
        assert!(item.parsed.is_err());
        let salvaged = review_for_catalog(&item).unwrap();
        let status = salvaged.status.clone().unwrap();
        assert_eq!(status.denied.len(), 1);
        assert_eq!(status.denied[0].assignment, "ops-alice");
        assert_eq!(status.current, None, "only the denials");
        assert_eq!(salvaged.metadata.name.as_deref(), Some("r"));
        // A well-formed one is itself; a malformed one without denials contributes nothing.
        let bare = r#"{"apiVersion":"pim.dev/v1alpha1","kind":"AccessReview","metadata":{"name":"r"},"spec":{"scope":"everything"}}"#;
        let item: Lenient<crate::api::AccessReview> = serde_json::from_str(bare).unwrap();
        assert!(review_for_catalog(&item).is_none());
    }

    #[test]
    fn stripping_drops_managed_fields_and_last_applied_only() {
        let json = r#"{"apiVersion":"pim.dev/v1alpha1","kind":"ActivationRequest","metadata":{"name":"r","resourceVersion":"7","annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{}","team":"a"},"managedFields":[{"manager":"kubectl","operation":"Apply","fieldsType":"FieldsV1","fieldsV1":{"f:spec":{}}}]},"spec":{"group":"g"}}"#;
        let mut item: Lenient<ActivationRequest> = serde_json::from_str(json).unwrap();
        item.strip_unread();
        let parsed = item.object().unwrap();
        for meta in [&item.metadata, &parsed.metadata] {
            assert_eq!(meta.managed_fields, None);
            let annotations = meta.annotations.clone().unwrap_or_default();
            assert_eq!(annotations.keys().collect::<Vec<_>>(), ["team"]);
            assert_eq!(meta.resource_version.as_deref(), Some("7"));
        }
        assert_eq!(parsed.spec.group, "g");
    }

    #[test]
    fn a_malformed_object_keeps_its_metadata_and_the_reason() {
        let json = r#"{"apiVersion":"pim.dev/v1alpha1","kind":"ActivationRequest","metadata":{"name":"bad","resourceVersion":"7"},"spec":{"group":42}}"#;
        let item: Lenient<ActivationRequest> = serde_json::from_str(json).unwrap();
        assert_eq!(item.metadata.name.as_deref(), Some("bad"));
        let err = item.parsed.unwrap_err();
        assert!(err.contains("invalid type"), "{err}");

        let good = r#"{"apiVersion":"pim.dev/v1alpha1","kind":"ActivationRequest","metadata":{"name":"ok"},"spec":{"group":"g"}}"#;
        let item: Lenient<ActivationRequest> = serde_json::from_str(good).unwrap();
        assert_eq!(item.object().map(|r| r.spec.group.as_str()), Some("g"));
    }

    #[test]
    fn a_list_with_one_malformed_item_still_deserializes() {
        let list = r#"{"apiVersion":"v1","kind":"List","metadata":{"resourceVersion":"9"},"items":[
            {"metadata":{"name":"a"},"spec":{"group":"g"}},
            {"metadata":{"name":"b"},"spec":"nonsense"}]}"#;
        let list: kube::core::ObjectList<Lenient<ActivationRequest>> =
            serde_json::from_str(list).unwrap();
        let parsed: Vec<bool> = list.items.iter().map(|i| i.parsed.is_ok()).collect();
        assert_eq!(parsed, [true, false]);
    }
}
