//! The HTTP side: one fallback handler that parses Kubernetes API paths itself (the URL
//! grammar, e.g. `/api/v1/namespaces/{name}/status` vs `/api/v1/namespaces/{ns}/{resource}`,
//! does not fit a router's patterns), applies latency and faults, counts the request, and
//! dispatches to get, list, watch, create, update, patch, delete or deletecollection.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode, header};
use serde_json::{Value, json};

use super::Shared;
use super::admission::{self, UserInfo};
use super::discovery;
use super::meta;
use super::objects::{self, Ctx, Outcome, PatchKind};
use super::observe::{Verb, WriteRecord};
use super::registry::{ResourceType, TypeIdx};
use super::selectors::Selector;
use super::status::{self, ApiError, json_response};
use super::table::{self, IncludeObject, Output};
use super::watch::{self, Start, WatchRequest};

/// The API server's limit on request bodies (3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;

/// Watches without `timeoutSeconds` end after this long (the real server picks 30-60 minutes).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

/// A request for a resource: which type, where, which object, which subresource.
struct Target {
    ty: TypeIdx,
    rt: Arc<ResourceType>,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

enum Route {
    Json(Value),
    Aggregated(Value),
    Resource(Target),
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let latency = shared.lock_faults().latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match route(&shared, &req) {
        Ok(Route::Json(doc)) => {
            shared.lock_observations().discovery += 1;
            if req.method() == Method::GET {
                json_response(StatusCode::OK, &doc)
            } else {
                ApiError::method_not_allowed().into_response()
            }
        }
        Ok(Route::Aggregated(doc)) => {
            shared.lock_observations().discovery += 1;
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, discovery::AGGREGATED_V2)],
                doc.to_string(),
            )
                .into_response()
        }
        Ok(Route::Resource(target)) => resource_request(shared, req, target).await,
        Err(err) => err.into_response(),
    }
}

fn route(shared: &Shared, req: &Request) -> Result<Route, ApiError> {
    let path = req.uri().path().trim_end_matches('/');
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let registry = &shared.registry;
    match segments.as_slice() {
        ["version"] => Ok(Route::Json(discovery::version())),
        ["healthz"] | ["livez"] | ["readyz"] => Ok(Route::Json(json!("ok"))),
        ["api"] if discovery::wants_aggregated(accept) => {
            Ok(Route::Aggregated(discovery::aggregated(registry, true)))
        }
        ["api"] => Ok(Route::Json(discovery::core_versions(&shared.address))),
        ["apis"] if discovery::wants_aggregated(accept) => {
            Ok(Route::Aggregated(discovery::aggregated(registry, false)))
        }
        ["apis"] => Ok(Route::Json(discovery::group_list(registry))),
        ["api", version] => discovery::resource_list(registry, "", version)
            .map(Route::Json)
            .ok_or_else(ApiError::no_route),
        ["apis", group] => discovery::group(registry, group)
            .map(Route::Json)
            .ok_or_else(ApiError::no_route),
        ["apis", group, version] => discovery::resource_list(registry, group, version)
            .map(Route::Json)
            .ok_or_else(ApiError::no_route),
        ["api", version, rest @ ..] => target(shared, "", version, rest).map(Route::Resource),
        ["apis", group, version, rest @ ..] => {
            target(shared, group, version, rest).map(Route::Resource)
        }
        _ => Err(ApiError::no_route()),
    }
}

/// Resource paths: `{plural}[/{name}[/{sub}]]` or `namespaces/{ns}/{plural}[/{name}[/{sub}]]`.
fn target(shared: &Shared, group: &str, version: &str, segs: &[&str]) -> Result<Target, ApiError> {
    let registry = &shared.registry;
    let build = |ty: TypeIdx, namespace: Option<&str>, rest: &[&str]| -> Result<Target, ApiError> {
        let rt = registry.get(ty).cloned().ok_or_else(ApiError::no_route)?;
        if rest.len() > 2 {
            return Err(ApiError::no_route());
        }
        let subresource = rest.get(1).map(|s| s.to_string());
        if subresource
            .as_deref()
            .is_some_and(|s| s != "status" || !rt.status_subresource)
        {
            return Err(ApiError::no_route());
        }
        Ok(Target {
            ty,
            rt,
            namespace: namespace.map(str::to_string),
            name: rest.first().map(|s| s.to_string()),
            subresource,
        })
    };
    if let ["namespaces", ns, plural, rest @ ..] = segs
        && let Some(ty) = registry.lookup(group, version, plural)
        && registry.get(ty).is_some_and(|t| t.namespaced)
    {
        return build(ty, Some(ns), rest);
    }
    let (plural, rest) = segs.split_first().ok_or_else(ApiError::no_route)?;
    let ty = registry
        .lookup(group, version, plural)
        .ok_or_else(ApiError::no_route)?;
    let t = build(ty, None, rest)?;
    if t.rt.namespaced && t.name.is_some() {
        // A namespaced object needs its namespace in the path.
        return Err(ApiError::no_route());
    }
    Ok(t)
}

/// Query parameters (the last value of a repeated one wins).
fn query(req: &Request) -> Result<HashMap<String, String>, ApiError> {
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(req.uri())
        .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
    Ok(pairs.into_iter().collect())
}

fn flag(params: &HashMap<String, String>, name: &str) -> bool {
    params.get(name).is_some_and(|v| v == "true" || v == "1")
}

fn verb_of(
    method: &Method,
    target: &Target,
    params: &HashMap<String, String>,
) -> Result<Verb, ApiError> {
    let named = target.name.is_some();
    let verb = match (method.as_str(), named) {
        ("GET", false) if flag(params, "watch") => Verb::Watch,
        ("GET", false) => Verb::List,
        ("GET", true) => Verb::Get,
        ("POST", false) => Verb::Create,
        ("PUT", true) => Verb::Update,
        ("PATCH", true) => Verb::Patch,
        ("DELETE", true) => Verb::Delete,
        ("DELETE", false) => Verb::DeleteCollection,
        _ => return Err(ApiError::method_not_allowed()),
    };
    let rt = &target.rt;
    if rt.create_only && verb != Verb::Create {
        return Err(ApiError::method_not_allowed());
    }
    if target.subresource.is_some() && !matches!(verb, Verb::Get | Verb::Update | Verb::Patch) {
        return Err(ApiError::method_not_allowed());
    }
    if rt.namespaced
        && target.namespace.is_none()
        && matches!(verb, Verb::Create | Verb::DeleteCollection)
    {
        return Err(ApiError::method_not_allowed());
    }
    Ok(verb)
}

async fn resource_request(shared: Arc<Shared>, req: Request, target: Target) -> Response {
    let params = match query(&req) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let verb = match verb_of(req.method(), &target, &params) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    shared
        .lock_observations()
        .counts
        .add(verb, &target.rt.plural);

    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let impersonate = req
        .headers()
        .get("impersonate-user")
        .and_then(|v| v.to_str().ok())
        .map(|user| {
            let groups = req
                .headers()
                .get_all("impersonate-group")
                .iter()
                .filter_map(|v| v.to_str().ok().map(str::to_owned))
                .collect();
            Impersonation {
                user: user.to_owned(),
                groups,
                extra: impersonated_extra(req.headers()),
            }
        });
    let output = table::negotiate(
        req.headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default(),
    );
    let field_manager = params
        .get("fieldManager")
        .cloned()
        .filter(|m| !m.is_empty());
    let mut record = verb.is_write().then(|| WriteRecord {
        verb,
        resource: target.rt.plural.clone(),
        namespace: target.namespace.clone(),
        name: target.name.clone(),
        field_manager: field_manager.clone(),
        subresource: target.subresource.clone(),
        patch_type: (verb == Verb::Patch).then(|| content_type.clone()),
        code: 0,
        changed: false,
    });

    let fault = shared.lock_faults().check(verb, &target.rt.plural);
    let result: Result<Answer, ApiError> = match fault {
        Some(code) => Err(ApiError::for_code(
            code,
            format!(
                "injected failure ({code}) for {} {}",
                verb, target.rt.plural
            ),
        )),
        None => {
            let body = match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
                Ok(b) => b,
                Err(_) => {
                    return ApiError::new(413, "RequestEntityTooLarge", "request body too large")
                        .into_response();
                }
            };
            let input = Input {
                params: &params,
                body,
                content_type: &content_type,
                field_manager: field_manager.as_deref(),
                user_agent: &user_agent,
                impersonate,
                output,
            };
            if verb.is_write()
                && verb != Verb::DeleteCollection
                && !target.rt.create_only
                && !admission::exempt(&target.rt)
                && admission::configured(&shared)
            {
                admitted_write(&shared, verb, &target, input).await
            } else {
                dispatch(&shared, verb, &target, input)
            }
        }
    };
    match result {
        Ok(Answer::Object(outcome)) => {
            if let Some(r) = record.as_mut() {
                r.code = outcome.code;
                r.changed = outcome.changed;
                if r.name.is_none() && verb == Verb::Create {
                    r.name = Some(outcome.name.clone());
                }
            }
            if let Some(r) = record {
                shared.lock_observations().writes.push(r);
            }
            let code = StatusCode::from_u16(outcome.code).unwrap_or(StatusCode::OK);
            json_response(code, &outcome.body)
        }
        Ok(Answer::Stream(body)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(err) => {
            if let Some(mut r) = record {
                r.code = err.code;
                shared.lock_observations().writes.push(r);
            }
            err.into_response()
        }
    }
}

/// `Impersonate-Extra-KEY: VALUE` headers, KEY percent-decoded as the API server does
/// (`impersonation.go` `unescapeExtraKey`).
fn impersonated_extra(headers: &http::HeaderMap) -> BTreeMap<String, Vec<String>> {
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        if let (Some(key), Ok(value)) = (
            name.as_str().strip_prefix("impersonate-extra-"),
            value.to_str(),
        ) {
            let key = percent_encoding::percent_decode_str(key)
                .decode_utf8_lossy()
                .into_owned();
            extra.entry(key).or_default().push(value.to_owned());
        }
    }
    extra
}

/// What a dispatched request answers.
enum Answer {
    Object(Outcome),
    Stream(Body),
}

#[derive(Clone)]
struct Input<'a> {
    params: &'a HashMap<String, String>,
    body: Bytes,
    content_type: &'a str,
    field_manager: Option<&'a str>,
    user_agent: &'a str,
    /// `Impersonate-User` and `Impersonate-Group` (`kubectl --as`), which every caller is
    /// allowed here.
    impersonate: Option<Impersonation>,
    /// JSON, or a Table (GET and LIST of custom resources).
    output: Output,
}

/// `Impersonate-User`, `Impersonate-Group` and `Impersonate-Extra-*` (`kubectl --as`,
/// `--as-group`, `--as-user-extra`).
#[derive(Clone)]
struct Impersonation {
    user: String,
    groups: Vec<String>,
    extra: BTreeMap<String, Vec<String>>,
}

impl Input<'_> {
    /// A JSON (or YAML) object body.
    fn object(&self) -> Result<Value, ApiError> {
        let parsed: Option<Value> = if self.content_type.contains("yaml") {
            std::str::from_utf8(&self.body)
                .ok()
                .and_then(|s| serde_saphyr::from_str(s).ok())
        } else {
            serde_json::from_slice(&self.body).ok()
        };
        parsed
            .filter(Value::is_object)
            .ok_or_else(|| ApiError::bad_request("the request body is not a valid JSON object"))
    }

    /// Who the request acts as: the impersonated user, or the server's identity.
    fn user(&self, shared: &Shared) -> UserInfo {
        match &self.impersonate {
            Some(who) => UserInfo::impersonated(&who.user, &who.groups, who.extra.clone()),
            None => {
                let (username, groups) = shared.identity();
                UserInfo {
                    username,
                    groups,
                    extra: BTreeMap::new(),
                }
            }
        }
    }

    /// The manager a write records: apply needs an explicit fieldManager (nothing is derived).
    fn write_manager(&self, verb: Verb) -> String {
        match (verb, self.content_type) {
            (Verb::Patch, "application/apply-patch+yaml") => {
                self.field_manager.unwrap_or_default().to_string()
            }
            _ => self.manager(),
        }
    }

    fn dry_run(&self) -> bool {
        self.params.get("dryRun").is_some_and(|v| v == "All")
    }

    /// The DeleteOptions in the body (none: defaults).
    fn delete_options(&self) -> Result<Value, ApiError> {
        if self.body.is_empty() {
            Ok(json!({}))
        } else {
            serde_json::from_slice(&self.body)
                .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))
        }
    }

    /// `fieldManager`, or the user agent's product name, as the API server derives it.
    fn manager(&self) -> String {
        match self.field_manager {
            Some(m) => m.to_string(),
            None => {
                let prefix = self.user_agent.split('/').next().unwrap_or_default();
                if prefix.is_empty() {
                    "unknown".to_string()
                } else {
                    prefix.to_string()
                }
            }
        }
    }
}

fn ok(body: Value) -> Answer {
    Answer::Object(Outcome {
        code: 200,
        body,
        name: String::new(),
        changed: false,
    })
}

fn dispatch(
    shared: &Arc<Shared>,
    verb: Verb,
    target: &Target,
    input: Input<'_>,
) -> Result<Answer, ApiError> {
    let rt = &target.rt;
    let name = target.name.as_deref().unwrap_or_default();
    match verb {
        Verb::Get => {
            let key = super::store::ObjKey {
                ty: target.ty,
                namespace: target.namespace.clone().unwrap_or_default(),
                name: name.to_string(),
            };
            let obj = shared.lock_store().get(&key);
            let obj = obj.ok_or_else(|| ApiError::not_found(rt, name))?;
            as_output(shared, rt, &input, (*obj).clone()).map(ok)
        }
        Verb::List => {
            let body = list(shared, target, input.params)?;
            as_output(shared, rt, &input, body).map(ok)
        }
        Verb::Watch => watch_request(shared, target, input.params),
        Verb::Create if rt.create_only => {
            let user = input.user(shared);
            let body =
                objects::self_subject_review(&user.username, &user.groups, &input.object()?)?;
            Ok(Answer::Object(Outcome {
                code: 201,
                body,
                name: String::new(),
                changed: false,
            }))
        }
        _ => {
            let now = shared.now();
            let manager = input.write_manager(verb);
            let ctx = Ctx {
                rt,
                ty: target.ty,
                namespace: target.namespace.as_deref(),
                subresource: target.subresource.as_deref(),
                manager: &manager,
                dry_run: input.dry_run(),
                now: &now,
            };
            let mut store = shared.lock_store();
            let outcome = match verb {
                Verb::Create => objects::create(&mut store, &ctx, input.object()?),
                Verb::Update => objects::replace(&mut store, &ctx, name, input.object()?),
                Verb::Patch => {
                    let kind = PatchKind::from_content_type(input.content_type)
                        .ok_or_else(|| ApiError::unsupported_media_type(input.content_type))?;
                    objects::patch(
                        &mut store,
                        &ctx,
                        name,
                        kind,
                        &input.body,
                        flag(input.params, "force"),
                    )
                }
                Verb::Delete => objects::delete(&mut store, &ctx, name, &input.delete_options()?),
                Verb::DeleteCollection => {
                    let selector = Selector::parse(
                        input.params.get("labelSelector").map(String::as_str),
                        input.params.get("fieldSelector").map(String::as_str),
                    )?;
                    let names: Vec<String> = store
                        .list(target.ty, target.namespace.as_deref())
                        .into_iter()
                        .filter(|(_, o)| selector.matches(o))
                        .map(|(k, _)| k.name)
                        .collect();
                    let mut items = Vec::new();
                    let mut changed = false;
                    for n in names {
                        let before = store.get(&super::store::ObjKey {
                            ty: target.ty,
                            namespace: target.namespace.clone().unwrap_or_default(),
                            name: n.clone(),
                        });
                        let out = objects::delete(&mut store, &ctx, &n, &json!({}))?;
                        changed |= out.changed;
                        if out.body.get("kind").and_then(Value::as_str) == Some("Status") {
                            items.extend(before.map(|b| (*b).clone()));
                        } else {
                            items.push(out.body);
                        }
                    }
                    Ok(Outcome {
                        code: 200,
                        body: json!({
                            "kind": rt.list_kind,
                            "apiVersion": rt.api_version(),
                            "metadata": {"resourceVersion": store.resource_version().to_string()},
                            "items": items,
                        }),
                        name: String::new(),
                        changed,
                    })
                }
                Verb::Get | Verb::List | Verb::Watch => Err(ApiError::method_not_allowed()),
            }?;
            Ok(Answer::Object(outcome))
        }
    }
}

/// How often a write that admission let through is retried when the object changed while the
/// webhooks were called (the real store's `GuaranteedUpdate` retries likewise).
const ADMISSION_ATTEMPTS: usize = 5;

/// A write that webhooks see: a dry run computes what would be stored, the webhooks are called
/// (without holding the store), and the admitted object is stored if the stored one did not
/// change meanwhile; otherwise everything is done again.
async fn admitted_write(
    shared: &Arc<Shared>,
    verb: Verb,
    target: &Target,
    input: Input<'_>,
) -> Result<Answer, ApiError> {
    let user = input.user(shared);
    let dry_run = input.dry_run();
    let mut rehearsal_params = input.params.clone();
    rehearsal_params.insert("dryRun".into(), "All".into());
    for _ in 0..ADMISSION_ATTEMPTS {
        let rehearsal = Input {
            params: &rehearsal_params,
            ..input.clone()
        };
        let Answer::Object(mut planned) = dispatch(shared, verb, target, rehearsal)? else {
            return Err(ApiError::method_not_allowed());
        };
        // A POST with only `generateName` is named after mutating admission: the real handler
        // admits (k8s.io/apiserver `pkg/endpoints/handlers/create.go`), then the store generates
        // the name (`pkg/registry/generic/registry/store.go`, `Store.create`), unless a webhook
        // named the object. So webhooks see no name, and may set one.
        let named_by_server = verb == Verb::Create
            && input.object().is_ok_and(|o| {
                meta::meta_str(&o, "name").is_none_or(str::is_empty)
                    && meta::meta_str(&o, "generateName").is_some()
            });
        let mut key = super::store::ObjKey {
            ty: target.ty,
            namespace: target.namespace.clone().unwrap_or_default(),
            name: planned.name.clone(),
        };
        let old = shared.lock_store().get(&key);
        let operation = match (verb, &old) {
            (Verb::Delete, _) => "DELETE",
            (Verb::Create, _) | (_, None) => "CREATE",
            _ => "UPDATE",
        };
        let options_kind = match operation {
            "DELETE" => "DeleteOptions",
            "CREATE" => "CreateOptions",
            _ => "UpdateOptions",
        };
        let mut options = if verb == Verb::Delete {
            input.delete_options()?
        } else {
            json!({})
        };
        if let Some(map) = options.as_object_mut() {
            map.insert("kind".into(), json!(options_kind));
            map.insert("apiVersion".into(), json!("meta.k8s.io/v1"));
            if verb != Verb::Delete {
                map.insert("fieldManager".into(), json!(input.write_manager(verb)));
            }
            if dry_run {
                map.insert("dryRun".into(), json!(["All"]));
            }
        }
        let attrs = admission::Attributes {
            rt: &target.rt,
            subresource: target.subresource.as_deref(),
            name: if named_by_server { "" } else { &key.name },
            namespace: target.namespace.as_deref(),
            operation,
            user: &user,
            old_object: old.as_deref(),
            dry_run,
            options,
        };
        let object = (verb != Verb::Delete).then(|| {
            let mut sent = planned.body.clone();
            if named_by_server {
                meta::remove_meta(&mut sent, "name");
            }
            sent
        });
        let mut admitted = admission::admit(shared, &attrs, object).await?;
        if named_by_server && let Some(object) = admitted.as_mut() {
            match meta::meta_str(object, "name").filter(|n| !n.is_empty()) {
                Some(chosen) => {
                    let chosen = chosen.to_owned();
                    if let Err(message) = meta::check_dns_subdomain(&chosen) {
                        return Err(ApiError::invalid(
                            &target.rt,
                            &chosen,
                            vec![status::Cause::new(
                                "FieldValueInvalid",
                                "metadata.name",
                                message,
                            )],
                        ));
                    }
                    let taken = super::store::ObjKey {
                        name: chosen.clone(),
                        ..key.clone()
                    };
                    if shared.lock_store().get(&taken).is_some() {
                        // Store.create answers a taken name so (no retry: the name was given).
                        return Err(ApiError::already_exists(&target.rt, &chosen));
                    }
                    meta::set_meta(&mut planned.body, "name", json!(chosen));
                    planned.name = chosen.clone();
                    key.name = chosen;
                }
                None => meta::set_meta(object, "name", json!(planned.name)),
            }
        }

        let now = shared.now();
        let manager = input.write_manager(verb);
        let ctx = Ctx {
            rt: &target.rt,
            ty: target.ty,
            namespace: target.namespace.as_deref(),
            subresource: target.subresource.as_deref(),
            manager: &manager,
            dry_run,
            now: &now,
        };
        let mut store = shared.lock_store();
        let version = |o: Option<&Value>| {
            o.and_then(|o| meta::meta_str(o, "resourceVersion"))
                .map(str::to_owned)
        };
        if version(store.get(&key).as_deref()) != version(old.as_deref()) {
            continue;
        }
        let outcome = match admitted {
            Some(object) => {
                objects::commit_admitted(&mut store, &ctx, &key, old.as_deref(), planned, object)?
            }
            None => objects::delete(&mut store, &ctx, &key.name, &input.delete_options()?)?,
        };
        return Ok(Answer::Object(outcome));
    }
    Err(ApiError::conflict(
        &target.rt,
        target.name.as_deref().unwrap_or_default(),
        "the object kept changing while admission webhooks were called; please apply your changes to the latest version and try again",
    ))
}

/// The answer to a GET or LIST in the form the client asked for (apiserver
/// `transformResponseObject`): the object or list itself, or a Table of it.
fn as_output(
    shared: &Shared,
    rt: &ResourceType,
    input: &Input<'_>,
    body: Value,
) -> Result<Value, ApiError> {
    match (input.output, &rt.table) {
        (Output::Table(version), Some(convertor)) => {
            let include =
                IncludeObject::from_param(input.params.get("includeObject").map(String::as_str))?;
            Ok(convertor.to_table(&body, version, include, shared.clock_now()))
        }
        _ => Ok(body),
    }
}

fn parse_rv(raw: &str) -> Result<u64, ApiError> {
    raw.parse::<u64>()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version: {raw:?}")))
}

fn too_large(rv: u64, current: u64) -> ApiError {
    let mut err = ApiError::new(
        504,
        "Timeout",
        format!("Too large resource version: {rv}, current: {current}"),
    );
    err.details = Some(
        json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1}),
    );
    err
}

/// A continue token: the list's resourceVersion and the last key returned (opaque to clients).
fn encode_continue(rv: u64, namespace: &str, name: &str) -> String {
    meta::hex(json!([rv, namespace, name]).to_string().as_bytes())
}

fn decode_continue(token: &str) -> Result<(u64, String, String), ApiError> {
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let bytes = meta::unhex(token).ok_or_else(bad)?;
    let (rv, ns, name): (u64, String, String) =
        serde_json::from_slice(&bytes).map_err(|_| bad())?;
    Ok((rv, ns, name))
}

fn list(
    shared: &Shared,
    target: &Target,
    params: &HashMap<String, String>,
) -> Result<Value, ApiError> {
    let rt = &target.rt;
    let selector = Selector::parse(
        params.get("labelSelector").map(String::as_str),
        params.get("fieldSelector").map(String::as_str),
    )?;
    let limit = match params.get("limit").map(String::as_str) {
        None | Some("") => 0,
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request(format!("invalid limit: {l:?}")))?,
    };
    let ns = target.namespace.as_deref();
    let store = shared.lock_store();
    let current = store.resource_version();
    let (list_rv, objects, after) = match params.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let (rv, after_ns, after_name) = decode_continue(token)?;
            let objects = store.snapshot_at(target.ty, ns, rv).map_err(|_| {
                ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. \
                     You can start a new list without the continue parameter, or use the continue token \
                     in this response to retrieve the remainder of the results. Continuing with the provided \
                     token results in an inconsistent list - objects that were created, modified, or deleted \
                     between the time the first chunk was returned and now may show up in the list.",
                )
            })?;
            (rv, objects, Some((after_ns, after_name)))
        }
        None => {
            let rv = params
                .get("resourceVersion")
                .map(String::as_str)
                .unwrap_or_default();
            let exact = params.get("resourceVersionMatch").map(String::as_str) == Some("Exact");
            match rv {
                "" | "0" if !exact => (current, store.list(target.ty, ns), None),
                raw => {
                    let n = parse_rv(raw)?;
                    if n > current {
                        return Err(too_large(n, current));
                    }
                    if exact {
                        (n, store.snapshot_at(target.ty, ns, n)?, None)
                    } else {
                        (current, store.list(target.ty, ns), None)
                    }
                }
            }
        }
    };
    drop(store);
    let matching: Vec<_> = objects
        .into_iter()
        .filter(|(k, _)| {
            after
                .as_ref()
                .is_none_or(|(ans, aname)| (&k.namespace, &k.name) > (ans, aname))
        })
        .filter(|(_, o)| selector.matches(o))
        .collect();
    let total = matching.len();
    let take = if limit == 0 { total } else { limit.min(total) };
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    if take < total
        && let (Some((last_key, _)), Some(m)) = (
            matching.get(take.saturating_sub(1)),
            metadata.as_object_mut(),
        )
    {
        m.insert(
            "continue".into(),
            json!(encode_continue(
                list_rv,
                &last_key.namespace,
                &last_key.name
            )),
        );
        if selector.is_empty() {
            m.insert("remainingItemCount".into(), json!(total - take));
        }
    }
    let items: Vec<Value> = matching
        .into_iter()
        .take(take)
        .map(|(_, o)| {
            let mut item = (*o).clone();
            // Built-in lists carry no per-item type meta; custom resource lists do.
            if !rt.custom
                && let Some(map) = item.as_object_mut()
            {
                map.remove("apiVersion");
                map.remove("kind");
            }
            item
        })
        .collect();
    Ok(json!({
        "kind": rt.list_kind,
        "apiVersion": rt.api_version(),
        "metadata": metadata,
        "items": items,
    }))
}

fn watch_request(
    shared: &Arc<Shared>,
    target: &Target,
    params: &HashMap<String, String>,
) -> Result<Answer, ApiError> {
    let rt = &target.rt;
    let selector = Selector::parse(
        params.get("labelSelector").map(String::as_str),
        params.get("fieldSelector").map(String::as_str),
    )?;
    let bookmarks = flag(params, "allowWatchBookmarks");
    let send_initial_events = flag(params, "sendInitialEvents");
    let rv_match = params
        .get("resourceVersionMatch")
        .map(String::as_str)
        .filter(|m| !m.is_empty());
    let invalid = |field: &str, msg: &str| {
        ApiError::invalid(
            rt,
            "",
            vec![super::status::Cause::new("FieldValueForbidden", field, msg)],
        )
    };
    if send_initial_events {
        if rv_match != Some("NotOlderThan") {
            return Err(invalid(
                "resourceVersionMatch",
                "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
        if !bookmarks {
            return Err(invalid(
                "allowWatchBookmarks",
                "Forbidden: sendInitialEvents requires setting allowWatchBookmarks to true",
            ));
        }
    } else if rv_match.is_some() {
        return Err(invalid(
            "resourceVersionMatch",
            "Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
        ));
    }
    let start = match params.get("resourceVersion").map(String::as_str) {
        _ if send_initial_events => Start::CurrentState,
        None | Some("") | Some("0") => Start::CurrentState,
        Some(raw) => Start::After(parse_rv(raw)?),
    };
    let timeout = match params.get("timeoutSeconds").map(String::as_str) {
        None | Some("") => DEFAULT_WATCH_TIMEOUT,
        Some(t) => Duration::from_secs(
            t.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds: {t:?}")))?,
        ),
    };
    let stream = watch::open(
        shared.clone(),
        WatchRequest {
            ty: target.ty,
            namespace: target.namespace.clone(),
            selector,
            start,
            bookmarks,
            send_initial_events,
            timeout,
        },
    )?;
    Ok(Answer::Stream(Body::from_stream(stream)))
}
