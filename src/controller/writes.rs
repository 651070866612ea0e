//! The writes the controller makes to our objects: status by server-side apply, and finalizers by
//! merge patch. Each carries the resourceVersion it decided on, so a write based on a stale read
//! fails with 409 instead of overwriting.

use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::core::Resource;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::error::Error;

pub use crate::api::activation_request::FINALIZER;

pub const FIELD_MANAGER: &str = "pim-operator";

fn api_for<K>(client: &kube::Client) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>,
{
    Api::all(client.clone())
}

/// Applies `status` to the object's status subresource.
pub async fn apply_status<K, S>(client: &kube::Client, object: &K, status: &S) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    S: Serialize,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": { "name": name, "resourceVersion": object.meta().resource_version },
        "status": status,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api_for::<K>(client)
        .patch_status(&name, &params, &Patch::Apply(&patch))
        .await?;
    Ok(())
}

/// The field manager of `ActivationRequest.status.directory`.
pub const DIRECTORY_FIELD_MANAGER: &str = "pim-operator-directory";

/// Records on the ActivationRequest `request` what the directory said about its grant (Entra
/// PIM: the schedule request), by server-side apply of `status.directory` alone under its own
/// field manager, so it never contends with the request reconciler's status. Best effort: the
/// grant stands either way, so a failure is logged, not returned.
pub async fn record_directory_receipt(
    client: &kube::Client,
    request: &str,
    receipt: &crate::directory::DirectoryReceipt,
    now: jiff::Timestamp,
) {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    let record = crate::api::activation_request::DirectoryRecord {
        request_id: receipt.id.chars().take(256).collect(),
        action: receipt.action.chars().take(64).collect(),
        status: receipt.status.chars().take(64).collect(),
        expires_at: receipt.until.map(Time),
        time: Some(Time(now)),
    };
    let patch = json!({
        "apiVersion": crate::api::ActivationRequest::api_version(&()),
        "kind": crate::api::ActivationRequest::kind(&()),
        "metadata": { "name": request },
        "status": { "directory": record },
    });
    let params = PatchParams::apply(DIRECTORY_FIELD_MANAGER).force();
    let result = api_for::<crate::api::ActivationRequest>(client)
        .patch_status(request, &params, &Patch::Apply(&patch))
        .await;
    if let Err(error) = result {
        tracing::warn!(%request, %error, "could not record the directory's receipt");
    }
}

/// Sets the finalizer list, guarded by the resourceVersion read.
async fn set_finalizers<K>(
    client: &kube::Client,
    object: &K,
    finalizers: Vec<String>,
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let patch = json!({
        "metadata": { "finalizers": finalizers, "resourceVersion": object.meta().resource_version }
    });
    api_for::<K>(client)
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

pub fn has_finalizer<K: Resource>(object: &K) -> bool {
    object
        .meta()
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == FINALIZER)
}

pub async fn add_finalizer<K>(client: &kube::Client, object: &K) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let mut finalizers = object.meta().finalizers.clone().unwrap_or_default();
    finalizers.push(FINALIZER.to_owned());
    set_finalizers(client, object, finalizers).await
}

pub async fn remove_finalizer<K>(client: &kube::Client, object: &K) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let finalizers = object
        .meta()
        .finalizers
        .iter()
        .flatten()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    set_finalizers(client, object, finalizers).await
}

/// Reports a malformed object on itself: one condition of `condition_type`, False, reason
/// `Malformed`, written as a merge patch of raw JSON since the object does not fit our types.
/// A problem already reported is not written again, which would only cause another watch event.
pub async fn report_malformed<K>(
    client: &kube::Client,
    object: &crate::lenient::Lenient<K>,
    condition_type: &str,
    now: jiff::Timestamp,
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let Err(problem) = &object.parsed else {
        return Ok(());
    };
    let name = object.metadata.name.clone().unwrap_or_default();
    tracing::warn!(kind = K::kind(&()).as_ref(), %name, %problem, "malformed object skipped");
    if object.already_reported(problem) {
        return Ok(());
    }
    let message: String = format!("the object does not match its schema: {problem}")
        .chars()
        .take(1024)
        .collect();
    let patch = json!({ "status": { "conditions": [{
        "type": condition_type,
        "status": "False",
        "reason": crate::api::conditions::reasons::MALFORMED,
        "message": message,
        "lastTransitionTime": now.to_string(),
    }]}});
    let api: Api<kube::core::DynamicObject> =
        Api::all_with(client.clone(), &kube::core::ApiResource::erase::<K>(&()));
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}
