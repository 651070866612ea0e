//! The `entra` directory: Microsoft Entra ID through Microsoft Graph v1.0 (DESIGN §6).
//!
//! - **Groups** are found by object id (`group.id`) or by `displayName` (an OData `eq` filter,
//!   quotes doubled): exactly one must match; two or more is an error naming them. With
//!   `create: true` a missing group is created as a security group (`mailEnabled: false`,
//!   `securityEnabled: true`, a safe `mailNickname`). Once resolved, the id in
//!   `status.groupId` is checked first, so a name search that lags behind a create never
//!   creates a second group.
//! - **Principals**: users by user principal name or object id (`/users/{upn}`, or
//!   `/users('$…')` for a UPN starting with `$`); groups by object id or `displayName`.
//!   Listings name users by UPN and groups by display name, as principals are written.
//! - **`membership` mode**: `POST /groups/{id}/members/$ref` (or `owners`) with `@odata.id`;
//!   "already exist" (400) is success. `DELETE /groups/{id}/members/{oid}/$ref`; a 404 is
//!   success. Entra keeps a group's last owner ("The group must have at least one owner"):
//!   with `fallbackOwner` that service principal (checked with `GET /servicePrincipals/{id}`;
//!   anything else is refused) is made an owner first (and is never listed, so never removed); without it the refusal is a permanent error saying so. Owners are users
//!   or service principals: a group is refused before any request.
//! - **`pim` mode**: PIM for Groups active assignments: `adminAssign` with an `afterDateTime`
//!   expiration at the grant's end, so Entra ends access even if the operator is down. A later
//!   overlapping grant, or a shortened one, moves the end with `adminUpdate` (never
//!   `adminExtend`, which is for assignments about to expire), as the group's assignment
//!   instances show what Entra holds. Removal is `adminRemove`;
//!   a member Entra holds without a PIM assignment is removed by `$ref` as in membership mode.
//!   Each grant's schedule request id and status come back as a [`DirectoryReceipt`].
//!   PIM's five minutes ([`pim::MINIMUM`]): a grant under five minutes is assigned for five
//!   (and [`pim::MARGIN`]); an end moved inside the five minutes brings a later end Entra holds
//!   down to that, and the removal at the new end takes the access; and
//!   a removal Entra refuses as too soon is a transient error retried when the five minutes
//!   since the assignment are over. A policy refusal (`ExpirationRule`, say) names its rules
//!   and is answered from memory for 15 minutes instead of being sent again.
//! - **Nested membership** (eligibility granted to a group): `checkMemberGroups`, transitive.
//! - **Calls**: see `graph` (retries, `Retry-After`, paging, errors), `gate` (bounded
//!   concurrency, revocations first) and `auth` (tokens).

pub mod auth;
pub mod config;
pub mod gate;
pub mod graph;
pub mod mail;
pub mod names;
pub mod pim;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use jiff::Timestamp;
use reqwest::StatusCode;
use serde_json::{Value, json};

pub use self::config::{Credential, EntraConfig, EntraMode};
use self::gate::Priority;
use self::graph::{Call, GraphClient};
pub use self::mail::GraphMailer;
use self::names::{is_guid, odata_string, query_value, segment, user_path};
use self::pim::Action;
use super::{Directory, DirectoryError, DirectoryReceipt, GroupId};
use crate::api::PimGroup;
use crate::api::common::Role;
use crate::clock::Clock;
use crate::core::membership::Member;

/// Members an Entra group holds with the end Entra enforces, from the last listing (pim mode):
/// per (group, role), principal object id → end (`None`: permanent).
type Held = HashMap<(String, Role), HashMap<String, Option<Timestamp>>>;

/// When each assignment Entra holds was made (pim mode), as `Held`: principal → start.
type Starts = HashMap<(String, Role), HashMap<String, Timestamp>>;

/// How long a schedule request the tenant's PIM policy refused is not sent again for the same
/// end: the refusal is answered from memory meanwhile, so a policy that forbids the grant does
/// not turn into a request to Graph on every pass.
const POLICY_HOLD: jiff::SignedDuration = jiff::SignedDuration::from_mins(15);

/// A schedule request the policy refused: the end asked, until when it is held, and the error.
#[derive(Debug, Clone)]
struct Refusal {
    until: Option<Timestamp>,
    held_until: Timestamp,
    error: DirectoryError,
}

pub struct EntraDirectory {
    config: EntraConfig,
    graph: Result<Arc<GraphClient>, String>,
    clock: Arc<dyn Clock>,
    /// Object ids of the principals seen, by the name the controller uses.
    ids: Mutex<HashMap<Member, String>>,
    /// How listings named each object id (lowercase), and each name in lowercase, for
    /// `listed_as`.
    listed: Mutex<Listed>,
    held: Mutex<Held>,
    starts: Mutex<Starts>,
    /// Policy refusals by (group, role, principal).
    refusals: Mutex<HashMap<(String, Role, String), Refusal>>,
    /// Groups this process created, by display name: found even while a search lags.
    created: Mutex<HashMap<String, String>>,
    /// `fallbackOwner` was found to be a service principal (`GET /servicePrincipals/{id}`).
    fallback_checked: Mutex<bool>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn relation(role: Role) -> &'static str {
    match role {
        Role::Member => "members",
        Role::Owner => "owners",
    }
}

impl EntraDirectory {
    /// A directory for `config`; workload identity reads the process environment.
    pub fn new(config: EntraConfig, clock: Arc<dyn Clock>) -> EntraDirectory {
        EntraDirectory::with_env(config, clock, &|name| std::env::var(name).ok())
    }

    /// As `new`, with `env` looking the environment up. A configuration that cannot work
    /// (an unset `AZURE_*` variable, say) makes every call fail with a permanent error that says
    /// why.
    pub fn with_env(
        config: EntraConfig,
        clock: Arc<dyn Clock>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> EntraDirectory {
        let graph = config
            .validate()
            .and_then(|()| config.resolve(env))
            .and_then(|resolved| {
                let http = reqwest::Client::builder()
                    .timeout(config.request_timeout())
                    .connect_timeout(
                        config
                            .request_timeout()
                            .min(std::time::Duration::from_secs(10)),
                    )
                    .redirect(reqwest::redirect::Policy::none())
                    .user_agent(concat!("pim-operator/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
                let tokens =
                    auth::Tokens::new(http.clone(), Ok(resolved), config.scope(), clock.clone());
                Ok(Arc::new(GraphClient::new(
                    http,
                    config.graph_base(),
                    tokens,
                    usize::from(config.max_concurrency),
                    config.max_retries,
                    config.max_retry_wait(),
                )))
            });
        if let Err(problem) = &graph {
            tracing::error!(%problem, "the entra directory is misconfigured; every call will fail");
        }
        EntraDirectory {
            config,
            graph,
            clock,
            ids: Mutex::new(HashMap::new()),
            listed: Mutex::new(Listed::default()),
            held: Mutex::new(HashMap::new()),
            starts: Mutex::new(HashMap::new()),
            refusals: Mutex::new(HashMap::new()),
            created: Mutex::new(HashMap::new()),
            fallback_checked: Mutex::new(false),
        }
    }

    pub fn config(&self) -> &EntraConfig {
        &self.config
    }

    fn graph(&self, operation: &'static str) -> Result<&GraphClient, DirectoryError> {
        self.graph.as_deref().map_err(|problem| {
            DirectoryError::permanent(
                operation,
                format!("entra directory misconfigured: {problem}"),
            )
        })
    }

    /// A `sendMail` client on this directory's connection and credentials.
    /// Counts every HTTP request to Graph in `metrics` (token requests aside).
    pub fn with_metrics(self, metrics: Arc<crate::metrics::Metrics>) -> EntraDirectory {
        self.set_metrics(metrics);
        self
    }

    /// As `with_metrics`, on a shared directory; only the first call counts.
    pub fn set_metrics(&self, metrics: Arc<crate::metrics::Metrics>) {
        if let Ok(graph) = &self.graph {
            graph.set_metrics(metrics);
        }
    }

    pub fn mailer(&self) -> Result<GraphMailer, DirectoryError> {
        match &self.graph {
            Ok(graph) => Ok(GraphMailer::new(graph.clone())),
            Err(problem) => Err(DirectoryError::permanent(
                "send mail",
                format!("entra directory misconfigured: {problem}"),
            )),
        }
    }

    /// HTTP requests sent to Graph so far (retries included), and to the token endpoint.
    pub fn requests(&self) -> (u64, u64) {
        match &self.graph {
            Ok(g) => (g.requests(), g.token_requests()),
            Err(_) => (0, 0),
        }
    }

    /// Requests waiting for a free slot: (revocations, others).
    pub fn waiting(&self) -> (usize, usize) {
        match &self.graph {
            Ok(g) => g.gate().waiting(),
            Err(_) => (0, 0),
        }
    }

    fn remember(&self, member: &Member, id: &str) {
        lock(&self.ids).insert(member.clone(), id.to_owned());
    }

    fn forget(&self, member: &Member) {
        lock(&self.ids).remove(member);
    }

    /// `(id, displayName)` of the groups named `name` (case-insensitively, as Entra compares).
    async fn groups_named(
        &self,
        operation: &'static str,
        name: &str,
    ) -> Result<Vec<(String, String)>, DirectoryError> {
        let filter = format!("displayName eq {}", odata_string(name));
        let path = format!(
            "/groups?$filter={}&$select=id,displayName",
            query_value(&filter)
        );
        let items = self.graph(operation)?.get_all(operation, path).await?;
        Ok(items
            .iter()
            .filter_map(|g| {
                Some((
                    g["id"].as_str()?.to_owned(),
                    g["displayName"].as_str().unwrap_or_default().to_owned(),
                ))
            })
            .collect())
    }

    /// Exactly one group named `name`: `Ok(None)` for none, an error for several.
    async fn one_group_named(
        &self,
        operation: &'static str,
        name: &str,
    ) -> Result<Option<String>, DirectoryError> {
        let found = self.groups_named(operation, name).await?;
        match found.as_slice() {
            [] => Ok(None),
            [(id, _)] => Ok(Some(id.clone())),
            several => {
                let ids: Vec<&str> = several.iter().map(|(id, _)| id.as_str()).collect();
                Err(DirectoryError::permanent(
                    operation,
                    format!(
                        "{} groups are named {name:?} (ids {}): a display name must match exactly one group; set group.id instead",
                        several.len(),
                        ids.join(", ")
                    ),
                ))
            }
        }
    }

    /// A group by id: its display name, or `None` when there is no such group.
    async fn group_by_id(
        &self,
        operation: &'static str,
        id: &str,
    ) -> Result<Option<String>, DirectoryError> {
        let path = format!("/groups/{}?$select=id,displayName", segment(id));
        let reply = self
            .graph(operation)?
            .send(operation, Call::get(path))
            .await?;
        match reply.status {
            s if s.is_success() => Ok(Some(
                reply.body["displayName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(reply.into_error(operation)),
        }
    }

    async fn create_group(
        &self,
        name: &str,
        description: Option<&str>,
    ) -> Result<String, DirectoryError> {
        const OPERATION: &str = "create group";
        let mut body = json!({
            "displayName": name,
            "mailEnabled": false,
            "mailNickname": names::mail_nickname(name),
            "securityEnabled": true,
        });
        if let Some(text) = description.filter(|d| !d.is_empty()) {
            body["description"] = json!(text);
        }
        let reply = self
            .graph(OPERATION)?
            .send(OPERATION, Call::post("/groups", &body).once())
            .await?;
        if !reply.is_success() {
            return Err(reply.into_error(OPERATION));
        }
        let id = reply.body["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| {
                DirectoryError::transient(
                    OPERATION,
                    "Microsoft Graph created a group without an id",
                )
            })?;
        tracing::info!(group = %name, %id, "created Entra security group");
        lock(&self.created).insert(name.to_lowercase(), id.clone());
        Ok(id)
    }

    /// The object id of a principal, or `None` when the directory has no such principal.
    async fn object_id(
        &self,
        operation: &'static str,
        member: &Member,
        priority: Priority,
    ) -> Result<Option<String>, DirectoryError> {
        if let Some(id) = lock(&self.ids).get(member) {
            return Ok(Some(id.clone()));
        }
        let id = match member {
            Member::User(name) => {
                let path = format!("{}?$select=id,userPrincipalName", user_path(name));
                let call = Call {
                    priority,
                    ..Call::get(path)
                };
                let reply = self.graph(operation)?.send(operation, call).await?;
                match reply.status {
                    s if s.is_success() => reply.body["id"].as_str().map(str::to_owned),
                    StatusCode::NOT_FOUND => None,
                    _ => return Err(reply.into_error(operation)),
                }
            }
            Member::Group(name) if is_guid(name) => self
                .group_by_id(operation, name)
                .await?
                .map(|_| name.clone()),
            Member::Group(name) => self.one_group_named(operation, name).await?,
        };
        if let Some(id) = &id {
            self.remember(member, id);
        }
        Ok(id)
    }

    /// `fallbackOwner`, once Graph has shown it to be a service principal (`GET
    /// /servicePrincipals/{id}`, "Get servicePrincipal"): a GUID alone may be a user's object id,
    /// which must never become a standing owner. `Ok(None)` when it is not set; a permanent
    /// error naming `fallbackOwner` when it is no service principal.
    async fn fallback_owner(
        &self,
        operation: &'static str,
    ) -> Result<Option<&str>, DirectoryError> {
        let Some(owner) = self.config.fallback_owner.as_deref() else {
            return Ok(None);
        };
        if *lock(&self.fallback_checked) {
            return Ok(Some(owner));
        }
        let path = format!(
            "/servicePrincipals/{}?$select=id,displayName",
            segment(owner)
        );
        let reply = self
            .graph(operation)?
            .send(operation, Call::get(path))
            .await?;
        match reply.status {
            s if s.is_success() => {
                *lock(&self.fallback_checked) = true;
                Ok(Some(owner))
            }
            StatusCode::NOT_FOUND => Err(DirectoryError::permanent(
                operation,
                format!(
                    "fallbackOwner {owner} is not a service principal in this tenant (GET /servicePrincipals/{owner} found none: it may be a user's or a group's object id); it is not used: set fallbackOwner to the object id of the operator's own service principal"
                ),
            )),
            _ => Err(reply.into_error(operation)),
        }
    }

    /// Reads what Entra holds for the group's PIM assignments of `role` (pim mode).
    async fn refresh_held(
        &self,
        operation: &'static str,
        group: &GroupId,
        role: Role,
    ) -> Result<(), DirectoryError> {
        let filter = format!("groupId eq {}", odata_string(&group.0));
        let path = format!("{}?$filter={}", pim::INSTANCES, query_value(&filter));
        let instances = self.graph(operation)?.get_all(operation, path).await?;
        let ends: HashMap<String, Option<Timestamp>> =
            pim::held_ends(&instances, role).into_iter().collect();
        let starts: HashMap<String, Timestamp> =
            pim::held_starts(&instances, role).into_iter().collect();
        lock(&self.held).insert((group.0.clone(), role), ends);
        lock(&self.starts).insert((group.0.clone(), role), starts);
        Ok(())
    }

    /// When Entra's assignment of `principal` was made, if known.
    fn started(&self, group: &GroupId, role: Role, principal: &str) -> Option<Timestamp> {
        lock(&self.starts)
            .get(&(group.0.clone(), role))?
            .get(principal)
            .copied()
    }

    fn set_started(&self, group: &GroupId, role: Role, principal: &str, at: Option<Timestamp>) {
        let mut starts = lock(&self.starts);
        let of_group = starts.entry((group.0.clone(), role)).or_default();
        match at {
            Some(at) => of_group.insert(principal.to_owned(), at),
            None => of_group.remove(principal),
        };
    }

    /// The shortest end this backend asks for a schedule starting `now`: PIM's five minutes
    /// ([`pim::MINIMUM`]) and [`pim::MARGIN`], so that the time the request takes to reach
    /// Entra never makes it too short.
    fn earliest_end(now: Timestamp) -> Timestamp {
        now.checked_add(pim::MINIMUM)
            .and_then(|t| t.checked_add(pim::MARGIN))
            .unwrap_or(now)
    }

    /// The end to send for `until` when Entra holds `held` (`None`: nothing), from a request
    /// starting `now`; `None` when nothing is to be sent. An end inside the five minutes cannot
    /// be set: a new assignment is made for the shortest PIM takes, and a held end later than
    /// that is brought down to it, so that Entra's own expiry is the backstop soonest after
    /// `until` should the operator be down then; a held end already sooner is kept, and the
    /// operator's removal at `until` takes the access.
    fn end_to_send(
        held: Option<Option<Timestamp>>,
        until: Option<Timestamp>,
        now: Timestamp,
    ) -> Option<Option<Timestamp>> {
        let earliest = EntraDirectory::earliest_end(now);
        match (until, held) {
            (Some(end), None) if end < earliest => Some(Some(earliest)),
            (Some(end), Some(held)) if end < earliest => match held {
                // Held until later (or for good): down to the earliest.
                None => Some(Some(earliest)),
                Some(h) if h > earliest && !pim::same_end(Some(h), Some(earliest)) => {
                    Some(Some(earliest))
                }
                Some(_) => None,
            },
            (until, Some(held)) if pim::same_end(held, until) => None,
            (until, _) => Some(until),
        }
    }

    fn count_refusal(&self, rule: &str) {
        if let Ok(graph) = &self.graph {
            graph.count_refusal(rule);
        }
    }

    /// "Too soon to remove": a transient error that comes back when the five minutes since the
    /// assignment was made are over (five minutes from now when that is not known). When they
    /// are over by this process's clock yet Entra still refuses (its clock a little behind),
    /// [`AGAIN_SHORTLY`] on.
    fn removable_later(&self, group: &GroupId, role: Role, principal: &str) -> DirectoryError {
        let now = self.clock.now();
        let after = |wait| now.checked_add(wait).unwrap_or(now);
        let removable = match self
            .started(group, role, principal)
            .and_then(|start| start.checked_add(pim::MINIMUM).ok())
        {
            Some(at) if at > now => at,
            Some(_) => after(AGAIN_SHORTLY),
            None => after(pim::MINIMUM),
        };
        let wait = removable
            .duration_since(now)
            .max(jiff::SignedDuration::from_secs(1))
            .unsigned_abs();
        DirectoryError::refused(
            "remove member",
            format!(
                "Entra does not remove a PIM assignment within five minutes of making it ({}); {principal}'s is removed at {removable}",
                pim::TOO_SHORT
            ),
            wait,
        )
    }

    /// The policy refusal held for this end, if any.
    fn held_refusal(
        &self,
        group: &GroupId,
        role: Role,
        principal: &str,
        until: Option<Timestamp>,
    ) -> Option<DirectoryError> {
        let key = (group.0.clone(), role, principal.to_owned());
        let mut refusals = lock(&self.refusals);
        let refusal = refusals.get(&key)?;
        if refusal.until == until && self.clock.now() < refusal.held_until {
            return Some(refusal.error.clone());
        }
        refusals.remove(&key);
        None
    }

    /// The error for a schedule request the tenant's PIM policy refused, naming the rules and
    /// what they mean; held for [`POLICY_HOLD`].
    fn policy_refused(
        &self,
        group: &GroupId,
        role: Role,
        principal: &str,
        until: Option<Timestamp>,
        reply: &graph::Reply,
    ) -> DirectoryError {
        let rules = pim::failed_rules(reply.message());
        let named: Vec<String> = rules
            .iter()
            .map(|rule| format!("{rule} ({})", pim::rule_meaning(rule)))
            .collect();
        let asked = match until {
            Some(end) => format!("an assignment until {end}"),
            None => "a permanent assignment".to_owned(),
        };
        let held_until = self
            .clock
            .now()
            .checked_add(POLICY_HOLD)
            .unwrap_or_else(|_| self.clock.now());
        let error = DirectoryError::permanent(
            "add member",
            format!(
                "Entra's PIM policy for group {} refused {asked} ({}): policy rules failed: {}; change the grant or the group's PIM settings (not asked again before {held_until})",
                group.0,
                pim::POLICY_FAILED,
                if named.is_empty() {
                    reply.message().to_owned()
                } else {
                    named.join(", ")
                },
            ),
        );
        self.count_refusal(pim::POLICY_FAILED);
        lock(&self.refusals).insert(
            (group.0.clone(), role, principal.to_owned()),
            Refusal {
                until,
                held_until,
                error: error.clone(),
            },
        );
        error
    }

    /// What Entra holds for `principal`: `None` when not known, `Some(None)` when it holds no
    /// assignment, `Some(Some(end))` with the end it enforces (`None`: permanent).
    fn held(
        &self,
        group: &GroupId,
        role: Role,
        principal: &str,
    ) -> Option<Option<Option<Timestamp>>> {
        let held = lock(&self.held);
        let ends = held.get(&(group.0.clone(), role))?;
        Some(ends.get(principal).copied())
    }

    fn set_held(
        &self,
        group: &GroupId,
        role: Role,
        principal: &str,
        end: Option<Option<Timestamp>>,
    ) {
        let mut held = lock(&self.held);
        let ends = held.entry((group.0.clone(), role)).or_default();
        match end {
            Some(end) => {
                ends.insert(principal.to_owned(), end);
            }
            None => {
                ends.remove(principal);
            }
        }
    }

    /// `POST /groups/{id}/members/$ref`; "already exist" is success.
    async fn add_reference(
        &self,
        operation: &'static str,
        group: &GroupId,
        role: Role,
        principal: &str,
    ) -> Result<(), DirectoryError> {
        let graph = self.graph(operation)?;
        let body = json!({
            "@odata.id": format!("{}/directoryObjects/{principal}", graph.base()),
        });
        let path = format!("/groups/{}/{}/$ref", segment(&group.0), relation(role));
        let reply = graph.send(operation, Call::post(path, &body)).await?;
        let already =
            reply.status == StatusCode::BAD_REQUEST && reply.message().contains("already exist");
        if reply.is_success() || already {
            Ok(())
        } else {
            Err(reply.into_error(operation))
        }
    }

    /// `DELETE /groups/{id}/members/{oid}/$ref`; a 404 is success.
    async fn remove_reference(
        &self,
        operation: &'static str,
        group: &GroupId,
        role: Role,
        principal: &str,
    ) -> Result<(), DirectoryError> {
        let path = format!(
            "/groups/{}/{}/{}/$ref",
            segment(&group.0),
            relation(role),
            segment(principal)
        );
        let reply = self
            .graph(operation)?
            .send(operation, Call::delete(path.clone()).revoke())
            .await?;
        if reply.is_success() || reply.status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        if !(role == Role::Owner && is_last_owner(&reply)) {
            return Err(reply.into_error(operation));
        }
        self.count_refusal(LAST_OWNER);
        // Entra keeps a group's last owner: the fallback owner takes over, then it goes.
        if let Some(fallback) = self
            .fallback_owner(operation)
            .await?
            .filter(|f| !f.eq_ignore_ascii_case(principal))
        {
            self.add_reference(operation, group, Role::Owner, fallback)
                .await?;
            tracing::warn!(group = %group.0, %fallback, "made the fallback owner (a service principal) a standing owner of the group, so that its last owner can be removed; the operator never removes it");
            let again = self
                .graph(operation)?
                .send(operation, Call::delete(path).revoke())
                .await?;
            if again.is_success() || again.status == StatusCode::NOT_FOUND {
                return Ok(());
            }
            if is_last_owner(&again) {
                // The owner just added is not seen yet (Entra's replicas lag a write): soon.
                return Err(DirectoryError::refused(
                    operation,
                    format!(
                        "{principal} is still the last owner of Entra group {} right after fallbackOwner {fallback} was made an owner ({LAST_OWNER}: {}); will try again shortly",
                        group.0,
                        again.message()
                    ),
                    AGAIN_SHORTLY.unsigned_abs(),
                ));
            }
            return Err(again.into_error(operation));
        }
        Err(DirectoryError::permanent(
            operation,
            format!(
                "{principal} is the last owner of Entra group {} and Entra keeps a group's last owner ({LAST_OWNER}: {}); add another owner to the group, or set fallbackOwner on the directory",
                group.0,
                reply.message()
            ),
        ))
    }

    /// One schedule request starting `now`; the receipt when Graph accepted it, the reply
    /// otherwise.
    #[allow(clippy::too_many_arguments)]
    async fn schedule(
        &self,
        operation: &'static str,
        action: Action,
        group: &GroupId,
        role: Role,
        principal: &str,
        now: Timestamp,
        until: Option<Timestamp>,
    ) -> Result<Result<DirectoryReceipt, graph::Reply>, DirectoryError> {
        // What Entra will hold: the end as sent, in whole seconds.
        let until = until.map(pim::whole_seconds);
        let body = pim::request_body(
            action,
            role,
            &group.0,
            principal,
            now,
            until,
            &self.config.justification,
        );
        let mut call = Call::post(pim::REQUESTS, &body);
        if action == Action::Remove {
            call = call.revoke();
        }
        let reply = self.graph(operation)?.send(operation, call).await?;
        if !reply.is_success() {
            return Ok(Err(reply));
        }
        let status = reply.body["status"].as_str().unwrap_or_default().to_owned();
        if pim::refused(action, &status) {
            return Err(DirectoryError::permanent(
                operation,
                format!(
                    "Entra answered the {} schedule request {} with status {status}",
                    action.as_str(),
                    reply.body["id"].as_str().unwrap_or_default()
                ),
            ));
        }
        Ok(Ok(DirectoryReceipt {
            id: reply.body["id"].as_str().unwrap_or_default().to_owned(),
            action: action.as_str().to_owned(),
            status,
            until,
        }))
    }

    /// pim mode: assign, or move the end Entra holds to `until`.
    async fn assign_until(
        &self,
        group: &GroupId,
        role: Role,
        principal: &str,
        until: Option<Timestamp>,
    ) -> Result<Option<DirectoryReceipt>, DirectoryError> {
        const OPERATION: &str = "add member";
        for _ in 0..2 {
            // One start for the request and for the five minutes its end must be after.
            let now = pim::whole_seconds(self.clock.now());
            let held = match self.held(group, role, principal) {
                Some(Some(held)) => Some(held),
                _ => None,
            };
            let action = if held.is_some() {
                Action::Update
            } else {
                Action::Assign
            };
            // PIM takes no schedule under five minutes (pim::MINIMUM): a grant under five
            // minutes is held for the shortest PIM makes (the removal at `until` waits for them
            // too; the receipt says so), and an end moved inside them brings a later held end
            // down to that.
            let Some(end) = EntraDirectory::end_to_send(held, until, now) else {
                return Ok(None);
            };
            if let Some(refused) = self.held_refusal(group, role, principal, end) {
                return Err(refused);
            }
            match self
                .schedule(OPERATION, action, group, role, principal, now, end)
                .await?
            {
                Ok(receipt) => {
                    self.set_held(group, role, principal, Some(end));
                    if action == Action::Assign {
                        self.set_started(group, role, principal, Some(now));
                    }
                    return Ok(Some(receipt));
                }
                Err(reply) if reply.code() == pim::POLICY_FAILED => {
                    return Err(self.policy_refused(group, role, principal, end, &reply));
                }
                // Our clock and Entra's disagree on the five minutes: look again shortly.
                Err(reply) if reply.code() == pim::TOO_SHORT => {
                    self.count_refusal(pim::TOO_SHORT);
                    let message = reply.into_error(OPERATION).to_string();
                    return Err(DirectoryError::refused(
                        OPERATION,
                        message,
                        std::time::Duration::from_secs(30),
                    ));
                }
                // Entra holds an assignment this process did not know of: learn its end, then
                // move it if it differs.
                Err(reply)
                    if action == Action::Assign && reply.code() == "RoleAssignmentExists" =>
                {
                    self.refresh_held(OPERATION, group, role).await?;
                    if self.held(group, role, principal) == Some(None) {
                        // Listed as existing, yet no instance: count it as held for good.
                        self.set_held(group, role, principal, Some(None));
                    }
                }
                Err(reply) => return Err(reply.into_error(OPERATION)),
            }
        }
        Err(DirectoryError::transient(
            OPERATION,
            "Entra reports an assignment it does not list; will look again",
        ))
    }

    /// pim mode: `adminRemove`; a member held without an assignment goes by `$ref`.
    async fn unassign(
        &self,
        group: &GroupId,
        role: Role,
        principal: &str,
    ) -> Result<(), DirectoryError> {
        const OPERATION: &str = "remove member";
        if self.held(group, role, principal) == Some(None) {
            return self
                .remove_reference(OPERATION, group, role, principal)
                .await;
        }
        match self
            .schedule(
                OPERATION,
                Action::Remove,
                group,
                role,
                principal,
                self.clock.now(),
                None,
            )
            .await?
        {
            Ok(_) => {}
            // Made less than five minutes ago: removed once they are over (pim::MINIMUM).
            Err(reply) if reply.code() == pim::TOO_SHORT => {
                self.count_refusal(pim::TOO_SHORT);
                return Err(self.removable_later(group, role, principal));
            }
            Err(reply)
                if reply.status == StatusCode::NOT_FOUND
                    || reply.code().contains("DoesNotExist")
                    || reply.code().contains("NotFound") =>
            {
                self.remove_reference(OPERATION, group, role, principal)
                    .await?;
            }
            Err(reply) => return Err(reply.into_error(OPERATION)),
        }
        self.set_held(group, role, principal, None);
        self.set_started(group, role, principal, None);
        Ok(())
    }
}

/// How soon a refusal that should be over by now (the five minutes passed, a fallback owner
/// just added) is tried again.
const AGAIN_SHORTLY: jiff::SignedDuration = jiff::SignedDuration::from_secs(20);

/// The rule name `pim_graph_refusals_total` counts a refused removal of a last owner under.
const LAST_OWNER: &str = "LastOwner";

/// Graph's refusal to remove a group's last owner: 400 `Request_BadRequest`, "The group must
/// have at least one owner, hence this owner cannot be removed."
fn is_last_owner(reply: &graph::Reply) -> bool {
    reply.status == StatusCode::BAD_REQUEST && reply.message().contains("at least one owner")
}

/// Listed principals by object id and by case-folded name.
#[derive(Default)]
struct Listed {
    by_id: HashMap<String, Member>,
    by_name: HashMap<(bool, String), Member>,
}

/// A principal's kind and case-folded name.
fn folded(member: &Member) -> (bool, String) {
    match member {
        Member::User(name) => (false, name.to_lowercase()),
        Member::Group(name) => (true, name.to_lowercase()),
    }
}

fn same_kind(a: &Member, b: &Member) -> bool {
    matches!(
        (a, b),
        (Member::User(_), Member::User(_)) | (Member::Group(_), Member::Group(_))
    )
}

/// A listed directory object as the principal the controller would name it.
fn member_of(object: &Value) -> Option<(Member, String)> {
    let id = object["id"].as_str()?.to_owned();
    let kind = object["@odata.type"].as_str().unwrap_or_default();
    let member = match kind {
        "#microsoft.graph.group" => Member::Group(
            object["displayName"]
                .as_str()
                .filter(|n| !n.is_empty())
                .unwrap_or(&id)
                .to_owned(),
        ),
        "#microsoft.graph.user" => Member::User(
            object["userPrincipalName"]
                .as_str()
                .filter(|n| !n.is_empty())
                .unwrap_or(&id)
                .to_owned(),
        ),
        // Service principals, devices, contacts: by id, so cleanup can still remove them.
        _ => Member::User(id.clone()),
    };
    Some((member, id))
}

#[async_trait]
impl Directory for EntraDirectory {
    fn backend(&self) -> &'static str {
        "entra"
    }

    async fn ensure_group(&self, group: &PimGroup) -> Result<GroupId, DirectoryError> {
        const OPERATION: &str = "resolve group";
        let spec = &group.spec.group;
        if let Some(id) = &spec.id {
            if !is_guid(id) {
                return Err(DirectoryError::permanent(
                    OPERATION,
                    format!("group.id {id:?} is not an Entra object id (a GUID)"),
                ));
            }
            return match self.group_by_id(OPERATION, id).await? {
                Some(_) => Ok(GroupId(id.clone())),
                None => Err(DirectoryError::permanent(
                    OPERATION,
                    format!("no Entra group has the object id {id}"),
                )),
            };
        }
        let Some(name) = &spec.display_name else {
            return Err(DirectoryError::permanent(
                OPERATION,
                "set group.id (an object id) or group.displayName",
            ));
        };
        // The group resolved before, if it still bears the name.
        let known = group
            .status
            .as_ref()
            .and_then(|s| s.group_id.clone())
            .filter(|id| is_guid(id))
            .or_else(|| lock(&self.created).get(&name.to_lowercase()).cloned());
        if let Some(id) = known
            && let Some(current) = self.group_by_id(OPERATION, &id).await?
            && current.eq_ignore_ascii_case(name)
        {
            return Ok(GroupId(id));
        }
        if let Some(id) = self.one_group_named(OPERATION, name).await? {
            return Ok(GroupId(id));
        }
        if spec.create != Some(true) {
            return Err(DirectoryError::permanent(
                OPERATION,
                format!("no Entra group is named {name:?} (set create: true to create it)"),
            ));
        }
        let id = self.create_group(name, spec.description.as_deref()).await?;
        Ok(GroupId(id))
    }

    async fn list_members(
        &self,
        group: &GroupId,
        role: Role,
    ) -> Result<BTreeSet<Member>, DirectoryError> {
        const OPERATION: &str = "list members";
        let select = match role {
            Role::Member => "$select=id,userPrincipalName,displayName&$top=999",
            Role::Owner => "$select=id,userPrincipalName,displayName",
        };
        let path = format!("/groups/{}/{}?{select}", segment(&group.0), relation(role));
        let objects = self.graph(OPERATION)?.get_all(OPERATION, path).await?;
        // The fallback owner is a standing owner the operator keeps: never listed, so never
        // removed nor reported; but only once Graph shows it is a service principal. Anything
        // else is listed, as any other standing owner.
        let configured = self.config.fallback_owner.as_deref().filter(|f| {
            role == Role::Owner
                && objects.iter().any(|o| {
                    o["id"]
                        .as_str()
                        .is_some_and(|id| id.eq_ignore_ascii_case(f))
                })
        });
        let fallback = match configured {
            None => None,
            Some(_) => match self.fallback_owner(OPERATION).await {
                Ok(found) => found,
                Err(e) if e.is_transient() => return Err(e),
                Err(e) => {
                    tracing::warn!(group = %group.0, error = %e, "fallbackOwner owns the group but is no service principal: listed as any owner");
                    None
                }
            },
        };
        let found: Vec<(Member, String)> = objects
            .iter()
            .filter_map(member_of)
            .filter(|(_, id)| !fallback.is_some_and(|f| f.eq_ignore_ascii_case(id)))
            .collect();
        // One lock at a time: `listed_as` takes them too, and never two at once either.
        {
            let mut ids = lock(&self.ids);
            for (member, id) in &found {
                ids.insert(member.clone(), id.clone());
            }
        }
        {
            let mut listed = lock(&self.listed);
            for (member, id) in &found {
                listed.by_id.insert(id.to_lowercase(), member.clone());
                listed.by_name.insert(folded(member), member.clone());
            }
        }
        let members: BTreeSet<Member> = found.into_iter().map(|(member, _)| member).collect();
        if self.config.mode == EntraMode::Pim {
            self.refresh_held(OPERATION, group, role).await?;
        }
        Ok(members)
    }

    async fn add_member(
        &self,
        group: &GroupId,
        role: Role,
        member: &Member,
    ) -> Result<(), DirectoryError> {
        self.add_member_until(group, role, member, None)
            .await
            .map(|_| ())
    }

    async fn add_member_until(
        &self,
        group: &GroupId,
        role: Role,
        member: &Member,
        until: Option<Timestamp>,
    ) -> Result<Option<DirectoryReceipt>, DirectoryError> {
        const OPERATION: &str = "add member";
        if let (Role::Owner, Member::Group(name)) = (role, member) {
            // "Owners can be users or service principals" (Graph, "Add owners" of a group).
            return Err(DirectoryError::permanent(
                OPERATION,
                format!(
                    "the owners of an Entra group can only be users or service principals, not group {name:?}"
                ),
            ));
        }
        let Some(principal) = self.object_id(OPERATION, member, Priority::Normal).await? else {
            let what = match member {
                Member::User(u) => {
                    format!("no Entra user {u:?} (by user principal name or object id)")
                }
                Member::Group(g) => format!("no Entra group {g:?} (by display name or object id)"),
            };
            return Err(DirectoryError::permanent(OPERATION, what));
        };
        let result = match self.config.mode {
            EntraMode::Membership => self
                .add_reference(OPERATION, group, role, &principal)
                .await
                .map(|()| None),
            EntraMode::Pim => self.assign_until(group, role, &principal, until).await,
        };
        // The id may be stale (a deleted and recreated user): resolve again next time. Not after
        // a policy refusal, which says nothing of the id and is answered from memory.
        let policy_refusal =
            || lock(&self.refusals).contains_key(&(group.0.clone(), role, principal.clone()));
        if matches!(&result, Err(DirectoryError::Permanent { .. })) && !policy_refusal() {
            self.forget(member);
        }
        result
    }

    fn enforces_ends(&self) -> bool {
        self.config.mode == EntraMode::Pim
    }

    fn keeps_last_owner(&self) -> bool {
        self.config.mode == EntraMode::Membership && self.config.fallback_owner.is_none()
    }

    async fn principal_id(&self, member: &Member) -> Result<Option<String>, DirectoryError> {
        match member {
            Member::User(id) | Member::Group(id) if is_guid(id) => Ok(Some(id.clone())),
            _ => {
                self.object_id("resolve principal", member, Priority::Normal)
                    .await
            }
        }
    }

    fn listed_as(&self, member: &Member) -> Option<Member> {
        // Never both locks at once (list_members takes them one after the other).
        let id = match member {
            // An object id: the listing names it by UPN or display name.
            Member::User(name) | Member::Group(name) if is_guid(name) => Some(name.clone()),
            // A name looked up before: by its object id.
            _ => lock(&self.ids).get(member).cloned(),
        };
        let listed = lock(&self.listed);
        let found = id
            .and_then(|id| listed.by_id.get(&id.to_lowercase()).cloned())
            // Else by the name, which Entra compares without regard to case.
            .or_else(|| listed.by_name.get(&folded(member)).cloned());
        found.filter(|l| l != member && same_kind(l, member))
    }

    fn needs_new_end(
        &self,
        group: &GroupId,
        role: Role,
        member: &Member,
        until: Option<Timestamp>,
    ) -> bool {
        if self.config.mode != EntraMode::Pim {
            return false;
        }
        let Some(principal) = lock(&self.ids).get(member).cloned() else {
            return false;
        };
        // Only ends Entra holds are moved; one inside PIM's five minutes as `end_to_send` says.
        let Some(Some(held)) = self.held(group, role, &principal) else {
            return false;
        };
        let now = pim::whole_seconds(self.clock.now());
        EntraDirectory::end_to_send(Some(held), until, now).is_some()
    }

    async fn remove_member(
        &self,
        group: &GroupId,
        role: Role,
        member: &Member,
    ) -> Result<(), DirectoryError> {
        const OPERATION: &str = "remove member";
        let principal = match member {
            // Listed by id (a service principal, say): the id is the principal.
            Member::User(id) if is_guid(id) => Some(id.clone()),
            // A revocation: its lookup goes ahead of grants too.
            _ => self.object_id(OPERATION, member, Priority::Revoke).await?,
        };
        // No such principal: not a member either.
        let Some(principal) = principal else {
            return Ok(());
        };
        match self.config.mode {
            EntraMode::Membership => {
                self.remove_reference(OPERATION, group, role, &principal)
                    .await
            }
            EntraMode::Pim => self.unassign(group, role, &principal).await,
        }
    }

    async fn is_member_of(
        &self,
        principal: &str,
        group: &str,
    ) -> Result<Option<bool>, DirectoryError> {
        const OPERATION: &str = "check nested membership";
        let Some(user) = self
            .object_id(
                OPERATION,
                &Member::User(principal.to_owned()),
                Priority::Normal,
            )
            .await?
        else {
            return Ok(Some(false));
        };
        let group_id = if is_guid(group) {
            group.to_owned()
        } else {
            match self.one_group_named(OPERATION, group).await? {
                Some(id) => id,
                None => return Ok(Some(false)),
            }
        };
        let body = json!({ "groupIds": [group_id] });
        let path = format!("/users/{}/checkMemberGroups", segment(&user));
        let reply = self
            .graph(OPERATION)?
            .send(OPERATION, Call::post(path, &body))
            .await?;
        if !reply.is_success() {
            return Err(reply.into_error(OPERATION));
        }
        let found = reply.body["value"]
            .as_array()
            .is_some_and(|ids| ids.iter().any(|id| id.as_str() == Some(group_id.as_str())));
        Ok(Some(found))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_objects_are_named_as_principals_are() {
        let user = json!({"@odata.type": "#microsoft.graph.user", "id": "u1", "userPrincipalName": "alice@contoso.com"});
        let group =
            json!({"@odata.type": "#microsoft.graph.group", "id": "g1", "displayName": "ops"});
        let app = json!({"@odata.type": "#microsoft.graph.servicePrincipal", "id": "s1", "displayName": "ci"});
        assert_eq!(
            member_of(&user),
            Some((Member::User("alice@contoso.com".into()), "u1".into()))
        );
        assert_eq!(
            member_of(&group),
            Some((Member::Group("ops".into()), "g1".into()))
        );
        assert_eq!(
            member_of(&app),
            Some((Member::User("s1".into()), "s1".into()))
        );
        assert_eq!(member_of(&json!({"displayName": "no id"})), None);
    }
}
