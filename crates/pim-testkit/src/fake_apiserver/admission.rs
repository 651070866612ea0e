//! Admission webhooks, as the API server calls them: on create, update and delete of what a
//! stored MutatingWebhookConfiguration or ValidatingWebhookConfiguration matches, an
//! AdmissionReview v1 is POSTed to the webhook over HTTPS (trusting only its `caBundle`); the
//! JSON patches of mutating webhooks are applied in order, then validating webhooks see the
//! result; a refusal, or a call that fails under `failurePolicy: Fail`, refuses the write.
//!
//! Sources (github.com/kubernetes/apiserver):
//! - which webhooks apply: `pkg/admission/plugin/webhook/predicates/rules/rules.go`
//!   (`Matcher.Matches`: scope, operation, group, version, `resource/subresource` with `*`), and
//!   `IsExemptAdmissionConfigurationResource` (webhook configurations are never sent);
//! - the request: `pkg/admission/plugin/webhook/request/admissionreview.go`
//!   (`CreateV1AdmissionReview`), the answer's checks there (`VerifyAdmissionResponse`: uid,
//!   apiVersion/kind, patch with patchType);
//! - mutating then validating, failurePolicy, errors: `mutating/dispatcher.go` and
//!   `validating/dispatcher.go` (`Dispatch`, `callAttrMutatingHook`, `callHook`); a refusal is
//!   `errors/statuserror.go` (`ToStatusErr`), a failed call under `Fail` an InternalError
//!   "failed calling webhook" (`pkg/util/webhook/error.go`);
//! - a Service reference is called at `https://NAME.NAMESPACE.svc:PORT/PATH` and verified as
//!   that name (`pkg/util/webhook/serviceresolver.go`, `client.go`).
//!
//! Simplified: a Service is reached at the address given in [`super::Options::services`]
//! (the real server resolves it through its endpoints to a pod); `namespaceSelector`,
//! `objectSelector`, `matchConditions` and `matchPolicy` are not evaluated (every webhook whose
//! rules match is called); validating webhooks are called one after another rather than in
//! parallel; `reinvocationPolicy` is ignored (each mutating webhook is called once); warnings
//! and audit annotations in the answers are dropped; collection deletes are not sent.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use super::Shared;
use super::merge;
use super::meta;
use super::registry::ResourceType;
use super::status::ApiError;

/// The API group of webhook configurations.
const ADMISSION_GROUP: &str = "admissionregistration.k8s.io";
const MUTATING: &str = "mutatingwebhookconfigurations";
const VALIDATING: &str = "validatingwebhookconfigurations";

/// `timeoutSeconds` when a webhook sets none (admissionregistration/v1 defaults it to 10).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Who made the request, as the webhook's `userInfo` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserInfo {
    pub username: String,
    pub groups: Vec<String>,
    /// `Impersonate-Extra-KEY` values by KEY (`kubectl --as-user-extra KEY=VALUE`).
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// The user an `Impersonate-User`/`Impersonate-Group` request acts as, with the groups the
    /// API server adds (`pkg/endpoints/filters/impersonation/impersonation.go`,
    /// `WithImpersonation`): a service account without groups gets `system:serviceaccounts` and
    /// `system:serviceaccounts:NS`; any user but `system:anonymous` gets
    /// `system:authenticated` unless it or `system:unauthenticated` was asked for.
    pub fn impersonated(
        username: &str,
        groups: &[String],
        extra: BTreeMap<String, Vec<String>>,
    ) -> Self {
        let mut groups = groups.to_vec();
        if groups.is_empty()
            && let Some(rest) = username.strip_prefix("system:serviceaccount:")
            && let Some((namespace, _)) = rest.split_once(':')
        {
            groups.push("system:serviceaccounts".to_owned());
            groups.push(format!("system:serviceaccounts:{namespace}"));
        }
        if username != "system:anonymous"
            && !groups
                .iter()
                .any(|g| g == "system:authenticated" || g == "system:unauthenticated")
        {
            groups.push("system:authenticated".to_owned());
        }
        Self {
            username: username.to_owned(),
            groups,
            extra,
        }
    }
}

/// The write being admitted.
pub(crate) struct Attributes<'a> {
    pub rt: &'a ResourceType,
    pub subresource: Option<&'a str>,
    pub name: &'a str,
    pub namespace: Option<&'a str>,
    /// CREATE, UPDATE or DELETE.
    pub operation: &'static str,
    pub user: &'a UserInfo,
    pub old_object: Option<&'a Value>,
    pub dry_run: bool,
    /// CreateOptions, UpdateOptions or DeleteOptions.
    pub options: Value,
}

/// One webhook of a stored configuration whose rules match the write.
struct Hook {
    name: String,
    client_config: Value,
    ignore_failures: bool,
    timeout: Duration,
}

/// Whether any webhook configuration is stored (otherwise writes skip admission entirely).
pub(crate) fn configured(shared: &Shared) -> bool {
    [MUTATING, VALIDATING].iter().any(|plural| {
        shared
            .registry
            .lookup(ADMISSION_GROUP, "v1", plural)
            .is_some_and(|ty| !shared.lock_store().list(ty, None).is_empty())
    })
}

/// Whether writes to this type are sent to webhooks: webhook configurations are exempt
/// (`rules.IsExemptAdmissionConfigurationResource`), so a broken webhook cannot lock itself in.
pub(crate) fn exempt(rt: &ResourceType) -> bool {
    rt.group == ADMISSION_GROUP
}

/// Runs the mutating webhooks, then the validating ones, on `object` (the object the write
/// would store; `None` for a delete). Returns the object as the mutating webhooks left it.
pub(crate) async fn admit(
    shared: &Shared,
    attrs: &Attributes<'_>,
    object: Option<Value>,
) -> Result<Option<Value>, ApiError> {
    let mut object = object;
    for hook in matching_hooks(shared, MUTATING, attrs) {
        let Some(answer) = call_or_fail(shared, &hook, attrs, object.as_ref()).await? else {
            continue;
        };
        let patch = match answer.get("patch").and_then(Value::as_str) {
            Some(encoded) => Some(decode_patch(&hook, encoded)?),
            None => None,
        };
        if let Some(patch) = patch {
            let Some(target) = object.as_mut() else {
                return Err(internal(format!(
                    "admission webhook {:?} attempted to modify the object, which is not supported for this operation",
                    hook.name
                )));
            };
            merge::json_patch(target, &patch).map_err(|e| {
                internal(format!(
                    "admission webhook {:?}: cannot apply its patch: {e:?}",
                    hook.name
                ))
            })?;
        }
    }
    for hook in matching_hooks(shared, VALIDATING, attrs) {
        call_or_fail(shared, &hook, attrs, object.as_ref()).await?;
    }
    Ok(object)
}

/// Calls a webhook and applies its `failurePolicy` to a failed call. `Ok(None)`: the call
/// failed and the policy is Ignore. A refusal is an error whatever the policy.
async fn call_or_fail(
    shared: &Shared,
    hook: &Hook,
    attrs: &Attributes<'_>,
    object: Option<&Value>,
) -> Result<Option<Value>, ApiError> {
    match call(shared, hook, attrs, object).await {
        Ok(response) => {
            if response.get("allowed").and_then(Value::as_bool) == Some(true) {
                Ok(Some(response))
            } else {
                Err(refusal(&hook.name, response.get("status")))
            }
        }
        Err(_) if hook.ignore_failures => Ok(None),
        Err(reason) => Err(internal(format!(
            "failed calling webhook {:?}: {reason}",
            hook.name
        ))),
    }
}

/// `errors/statuserror.go` `ToStatusErr`: the webhook's Status, its code raised to at least
/// 400, and its message (or reason) after "admission webhook NAME denied the request".
fn refusal(webhook: &str, status: Option<&Value>) -> ApiError {
    let denied_by = format!("admission webhook {webhook:?} denied the request");
    let field = |name: &str| {
        status
            .and_then(|s| s.get(name))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let code = status
        .and_then(|s| s.get("code"))
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| *c >= 400)
        .unwrap_or(400);
    let (message, reason) = (field("message"), field("reason"));
    let message = if !message.is_empty() {
        format!("{denied_by}: {message}")
    } else if !reason.is_empty() {
        format!("{denied_by}: {reason}")
    } else {
        format!("{denied_by} without explanation")
    };
    let mut err = ApiError::new(code, &reason, message);
    err.details = status.and_then(|s| s.get("details")).cloned();
    err
}

/// `apierrors.NewInternalError`: 500, reason InternalError.
fn internal(message: String) -> ApiError {
    let mut err = ApiError::new(
        500,
        "InternalError",
        format!("Internal error occurred: {message}"),
    );
    err.details = Some(json!({"causes": [{"message": message}]}));
    err
}

fn decode_patch(hook: &Hook, encoded: &str) -> Result<Value, ApiError> {
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .ok_or_else(|| {
            internal(format!(
                "failed calling webhook {:?}: received undecodable patch in webhook response",
                hook.name
            ))
        })
}

/// The webhooks of the stored configurations of one kind (configurations by name, webhooks in
/// their order) whose rules match the write.
fn matching_hooks(shared: &Shared, plural: &str, attrs: &Attributes<'_>) -> Vec<Hook> {
    let Some(ty) = shared.registry.lookup(ADMISSION_GROUP, "v1", plural) else {
        return Vec::new();
    };
    let configurations = shared.lock_store().list(ty, None);
    let mut hooks = Vec::new();
    for (_, configuration) in configurations {
        let webhooks = configuration
            .get("webhooks")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for webhook in webhooks {
            let rules = webhook
                .get("rules")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if !rules.iter().any(|rule| rule_matches(rule, attrs)) {
                continue;
            }
            let timeout = webhook
                .get("timeoutSeconds")
                .and_then(Value::as_u64)
                .map_or(DEFAULT_TIMEOUT, Duration::from_secs);
            hooks.push(Hook {
                name: webhook
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                client_config: webhook.get("clientConfig").cloned().unwrap_or(Value::Null),
                // admissionregistration/v1 defaults failurePolicy to Fail.
                ignore_failures: webhook.get("failurePolicy").and_then(Value::as_str)
                    == Some("Ignore"),
                timeout,
            });
        }
    }
    hooks
}

fn strings(rule: &Value, field: &str) -> Vec<String> {
    rule.get(field)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn exact_or_wildcard(items: &[String], requested: &str) -> bool {
    items.iter().any(|item| item == "*" || item == requested)
}

/// `rules.go` `Matcher.Matches`.
fn rule_matches(rule: &Value, attrs: &Attributes<'_>) -> bool {
    let rt = attrs.rt;
    let is_namespace = rt.group.is_empty() && rt.plural == "namespaces";
    let scope = match rule.get("scope").and_then(Value::as_str) {
        None | Some("*") => true,
        Some("Namespaced") => !is_namespace && attrs.namespace.is_some_and(|ns| !ns.is_empty()),
        Some("Cluster") => is_namespace || attrs.namespace.is_none_or(str::is_empty),
        Some(_) => false,
    };
    let subresource = attrs.subresource.unwrap_or_default();
    let resource = strings(rule, "resources").iter().any(|entry| {
        let (res, sub) = entry.split_once('/').unwrap_or((entry.as_str(), ""));
        (res == "*" || res == rt.plural) && (sub == "*" || sub == subresource)
    });
    scope
        && exact_or_wildcard(&strings(rule, "operations"), attrs.operation)
        && exact_or_wildcard(&strings(rule, "apiGroups"), &rt.group)
        && exact_or_wildcard(&strings(rule, "apiVersions"), &rt.version)
        && resource
}

/// `request/admissionreview.go` `CreateV1AdmissionReview`.
fn review(uid: &str, attrs: &Attributes<'_>, object: Option<&Value>) -> Value {
    let rt = attrs.rt;
    let kind = json!({"group": rt.group, "version": rt.version, "kind": rt.kind});
    let resource = json!({"group": rt.group, "version": rt.version, "resource": rt.plural});
    let mut request = json!({
        "uid": uid,
        "kind": kind,
        "resource": resource,
        "requestKind": kind,
        "requestResource": resource,
        "name": attrs.name,
        "operation": attrs.operation,
        "userInfo": {"username": attrs.user.username, "groups": attrs.user.groups},
        "object": object,
        "oldObject": attrs.old_object,
        "dryRun": attrs.dry_run,
        "options": attrs.options,
    });
    if let Some(map) = request.as_object_mut() {
        if let Some(sub) = attrs.subresource {
            map.insert("subResource".into(), json!(sub));
            map.insert("requestSubResource".into(), json!(sub));
        }
        if let Some(ns) = attrs.namespace.filter(|ns| !ns.is_empty()) {
            map.insert("namespace".into(), json!(ns));
        }
        if !attrs.user.extra.is_empty()
            && let Some(user) = map.get_mut("userInfo").and_then(Value::as_object_mut)
        {
            user.insert("extra".into(), json!(attrs.user.extra));
        }
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
}

/// Where a webhook is called: its URL, and for a Service, the host name to verify and the
/// address that stands in for the Service.
fn endpoint(
    shared: &Shared,
    client_config: &Value,
) -> Result<(String, Option<(String, SocketAddr)>), String> {
    if let Some(url) = client_config.get("url").and_then(Value::as_str) {
        return Ok((url.to_owned(), None));
    }
    let service = client_config
        .get("service")
        .ok_or("clientConfig has neither url nor service")?;
    let field = |name: &str| {
        service
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    let (namespace, name, path) = (field("namespace"), field("name"), field("path"));
    let address = shared
        .options
        .services
        .get(&format!("{namespace}/{name}"))
        .copied()
        .ok_or_else(|| {
            format!(
                "service \"{name}\" in namespace \"{namespace}\" has no address (the fake API server reaches Services through its `services` option)"
            )
        })?;
    // `serviceresolver.go`: https://NAME.NAMESPACE.svc:PORT; here the port is the address's.
    let host = format!("{name}.{namespace}.svc");
    Ok((
        format!("https://{host}:{}{path}", address.port()),
        Some((host, address)),
    ))
}

/// One call: POST the review, check the answer, return its `response`.
async fn call(
    shared: &Shared,
    hook: &Hook,
    attrs: &Attributes<'_>,
    object: Option<&Value>,
) -> Result<Value, String> {
    let (url, resolve) = endpoint(shared, &hook.client_config)?;
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(hook.timeout);
    if let Some(bundle) = hook.client_config.get("caBundle").and_then(Value::as_str) {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(bundle)
            .map_err(|e| format!("caBundle is not base64: {e}"))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("caBundle holds no PEM certificate: {e}"))?;
        builder = builder.tls_built_in_root_certs(false);
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    if let Some((host, address)) = resolve {
        builder = builder.resolve(&host, address);
    }
    let client = builder
        .build()
        .map_err(|e| format!("cannot build an HTTPS client: {e}"))?;
    let uid = meta::new_uid();
    let answer = client
        .post(&url)
        .json(&review(&uid, attrs, object))
        .send()
        .await
        .map_err(|e| format!("failed to call webhook: Post {url:?}: {e}"))?;
    let code = answer.status();
    let body = answer
        .bytes()
        .await
        .map_err(|e| format!("failed to call webhook: Post {url:?}: {e}"))?;
    if !code.is_success() {
        return Err(format!(
            "failed to call webhook: the server responded with the status code {} ({})",
            code.as_u16(),
            String::from_utf8_lossy(&body).trim()
        ));
    }
    let reply: Value = serde_json::from_slice(&body)
        .map_err(|e| format!("received invalid webhook response: {e}"))?;
    verify(&uid, reply).map_err(|e| format!("received invalid webhook response: {e}"))
}

/// `VerifyAdmissionResponse` for v1 reviews.
fn verify(uid: &str, reply: Value) -> Result<Value, String> {
    let av = reply
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind = reply
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let response = reply
        .get("response")
        .cloned()
        .ok_or("webhook response was absent")?;
    let got = response
        .get("uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if got != uid {
        return Err(format!("expected response.uid={uid:?}, got {got:?}"));
    }
    if av != "admission.k8s.io/v1" || kind != "AdmissionReview" {
        return Err(format!(
            "expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview, got {av}, Kind={kind}"
        ));
    }
    let has_patch = response
        .get("patch")
        .and_then(Value::as_str)
        .is_some_and(|p| !p.is_empty());
    let patch_type = response.get("patchType").and_then(Value::as_str);
    match (has_patch, patch_type) {
        (true, None) => Err("webhook returned response.patch but not response.patchType".into()),
        (false, Some(_)) => {
            Err("webhook returned response.patchType but not response.patch".into())
        }
        (true, Some(t)) if t != "JSONPatch" => Err(format!("unsupported patch type {t:?}")),
        _ => Ok(response),
    }
}
