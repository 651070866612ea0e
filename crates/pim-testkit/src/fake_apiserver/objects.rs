//! What a write does to an object, following the API server's generic registry and the CRD
//! strategies: system metadata, preconditions (`resourceVersion`, `uid`), the status
//! subresource split, `generation`, finalizers and `deletionTimestamp`, pruning, defaulting and
//! validation, field ownership, and no-op writes that store nothing.

use serde_json::{Value, json};

use super::managed::{self, Writer};
use super::merge::{self, JsonPatchError};
use super::meta::{self, meta_str, remove_meta, set_meta};
use super::registry::{ResourceType, TypeIdx};
use super::schema;
use super::status::{ApiError, Cause, success_status};
use super::store::{ObjKey, Store};

/// The request a write comes from.
pub(crate) struct Ctx<'a> {
    pub rt: &'a ResourceType,
    pub ty: TypeIdx,
    /// The namespace in the URL (namespaced types only).
    pub namespace: Option<&'a str>,
    /// `Some("status")` for the status subresource.
    pub subresource: Option<&'a str>,
    /// `fieldManager`, or what the server derives from the user agent.
    pub manager: &'a str,
    pub dry_run: bool,
    /// The current time, formatted.
    pub now: &'a str,
}

impl Ctx<'_> {
    fn key(&self, name: &str) -> ObjKey {
        ObjKey {
            ty: self.ty,
            namespace: self.namespace.unwrap_or_default().to_string(),
            name: name.to_string(),
        }
    }

    fn on_status(&self) -> bool {
        self.subresource == Some("status")
    }

    fn writer(&self) -> Writer<'_> {
        Writer {
            manager: self.manager,
            subresource: self.subresource,
            api_version: &self.rt.version,
            now: self.now,
        }
    }
}

/// The answer to a write.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub code: u16,
    pub body: Value,
    pub name: String,
    /// Whether the store changed.
    pub changed: bool,
}

/// How field ownership of a write is recorded.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ownership {
    /// Create, PUT, merge or JSON patch: the writer gets an `Update` entry for what it changed.
    Update,
    /// Server-side apply: `managedFields` were already computed.
    Applied,
}

/// The kind of PATCH, from its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchKind {
    Merge,
    Json,
    Strategic,
    Apply,
}

impl PatchKind {
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        match content_type {
            "application/merge-patch+json" => Some(Self::Merge),
            "application/json-patch+json" => Some(Self::Json),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Some(Self::Apply),
            _ => None,
        }
    }
}

/// POST: create an object.
pub(crate) fn create(store: &mut Store, ctx: &Ctx<'_>, body: Value) -> Result<Outcome, ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the body of a create must be a JSON object",
        ));
    }
    finish_create(store, ctx, body, Ownership::Update)
}

/// PUT: replace an object (or its status).
pub(crate) fn replace(
    store: &mut Store,
    ctx: &Ctx<'_>,
    name: &str,
    body: Value,
) -> Result<Outcome, ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the body of an update must be a JSON object",
        ));
    }
    let key = ctx.key(name);
    let old = store
        .get(&key)
        .ok_or_else(|| ApiError::not_found(ctx.rt, name))?;
    finish_update(store, ctx, &key, &old, body, Ownership::Update, true)
}

/// PATCH, of any kind. Apply to an absent object creates it.
pub(crate) fn patch(
    store: &mut Store,
    ctx: &Ctx<'_>,
    name: &str,
    kind: PatchKind,
    body: &[u8],
    force: bool,
) -> Result<Outcome, ApiError> {
    if kind == PatchKind::Strategic && ctx.rt.custom {
        // Checked before anything else, as the API server does.
        return Err(ApiError::unsupported_media_type(
            "application/strategic-merge-patch+json",
        ));
    }
    let key = ctx.key(name);
    let old = store.get(&key);
    if kind == PatchKind::Apply {
        return apply(store, ctx, name, old.as_deref(), body, force);
    }
    let old = old.ok_or_else(|| ApiError::not_found(ctx.rt, name))?;
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let mut candidate = (*old).clone();
    match kind {
        PatchKind::Merge => merge::merge_patch(&mut candidate, &patch),
        // Built-in types only. Without their Go struct tags we treat it as a merge patch: lists
        // are replaced rather than merged by patchMergeKey.
        PatchKind::Strategic => merge::merge_patch(&mut candidate, &patch),
        PatchKind::Json => merge::json_patch(&mut candidate, &patch).map_err(|e| match e {
            JsonPatchError::Malformed(m) => ApiError::bad_request(m),
            JsonPatchError::Failed(m) => ApiError::new(422, "Invalid", m),
        })?,
        PatchKind::Apply => {}
    }
    if !candidate.is_object() {
        return Err(ApiError::bad_request(
            "the patched object is not a JSON object",
        ));
    }
    finish_update(store, ctx, &key, &old, candidate, Ownership::Update, false)
}

/// Server-side apply.
fn apply(
    store: &mut Store,
    ctx: &Ctx<'_>,
    name: &str,
    live: Option<&Value>,
    body: &[u8],
    force: bool,
) -> Result<Outcome, ApiError> {
    if ctx.manager.is_empty() {
        return Err(ApiError::new(
            422,
            "Invalid",
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        ));
    }
    // kube and kubectl send JSON; YAML (a superset) is accepted too.
    let mut applied: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => std::str::from_utf8(body)
            .ok()
            .and_then(|s| serde_saphyr::from_str::<Value>(s).ok())
            .ok_or_else(|| {
                ApiError::bad_request("error decoding YAML or JSON apply configuration")
            })?,
    };
    if !applied.is_object() {
        return Err(ApiError::bad_request(
            "an apply configuration must be an object",
        ));
    }
    check_type_meta(ctx.rt, &applied, true)?;
    if let Some(n) = meta_str(&applied, "name")
        && n != name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        )));
    }
    // The strategy's reset fields never count: status on the main resource, everything but
    // status on /status.
    if let Some(map) = applied.as_object_mut() {
        if ctx.on_status() {
            map.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status"));
            if let Some(m) = map.get_mut("metadata").and_then(Value::as_object_mut) {
                m.retain(|k, _| {
                    matches!(k.as_str(), "name" | "namespace" | "resourceVersion" | "uid")
                });
            }
        } else if ctx.rt.status_subresource {
            map.remove("status");
        }
    }
    if ctx.rt.custom {
        // The configuration is pruned as the object would be, so ownership covers only real fields.
        schema::prune(&mut applied, &ctx.rt.schema, true);
    }
    let merged = managed::apply(live, &applied, &ctx.rt.schema, &ctx.writer(), force)
        .map_err(|causes| ApiError::apply_conflicts(ctx.rt, name, causes))?;
    match live {
        Some(old) => {
            let key = ctx.key(name);
            finish_update(store, ctx, &key, old, merged, Ownership::Applied, false)
        }
        None if ctx.on_status() => Err(ApiError::not_found(ctx.rt, name)),
        None => {
            let mut merged = merged;
            set_meta(&mut merged, "name", Value::String(name.to_string()));
            finish_create(store, ctx, merged, Ownership::Applied)
        }
    }
}

/// DELETE. With finalizers the object only gets a `deletionTimestamp`; without, it goes.
pub(crate) fn delete(
    store: &mut Store,
    ctx: &Ctx<'_>,
    name: &str,
    options: &Value,
) -> Result<Outcome, ApiError> {
    let key = ctx.key(name);
    let old = store
        .get(&key)
        .ok_or_else(|| ApiError::not_found(ctx.rt, name))?;
    if let Some(pre) = options.get("preconditions") {
        let want_uid = pre.get("uid").and_then(Value::as_str);
        let want_rv = pre.get("resourceVersion").and_then(Value::as_str);
        let uid = meta_str(&old, "uid").unwrap_or_default();
        let rv = meta_str(&old, "resourceVersion").unwrap_or_default();
        if let Some(want) = want_uid
            && want != uid
        {
            return Err(ApiError::conflict(
                ctx.rt,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {want}, UID in object meta: {uid}"
                ),
            ));
        }
        if let Some(want) = want_rv
            && want != rv
        {
            return Err(ApiError::conflict(
                ctx.rt,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {rv}"
                ),
            ));
        }
    }
    if !meta::finalizers(&old).is_empty() {
        if meta_str(&old, "deletionTimestamp").is_some() {
            return Ok(Outcome {
                code: 200,
                body: (*old).clone(),
                name: name.to_string(),
                changed: false,
            });
        }
        let mut pending = (*old).clone();
        set_meta(
            &mut pending,
            "deletionTimestamp",
            Value::String(ctx.now.to_string()),
        );
        set_meta(&mut pending, "deletionGracePeriodSeconds", json!(0));
        // First deletion request: controllers should notice, so generation moves (if tracked).
        if let Some(generation) = meta::meta(&old)
            .and_then(|m| m.get("generation"))
            .and_then(Value::as_i64)
            .filter(|g| *g > 0)
        {
            set_meta(&mut pending, "generation", json!(generation + 1));
        }
        let body = if ctx.dry_run {
            pending
        } else {
            (*store.put(key, pending)).clone()
        };
        return Ok(Outcome {
            code: 200,
            body,
            name: name.to_string(),
            changed: !ctx.dry_run,
        });
    }
    let uid = meta_str(&old, "uid").map(str::to_string);
    if !ctx.dry_run {
        store.remove(&key);
    }
    Ok(Outcome {
        code: 200,
        body: success_status(ctx.rt, name, uid.as_deref()),
        name: name.to_string(),
        changed: !ctx.dry_run,
    })
}

/// `apiVersion` and `kind` must name this type (and must be present when `required`).
fn check_type_meta(rt: &ResourceType, obj: &Value, required: bool) -> Result<(), ApiError> {
    let expected = rt.api_version();
    match obj.get("apiVersion").and_then(Value::as_str) {
        None | Some("") if required => {
            return Err(ApiError::bad_request("Object 'apiVersion' is missing"));
        }
        Some(av) if !av.is_empty() && av != expected => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({expected})"
            )));
        }
        _ => {}
    }
    match obj.get("kind").and_then(Value::as_str) {
        None | Some("") if required => Err(ApiError::bad_request("Object 'Kind' is missing")),
        Some(kind) if !kind.is_empty() && kind != rt.kind => Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            rt.kind
        ))),
        _ => Ok(()),
    }
}

/// The namespace in the body must match the URL; cluster-scoped objects have none.
/// 422 for a label value the API server refuses (`meta::check_label_values`).
fn check_labels(rt: &ResourceType, name: &str, obj: &Value) -> Result<(), ApiError> {
    meta::check_label_values(obj).map_err(|(field, message)| {
        ApiError::invalid(
            rt,
            name,
            vec![Cause::new("FieldValueInvalid", &field, message)],
        )
    })
}

fn check_namespace(ctx: &Ctx<'_>, obj: &mut Value) -> Result<(), ApiError> {
    if ctx.rt.namespaced {
        let ns = ctx.namespace.unwrap_or_default();
        if let Some(given) = meta_str(obj, "namespace")
            && given != ns
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        set_meta(obj, "namespace", Value::String(ns.to_string()));
    } else {
        remove_meta(obj, "namespace");
    }
    Ok(())
}

/// Type-specific normalisation the real strategies do on every write.
fn normalize(rt: &ResourceType, obj: &mut Value) {
    remove_meta(obj, "selfLink");
    // Secret: `stringData` is write-only, merged into `data` as base64.
    if rt.group.is_empty()
        && rt.kind == "Secret"
        && let Some(map) = obj.as_object_mut()
        && let Some(Value::Object(string_data)) = map.remove("stringData")
    {
        let data = map
            .entry("data")
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
        if let Some(data) = data.as_object_mut() {
            for (k, v) in string_data {
                if let Some(s) = v.as_str() {
                    data.insert(k, Value::String(meta::base64(s.as_bytes())));
                }
            }
        }
    }
}

/// Pruning, defaulting and validation of custom resources (`old` enables ratcheting).
fn admit_schema(
    rt: &ResourceType,
    name: &str,
    obj: &mut Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    if !rt.custom {
        return Ok(());
    }
    schema::prune(obj, &rt.schema, true);
    schema::apply_defaults(obj, &rt.schema);
    let mut causes = Vec::new();
    schema::validate(obj, old, &rt.schema, "", &mut causes);
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(rt, name, causes))
    }
}

/// The end of every create (POST, or apply to an absent object).
fn finish_create(
    store: &mut Store,
    ctx: &Ctx<'_>,
    mut obj: Value,
    ownership: Ownership,
) -> Result<Outcome, ApiError> {
    let rt = ctx.rt;
    check_type_meta(rt, &obj, true)?;
    if meta_str(&obj, "resourceVersion").is_some() {
        return Err(ApiError::bad_request(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    let name = match (meta_str(&obj, "name"), meta_str(&obj, "generateName")) {
        (Some(name), _) => name.to_string(),
        (None, Some(prefix)) => format!("{prefix}{}", meta::name_suffix()),
        (None, None) => {
            return Err(ApiError::invalid(
                rt,
                "",
                vec![Cause::new(
                    "FieldValueRequired",
                    "metadata.name",
                    "Required value: name or generateName is required",
                )],
            ));
        }
    };
    if let Err(message) = meta::check_dns_subdomain(&name) {
        return Err(ApiError::invalid(
            rt,
            &name,
            vec![Cause::new("FieldValueInvalid", "metadata.name", message)],
        ));
    }
    set_meta(&mut obj, "name", Value::String(name.clone()));
    check_labels(rt, &name, &obj)?;
    check_namespace(ctx, &mut obj)?;
    if let Some(map) = obj.as_object_mut() {
        if rt.status_subresource && rt.custom {
            // The CRD strategy drops status on create: only /status writes it.
            map.remove("status");
        }
        if rt.kind == "Namespace" && rt.group.is_empty() {
            map.insert("status".into(), json!({"phase": "Active"}));
        }
    }
    for field in ["deletionTimestamp", "deletionGracePeriodSeconds"] {
        remove_meta(&mut obj, field);
    }
    set_meta(&mut obj, "uid", Value::String(meta::new_uid()));
    set_meta(
        &mut obj,
        "creationTimestamp",
        Value::String(ctx.now.to_string()),
    );
    if rt.uses_generation() {
        set_meta(&mut obj, "generation", json!(1));
    } else {
        remove_meta(&mut obj, "generation");
    }
    normalize(rt, &mut obj);
    admit_schema(rt, &name, &mut obj, None)?;
    match ownership {
        Ownership::Update => {
            remove_meta(&mut obj, "managedFields");
            managed::record_update(None, &mut obj, &rt.schema, &ctx.writer());
        }
        Ownership::Applied => managed::finish(&mut obj),
    }
    let key = ctx.key(&name);
    if store.get(&key).is_some() {
        return Err(ApiError::already_exists(rt, &name));
    }
    let body = if ctx.dry_run {
        obj
    } else {
        (*store.put(key, obj)).clone()
    };
    Ok(Outcome {
        code: 201,
        body,
        name,
        changed: !ctx.dry_run,
    })
}

/// Whether anything outside `metadata` and `status` differs (what moves `generation`).
fn spec_changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(map) = v.as_object_mut() {
            map.remove("metadata");
            map.remove("status");
        }
        v
    };
    strip(old) != strip(new)
}

/// The end of every update (PUT, patch, apply to an existing object).
fn finish_update(
    store: &mut Store,
    ctx: &Ctx<'_>,
    key: &ObjKey,
    old: &Value,
    mut cand: Value,
    ownership: Ownership,
    is_put: bool,
) -> Result<Outcome, ApiError> {
    let rt = ctx.rt;
    let name = key.name.as_str();
    check_type_meta(rt, &cand, true)?;
    if let Some(given) = meta_str(&cand, "name")
        && given != name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({given}) does not match the name on the URL ({name})"
        )));
    }
    check_labels(rt, name, &cand)?;
    check_namespace(ctx, &mut cand)?;

    // Preconditions: resourceVersion (optimistic concurrency) and uid.
    let old_rv = meta_str(old, "resourceVersion")
        .unwrap_or_default()
        .to_string();
    match meta_str(&cand, "resourceVersion") {
        Some(rv) if rv != old_rv => return Err(ApiError::stale(rt, name)),
        None if is_put && !rt.unconditional_update() => {
            return Err(ApiError::invalid(
                rt,
                name,
                vec![Cause::new(
                    "FieldValueInvalid",
                    "metadata.resourceVersion",
                    "Invalid value: 0x0: must be specified for an update",
                )],
            ));
        }
        _ => {}
    }
    if let Some(uid) = meta_str(&cand, "uid")
        && Some(uid) != meta_str(old, "uid")
    {
        return Err(ApiError::conflict(
            rt,
            name,
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                meta_str(old, "uid").unwrap_or_default()
            ),
        ));
    }

    // The status subresource split.
    if ctx.on_status() {
        let status = cand.get("status").cloned();
        let managed_fields = meta::meta(&cand)
            .and_then(|m| m.get("managedFields"))
            .cloned();
        cand = old.clone();
        if let Some(map) = cand.as_object_mut() {
            match status {
                Some(s) => map.insert("status".into(), s),
                None => map.remove("status"),
            };
        }
        if ownership == Ownership::Applied {
            match managed_fields {
                Some(mf) => set_meta(&mut cand, "managedFields", mf),
                None => remove_meta(&mut cand, "managedFields"),
            }
        }
    } else if rt.status_subresource
        && let Some(map) = cand.as_object_mut()
    {
        match old.get("status") {
            Some(s) => map.insert("status".into(), s.clone()),
            None => map.remove("status"),
        };
    }

    // System metadata is the server's.
    for field in [
        "uid",
        "creationTimestamp",
        "generation",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generateName",
    ] {
        match meta::meta(old).and_then(|m| m.get(field)) {
            Some(v) => set_meta(&mut cand, field, v.clone()),
            None => remove_meta(&mut cand, field),
        }
    }
    set_meta(&mut cand, "name", Value::String(name.to_string()));

    let deleting = meta_str(old, "deletionTimestamp").is_some();
    if deleting {
        let before = meta::finalizers(old);
        let added: Vec<String> = meta::finalizers(&cand)
            .into_iter()
            .filter(|f| !before.contains(f))
            .collect();
        if !added.is_empty() {
            return Err(ApiError::invalid(
                rt,
                name,
                vec![Cause::new(
                    "FieldValueForbidden",
                    "metadata.finalizers",
                    format!(
                        "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"
                    ),
                )],
            ));
        }
    }

    normalize(rt, &mut cand);
    admit_schema(rt, name, &mut cand, Some(old))?;

    if rt.uses_generation() && spec_changed(old, &cand) {
        let generation = meta::meta(old)
            .and_then(|m| m.get("generation"))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        set_meta(&mut cand, "generation", json!(generation + 1));
    }

    match ownership {
        Ownership::Update => {
            // Ownership comes from the stored object, not from what the client sent.
            match meta::meta(old).and_then(|m| m.get("managedFields")) {
                Some(mf) => set_meta(&mut cand, "managedFields", mf.clone()),
                None => remove_meta(&mut cand, "managedFields"),
            }
            managed::record_update(Some(old), &mut cand, &rt.schema, &ctx.writer());
        }
        Ownership::Applied => managed::finish(&mut cand),
    }

    // The last finalizer of an object being deleted is gone: the object goes. The store deletes
    // its last stored state (no MODIFIED event), and answers with it, as the real registry does.
    if deleting && meta::finalizers(&cand).is_empty() {
        // A dry run answers with what the write would leave (what admission is shown).
        let body = if ctx.dry_run {
            cand
        } else {
            store.remove(key);
            old.clone()
        };
        return Ok(Outcome {
            code: 200,
            body,
            name: name.to_string(),
            changed: !ctx.dry_run,
        });
    }

    set_meta(&mut cand, "resourceVersion", Value::String(old_rv));
    if cand == *old {
        // A no-op: nothing is written, the resourceVersion does not move, no watch event.
        return Ok(Outcome {
            code: 200,
            body: cand,
            name: name.to_string(),
            changed: false,
        });
    }
    let body = if ctx.dry_run {
        cand
    } else {
        (*store.put(key.clone(), cand)).clone()
    };
    Ok(Outcome {
        code: 200,
        body,
        name: name.to_string(),
        changed: !ctx.dry_run,
    })
}

/// Stores a create or update that admission let through. `planned` is what a dry run of the
/// write produced (every strategy above already applied); `admitted` is that object as the
/// mutating webhooks left it. What they changed is checked again, as the real registry validates
/// after mutating admission (`registry/rest.BeforeCreate`/`BeforeUpdate` run inside the store,
/// after the handler's `admit`): type meta, name, namespace, labels, the CRD schema, and
/// `generation` moves if the spec changed. System metadata, status (on the main resource) and
/// `managedFields` stay as planned: webhook changes are not attributed to a manager here.
pub(crate) fn commit_admitted(
    store: &mut Store,
    ctx: &Ctx<'_>,
    key: &ObjKey,
    old: Option<&Value>,
    planned: Outcome,
    admitted: Value,
) -> Result<Outcome, ApiError> {
    let rt = ctx.rt;
    let name = key.name.as_str();
    let mut object = admitted;
    if object != planned.body {
        check_type_meta(rt, &object, true)?;
        if meta_str(&object, "name") != Some(name) {
            return Err(ApiError::bad_request(format!(
                "a mutating webhook changed the name of the object to {:?}",
                meta_str(&object, "name").unwrap_or_default()
            )));
        }
        check_labels(rt, name, &object)?;
        check_namespace(ctx, &mut object)?;
        for field in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "resourceVersion",
            "managedFields",
        ] {
            match meta::meta(&planned.body).and_then(|m| m.get(field)) {
                Some(v) => set_meta(&mut object, field, v.clone()),
                None => remove_meta(&mut object, field),
            }
        }
        if rt.status_subresource
            && let Some(map) = object.as_object_mut()
        {
            match planned.body.get("status") {
                Some(s) => map.insert("status".into(), s.clone()),
                None => map.remove("status"),
            };
        }
        normalize(rt, &mut object);
        admit_schema(rt, name, &mut object, old)?;
        if rt.uses_generation() {
            let generation = match old {
                None => 1,
                Some(old) => {
                    let previous = meta::meta(old)
                        .and_then(|m| m.get("generation"))
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    previous + i64::from(spec_changed(old, &object))
                }
            };
            set_meta(&mut object, "generation", json!(generation));
        }
    }
    let done = |body: Value, changed: bool| Outcome {
        code: planned.code,
        body,
        name: name.to_string(),
        changed,
    };
    match old {
        None => {
            if store.get(key).is_some() {
                return Err(ApiError::already_exists(rt, name));
            }
        }
        Some(old) => {
            if meta_str(old, "deletionTimestamp").is_some() && meta::finalizers(&object).is_empty()
            {
                if !ctx.dry_run {
                    store.remove(key);
                }
                return Ok(done(old.clone(), !ctx.dry_run));
            }
            if object == *old {
                return Ok(done(object, false));
            }
        }
    }
    if ctx.dry_run {
        return Ok(done(object, false));
    }
    let stored = (*store.put(key.clone(), object)).clone();
    Ok(done(stored, true))
}

/// A SelfSubjectReview: nothing is stored; the answer says who the caller is.
pub(crate) fn self_subject_review(
    username: &str,
    groups: &[String],
    body: &Value,
) -> Result<Value, ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the body must be a SelfSubjectReview object",
        ));
    }
    Ok(json!({
        "kind": "SelfSubjectReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "status": {"userInfo": {"username": username, "groups": groups}},
    }))
}
