//! A TCP proxy on 127.0.0.1 between the `ldap` backend and a real slapd, for what slapd cannot
//! play by itself (docs/directories.md, "LDAP and Active Directory"). It reads whole LDAP
//! messages (BER, RFC 4511 §4.1.1) both ways and can:
//!
//! - **answer modifies as Active Directory does** ([`Proxy::answer_as_active_directory`]):
//!   where slapd answers `attributeOrValueExists` (20) or `noSuchAttribute` (16) to a modify
//!   (which it does only without the permissive-modify control), the client gets AD's answer
//!   from the backend's rule table instead, `pim_operator::directory::ldap::rules`
//!   (`AD_ALREADY_A_MEMBER`: 68 with 00000562, `AD_NOT_A_MEMBER`: 53 with 00000561);
//! - **hide the permissive-modify control** from the rootDSE's `supportedControl`
//!   ([`Proxy::hide_permissive_modify`]), as a server without it;
//! - **serve `member` in ranges** ([`Proxy::serve_member_in_ranges`]), as AD does for an
//!   attribute with more values than its MaxValRange policy (default 1500): a search asking for
//!   `member` or `member;range=L-*` gets at most that many values from L on, under the
//!   description `member;range=L-H`, or `member;range=L-*` for the last chunk (MS-ADTS
//!   3.1.1.3.1.3.3, "Range Retrieval of Attribute Values"; MaxValRange in 3.1.1.3.4.6);
//! - **record each modify**: whether it carried the control, and slapd's own result code;
//! - **delay each request** ([`Proxy::delay_requests`]), so a paged search's pages take a known
//!   least time each;
//! - **go silent on the connections open now** ([`Proxy::drop_idle_flows`]), as a firewall or
//!   load balancer that forgot an idle flow: requests on them are never delivered and no reset
//!   is sent, while new connections work.

// Test support: a failure here is a failing test, said as plainly as it can be.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pim_operator::directory::ldap::rules::{self, PERMISSIVE_MODIFY_OID};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// One modify request seen, and what slapd answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Modify {
    pub permissive: bool,
    pub slapd_answer: Option<u32>,
}

#[derive(Default)]
struct State {
    active_directory: AtomicBool,
    hide_permissive: AtomicBool,
    delay_ms: AtomicU64,
    /// MaxValRange for `member`; 0: off.
    max_val_range: AtomicU64,
    /// The ranged descriptions served, in order.
    ranges_served: Mutex<Vec<String>>,
    /// Connections numbered below this are silent.
    silent_below: AtomicU64,
    next_connection: AtomicU64,
    modifies: Mutex<Vec<Modify>>,
    tasks: Mutex<Vec<AbortHandle>>,
}

pub struct Proxy {
    port: u16,
    state: Arc<State>,
}

impl Proxy {
    /// Listens on 127.0.0.1 and forwards to slapd on `upstream_port`.
    pub async fn start(upstream_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State::default());
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let id = shared.next_connection.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                let pending = Arc::new(Mutex::new(Pending::default()));
                let up = tokio::spawn(pump(
                    shared.clone(),
                    id,
                    Direction::Request,
                    pending.clone(),
                    client_read,
                    server_write,
                ));
                let down = tokio::spawn(pump(
                    shared.clone(),
                    id,
                    Direction::Response,
                    pending,
                    server_read,
                    client_write,
                ));
                let mut tasks = shared.tasks.lock().unwrap();
                tasks.push(up.abort_handle());
                tasks.push(down.abort_handle());
            }
        });
        state.tasks.lock().unwrap().push(accept.abort_handle());
        Proxy { port, state }
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    pub fn answer_as_active_directory(&self) {
        self.state.active_directory.store(true, Ordering::SeqCst);
    }

    pub fn hide_permissive_modify(&self) {
        self.state.hide_permissive.store(true, Ordering::SeqCst);
    }

    pub fn serve_member_in_ranges(&self, max_val_range: u64) {
        self.state
            .max_val_range
            .store(max_val_range, Ordering::SeqCst);
    }

    /// The `member;range=…` descriptions served so far.
    pub fn ranges_served(&self) -> Vec<String> {
        self.state.ranges_served.lock().unwrap().clone()
    }

    pub fn delay_requests(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap();
        self.state.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Every connection open now stops carrying data, silently; new ones work.
    pub fn drop_idle_flows(&self) {
        let next = self.state.next_connection.load(Ordering::SeqCst);
        self.state.silent_below.store(next, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.state.next_connection.load(Ordering::SeqCst)
    }

    pub fn modifies(&self) -> Vec<Modify> {
        self.state.modifies.lock().unwrap().clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for task in self.state.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

/// Per connection, by message id: the modify each answer belongs to, and the range start a
/// search for `member` asked for.
#[derive(Default)]
struct Pending {
    modifies: HashMap<Vec<u8>, usize>,
    ranges: HashMap<Vec<u8>, usize>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Request,
    Response,
}

/// The lengths of the BER element at the start of `buf` (header, whole), once all of it is in.
fn element(buf: &[u8]) -> Option<(usize, usize)> {
    let first = *buf.get(1)?;
    let (header, length) = if first < 0x80 {
        (2, usize::from(first))
    } else {
        let n = usize::from(first & 0x7f);
        let bytes = buf.get(2..2 + n)?;
        (
            2 + n,
            bytes.iter().fold(0usize, |a, b| a << 8 | usize::from(*b)),
        )
    };
    (buf.len() >= header + length).then_some((header, header + length))
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(u8::try_from(len).unwrap());
    } else {
        let bytes = u32::try_from(len).unwrap().to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | u8::try_from(4 - skip).unwrap());
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The message id's encoding and the protocol op's tag, content and the controls after it.
struct Message<'a> {
    id: &'a [u8],
    tag: u8,
    op: &'a [u8],
    rest: &'a [u8],
}

fn parse(message: &[u8]) -> Option<Message<'_>> {
    let (header, _) = element(message)?;
    let body = &message[header..];
    let (_, id_end) = element(body)?;
    let op = &body[id_end..];
    let (op_header, op_end) = element(op)?;
    Some(Message {
        id: &body[..id_end],
        tag: *op.first()?,
        op: &op[op_header..op_end],
        rest: &op[op_end..],
    })
}

/// What one whole message becomes on its way.
fn transform(
    state: &State,
    direction: Direction,
    pending: &Mutex<Pending>,
    message: Vec<u8>,
) -> Vec<u8> {
    let Some(parsed) = parse(&message) else {
        return message;
    };
    match (direction, parsed.tag) {
        // ModifyRequest (RFC 4511 §4.6): controls follow the op.
        (Direction::Request, 0x66) => {
            let permissive = contains(parsed.rest, PERMISSIVE_MODIFY_OID.as_bytes());
            let mut modifies = state.modifies.lock().unwrap();
            modifies.push(Modify {
                permissive,
                slapd_answer: None,
            });
            pending
                .lock()
                .unwrap()
                .modifies
                .insert(parsed.id.to_vec(), modifies.len() - 1);
            message
        }
        // ModifyResponse: LDAPResult, resultCode an ENUMERATED first.
        (Direction::Response, 0x67) => {
            let code = element(parsed.op).and_then(|(h, end)| parsed.op.get(h..end));
            let code = code.and_then(|c| c.last()).map(|c| u32::from(*c));
            if let Some(index) = pending.lock().unwrap().modifies.remove(parsed.id)
                && let Some(m) = state.modifies.lock().unwrap().get_mut(index)
            {
                m.slapd_answer = code;
            }
            let as_ad = match code {
                Some(20) => Some(rules::AD_ALREADY_A_MEMBER),
                Some(16) => Some(rules::AD_NOT_A_MEMBER),
                _ => None,
            };
            match as_ad {
                Some(rule) if state.active_directory.load(Ordering::SeqCst) => {
                    let mut result = tlv(0x0a, &[u8::try_from(rule.code).unwrap()]);
                    result.extend(tlv(0x04, b""));
                    result.extend(tlv(0x04, rule.diagnostic.as_bytes()));
                    let mut body = parsed.id.to_vec();
                    body.extend(tlv(0x67, &result));
                    tlv(0x30, &body)
                }
                _ => message,
            }
        }
        // SearchRequest (RFC 4511 §4.5.1) asking for `member`, or a range of it.
        (Direction::Request, 0x63) if state.max_val_range.load(Ordering::SeqCst) > 0 => {
            match ranged_request(&parsed) {
                Some((start, rebuilt)) => {
                    pending
                        .lock()
                        .unwrap()
                        .ranges
                        .insert(parsed.id.to_vec(), start);
                    rebuilt
                }
                None => message,
            }
        }
        (Direction::Response, 0x64) if pending.lock().unwrap().ranges.contains_key(parsed.id) => {
            let start = pending.lock().unwrap().ranges[parsed.id];
            let max = usize::try_from(state.max_val_range.load(Ordering::SeqCst)).unwrap();
            ranged_entry(state, &parsed, start, max).unwrap_or(message)
        }
        (Direction::Response, 0x65) => {
            pending.lock().unwrap().ranges.remove(parsed.id);
            message
        }
        // SearchResultEntry: the rootDSE's supportedControl, hidden by a same-length OID.
        (Direction::Response, 0x64) if state.hide_permissive.load(Ordering::SeqCst) => {
            let oid = PERMISSIVE_MODIFY_OID.as_bytes();
            let other = b"1.2.840.113556.1.4.0000";
            let mut out = message.clone();
            let mut i = 0;
            while i + oid.len() <= out.len() {
                if &out[i..i + oid.len()] == oid {
                    out[i..i + oid.len()].copy_from_slice(other);
                    i += oid.len();
                } else {
                    i += 1;
                }
            }
            out
        }
        _ => message,
    }
}

/// The BER elements one after another in `buf`.
fn elements(mut buf: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some((_, end)) = element(buf) {
        out.push(&buf[..end]);
        buf = &buf[end..];
    }
    out
}

/// The content of one element.
fn content(elem: &[u8]) -> &[u8] {
    element(elem)
        .map(|(h, end)| &elem[h..end])
        .unwrap_or_default()
}

/// A message with `tag` and `op` as its protocol op, keeping the id and controls.
fn rebuild(parsed: &Message<'_>, tag: u8, op: &[u8]) -> Vec<u8> {
    let mut body = parsed.id.to_vec();
    body.extend(tlv(tag, op));
    body.extend_from_slice(parsed.rest);
    tlv(0x30, &body)
}

/// A search asking for `member` or `member;range=L-*`: the range start, and the request
/// asking slapd for plain `member`.
fn ranged_request(parsed: &Message<'_>) -> Option<(usize, Vec<u8>)> {
    let fields = elements(parsed.op);
    let (attributes, head) = fields.split_last()?;
    let mut start = None;
    let mut wanted = Vec::new();
    for attribute in elements(content(attributes)) {
        let name = String::from_utf8_lossy(content(attribute)).to_lowercase();
        if name == "member" {
            start = Some(0);
        } else if let Some(range) = name.strip_prefix("member;range=") {
            start = range.split('-').next().and_then(|l| l.parse().ok());
        } else {
            wanted.push(attribute.to_vec());
            continue;
        }
        wanted.push(tlv(0x04, b"member"));
    }
    let start = start?;
    let mut op: Vec<u8> = head.concat();
    op.extend(tlv(0x30, &wanted.concat()));
    Some((start, rebuild(parsed, 0x63, &op)))
}

/// An entry's `member` values cut to the range asked for, under AD's ranged description.
fn ranged_entry(state: &State, parsed: &Message<'_>, start: usize, max: usize) -> Option<Vec<u8>> {
    let [name, attributes] = elements(parsed.op)[..] else {
        return None;
    };
    let mut out = Vec::new();
    for attribute in elements(content(attributes)) {
        let [kind, values] = elements(content(attribute))[..] else {
            return None;
        };
        if !content(kind).eq_ignore_ascii_case(b"member") {
            out.extend_from_slice(attribute);
            continue;
        }
        let all = elements(content(values));
        let end = all.len().min(start + max);
        let description = if end == all.len() {
            format!("member;range={start}-*")
        } else {
            format!("member;range={start}-{}", end - 1)
        };
        let chunk = all.get(start..end).unwrap_or_default().concat();
        state
            .ranges_served
            .lock()
            .unwrap()
            .push(description.clone());
        let mut partial = tlv(0x04, description.as_bytes());
        partial.extend(tlv(0x31, &chunk));
        out.extend(tlv(0x30, &partial));
    }
    let mut op = name.to_vec();
    op.extend(tlv(0x30, &out));
    Some(rebuild(parsed, 0x64, &op))
}

async fn pump(
    state: Arc<State>,
    id: u64,
    direction: Direction,
    pending: Arc<Mutex<Pending>>,
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let Ok(n) = from.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        if id < state.silent_below.load(Ordering::SeqCst) {
            // A forgotten flow: hold the socket open and deliver nothing, ever.
            std::future::pending::<()>().await;
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some((_, end)) = element(&buf) {
            let message: Vec<u8> = buf.drain(..end).collect();
            let delay = state.delay_ms.load(Ordering::SeqCst);
            if direction == Direction::Request && delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            let out = transform(&state, direction, &pending, message);
            if to.write_all(&out).await.is_err() {
                return;
            }
        }
    }
}
