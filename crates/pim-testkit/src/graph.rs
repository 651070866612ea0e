//! A Microsoft Graph v1.0 and Microsoft identity platform look-alike on 127.0.0.1, for the entra
//! directory's tests (DESIGN §11). It keeps users, groups with members and owners, PIM for Groups
//! active assignments, and sent mail, and checks every request the way Graph documents it:
//! method, path, query parameters, headers (a valid bearer token, `Content-Type` on bodies) and
//! body. What it does not expect is recorded as a violation (tests assert there are none) and
//! answered `400` in Graph's error shape, `{"error": {"code", "message", "innerError"}}`.
//!
//! Faults on demand: answers with a status and `Retry-After` for the next N matching requests,
//! a request held until the test lets it go, revoked tokens, a lagging group search.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::result_large_err
)]

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::Timestamp;
use pim_operator::directory::entra::EntraConfig;
use ring::signature::{KeyPair, RSA_PSS_2048_8192_SHA256, RsaKeyPair, UnparsedPublicKey};
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub const TENANT: &str = "8a6d5c1e-2f3b-4c5d-9e8f-0a1b2c3d4e5f";
pub const CLIENT_ID: &str = "1c2d3e4f-5a6b-4c7d-8e9f-a0b1c2d3e4f5";
pub const SECRET: &str = "s3cr3t~Value.With+Symbols=&";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A test-only RSA key (made for these tests, guarding nothing) and its self-signed
/// certificate, for the certificate credential.
pub const TEST_KEY_PEM: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCZ3VdbuOV8MV/j\n\
oDpokqwEWxYWuFqr8JZ9uV7zxki7acg1TeGGv7YLblpp5GmqCAlg0BbezyC05QmV\n\
DDnsYMeGCbagjMoZfZk/YWFPfeMaXmz0JCMCw1aljnGQu9gwcEJDrkKug22zWwzc\n\
W189nOO2Cc5C+SodMjIdzPLBMXPR/jCN7BTTwn8am/qtlTO9o5acUPebdovJUIn5\n\
yaBM9XqnnnRQQgZlO7E9yXbNCnF4+WuzD4FbfHKVokALlIeytIZdVApXqP3ovhZ3\n\
kMaZcDDKBRjoIdQQWENo+zxv2WMSas9W1n9UidgSHIYhnToyg9toNeJ3J61i2Rl7\n\
kNBer10BAgMBAAECggEAA+o1VFCeiivpcC29/rYoqU22AKr9J53N/nHugA5eAGK/\n\
JNgP8nFDTQQoScR1ic19i5iP1Gh5wRCIz2GJwcFuojLyEiCy7bYb5ZhxNOgTlLKt\n\
XALlXycgN8MpkZCt/gGFNhqjeLRAYM1ixOKQSE2LH7EdLegQEcEatFZoINFEzKV8\n\
bppCYQLzXq8JBIHmG/QrjCUtNSJSE3DoqkkdNsFX8QFyK7ToESwCaJf20sIn6yeE\n\
XtvTq1g1cqXjpxmK32U8sw2lcUaHaSYQFck/shDHolr+TaAc0iAyQhO6ZJnX8dxk\n\
YhZ5mJa8t0ImEpXc1pvURbQja0S3ibXut/AERdf66QKBgQDWXBi/USa/btGkiUvl\n\
u5u/+5/EAX9Okf2HoZfBloW1YeSnntUqTI4pGBD40ua2UzOOwa8NQ5KKrx8jp9ee\n\
oYMQ0wFPHcxX7oU5+mf5nAa6mZiGvPh+WyJhCnqnNJDnQJPjSZ2ehUDCZR+rQXFH\n\
YY7Xhr+9FKq3M5bIO7KeDqn6XQKBgQC3wOE7EAeKTRTDrI0RPD/zcRDK2dO+NlQk\n\
7yRcKUNfR4IydJ5AkLimYCfizsW/ZghCDpe3sa+ZUYr4ntB9JlzQnJ26ZMaqeqX6\n\
/IhLhYObUi38Y3DO4LtQU5qvvZaLEFk50HLhuJbzcNPQPyK/soilYdIWbjY3mLvr\n\
LS3EGrWq9QKBgFzmrycDUaq3qY4Inucixt6Oe/BjwbvYk6tbgjy5MpuooINw1+us\n\
IBR5RKnCJZExP/AHywkRlwoZ2YIHdPBgCUCaYj/apzwYuI6nErbgQx5OAQesEHoa\n\
nyy1cPDUXFSM7UsdFX2lPKrDTtVW2HRaOKD52lFlCpO5fQisrr3Hly1VAoGBAKj6\n\
6yVRfF2mvO2lBKVQ7s6Er5ib8Kj/dSnx8VH/cEFylTypGc7uR6BY1NUyqY912SpG\n\
GSeIc59e6ZnxEnHEkZ4WKMZ8XmXwHCtPiFdLFNgFHtz25YqaCCe6eooaoxKHmkYc\n\
d0k0YzzECUV8igwXtqm/519RQvKltkpzZZ7toRrxAoGAamBd0ZjRDQZ/9ZmQM3T3\n\
dWTO8+TE2kvuEMEh8F/Eo98AlYPuVl3G6pKwckK37crjfhfDc2ALRb9nDUzGhjls\n\
IoYh1wYDyxFLgHd0CnzPneGLjxLczwaVD63GdIBB3Ih8VNiSA6lO9hoY98oRuNXF\n\
XpRhTx6Jo9sCFs5dV0UlWMo=\n\
-----END PRIVATE KEY-----\n\
";
pub const TEST_CERT_PEM: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIDGzCCAgOgAwIBAgIUCvY8gNOq377WINi8+xNLVfO3ky0wDQYJKoZIhvcNAQEL\n\
BQAwHDEaMBgGA1UEAwwRcGltLW9wZXJhdG9yLXRlc3QwIBcNMjYxMTIyMDc0MTQz\n\
WhgPMjEyNjEwMjkwNzQxNDNaMBwxGjAYBgNVBAMMEXBpbS1vcGVyYXRvci10ZXN0\n\
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAmd1XW7jlfDFf46A6aJKs\n\
BFsWFrhaq/CWfble88ZIu2nINU3hhr+2C25aaeRpqggJYNAW3s8gtOUJlQw57GDH\n\
hgm2oIzKGX2ZP2FhT33jGl5s9CQjAsNWpY5xkLvYMHBCQ65CroNts1sM3FtfPZzj\n\
tgnOQvkqHTIyHczywTFz0f4wjewU08J/Gpv6rZUzvaOWnFD3m3aLyVCJ+cmgTPV6\n\
p550UEIGZTuxPcl2zQpxePlrsw+BW3xylaJAC5SHsrSGXVQKV6j96L4Wd5DGmXAw\n\
ygUY6CHUEFhDaPs8b9ljEmrPVtZ/VInYEhyGIZ06MoPbaDXidyetYtkZe5DQXq9d\n\
AQIDAQABo1MwUTAdBgNVHQ4EFgQUcuMchuOqhIvg8gUZOi2y/wviGDIwHwYDVR0j\n\
BBgwFoAUcuMchuOqhIvg8gUZOi2y/wviGDIwDwYDVR0TAQH/BAUwAwEB/zANBgkq\n\
hkiG9w0BAQsFAAOCAQEAAB3+FLkDsPPNG5OYeyjqd9viiwnsJxCaotErPrhs7J9J\n\
HFuSU/xe+68CSfABS3yyLaQ9eFmdAgZwZt8/NV+1oBLypT7oJmod/KaQhtfgaMle\n\
6jRynVeU/9iIkuHp+gRFfLy4DY7UoXqH46T0vCidaCe/mLrSyqF9JdJ4WU3V0PBo\n\
DtRtIVy97Ue6k+rxY1ud3DgpjukWuEZWn8N5bWGIzhWEM3LAUMML8A5rodHjgcZ+\n\
Jrm9qIHzN4RRXd2bQdNxHfQo8xYv23S/wv+7tIIWntRe9pOqKKQG0Yk0IlZralJ2\n\
Ovl8halFnye1HBk8tWlByCVsrnOV+Ck6pXRj3VEjXA==\n\
-----END CERTIFICATE-----\n\
";

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    /// The path as sent, still percent-encoded, without `/v1.0`.
    pub raw_path: String,
    /// Query parameters, decoded, in order.
    pub query: Vec<(String, String)>,
    pub body: Value,
    pub status: u16,
    /// When it arrived.
    pub at: std::time::Instant,
}

impl Logged {
    pub fn is(&self, method: &str, path_contains: &str) -> bool {
        self.method == method && self.raw_path.contains(path_contains)
    }
}

#[derive(Debug, Clone)]
struct Fault {
    method: String,
    path_contains: String,
    remaining: usize,
    status: u16,
    retry_after: Option<u64>,
    /// Send `Retry-After` as an HTTP-date this many seconds after the answer's `Date`.
    retry_at: Option<u64>,
    code: String,
    /// The error message; "Fault injected by the test." when unset.
    message: Option<String>,
}

/// How a principal belongs to a group: by plain membership, or by a PIM assignment made at
/// `start` with an end (`None`: permanent). Entra's PIM lists plain members as permanent
/// assignments.
#[derive(Debug, Clone, PartialEq)]
enum Membership {
    Direct,
    Pim {
        start: Timestamp,
        end: Option<Timestamp>,
    },
}

/// The tenant's PIM policy for a group's active assignments, as its
/// `Expiration_Admin_Assignment` rule says (`unifiedRoleManagementPolicyExpirationRule`:
/// `isExpirationRequired`, `maximumDuration`; "Working with rules in PIM using Microsoft Graph").
#[derive(Debug, Clone, Copy, Default)]
pub struct AssignmentPolicy {
    pub expiration_required: bool,
    pub maximum_duration: Option<jiff::SignedDuration>,
}

/// "Assign eligibility for a group in Privileged Identity Management" (Microsoft Entra docs):
/// an assignment "can't be assigned for a duration of less than five minutes" and "can't be
/// removed within five minutes of it being assigned".
const PIM_MINIMUM: jiff::SignedDuration = jiff::SignedDuration::from_mins(5);

#[derive(Debug, Clone)]
struct Group {
    display_name: String,
    description: Option<String>,
    mail_nickname: String,
    members: BTreeMap<String, Membership>,
    owners: BTreeMap<String, Membership>,
    created_here: bool,
}

#[derive(Default)]
struct State {
    users: BTreeMap<String, String>,
    groups: BTreeMap<String, Group>,
    next_id: u64,
    tokens: HashMap<String, bool>,
    refuse_all_tokens: bool,
    token_lifetime: i64,
    token_requests: usize,
    secret: String,
    federated: Option<String>,
    jtis: HashSet<String>,
    page_size: usize,
    faults: Vec<Fault>,
    holds: Vec<(String, String, Option<oneshot::Receiver<()>>, bool)>,
    hide_created: usize,
    log: Vec<Logged>,
    violations: Vec<String>,
    schedule_requests: Vec<Value>,
    mail: Vec<Value>,
    /// Service principals, by object id: owners may be users or service principals.
    service_principals: BTreeMap<String, String>,
    /// What time it is for Graph (the test's clock); without one, the rules that need the time
    /// of a removal are not played.
    clock: Option<Arc<dyn pim_operator::clock::Clock>>,
    policy: AssignmentPolicy,
}

pub struct FakeGraph {
    pub base: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGraph {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn graph_error(status: u16, code: &str, message: &str) -> Response {
    let body = json!({"error": {
        "code": code,
        "message": message,
        "innerError": {
            "date": "2026-03-02T09:00:00",
            "request-id": "a3e1f4d2-0000-4000-8000-000000000000",
            "client-request-id": "a3e1f4d2-0000-4000-8000-000000000000",
        },
    }});
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn json_response(status: u16, body: Value) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn empty(status: u16) -> Response {
    StatusCode::from_u16(status).unwrap().into_response()
}

fn decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .expect("utf-8 after percent-decoding")
        .into_owned()
}

fn parse_query(raw: Option<&str>) -> Vec<(String, String)> {
    raw.unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn parse_form(body: &[u8]) -> HashMap<String, String> {
    std::str::from_utf8(body)
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(&k.replace('+', " ")), decode(&v.replace('+', " ")))
        })
        .collect()
}

/// Parses an OData string literal (`'…'` with doubled quotes); `None` if it is not one.
fn odata_literal(text: &str) -> Option<String> {
    let inner = text.strip_prefix('\'')?.strip_suffix('\'')?;
    let mut out = String::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' && chars.next() != Some('\'') {
            return None;
        }
        out.push(c);
    }
    Some(out)
}

fn is_guid(text: &str) -> bool {
    pim_operator::directory::entra::names::is_guid(text)
}

impl FakeGraph {
    pub async fn start() -> FakeGraph {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            token_lifetime: 3599,
            secret: SECRET.to_owned(),
            page_size: 100,
            ..Default::default()
        }));
        let shared = (state.clone(), base.clone());
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let (state, base) = shared.clone();
                async move { handle(state, base, method, uri, headers, body).await }
            },
        );
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeGraph { base, state, task }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// A client-secret config for this fake, the secret in `secret_file`.
    pub fn config(&self, secret_file: &Path) -> EntraConfig {
        std::fs::write(secret_file, format!("{SECRET}\n")).unwrap();
        EntraConfig {
            authority_host: Some(self.base.clone()),
            graph_endpoint: self.base.clone(),
            ..EntraConfig::with_secret(TENANT, CLIENT_ID, secret_file)
        }
    }

    fn new_id(state: &mut State) -> String {
        state.next_id += 1;
        format!("00000000-0000-4000-8000-{:012x}", state.next_id)
    }

    pub fn add_user(&self, upn: &str) -> String {
        let mut state = self.lock();
        let id = Self::new_id(&mut state);
        state.users.insert(id.clone(), upn.to_owned());
        id
    }

    pub fn add_group(&self, name: &str) -> String {
        let mut state = self.lock();
        let id = Self::new_id(&mut state);
        state.groups.insert(
            id.clone(),
            Group {
                display_name: name.to_owned(),
                description: None,
                mail_nickname: "seeded".to_owned(),
                members: BTreeMap::new(),
                owners: BTreeMap::new(),
                created_here: false,
            },
        );
        id
    }

    pub fn add_member(&self, group: &str, principal: &str) {
        self.lock()
            .groups
            .get_mut(group)
            .unwrap()
            .members
            .insert(principal.to_owned(), Membership::Direct);
    }

    /// A service principal (an application's identity in the tenant), which can own groups.
    pub fn add_service_principal(&self, name: &str) -> String {
        let mut state = self.lock();
        let id = Self::new_id(&mut state);
        state.service_principals.insert(id.clone(), name.to_owned());
        id
    }

    /// Graph's time: the test's clock, for the rules that depend on when a request comes.
    pub fn set_clock(&self, clock: Arc<dyn pim_operator::clock::Clock>) {
        self.lock().clock = Some(clock);
    }

    /// The tenant's PIM policy for active assignments of groups.
    pub fn set_assignment_policy(&self, policy: AssignmentPolicy) {
        self.lock().policy = policy;
    }

    pub fn add_owner(&self, group: &str, principal: &str) {
        self.lock()
            .groups
            .get_mut(group)
            .unwrap()
            .owners
            .insert(principal.to_owned(), Membership::Direct);
    }

    fn name_of(state: &State, id: &str) -> String {
        state
            .users
            .get(id)
            .cloned()
            .or_else(|| state.groups.get(id).map(|g| g.display_name.clone()))
            .unwrap_or_else(|| id.to_owned())
    }

    /// Member names (UPN or display name) of a group.
    pub fn members(&self, group: &str) -> BTreeSet<String> {
        let state = self.lock();
        state.groups[group]
            .members
            .keys()
            .map(|id| Self::name_of(&state, id))
            .collect()
    }

    pub fn owners(&self, group: &str) -> BTreeSet<String> {
        let state = self.lock();
        state.groups[group]
            .owners
            .keys()
            .map(|id| Self::name_of(&state, id))
            .collect()
    }

    /// The end of a member's PIM assignment: `None` if not a member, `Some(None)` if a plain
    /// member or a permanent assignment.
    pub fn pim_end(&self, group: &str, principal: &str) -> Option<Option<Timestamp>> {
        match self.lock().groups[group].members.get(principal)? {
            Membership::Direct => Some(None),
            Membership::Pim { end, .. } => Some(*end),
        }
    }

    /// Entra enforcing expirations: PIM assignments that ended by `now` are removed.
    pub fn expire(&self, now: Timestamp) {
        for group in self.lock().groups.values_mut() {
            for list in [&mut group.members, &mut group.owners] {
                list.retain(
                    |_, m| !matches!(m, Membership::Pim { end: Some(end), .. } if *end <= now),
                );
            }
        }
    }

    pub fn groups_named(&self, name: &str) -> Vec<String> {
        self.lock()
            .groups
            .iter()
            .filter(|(_, g)| g.display_name == name)
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub fn group_details(&self, id: &str) -> (String, Option<String>, String) {
        let state = self.lock();
        let g = &state.groups[id];
        (
            g.display_name.clone(),
            g.description.clone(),
            g.mail_nickname.clone(),
        )
    }

    pub fn set_page_size(&self, n: usize) {
        self.lock().page_size = n;
    }

    pub fn set_token_lifetime(&self, seconds: i64) {
        self.lock().token_lifetime = seconds;
    }

    pub fn set_secret(&self, secret: &str) {
        self.lock().secret = secret.to_owned();
    }

    /// Workload identity: the assertion the token endpoint accepts now.
    pub fn expect_federated(&self, assertion: &str) {
        self.lock().federated = Some(assertion.to_owned());
    }

    /// Graph refuses every token, new ones too, as it does one issued for another audience:
    /// 401 `InvalidAuthenticationToken`, "Access token validation failure. Invalid audience."
    /// (Graph's error codes, "Microsoft Graph error responses and resource types").
    pub fn refuse_all_tokens(&self, refuse: bool) {
        self.lock().refuse_all_tokens = refuse;
    }

    /// Every issued token stops being valid (as if expired early).
    pub fn revoke_tokens(&self) {
        for valid in self.lock().tokens.values_mut() {
            *valid = false;
        }
    }

    /// The next `count` requests `method` whose raw path contains `path_contains` are answered
    /// `status` (with `Retry-After` when given) in Graph's error shape.
    pub fn fail_next(
        &self,
        method: &str,
        path_contains: &str,
        count: usize,
        status: u16,
        retry_after: Option<u64>,
    ) {
        let code = match status {
            429 => "TooManyRequests",
            503 => "serviceNotAvailable",
            504 => "gatewayTimeout",
            _ => "generalException",
        };
        self.lock().faults.push(Fault {
            method: method.to_owned(),
            path_contains: path_contains.to_owned(),
            remaining: count,
            status,
            retry_after,
            retry_at: None,
            code: code.to_owned(),
            message: None,
        });
    }

    /// The next `count` matching requests get one of Graph's documented refusals (`status`,
    /// `code`, `message`, as the caller cites them) though the fake's own state would allow
    /// them: Entra's clock or replication a little behind ours, say.
    pub fn refuse_next(
        &self,
        method: &str,
        path_contains: &str,
        count: usize,
        status: u16,
        code: &str,
        message: &str,
    ) {
        self.fail_next(method, path_contains, count, status, None);
        if let Some(fault) = self.lock().faults.last_mut() {
            fault.code = code.to_owned();
            fault.message = Some(message.to_owned());
        }
    }

    /// As `fail_next`, with `Retry-After` in its other form, an HTTP-date `seconds` after the
    /// answer's `Date` header (RFC 9110 section 10.2.3: `HTTP-date / delay-seconds`).
    pub fn fail_next_until_date(
        &self,
        method: &str,
        path_contains: &str,
        count: usize,
        status: u16,
        seconds: u64,
    ) {
        self.fail_next(method, path_contains, count, status, None);
        if let Some(fault) = self.lock().faults.last_mut() {
            fault.retry_at = Some(seconds);
        }
    }

    /// The next matching request waits until the returned sender is used (or dropped).
    pub fn hold_next(&self, method: &str, path_contains: &str) -> oneshot::Sender<()> {
        let (tx, rx) = oneshot::channel();
        self.lock()
            .holds
            .push((method.to_owned(), path_contains.to_owned(), Some(rx), false));
        tx
    }

    /// Whether a held request has arrived.
    pub fn held_arrived(&self) -> bool {
        self.lock().holds.iter().any(|h| h.3)
    }

    /// The next `n` group searches do not see groups created through the API (Entra's
    /// replication lag).
    pub fn hide_created_groups(&self, n: usize) {
        self.lock().hide_created = n;
    }

    pub fn log(&self) -> Vec<Logged> {
        self.lock().log.clone()
    }

    pub fn count(&self, method: &str, path_contains: &str) -> usize {
        self.lock()
            .log
            .iter()
            .filter(|l| l.is(method, path_contains))
            .count()
    }

    pub fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }

    pub fn token_requests(&self) -> usize {
        self.lock().token_requests
    }

    pub fn schedule_requests(&self) -> Vec<Value> {
        self.lock().schedule_requests.clone()
    }

    pub fn mail(&self) -> Vec<Value> {
        self.lock().mail.clone()
    }

    /// Asserts no request broke Graph's documented shape.
    pub fn assert_clean(&self) {
        let violations = self.violations();
        assert!(
            violations.is_empty(),
            "requests Graph would refuse: {violations:#?}"
        );
    }
}

/// The body of a request for the checks, as JSON (or `Null` when empty).
fn json_body(body: &Bytes) -> Result<Value, String> {
    if body.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))
}

async fn handle(
    state: Arc<Mutex<State>>,
    base: String,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let raw = uri.path().to_owned();
    let query = parse_query(uri.query());
    let hold = {
        let mut s = state.lock().unwrap();
        s.holds
            .iter_mut()
            .find(|h| h.2.is_some() && method.as_str() == h.0 && raw.contains(&h.1))
            .and_then(|h| {
                h.3 = true;
                h.2.take()
            })
    };
    if let Some(rx) = hold {
        let _ = rx.await;
    }
    let logged_body = if headers.get("content-type").is_some_and(|c| {
        c.to_str()
            .unwrap_or_default()
            .starts_with("application/json")
    }) {
        json_body(&body).unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    let mut s = state.lock().unwrap();
    let response = if raw.ends_with("/oauth2/v2.0/token") {
        token(&mut s, &base, &method, &raw, &headers, &body)
    } else {
        graph(&mut s, &base, &method, &raw, &query, &headers, &body)
    };
    s.log.push(Logged {
        method: method.to_string(),
        raw_path: raw.strip_prefix("/v1.0").unwrap_or(&raw).to_owned(),
        query,
        body: logged_body,
        status: response.status().as_u16(),
        at: std::time::Instant::now(),
    });
    response
}

fn violation(s: &mut State, what: String) -> Response {
    s.violations.push(what.clone());
    graph_error(400, "Request_BadRequest", &what)
}

fn token(
    s: &mut State,
    base: &str,
    method: &Method,
    raw: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    s.token_requests += 1;
    let expected_path = format!("/{TENANT}/oauth2/v2.0/token");
    if method != Method::POST || raw != expected_path {
        return violation(s, format!("token request {method} {raw}"));
    }
    let content_type = headers
        .get("content-type")
        .map(|c| c.to_str().unwrap_or_default().to_owned());
    if content_type.as_deref() != Some("application/x-www-form-urlencoded") {
        return violation(s, format!("token request Content-Type {content_type:?}"));
    }
    if headers.contains_key("authorization") {
        return violation(s, "token request with an Authorization header".to_owned());
    }
    let form = parse_form(body);
    let scope = format!("{base}/.default");
    if form.get("client_id").map(String::as_str) != Some(CLIENT_ID)
        || form.get("grant_type").map(String::as_str) != Some("client_credentials")
        || form.get("scope") != Some(&scope)
    {
        return violation(s, format!("token request form {:?}", form.keys()));
    }
    let refuse = |code: u32, text: &str| {
        json_response(
            401,
            json!({
                "error": "invalid_client",
                "error_description": format!("AADSTS{code}: {text} Trace ID: 0b7f6a1e-0000-4000-8000-000000000000 Correlation ID: 9c1d-0000 Timestamp: 2026-03-02 09:00:00Z"),
                "error_codes": [code],
                "timestamp": "2026-03-02 09:00:00Z",
                "trace_id": "0b7f6a1e-0000-4000-8000-000000000000",
                "correlation_id": "9c1d0000-0000-4000-8000-000000000000",
            }),
        )
    };
    let accepted = if let Some(secret) = form.get("client_secret") {
        if form.contains_key("client_assertion") {
            return violation(s, "both a secret and an assertion".to_owned());
        }
        if *secret != s.secret {
            return refuse(
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '1c2d3e4f-5a6b-4c7d-8e9f-a0b1c2d3e4f5'.",
            );
        }
        true
    } else if let Some(assertion) = form.get("client_assertion") {
        if form.get("client_assertion_type").map(String::as_str) != Some(ASSERTION_TYPE) {
            return violation(s, "client_assertion_type".to_owned());
        }
        match &s.federated {
            Some(expected) => {
                if assertion != expected {
                    return refuse(
                        700024,
                        "Client assertion is not within its valid time range.",
                    );
                }
                true
            }
            None => match check_certificate_assertion(s, base, assertion) {
                Ok(()) => true,
                Err(why) => return violation(s, format!("client assertion: {why}")),
            },
        }
    } else {
        return violation(s, "no credential in the token request".to_owned());
    };
    assert!(accepted);
    let n = s.tokens.len() + 1;
    let access_token = format!("eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.fake-{n}.sig");
    s.tokens.insert(access_token.clone(), true);
    json_response(
        200,
        json!({
            "token_type": "Bearer",
            "expires_in": s.token_lifetime,
            "ext_expires_in": s.token_lifetime,
            "access_token": access_token,
        }),
    )
}

/// Checks a certificate client assertion as the identity platform documents it: PS256, typ JWT,
/// `x5t#S256` the certificate's SHA-256 thumbprint, `aud` the token endpoint, `iss` = `sub` =
/// the client id, a fresh `jti`, `nbf` ≤ `exp` within ten minutes, and a valid signature.
fn check_certificate_assertion(s: &mut State, base: &str, jwt: &str) -> Result<(), String> {
    let parts: Vec<&str> = jwt.split('.').collect();
    let [header, claims, signature] = parts.as_slice() else {
        return Err("not three parts".to_owned());
    };
    let decode = |p: &str| -> Result<Value, String> {
        let bytes = URL_SAFE_NO_PAD.decode(p).map_err(|e| e.to_string())?;
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    };
    let h = decode(header)?;
    let c = decode(claims)?;
    let cert = rustls::pki_types::CertificateDer::from_pem_slice(TEST_CERT_PEM.as_bytes()).unwrap();
    let thumb =
        URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, cert.as_ref()).as_ref());
    if h["alg"] != "PS256" || h["typ"] != "JWT" || h["x5t#S256"] != thumb.as_str() {
        return Err(format!("header {h}"));
    }
    let aud = format!("{base}/{TENANT}/oauth2/v2.0/token");
    if c["aud"] != aud.as_str() || c["iss"] != CLIENT_ID || c["sub"] != CLIENT_ID {
        return Err(format!("claims {c}"));
    }
    let jti = c["jti"].as_str().unwrap_or_default().to_owned();
    if jti.is_empty() || !s.jtis.insert(jti) {
        return Err("jti missing or reused".to_owned());
    }
    let (nbf, exp) = (c["nbf"].as_i64(), c["exp"].as_i64());
    match (nbf, exp) {
        (Some(nbf), Some(exp)) if nbf < exp && exp - nbf <= 600 => {}
        _ => return Err(format!("nbf/exp {c}")),
    }
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(TEST_KEY_PEM.as_bytes()).unwrap();
    let pair = match &key {
        rustls::pki_types::PrivateKeyDer::Pkcs8(k) => {
            RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()).unwrap()
        }
        _ => panic!("the test key is PKCS#8"),
    };
    let public = UnparsedPublicKey::new(&RSA_PSS_2048_8192_SHA256, pair.public_key().as_ref());
    let sig = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|e| e.to_string())?;
    public
        .verify(format!("{header}.{claims}").as_bytes(), &sig)
        .map_err(|_| "bad signature".to_owned())
}

fn graph(
    s: &mut State,
    base: &str,
    method: &Method,
    raw: &str,
    query: &[(String, String)],
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let Some(path) = raw.strip_prefix("/v1.0") else {
        return violation(s, format!("{method} {raw}: not under /v1.0"));
    };
    // Authorization: a bearer token this fake issued and has not revoked.
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let Some(token) = auth.strip_prefix("Bearer ") else {
        return graph_error(401, "InvalidAuthenticationToken", "Access token is empty.");
    };
    if s.refuse_all_tokens {
        return graph_error(
            401,
            "InvalidAuthenticationToken",
            "Access token validation failure. Invalid audience.",
        );
    }
    match s.tokens.get(token) {
        Some(true) => {}
        Some(false) => {
            return graph_error(
                401,
                "InvalidAuthenticationToken",
                "Lifetime validation failed, the token is expired.",
            );
        }
        None => {
            return graph_error(
                401,
                "InvalidAuthenticationToken",
                "IDX14100: JWT is not well formed.",
            );
        }
    }
    // Bodies are JSON, and say so.
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if !body.is_empty() && !content_type.starts_with("application/json") {
        return violation(s, format!("{method} {path}: Content-Type {content_type:?}"));
    }
    if (*method == Method::GET || *method == Method::DELETE) && !body.is_empty() {
        return violation(s, format!("{method} {path} with a body"));
    }
    // Advanced queries need ConsistencyLevel: eventual; nothing else should send it.
    let advanced = query.iter().any(|(k, _)| k == "$count" || k == "$search");
    let eventual = headers
        .get("consistencylevel")
        .and_then(|v| v.to_str().ok())
        == Some("eventual");
    if advanced != eventual {
        return violation(
            s,
            format!("{method} {path}: ConsistencyLevel {eventual} for advanced {advanced}"),
        );
    }
    let body = match json_body(body) {
        Ok(b) => b,
        Err(e) => return violation(s, format!("{method} {path}: {e}")),
    };
    // Faults.
    if let Some(fault) = s
        .faults
        .iter_mut()
        .find(|f| f.remaining > 0 && f.method == method.as_str() && raw.contains(&f.path_contains))
    {
        fault.remaining -= 1;
        let message = fault
            .message
            .clone()
            .unwrap_or_else(|| "Fault injected by the test.".to_owned());
        let mut response = graph_error(fault.status, &fault.code.clone(), &message);
        if let Some(after) = fault.retry_after {
            response
                .headers_mut()
                .insert("retry-after", after.to_string().parse().unwrap());
        }
        if let Some(after) = fault.retry_at {
            // Date is sent by every origin server with a clock (RFC 9110 section 6.6.1). This
            // server's clock is years off ours, as a skewed one may be: only the difference
            // between the two headers may count.
            let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
            let headers = response.headers_mut();
            headers.insert("date", httpdate::fmt_http_date(now).parse().unwrap());
            let at = now + std::time::Duration::from_secs(after);
            headers.insert("retry-after", httpdate::fmt_http_date(at).parse().unwrap());
        }
        return response;
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // Users are addressed `/users/{id|upn}/…` or, for a UPN starting with `$`, `/users('…')/…`.
    let user = match segments.as_slice() {
        ["users", key, rest @ ..] => Some((format!("users/{key}"), rest.to_vec())),
        [key, rest @ ..] if key.starts_with("users(") => Some(((*key).to_owned(), rest.to_vec())),
        _ => None,
    };
    if let Some((key, rest)) = user {
        return match (method.clone(), rest.as_slice()) {
            (Method::GET, []) => get_user(s, &key, query),
            (Method::POST, ["checkMemberGroups"]) => check_member_groups(s, &key, &body),
            (Method::POST, ["sendMail"]) => send_mail(s, &key, &body),
            _ => violation(s, format!("unexpected {method} {path}")),
        };
    }
    let pim = ["identityGovernance", "privilegedAccess", "group"];
    match (method.clone(), segments.as_slice()) {
        (Method::GET, ["groups"]) => search_groups(s, query),
        (Method::POST, ["groups"]) => create_group(s, query, &body),
        (Method::GET, ["groups", id]) => get_group(s, &decode(id), query),
        (Method::GET, ["servicePrincipals", id]) => get_service_principal(s, &decode(id), query),
        (Method::GET, ["groups", id, rel @ ("members" | "owners")]) => {
            list_relation(s, base, path, &decode(id), rel, query)
        }
        (Method::POST, ["groups", id, rel @ ("members" | "owners"), "$ref"]) => {
            add_ref(s, base, &decode(id), rel, query, &body)
        }
        (Method::DELETE, ["groups", id, rel @ ("members" | "owners"), oid, "$ref"]) => {
            remove_ref(s, &decode(id), rel, &decode(oid), query)
        }
        (Method::DELETE, ["groups", _, "members" | "owners", _]) => violation(
            s,
            format!("DELETE {path}: without /$ref this deletes the object, not the membership"),
        ),
        (Method::POST, [a, b, c, "assignmentScheduleRequests"]) if [*a, *b, *c] == pim => {
            schedule_request(s, query, &body)
        }
        (Method::GET, [a, b, c, "assignmentScheduleInstances"]) if [*a, *b, *c] == pim => {
            instances(s, base, path, query)
        }
        _ => violation(s, format!("unexpected {method} {path}")),
    }
}

/// Resolves `users/{id|upn}` or `users('{upn}')` to a user id; a `$` UPN in the plain form is
/// refused as Graph refuses it.
fn user_key(s: &mut State, key: &str) -> Result<Option<String>, Response> {
    let name = if let Some(rest) = key.strip_prefix("users(") {
        let inner = rest.strip_suffix(')').unwrap_or_default();
        match odata_literal(&decode(inner)) {
            Some(name) => name,
            None => return Err(violation(s, format!("bad key expression {key}"))),
        }
    } else if let Some(rest) = key.strip_prefix("users/") {
        let name = decode(rest);
        if name.starts_with('$') {
            return Err(violation(
                s,
                format!("{key}: a UPN starting with $ must be written users('…')"),
            ));
        }
        name
    } else {
        return Err(violation(s, format!("not a user path {key}")));
    };
    let found = if is_guid(&name) {
        s.users.contains_key(&name).then(|| name.clone())
    } else {
        s.users
            .iter()
            .find(|(_, upn)| upn.eq_ignore_ascii_case(&name))
            .map(|(id, _)| id.clone())
    };
    Ok(found)
}

fn not_found(id: &str) -> Response {
    graph_error(
        404,
        "Request_ResourceNotFound",
        &format!(
            "Resource '{id}' does not exist or one of its queried reference-property objects are not present."
        ),
    )
}

fn expect_query(
    s: &mut State,
    what: &str,
    query: &[(String, String)],
    allowed: &[(&str, Option<&str>)],
) -> Result<(), Response> {
    for (k, v) in query {
        match allowed.iter().find(|(name, _)| name == k) {
            Some((_, Some(expected))) if expected != v => {
                return Err(violation(
                    s,
                    format!("{what}: {k}={v}, expected {expected}"),
                ));
            }
            Some(_) => {}
            None => {
                return Err(violation(
                    s,
                    format!("{what}: unexpected query parameter {k}={v}"),
                ));
            }
        }
    }
    Ok(())
}

fn get_user(s: &mut State, key: &str, query: &[(String, String)]) -> Response {
    if let Err(r) = expect_query(
        s,
        "get user",
        query,
        &[("$select", Some("id,userPrincipalName"))],
    ) {
        return r;
    }
    match user_key(s, key) {
        Err(r) => r,
        Ok(None) => not_found(key),
        Ok(Some(id)) => json_response(
            200,
            json!({
                "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users(id,userPrincipalName)/$entity",
                "id": id,
                "userPrincipalName": s.users[&id],
            }),
        ),
    }
}

fn search_groups(s: &mut State, query: &[(String, String)]) -> Response {
    if let Err(r) = expect_query(
        s,
        "list groups",
        query,
        &[("$filter", None), ("$select", Some("id,displayName"))],
    ) {
        return r;
    }
    let filter = query
        .iter()
        .find(|(k, _)| k == "$filter")
        .map(|(_, v)| v.clone());
    let Some(name) = filter
        .as_deref()
        .and_then(|f| f.strip_prefix("displayName eq "))
        .and_then(odata_literal)
    else {
        return violation(
            s,
            format!("list groups: $filter {filter:?} is not displayName eq '…'"),
        );
    };
    let hide = s.hide_created > 0;
    if hide {
        s.hide_created -= 1;
    }
    let value: Vec<Value> = s
        .groups
        .iter()
        .filter(|(_, g)| g.display_name.eq_ignore_ascii_case(&name) && !(hide && g.created_here))
        .map(|(id, g)| json!({"id": id, "displayName": g.display_name}))
        .collect();
    json_response(
        200,
        json!({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#groups(id,displayName)", "value": value}),
    )
}

fn get_group(s: &mut State, id: &str, query: &[(String, String)]) -> Response {
    if let Err(r) = expect_query(
        s,
        "get group",
        query,
        &[("$select", Some("id,displayName"))],
    ) {
        return r;
    }
    match s.groups.get(id) {
        Some(g) => json_response(200, json!({"id": id, "displayName": g.display_name})),
        None => not_found(id),
    }
}

/// "Get servicePrincipal": `GET /servicePrincipals/{id}`, `$select` supported (Graph v1.0,
/// learn.microsoft.com/graph/api/serviceprincipal-get). Any other object's id (a user's, a
/// group's) is no service principal: 404 `Request_ResourceNotFound`, as for a missing one.
fn get_service_principal(s: &mut State, id: &str, query: &[(String, String)]) -> Response {
    if let Err(r) = expect_query(
        s,
        "get service principal",
        query,
        &[("$select", Some("id,displayName"))],
    ) {
        return r;
    }
    match s.service_principals.get(id) {
        Some(name) => json_response(200, json!({"id": id, "displayName": name})),
        None => not_found(id),
    }
}

fn create_group(s: &mut State, query: &[(String, String)], body: &Value) -> Response {
    if !query.is_empty() {
        return violation(s, "create group with a query".to_owned());
    }
    let Some(obj) = body.as_object() else {
        return violation(s, "create group: body is not an object".to_owned());
    };
    let allowed = [
        "displayName",
        "description",
        "mailEnabled",
        "mailNickname",
        "securityEnabled",
    ];
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return violation(s, format!("create group: unexpected property {k}"));
    }
    let nickname = body["mailNickname"].as_str().unwrap_or_default().to_owned();
    let nickname_ok = !nickname.is_empty()
        && nickname.len() <= 64
        && nickname
            .chars()
            .all(|c| c.is_ascii() && !"@()\\[]\";:<>, ".contains(c));
    if body["mailEnabled"] != false || body["securityEnabled"] != true || !nickname_ok {
        return violation(
            s,
            format!("create group: not a security group with a valid mailNickname: {body}"),
        );
    }
    let Some(name) = body["displayName"].as_str().filter(|n| !n.is_empty()) else {
        return violation(s, "create group: no displayName".to_owned());
    };
    let id = FakeGraph::new_id(s);
    s.groups.insert(
        id.clone(),
        Group {
            display_name: name.to_owned(),
            description: body["description"].as_str().map(str::to_owned),
            mail_nickname: nickname.clone(),
            members: BTreeMap::new(),
            owners: BTreeMap::new(),
            created_here: true,
        },
    );
    json_response(
        201,
        json!({
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#groups/$entity",
            "id": id, "displayName": name, "description": body["description"],
            "mailEnabled": false, "mailNickname": nickname, "securityEnabled": true,
            "groupTypes": [],
        }),
    )
}

fn object_json(s: &State, id: &str) -> Value {
    if let Some(upn) = s.users.get(id) {
        json!({"@odata.type": "#microsoft.graph.user", "id": id, "userPrincipalName": upn, "displayName": upn.split('@').next()})
    } else if let Some(g) = s.groups.get(id) {
        json!({"@odata.type": "#microsoft.graph.group", "id": id, "displayName": g.display_name})
    } else {
        json!({"@odata.type": "#microsoft.graph.servicePrincipal", "id": id, "displayName": "an app"})
    }
}

/// One page of a collection, with an absolute `@odata.nextLink` carrying `$skiptoken`.
fn page(
    s: &State,
    base: &str,
    path: &str,
    query: &[(String, String)],
    items: Vec<Value>,
) -> Response {
    let offset: usize = query
        .iter()
        .find(|(k, _)| k == "$skiptoken")
        .and_then(|(_, v)| v.strip_prefix("RFNwdAoAAQAAAA"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let size = s.page_size.max(1);
    let value: Vec<Value> = items.iter().skip(offset).take(size).cloned().collect();
    let mut body = json!({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#directoryObjects", "value": value});
    if offset + size < items.len() {
        let kept: Vec<String> = query
            .iter()
            .filter(|(k, _)| k != "$skiptoken")
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
                )
            })
            .collect();
        let mut next = format!("{base}/v1.0{path}?");
        next.push_str(&kept.join("&"));
        next.push_str(&format!("&$skiptoken=RFNwdAoAAQAAAA{}", offset + size));
        body["@odata.nextLink"] = json!(next);
    }
    json_response(200, body)
}

fn list_relation(
    s: &mut State,
    base: &str,
    path: &str,
    id: &str,
    rel: &str,
    query: &[(String, String)],
) -> Response {
    let allowed: &[(&str, Option<&str>)] = if rel == "members" {
        &[
            ("$select", Some("id,userPrincipalName,displayName")),
            ("$top", Some("999")),
            ("$skiptoken", None),
        ]
    } else {
        &[
            ("$select", Some("id,userPrincipalName,displayName")),
            ("$skiptoken", None),
        ]
    };
    if let Err(r) = expect_query(s, "list members", query, allowed) {
        return r;
    }
    let Some(group) = s.groups.get(id) else {
        return not_found(id);
    };
    let list = if rel == "members" {
        &group.members
    } else {
        &group.owners
    };
    let items: Vec<Value> = list.keys().map(|m| object_json(s, m)).collect();
    page(s, base, path, query, items)
}

fn add_ref(
    s: &mut State,
    base: &str,
    id: &str,
    rel: &str,
    query: &[(String, String)],
    body: &Value,
) -> Response {
    if !query.is_empty() {
        return violation(s, "add $ref with a query".to_owned());
    }
    let Some(obj) = body.as_object().filter(|o| o.len() == 1) else {
        return violation(
            s,
            format!("add $ref: body must be exactly {{\"@odata.id\": …}}: {body}"),
        );
    };
    let prefix = format!("{base}/v1.0/directoryObjects/");
    let Some(oid) = obj
        .get("@odata.id")
        .and_then(Value::as_str)
        .and_then(|v| v.strip_prefix(&prefix))
        .map(str::to_owned)
    else {
        return violation(
            s,
            format!("add $ref: @odata.id must be {prefix}{{id}}: {body}"),
        );
    };
    if !s.users.contains_key(&oid)
        && !s.groups.contains_key(&oid)
        && !s.service_principals.contains_key(&oid)
    {
        return not_found(&oid);
    }
    if rel == "owners" && s.groups.contains_key(&oid) {
        return owner_not_a_group();
    }
    let Some(group) = s.groups.get_mut(id) else {
        return not_found(id);
    };
    let list = if rel == "members" {
        &mut group.members
    } else {
        &mut group.owners
    };
    if list.contains_key(&oid) {
        return graph_error(
            400,
            "Request_BadRequest",
            &format!(
                "One or more added object references already exist for the following modified properties: '{rel}'."
            ),
        );
    }
    list.insert(oid, Membership::Direct);
    empty(204)
}

fn remove_ref(
    s: &mut State,
    id: &str,
    rel: &str,
    oid: &str,
    query: &[(String, String)],
) -> Response {
    if !query.is_empty() {
        return violation(s, "remove $ref with a query".to_owned());
    }
    let Some(group) = s.groups.get_mut(id) else {
        return not_found(id);
    };
    let list = if rel == "members" {
        &mut group.members
    } else {
        &mut group.owners
    };
    // "Once owners are assigned to a group, the last owner of the group can't be removed"
    // (Microsoft Entra docs, "Manage groups owners"); Graph answers it as in
    // microsoftgraph/microsoft-graph-docs-contrib#3741.
    if rel == "owners" && list.len() == 1 && list.contains_key(oid) {
        return graph_error(
            400,
            "Request_BadRequest",
            "The group must have at least one owner, hence this owner cannot be removed.",
        );
    }
    if list.remove(oid).is_none() {
        return not_found(oid);
    }
    empty(204)
}

fn check_member_groups(s: &mut State, key: &str, body: &Value) -> Response {
    let id = match user_key(s, key) {
        Err(r) => return r,
        Ok(None) => return not_found(key),
        Ok(Some(id)) => id,
    };
    let id = id.as_str();
    let Some(ids) = body["groupIds"]
        .as_array()
        .filter(|a| !a.is_empty() && a.len() <= 20)
    else {
        return violation(
            s,
            format!("checkMemberGroups: groupIds must list 1 to 20 ids: {body}"),
        );
    };
    if body.as_object().map(|o| o.len()) != Some(1) {
        return violation(s, format!("checkMemberGroups: unexpected body {body}"));
    }
    // Transitive: the groups holding `id`, then the groups holding those, and so on.
    let mut holding: BTreeSet<String> = BTreeSet::new();
    let mut frontier = vec![id.to_owned()];
    while let Some(next) = frontier.pop() {
        for (gid, g) in &s.groups {
            if g.members.contains_key(&next) && holding.insert(gid.clone()) {
                frontier.push(gid.clone());
            }
        }
    }
    let value: Vec<Value> = ids
        .iter()
        .filter(|g| g.as_str().is_some_and(|g| holding.contains(g)))
        .cloned()
        .collect();
    json_response(
        200,
        json!({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(Edm.String)", "value": value}),
    )
}

/// A schedule's time in the form Graph documents for its timestamps: "ISO 8601 format and is
/// always in UTC time. For example, midnight UTC on Jan 1, 2014 is 2014-01-01T00:00:00Z"
/// (requestSchedule and every Graph resource's DateTimeOffset properties). Stricter than Graph
/// may be: whole seconds and `Z` only, so that a fraction or an offset we send shows here.
fn documented_time(text: &str) -> Option<Timestamp> {
    let bytes = text.as_bytes();
    let shape = bytes.len() == 20
        && bytes.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            10 => *b == b'T',
            13 | 16 => *b == b':',
            19 => *b == b'Z',
            _ => b.is_ascii_digit(),
        });
    shape.then(|| text.parse().ok()).flatten()
}

/// The request's own idea of now: its `startDateTime` (the operator sends its clock's time).
fn request_now(body: &Value) -> Timestamp {
    body["scheduleInfo"]["startDateTime"]
        .as_str()
        .and_then(documented_time)
        .unwrap_or_default()
}

/// `ActiveDurationTooShort`, as Graph spells it (misspelling included) for a schedule shorter
/// than five minutes, or a removal inside them (PIM_MINIMUM).
fn too_short() -> Response {
    graph_error(
        400,
        "ActiveDurationTooShort",
        "The Active duration is too short. Miniumum Required is 5 minutes.",
    )
}

/// "Owners can be users or service principals" (Graph v1.0, "Add owners" of a group; the PIM
/// for Groups owner assignment likewise). Graph's code for a group here is not documented.
fn owner_not_a_group() -> Response {
    graph_error(
        400,
        "Request_BadRequest",
        "Owners of a group can only be users or service principals.",
    )
}

/// What the tenant's policy and PIM's five-minute floor refuse of a schedule from `start` to
/// `end`. A policy rule failure is `RoleAssignmentRequestPolicyValidationFailed` naming the
/// rules, e.g. "The following policy rules failed: [\"ExpirationRule\"]" (seen from Graph in
/// MicrosoftDocs/azure-docs#80426 and hashicorp/terraform-provider-azuread#1450).
fn policy_refusal(
    policy: AssignmentPolicy,
    start: Timestamp,
    end: Option<Timestamp>,
) -> Option<Response> {
    let too_long = match end {
        None => policy.expiration_required,
        Some(end) => policy
            .maximum_duration
            .is_some_and(|max| end.duration_since(start) > max),
    };
    if too_long {
        return Some(graph_error(
            400,
            "RoleAssignmentRequestPolicyValidationFailed",
            "The following policy rules failed: [\"ExpirationRule\"]",
        ));
    }
    if end.is_some_and(|end| end.duration_since(start) < PIM_MINIMUM) {
        return Some(too_short());
    }
    None
}

fn schedule_request(s: &mut State, query: &[(String, String)], body: &Value) -> Response {
    if !query.is_empty() {
        return violation(s, "schedule request with a query".to_owned());
    }
    let Some(obj) = body.as_object() else {
        return violation(s, "schedule request: body is not an object".to_owned());
    };
    let allowed = [
        "accessId",
        "principalId",
        "groupId",
        "action",
        "scheduleInfo",
        "justification",
        "ticketInfo",
        "customData",
    ];
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return violation(s, format!("schedule request: unexpected property {k}"));
    }
    let access = body["accessId"].as_str().unwrap_or_default().to_owned();
    let action = body["action"].as_str().unwrap_or_default().to_owned();
    let principal = body["principalId"].as_str().unwrap_or_default().to_owned();
    let group_id = body["groupId"].as_str().unwrap_or_default().to_owned();
    if !matches!(access.as_str(), "member" | "owner") {
        return violation(s, format!("schedule request: accessId {access:?}"));
    }
    if !matches!(
        action.as_str(),
        "adminAssign" | "adminUpdate" | "adminRemove" | "adminExtend"
    ) {
        return violation(s, format!("schedule request: action {action:?}"));
    }
    if body["justification"].as_str().is_none_or(str::is_empty) {
        return graph_error(400, "JustificationRule", "Justification is required.");
    }
    let (start, end) = if action == "adminRemove" {
        (None, None)
    } else {
        let info = &body["scheduleInfo"];
        let Some(start) = info["startDateTime"].as_str().and_then(documented_time) else {
            return violation(
                s,
                format!("schedule request: scheduleInfo.startDateTime in {info}"),
            );
        };
        let end = match info["expiration"]["type"].as_str() {
            Some("noExpiration") => None,
            Some("afterDateTime") => match info["expiration"]["endDateTime"]
                .as_str()
                .and_then(documented_time)
            {
                Some(end) if end > start => Some(end),
                _ => return violation(s, format!("schedule request: expiration {info}")),
            },
            _ => return violation(s, format!("schedule request: expiration type in {info}")),
        };
        if let Some(refused) = policy_refusal(s.policy, start, end) {
            return refused;
        }
        (Some(start), Some(end))
    };
    if !s.users.contains_key(&principal)
        && !s.groups.contains_key(&principal)
        && !s.service_principals.contains_key(&principal)
    {
        return graph_error(400, "InvalidPrincipal", "The principal does not exist.");
    }
    if access == "owner" && s.groups.contains_key(&principal) {
        return owner_not_a_group();
    }
    let now = s.clock.as_ref().map(|c| c.now());
    let Some(group) = s.groups.get_mut(&group_id) else {
        return graph_error(400, "InvalidResource", "The resource does not exist.");
    };
    let list = if access == "member" {
        &mut group.members
    } else {
        &mut group.owners
    };
    let exists = list.contains_key(&principal);
    match (action.as_str(), exists) {
        ("adminAssign", true) => {
            return graph_error(
                400,
                "RoleAssignmentExists",
                "The Role assignment already exists.",
            );
        }
        ("adminExtend" | "adminUpdate" | "adminRemove", false) => {
            return graph_error(
                400,
                "RoleAssignmentDoesNotExist",
                "The Role assignment does not exist.",
            );
        }
        // "adminExtend: for administrators to extend expiring assignments" (the action
        // property of privilegedAccessGroupAssignmentScheduleRequest); PIM offers an extension
        // only within 14 days of the end ("Extend or renew PIM for groups assignments"). Graph's
        // error code for it is not documented: this one says what was refused.
        ("adminExtend", true)
            if !matches!(list.get(&principal), Some(Membership::Pim { end: Some(held), .. })
                if *held <= request_now(body) + jiff::SignedDuration::from_hours(14 * 24)) =>
        {
            return graph_error(
                400,
                "BadRequest",
                "adminExtend is only for an assignment that expires within 14 days.",
            );
        }
        // "Can't be removed within five minutes of it being assigned" (module docs of
        // PIM_MINIMUM); Graph answers `ActiveDurationTooShort`, as for a deactivation of a
        // directory role inside five minutes.
        ("adminRemove", true)
            if matches!((list.get(&principal), now), (Some(Membership::Pim { start, .. }), Some(now))
                if now < *start + PIM_MINIMUM) =>
        {
            return too_short();
        }
        ("adminRemove", true) => {
            list.remove(&principal);
        }
        (_, _) => {
            // An update keeps the time the assignment was made.
            let start = match list.get(&principal) {
                Some(Membership::Pim { start, .. }) if action != "adminAssign" => *start,
                _ => start.unwrap_or_default(),
            };
            list.insert(
                principal.clone(),
                Membership::Pim {
                    start,
                    end: end.flatten(),
                },
            );
        }
    }
    let id = FakeGraph::new_id(s);
    let mut answer = body.clone();
    answer["@odata.context"] = json!(
        "https://graph.microsoft.com/v1.0/$metadata#identityGovernance/privilegedAccess/group/assignmentScheduleRequests/$entity"
    );
    answer["id"] = json!(id);
    answer["status"] = json!(if action == "adminRemove" {
        "Revoked"
    } else {
        "Provisioned"
    });
    answer["createdDateTime"] = json!("2026-03-02T09:00:01Z");
    answer["completedDateTime"] = json!("2026-03-02T09:00:02Z");
    answer["isValidationOnly"] = json!(false);
    answer["targetScheduleId"] = json!(format!("{group_id}_{access}_{id}"));
    s.schedule_requests.push(body.clone());
    json_response(201, answer)
}

fn instances(s: &mut State, base: &str, path: &str, query: &[(String, String)]) -> Response {
    if let Err(r) = expect_query(
        s,
        "assignment instances",
        query,
        &[("$filter", None), ("$skiptoken", None)],
    ) {
        return r;
    }
    let filter = query
        .iter()
        .find(|(k, _)| k == "$filter")
        .map(|(_, v)| v.clone());
    let Some(group_id) = filter
        .as_deref()
        .and_then(|f| f.strip_prefix("groupId eq "))
        .and_then(odata_literal)
    else {
        return violation(
            s,
            format!("assignment instances: $filter {filter:?} must be groupId eq '…'"),
        );
    };
    let Some(group) = s.groups.get(&group_id) else {
        return json_response(200, json!({"value": []}));
    };
    let mut items = Vec::new();
    for (access, list) in [("member", &group.members), ("owner", &group.owners)] {
        for (principal, how) in list {
            let (start, end) = match how {
                Membership::Direct => (json!("2026-03-02T09:00:00Z"), Value::Null),
                Membership::Pim { start, end } => (
                    json!(start.to_string()),
                    end.map_or(Value::Null, |e| json!(e.to_string())),
                ),
            };
            items.push(json!({
                "id": format!("{group_id}_{access}_{principal}"),
                "principalId": principal,
                "groupId": group_id,
                "accessId": access,
                "startDateTime": start,
                "endDateTime": end,
                "assignmentType": "Assigned",
                "memberType": "Direct",
                "assignmentScheduleId": format!("{group_id}_{access}_{principal}"),
            }));
        }
    }
    page(s, base, path, query, items)
}

fn send_mail(s: &mut State, user: &str, body: &Value) -> Response {
    let from = match user_key(s, user) {
        Err(r) => return r,
        Ok(None) => {
            return graph_error(
                404,
                "ErrorInvalidUser",
                &format!("The requested user '{user}' is invalid."),
            );
        }
        Ok(Some(id)) => id,
    };
    let message = &body["message"];
    let recipients_ok = message["toRecipients"].as_array().is_some_and(|r| {
        !r.is_empty()
            && r.iter().all(|x| {
                x.as_object().map(|o| o.len()) == Some(1)
                    && x["emailAddress"]["address"]
                        .as_str()
                        .is_some_and(|a| a.contains('@'))
            })
    });
    let body_ok = matches!(
        message["body"]["contentType"].as_str(),
        Some("HTML" | "Text")
    ) && message["body"]["content"].is_string();
    if !recipients_ok
        || !body_ok
        || !message["subject"].is_string()
        || !body["saveToSentItems"].is_boolean()
    {
        return violation(s, format!("sendMail: malformed message {body}"));
    }
    let mut sent = body.clone();
    sent["from"] = json!(s.users[&from]);
    s.mail.push(sent);
    empty(202)
}
