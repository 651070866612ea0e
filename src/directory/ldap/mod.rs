//! The `ldap` directory: OpenLDAP, FreeIPA and Active Directory over ldap3 (DESIGN §6).
//!
//! - **Groups** are found by DN (`group.id`) or by name (`group.displayName`, matched on
//!   `groupNameAttribute` under `groupBase`: exactly one must match, two is an error). With
//!   `create: true` a missing group is created, a `groupOfNames` with the placeholder member.
//! - **Members** are DNs in `memberAttribute`. The trait speaks principals: a user principal is
//!   resolved to a DN with `userFilter` under `userBase` (exactly one match); a group principal
//!   is a group name under `groupBase`. Listing maps DNs back to principals:
//!   1. a DN whose first RDN is the principal attribute (`uid=alice,ou=people,…` with
//!      `userAttribute: uid`, or `cn=ops,ou=groups,…` for groups) gives its RDN value, with no
//!      extra request;
//!   2. the rest (e.g. `userAttribute: mail`, or AD's `CN=Alice Smith`) are mapped with one
//!      paged search (Simple Paged Results, `pageSize`) under `userBase` for entries whose
//!      `memberOfAttribute` names the group;
//!   3. any still unmapped DN is read on its own; a DN that names no entry (a deleted user) is
//!      listed as the DN itself, so standing-access cleanup still sees it and can remove it.
//! - **Writes** are idempotent, by the rule table in `rules`: adding a present value and
//!   deleting an absent one are success, as OpenLDAP words it (20, 16) and as Active Directory
//!   does (68 with 00000562, 53 with 00000561). Modifies carry the permissive-modify control
//!   with `activeDirectory`, or where the rootDSE lists it. A group that must keep a member
//!   (`groupOfNames`, `groupOfUniqueNames`) gets `placeholderMember` only when the server
//!   refuses to let its last member go (objectClassViolation), in the same modify as that
//!   removal; the placeholder is never listed.
//! - **Names** compare as the principal attribute's matching rule does (`rules::ignores_case`):
//!   a principal written in other letter case is reported by `listed_as` in the listing's
//!   spelling, so a plan never removes and re-adds it.
//! - **Active Directory** (`activeDirectory: true`): [`LdapDirectory::is_transitive_member`]
//!   uses LDAP_MATCHING_RULE_IN_CHAIN; `memberTtl` adds members as `<TTL=seconds,DN>`. Large
//!   member attributes come back in ranges (`member;range=0-1499`), which are followed.
//! - **Safety**: every value put into a filter is escaped per RFC 4515 and every value put into
//!   a DN per RFC 4514 (see `names`).
//!
//! Only the member role exists: the owner role lists empty and cannot be granted.

pub mod config;
pub mod conn;
pub mod names;
pub mod rules;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use ldap3::controls::{Control, ControlType, PagedResults, RawControl};
use ldap3::{Ldap, Mod, Scope, SearchEntry, SearchOptions};

pub use self::config::LdapConfig;
use self::conn::{Connection, Failure, classify, rc, timed};
use self::rules::{Outcome, PERMISSIVE_MODIFY_OID, Write};
use super::{Directory, DirectoryError, GroupId};
use crate::api::PimGroup;
use crate::api::common::Role;
use crate::core::membership::Member;

/// How deep [`LdapDirectory::is_transitive_member`] follows nested groups outside AD.
const MAX_NESTING: usize = 16;

pub struct LdapDirectory {
    conn: Connection,
    pages: AtomicU64,
    /// How the last listing of each group (by DN) spelled its members, by kind (group?) and
    /// lowercased name, for `listed_as` where the principal attribute ignores case. Replaced
    /// at each listing, so a member no longer listed is dropped.
    listed: Mutex<HashMap<String, Spellings>>,
}

/// One listing's members by kind (group?) and lowercased name.
type Spellings = HashMap<(bool, String), Member>;

/// What became of a member write.
#[derive(Debug, PartialEq, Eq)]
enum Written {
    Done,
    /// Refused because the group would be left without the member value its class requires.
    GroupWouldBeEmpty,
}

/// The key `listed` files a member under.
fn folded(member: &Member) -> (bool, String) {
    match member {
        Member::User(name) => (false, name.to_lowercase()),
        Member::Group(name) => (true, name.to_lowercase()),
    }
}

impl std::fmt::Debug for LdapDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdapDirectory")
            .field("url", &self.conn.config().url)
            .field("bind_dn", &self.conn.config().bind_dn)
            .finish_non_exhaustive()
    }
}

/// One search, as the closures below need it by value.
#[derive(Clone)]
struct Query {
    base: String,
    scope: Scope,
    filter: String,
    attrs: Vec<String>,
    size_limit: i32,
}

impl Query {
    fn base(dn: &str, attrs: &[&str]) -> Query {
        Query {
            base: dn.to_owned(),
            scope: Scope::Base,
            filter: "(objectClass=*)".to_owned(),
            attrs: attrs.iter().map(|a| (*a).to_owned()).collect(),
            size_limit: 0,
        }
    }

    fn subtree(base: &str, filter: String, attrs: &[&str], size_limit: i32) -> Query {
        Query {
            base: base.to_owned(),
            scope: Scope::Subtree,
            filter,
            attrs: attrs.iter().map(|a| (*a).to_owned()).collect(),
            size_limit,
        }
    }
}

/// Values of an attribute, matching its name without regard to case.
fn values<'a>(entry: &'a SearchEntry, attribute: &str) -> &'a [String] {
    entry
        .attrs
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(attribute))
        .map(|(_, v)| v.as_slice())
        .unwrap_or_default()
}

/// What a returned attribute name says about the member values, with AD's ranged retrieval.
#[derive(Debug, PartialEq, Eq)]
enum Range {
    /// All of them (`member`, or the last chunk `member;range=1500-*`).
    Whole,
    /// A chunk (`member;range=0-1499`); ask next for this attribute description.
    Next(String),
}

fn ranged_value(attribute: &str, returned: &str) -> Option<Range> {
    if returned.eq_ignore_ascii_case(attribute) {
        return Some(Range::Whole);
    }
    let (name, options) = returned.split_once(';')?;
    if !name.eq_ignore_ascii_case(attribute) {
        return None;
    }
    let range = options.split(';').find_map(|o| {
        o.get(..6)
            .filter(|p| p.eq_ignore_ascii_case("range="))
            .map(|_| &o[6..])
    })?;
    let (_, high) = range.split_once('-')?;
    match high.parse::<u64>() {
        Ok(high) => Some(Range::Next(format!("{attribute};range={}-*", high + 1))),
        Err(_) => Some(Range::Whole),
    }
}

impl LdapDirectory {
    /// A directory for `config`; nothing is contacted until the first call.
    pub fn new(config: LdapConfig) -> LdapDirectory {
        LdapDirectory {
            conn: Connection::new(config),
            pages: AtomicU64::new(0),
            listed: Mutex::new(HashMap::new()),
        }
    }

    fn config(&self) -> &LdapConfig {
        self.conn.config()
    }

    /// Bind attempts so far; a refused bind is not retried for a while.
    pub fn bind_attempts(&self) -> u64 {
        self.conn.binds()
    }

    /// Pages fetched by paged searches so far.
    pub fn pages_fetched(&self) -> u64 {
        self.pages.load(Ordering::Relaxed)
    }

    /// Closes the connection; the next call opens a new one.
    pub async fn disconnect(&self) {
        self.conn.disconnect().await;
    }

    /// Runs a search; `noSuchObject` on the base gives `Ok(None)`. A size limit hit is not an
    /// error: the entries up to it are returned.
    async fn search(
        &self,
        operation: &'static str,
        query: &Query,
    ) -> Result<Option<Vec<SearchEntry>>, DirectoryError> {
        let found = self
            .conn
            .run(|mut ldap: Ldap| {
                let q = query.clone();
                async move {
                    let options = SearchOptions::new().sizelimit(q.size_limit);
                    let result = ldap
                        .with_search_options(options)
                        .search(&q.base, q.scope, &q.filter, q.attrs)
                        .await?;
                    let ldap3::SearchResult(entries, result) = result;
                    match result.rc {
                        rc::SUCCESS | rc::SIZE_LIMIT_EXCEEDED => Ok(Some(entries)),
                        rc::NO_SUCH_OBJECT => Ok(None),
                        _ => Err(Failure::Result(result)),
                    }
                }
            })
            .await
            .map_err(|f| classify(operation, f))?;
        Ok(found.map(|entries| entries.into_iter().map(SearchEntry::construct).collect()))
    }

    /// A subtree search in pages of `pageSize` (RFC 2696), all pages on one connection, each
    /// page under the operation timeout (a big group takes many pages).
    async fn paged_search(
        &self,
        operation: &'static str,
        query: &Query,
    ) -> Result<Vec<SearchEntry>, DirectoryError> {
        let page_size = i32::try_from(self.config().page_size).unwrap_or(i32::MAX);
        let pages = &self.pages;
        let limit = self.conn.operation_timeout();
        let entries = self
            .conn
            .run_timed(|mut ldap: Ldap| {
                let q = query.clone();
                async move {
                    let mut all = Vec::new();
                    let mut cookie = Vec::new();
                    loop {
                        let control = PagedResults {
                            size: page_size,
                            cookie: std::mem::take(&mut cookie),
                        };
                        let page = ldap.with_controls(control).search(
                            &q.base,
                            q.scope,
                            &q.filter,
                            q.attrs.clone(),
                        );
                        let ldap3::SearchResult(entries, result) =
                            timed(limit, async { Ok(page.await?) }).await?;
                        pages.fetch_add(1, Ordering::Relaxed);
                        match result.rc {
                            rc::SUCCESS => {}
                            rc::NO_SUCH_OBJECT => return Ok(all),
                            _ => return Err(Failure::Result(result)),
                        }
                        all.extend(entries);
                        for Control(kind, raw) in &result.ctrls {
                            if matches!(kind, Some(ControlType::PagedResults)) {
                                cookie = raw.parse::<PagedResults>().cookie;
                            }
                        }
                        if cookie.is_empty() {
                            return Ok(all);
                        }
                    }
                }
            })
            .await
            .map_err(|f| classify(operation, f))?;
        Ok(entries.into_iter().map(SearchEntry::construct).collect())
    }

    /// Applies modifications to an entry in one modify, with the permissive-modify control
    /// where the server lists it. Answers that the rule table (`rules`) takes as "already so"
    /// are success.
    async fn modify(
        &self,
        operation: &'static str,
        dn: &str,
        changes: Vec<Mod<String>>,
        write: Write,
    ) -> Result<Written, DirectoryError> {
        self.conn
            .run(|mut ldap: Ldap| {
                let changes = changes.clone();
                let permissive = self.conn.permissive_modify();
                async move {
                    if permissive {
                        ldap.with_controls(RawControl {
                            ctype: PERMISSIVE_MODIFY_OID.to_owned(),
                            crit: false,
                            val: None,
                        });
                    }
                    let result = ldap.modify(dn, changes).await?;
                    if result.rc == rc::SUCCESS {
                        return Ok(Written::Done);
                    }
                    match rules::outcome(write, &result) {
                        Some(Outcome::AlreadyDone) => Ok(Written::Done),
                        Some(Outcome::NeedsPlaceholder) => Ok(Written::GroupWouldBeEmpty),
                        None => Err(Failure::Result(result)),
                    }
                }
            })
            .await
            .map_err(|f| match f {
                Failure::Result(r) if r.rc == rc::NO_SUCH_OBJECT => DirectoryError::permanent(
                    operation,
                    format!("no entry {dn:?} ({})", conn::describe(&r)),
                ),
                other => classify(operation, other),
            })
    }

    /// The DN of the one user `principal` names, by `userFilter` under `userBase`.
    /// `Ok(None)` when none does; two or more is an error.
    pub async fn find_user(&self, principal: &str) -> Result<Option<String>, DirectoryError> {
        let config = self.config();
        let filter = names::user_filter(&config.user_filter, principal);
        let query = Query::subtree(&config.user_base, filter, &["1.1"], 2);
        let entries = self.search("resolve user", &query).await?.ok_or_else(|| {
            DirectoryError::permanent(
                "resolve user",
                format!("userBase {:?} does not exist", config.user_base),
            )
        })?;
        match entries.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one.dn.clone())),
            [a, b, ..] => Err(DirectoryError::permanent(
                "resolve user",
                format!(
                    "user {principal:?} is ambiguous: userFilter matches more than one entry under {:?} ({:?}, {:?})",
                    config.user_base, a.dn, b.dn
                ),
            )),
        }
    }

    /// The DN of a user principal; an error when no entry or several match.
    pub async fn resolve_user(&self, principal: &str) -> Result<String, DirectoryError> {
        self.find_user(principal).await?.ok_or_else(|| {
            DirectoryError::permanent(
                "resolve user",
                format!(
                    "no user {principal:?} under {:?} (userFilter {:?})",
                    self.config().user_base,
                    self.config().user_filter
                ),
            )
        })
    }

    /// The DNs of groups named `name` under `groupBase` (at most two, enough to tell).
    async fn groups_named(&self, name: &str) -> Result<Vec<String>, DirectoryError> {
        let config = self.config();
        let filter = names::group_by_name(
            config.group_object_class(),
            &config.group_name_attribute,
            name,
        );
        let query = Query::subtree(&config.group_base, filter, &["1.1"], 2);
        let entries = self.search("resolve group", &query).await?.ok_or_else(|| {
            DirectoryError::permanent(
                "resolve group",
                format!("groupBase {:?} does not exist", config.group_base),
            )
        })?;
        Ok(entries.into_iter().map(|e| e.dn).collect())
    }

    fn one_group(&self, name: &str, dns: Vec<String>) -> Result<Option<String>, DirectoryError> {
        match dns.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one.clone())),
            [a, b, ..] => Err(DirectoryError::permanent(
                "resolve group",
                format!(
                    "group name {name:?} is ambiguous: two or more groups under {:?} carry it ({a:?}, {b:?}); set group.id to the DN",
                    self.config().group_base
                ),
            )),
        }
    }

    /// The DN a member principal stands for; `Ok(None)` when the directory has no such entry.
    async fn member_dn(&self, member: &Member) -> Result<Option<String>, DirectoryError> {
        match member {
            Member::User(principal) => self.find_user(principal).await,
            Member::Group(name) => {
                let dns = self.groups_named(name).await?;
                self.one_group(name, dns)
            }
        }
    }

    /// Creates group `name` under `groupBase`, with the placeholder where one is needed.
    async fn create_group(
        &self,
        name: &str,
        description: Option<&str>,
    ) -> Result<String, DirectoryError> {
        let config = self.config();
        let dn = names::child_dn(&config.group_name_attribute, name, &config.group_base);
        let class = config.group_object_class().to_owned();
        let set = |v: &str| HashSet::from([v.to_owned()]);
        let mut attrs = vec![
            (
                "objectClass".to_owned(),
                HashSet::from(["top".to_owned(), class]),
            ),
            (config.group_name_attribute.clone(), set(name)),
        ];
        if let Some(placeholder) = config.placeholder() {
            attrs.push((config.member_attribute.clone(), set(&placeholder)));
        }
        if config.active_directory {
            attrs.push(("sAMAccountName".to_owned(), set(name)));
        }
        if let Some(text) = description.filter(|d| !d.is_empty()) {
            attrs.push(("description".to_owned(), set(text)));
        }
        let created = self
            .conn
            .run(|mut ldap: Ldap| {
                let attrs = attrs.clone();
                let dn = dn.clone();
                async move {
                    let result = ldap.add(&dn, attrs).await?;
                    match result.rc {
                        // Created by a concurrent call: found by the search that follows.
                        rc::SUCCESS | rc::ENTRY_ALREADY_EXISTS => Ok(()),
                        _ => Err(Failure::Result(result)),
                    }
                }
            })
            .await;
        created.map_err(|f| classify("create group", f))?;
        tracing::info!(group = %dn, "created LDAP group");
        Ok(dn)
    }

    /// The member DNs of a group, following AD's ranged values (`member;range=0-1499`).
    async fn member_dns(&self, group: &str) -> Result<Vec<String>, DirectoryError> {
        let attribute = self.config().member_attribute.clone();
        let mut out = Vec::new();
        let mut wanted = attribute.clone();
        loop {
            let query = Query::base(group, &[wanted.as_str()]);
            let entries = self.search("list members", &query).await?.ok_or_else(|| {
                DirectoryError::permanent("list members", format!("no group {group:?}"))
            })?;
            let Some(entry) = entries.into_iter().next() else {
                return Ok(out);
            };
            let mut next = None;
            for (name, vals) in entry.attrs {
                match ranged_value(&attribute, &name) {
                    Some(Range::Whole) => out.extend(vals),
                    Some(Range::Next(n)) => {
                        out.extend(vals);
                        next = Some(n);
                    }
                    None => {}
                }
            }
            match next {
                Some(n) => wanted = n,
                None => return Ok(out),
            }
        }
    }

    /// Maps member DNs to members (see the module docs for the three steps).
    async fn members_of(
        &self,
        group: &str,
        dns: Vec<String>,
    ) -> Result<BTreeSet<Member>, DirectoryError> {
        let config = self.config();
        let placeholder = config.placeholder();
        let mut members = BTreeSet::new();
        let mut pending: BTreeMap<String, String> = BTreeMap::new();
        for dn in dns {
            if placeholder
                .as_deref()
                .is_some_and(|p| names::same_dn(p, &dn))
            {
                continue;
            }
            let by_rdn = names::first_rdn(&dn).and_then(|(attribute, value)| {
                if names::is_below(&dn, &config.group_base)
                    && attribute.eq_ignore_ascii_case(&config.group_name_attribute)
                {
                    Some(Member::Group(value))
                } else if names::is_below(&dn, &config.user_base)
                    && attribute.eq_ignore_ascii_case(&config.user_attribute)
                {
                    Some(Member::User(value))
                } else {
                    None
                }
            });
            match by_rdn {
                Some(member) => {
                    members.insert(member);
                }
                None => {
                    pending.insert(names::normalize(&dn), dn);
                }
            }
        }
        if !pending.is_empty() && !config.member_of_attribute.is_empty() {
            let filter = names::equality(&config.member_of_attribute, group);
            let query = Query::subtree(&config.user_base, filter, &[&config.user_attribute], 0);
            for entry in self.paged_search("list members", &query).await? {
                if let Some(value) = values(&entry, &config.user_attribute).first()
                    && pending.remove(&names::normalize(&entry.dn)).is_some()
                {
                    members.insert(Member::User(value.clone()));
                }
            }
        }
        for dn in pending.into_values() {
            members.insert(self.read_member(&dn).await?);
        }
        Ok(members)
    }

    /// One member entry read on its own: a group by its name, a user by its principal, or the
    /// DN itself when there is no such entry or it has neither.
    async fn read_member(&self, dn: &str) -> Result<Member, DirectoryError> {
        let config = self.config();
        let query = Query::base(
            dn,
            &[
                "objectClass",
                &config.user_attribute,
                &config.group_name_attribute,
            ],
        );
        let Some(entry) = self
            .search("list members", &query)
            .await?
            .and_then(|e| e.into_iter().next())
        else {
            return Ok(Member::User(dn.to_owned()));
        };
        let is_group = values(&entry, "objectClass")
            .iter()
            .any(|c| c.eq_ignore_ascii_case(config.group_object_class()));
        let member = if is_group {
            values(&entry, &config.group_name_attribute)
                .first()
                .map(|n| Member::Group(n.clone()))
        } else {
            values(&entry, &config.user_attribute)
                .first()
                .map(|u| Member::User(u.clone()))
        };
        Ok(member.unwrap_or_else(|| Member::User(dn.to_owned())))
    }

    /// Whether `user_dn` is a member of `group_dn` directly or through nested groups: with
    /// `activeDirectory`, one base search with LDAP_MATCHING_RULE_IN_CHAIN
    /// (1.2.840.113556.1.4.1941); elsewhere a walk down the group's member attribute, through
    /// groups of `groupObjectClass`, at most 16 levels deep.
    pub async fn is_transitive_member(
        &self,
        user_dn: &str,
        group_dn: &str,
    ) -> Result<bool, DirectoryError> {
        let config = self.config();
        if config.active_directory {
            let attribute = if config.member_of_attribute.is_empty() {
                "memberOf"
            } else {
                &config.member_of_attribute
            };
            let query = Query {
                filter: names::in_chain(attribute, group_dn),
                ..Query::base(user_dn, &["1.1"])
            };
            let found = self.search("check nested membership", &query).await?;
            return Ok(found.is_some_and(|e| !e.is_empty()));
        }
        let mut seen = HashSet::from([names::normalize(group_dn)]);
        let mut level = vec![group_dn.to_owned()];
        for _ in 0..MAX_NESTING {
            let mut next = Vec::new();
            for group in &level {
                let query = Query::base(group, &["objectClass", &config.member_attribute]);
                let Some(entry) = self
                    .search("check nested membership", &query)
                    .await?
                    .and_then(|e| e.into_iter().next())
                else {
                    continue;
                };
                let is_group = values(&entry, "objectClass")
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(config.group_object_class()));
                if !is_group {
                    continue;
                }
                for member in values(&entry, &config.member_attribute) {
                    if names::same_dn(member, user_dn) {
                        return Ok(true);
                    }
                    if seen.insert(names::normalize(member)) {
                        next.push(member.clone());
                    }
                }
            }
            if next.is_empty() {
                break;
            }
            level = next;
        }
        Ok(false)
    }

    /// The member value written for a DN: `<TTL=…,DN>` with AD's `memberTtl`, else the DN.
    fn member_value(&self, dn: &str) -> String {
        match self.config().member_ttl() {
            Some(ttl) => names::ttl_member(dn, ttl),
            None => dn.to_owned(),
        }
    }
}

#[async_trait]
impl Directory for LdapDirectory {
    fn backend(&self) -> &'static str {
        "ldap"
    }

    async fn ensure_group(&self, group: &PimGroup) -> Result<GroupId, DirectoryError> {
        let spec = &group.spec.group;
        if let Some(dn) = &spec.id {
            let found = self
                .search("resolve group", &Query::base(dn, &["1.1"]))
                .await?;
            return match found {
                Some(entries) if !entries.is_empty() => Ok(GroupId(dn.clone())),
                _ => Err(DirectoryError::permanent(
                    "resolve group",
                    format!("no group with DN {dn:?}"),
                )),
            };
        }
        let Some(name) = &spec.display_name else {
            return Err(DirectoryError::permanent(
                "resolve group",
                "set group.id (a DN) or group.displayName",
            ));
        };
        if let Some(dn) = self.one_group(name, self.groups_named(name).await?)? {
            return Ok(GroupId(dn));
        }
        if spec.create != Some(true) {
            return Err(DirectoryError::permanent(
                "resolve group",
                format!(
                    "no {} named {name:?} under {:?} (set create: true to create it)",
                    self.config().group_object_class(),
                    self.config().group_base
                ),
            ));
        }
        self.create_group(name, spec.description.as_deref()).await?;
        // Search again rather than trust the DN built: a concurrent create wins the same way.
        match self.one_group(name, self.groups_named(name).await?)? {
            Some(dn) => Ok(GroupId(dn)),
            None => Err(DirectoryError::transient(
                "resolve group",
                format!("group {name:?} created but not found yet"),
            )),
        }
    }

    async fn list_members(
        &self,
        group: &GroupId,
        role: Role,
    ) -> Result<BTreeSet<Member>, DirectoryError> {
        if role == Role::Owner {
            return Ok(BTreeSet::new());
        }
        let dns = self.member_dns(&group.0).await?;
        let members = self.members_of(&group.0, dns).await?;
        let spelled = members.iter().map(|m| (folded(m), m.clone())).collect();
        self.listed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(group.0.clone(), spelled);
        Ok(members)
    }

    /// The listing's spelling of a principal written in other letter case, where the
    /// principal attribute (`userAttribute`, `groupNameAttribute`) ignores case
    /// (`rules::ignores_case`).
    fn listed_as(&self, member: &Member) -> Option<Member> {
        let config = self.config();
        let attribute = match member {
            Member::User(_) => &config.user_attribute,
            Member::Group(_) => &config.group_name_attribute,
        };
        if !rules::ignores_case(attribute, config.active_directory) {
            return None;
        }
        let key = folded(member);
        let listed = self.listed.lock().unwrap_or_else(|e| e.into_inner());
        listed
            .values()
            .find_map(|group| group.get(&key))
            .filter(|l| *l != member)
            .cloned()
    }

    /// A user's DN, by `userFilter`.
    async fn principal_id(&self, member: &Member) -> Result<Option<String>, DirectoryError> {
        match member {
            Member::User(name) => self.find_user(name).await,
            Member::Group(_) => Ok(None),
        }
    }

    async fn add_member(
        &self,
        group: &GroupId,
        role: Role,
        member: &Member,
    ) -> Result<(), DirectoryError> {
        if role == Role::Owner {
            return Err(DirectoryError::permanent(
                "add member",
                "the ldap directory has no owner role",
            ));
        }
        let Some(dn) = self.member_dn(member).await? else {
            let what = match member {
                Member::User(u) => format!(
                    "no user {u:?} under {:?} (userFilter {:?})",
                    self.config().user_base,
                    self.config().user_filter
                ),
                Member::Group(g) => {
                    format!("no group {g:?} under {:?}", self.config().group_base)
                }
            };
            return Err(DirectoryError::permanent("add member", what));
        };
        let attribute = self.config().member_attribute.clone();
        let value = self.member_value(&dn);
        self.modify(
            "add member",
            &group.0,
            vec![Mod::Add(attribute, HashSet::from([value]))],
            Write::AddMember,
        )
        .await
        .map(|_| ())
    }

    async fn remove_member(
        &self,
        group: &GroupId,
        role: Role,
        member: &Member,
    ) -> Result<(), DirectoryError> {
        if role == Role::Owner {
            return Ok(());
        }
        let dn = match self.member_dn(member).await? {
            Some(dn) => dn,
            // Listed by its DN because no entry maps it to a principal (module docs, step 3).
            None => match member {
                Member::User(text) | Member::Group(text) if names::looks_like_dn(text) => {
                    text.clone()
                }
                // No such entry, so no such member value: already absent.
                _ => return Ok(()),
            },
        };
        let attribute = self.config().member_attribute.clone();
        let delete = Mod::Delete(attribute.clone(), HashSet::from([dn]));
        let written = self
            .modify(
                "remove member",
                &group.0,
                vec![delete.clone()],
                Write::RemoveMember,
            )
            .await?;
        if written == Written::Done {
            return Ok(());
        }
        // The last member of a class that must keep one: the placeholder takes its place, in
        // the same modify.
        let Some(placeholder) = self.config().placeholder() else {
            return Err(DirectoryError::permanent(
                "remove member",
                format!(
                    "{:?} must keep a member (objectClassViolation) and this {} group has no placeholderMember",
                    group.0,
                    self.config().group_object_class()
                ),
            ));
        };
        let add = Mod::Add(attribute, HashSet::from([placeholder.clone()]));
        match self
            .modify(
                "remove member",
                &group.0,
                vec![add, delete],
                Write::RemoveMember,
            )
            .await
        {
            Ok(Written::Done) => Ok(()),
            Ok(Written::GroupWouldBeEmpty) => Err(DirectoryError::permanent(
                "remove member",
                format!(
                    "{:?} refuses to lose its last member even with placeholderMember {placeholder:?} in its place",
                    group.0
                ),
            )),
            Err(DirectoryError::Permanent { message, .. }) => Err(DirectoryError::permanent(
                "remove member",
                format!(
                    "the last member of {:?} can only go with placeholderMember {placeholder:?} in its place, and the server refused it ({message}); set placeholderMember to the DN of an entry that exists",
                    group.0
                ),
            )),
            Err(transient) => Err(transient),
        }
    }

    async fn is_member_of(
        &self,
        principal: &str,
        group: &str,
    ) -> Result<Option<bool>, DirectoryError> {
        let Some(user_dn) = self.find_user(principal).await? else {
            return Ok(Some(false));
        };
        // A DN names the group itself; anything else is a name under groupBase.
        let group_dn = if group.contains('=') {
            Some(group.to_owned())
        } else {
            let found = self.groups_named(group).await?;
            self.one_group(group, found)?
        };
        match group_dn {
            Some(group_dn) => Ok(Some(self.is_transitive_member(&user_dn, &group_dn).await?)),
            None => Ok(Some(false)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranged_member_values_are_followed() {
        assert_eq!(ranged_value("member", "member"), Some(Range::Whole));
        assert_eq!(ranged_value("member", "Member"), Some(Range::Whole));
        assert_eq!(
            ranged_value("member", "member;range=0-1499"),
            Some(Range::Next("member;range=1500-*".into()))
        );
        assert_eq!(
            ranged_value("member", "member;Range=1500-2999"),
            Some(Range::Next("member;range=3000-*".into()))
        );
        assert_eq!(
            ranged_value("member", "member;range=3000-*"),
            Some(Range::Whole)
        );
        assert_eq!(ranged_value("member", "memberOf"), None);
        assert_eq!(ranged_value("member", "uniqueMember;range=0-9"), None);
    }
}
