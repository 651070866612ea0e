//! AdmissionReviews in the admission.k8s.io/v1 wire format, as the API server sends them to our
//! webhook, and the answer's JSON patch applied as it applies it. Shared by the webhook's tests
//! (`tests/it/webhook.rs`) and its latency harness ([`crate::admission_load`]).

use base64::Engine as _;
use serde_json::{Value, json};

/// A caller as the API server reports it in `userInfo`: `system:authenticated` added to
/// `groups`, and with `mfa`, the `amr` claim the webhook's default MFA setting looks for.
pub fn user(name: &str, groups: &[&str], mfa: bool) -> Value {
    let mut groups: Vec<&str> = groups.to_vec();
    groups.push("system:authenticated");
    let mut info = json!({"username": name, "uid": format!("uid-{name}"), "groups": groups});
    if mfa {
        info["extra"] = json!({"amr": ["pwd", "mfa"]});
    }
    info
}

/// An AdmissionReview exactly as the API server sends it, for a write of `kind` (`plural`) in
/// group pim.dev. `operation` is CREATE, UPDATE or DELETE; `old` is the stored object of an
/// UPDATE or DELETE (whose `object` is null).
pub fn wire(
    kind: &str,
    plural: &str,
    operation: &str,
    user: &Value,
    object: &Value,
    old: Option<&Value>,
) -> Value {
    let gvk = json!({"group": "pim.dev", "version": "v1alpha1", "kind": kind});
    let gvr = json!({"group": "pim.dev", "version": "v1alpha1", "resource": plural});
    // k8s.io/apiserver pkg/endpoints/handlers (create.go, update.go, delete.go) pass each
    // operation's own options to admission, sent as `options`.
    let options_kind = match operation {
        "CREATE" => "CreateOptions",
        "DELETE" => "DeleteOptions",
        _ => "UpdateOptions",
    };
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            // `name` is the request's (k8s.io/apiserver pkg/admission/plugin/webhook/request/
            // admissionreview.go: `attr.GetName()`): a DELETE names the object in its URL.
            "name": object
                .pointer("/metadata/name")
                .or_else(|| old.and_then(|o| o.pointer("/metadata/name")))
                .cloned()
                .unwrap_or(json!("")),
            "operation": operation,
            "userInfo": user,
            "object": object,
            "oldObject": old.cloned().unwrap_or(Value::Null),
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": options_kind},
        }
    })
}

/// `object` with the JSON patch of an answer's `response` applied (the patch is base64 in the
/// wire format, as Go encodes `[]byte`); `object` unchanged when there is none.
pub fn patched(object: &Value, response: &Value) -> Result<Value, String> {
    let mut object = object.clone();
    let Some(patch) = response.get("patch").and_then(Value::as_str) else {
        return Ok(object);
    };
    if response["patchType"] != "JSONPatch" {
        return Err(format!("patchType {} with a patch", response["patchType"]));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .map_err(|e| format!("the patch is not base64: {e}"))?;
    let patch: json_patch::Patch =
        serde_json::from_slice(&bytes).map_err(|e| format!("not a JSON patch: {e}"))?;
    json_patch::patch(&mut object, &patch).map_err(|e| format!("the patch does not apply: {e}"))?;
    Ok(object)
}
