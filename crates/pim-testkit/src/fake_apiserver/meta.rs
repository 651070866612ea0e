//! Small helpers on object metadata and the values the server generates: uids, names for
//! `generateName`, timestamps in the Kubernetes `Time` format, base64 for Secret `stringData`.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value};

/// `metadata` of an object, if it is there.
pub(crate) fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

/// `metadata` of an object, created (or replaced, if it was not an object) when needed.
/// Returns `None` only if `obj` itself is not an object.
pub(crate) fn meta_mut(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    let map = obj.as_object_mut()?;
    let entry = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    entry.as_object_mut()
}

/// A string field of `metadata` (name, namespace, uid, resourceVersion, ...).
pub(crate) fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    meta(obj)
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

pub(crate) fn set_meta(obj: &mut Value, field: &str, value: Value) {
    if let Some(m) = meta_mut(obj) {
        m.insert(field.to_string(), value);
    }
}

pub(crate) fn remove_meta(obj: &mut Value, field: &str) {
    if let Some(m) = meta_mut(obj) {
        m.remove(field);
    }
}

/// `metadata.finalizers` as strings.
pub(crate) fn finalizers(obj: &Value) -> Vec<String> {
    meta(obj)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|f| {
            f.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// `metadata.labels` as a map (empty when absent).
pub(crate) fn labels(obj: &Value) -> Map<String, Value> {
    meta(obj)
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// A Kubernetes `Time`: RFC 3339, seconds precision, UTC.
pub(crate) fn format_time(ts: jiff::Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

thread_local! {
    /// Set by [`seed_ids`]: uids and name suffixes from a seeded sequence on this thread.
    static SEEDED: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// Makes the uids and `generateName` suffixes minted on this thread a function of `seed` (the
/// simulation runs the server and the operator on one thread, and replays a seed byte for byte);
/// `None` goes back to random ones.
pub fn seed_ids(seed: Option<u64>) {
    SEEDED.with(|s| s.set(seed));
}

/// splitmix64: a well-mixed sequence from a counter (Steele, Lea and Flood, 2014).
fn splitmix64(state: u64) -> u64 {
    let mut z = state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Process-wide randomness without a crate: std's randomly keyed hasher over a counter.
fn random_u64() -> u64 {
    if let Some(state) = SEEDED.with(|s| s.get()) {
        let next = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        SEEDED.with(|s| s.set(Some(next)));
        return splitmix64(next);
    }
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

/// A random (version 4) UUID, as the API server stamps into `metadata.uid`.
pub(crate) fn new_uid() -> String {
    let hi = random_u64();
    let lo = random_u64();
    let time_hi = ((hi & 0x0fff) as u16) | 0x4000;
    let clock = (((lo >> 48) as u16) & 0x3fff) | 0x8000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        (hi >> 32) as u32,
        ((hi >> 16) & 0xffff) as u16,
        time_hi,
        clock,
        lo & 0xffff_ffff_ffff
    )
}

/// The 5-character suffix the API server appends to `generateName`.
pub(crate) fn name_suffix() -> String {
    // The alphabet of k8s.io/apimachinery/pkg/util/rand: no vowels, no confusable characters.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut n = random_u64();
    let mut out = String::with_capacity(5);
    for _ in 0..5 {
        let i = (n % ALPHABET.len() as u64) as usize;
        out.push(char::from(ALPHABET.get(i).copied().unwrap_or(b'x')));
        n /= ALPHABET.len() as u64;
    }
    out
}

/// An RFC 1123 subdomain (object names of most types): the error message when it is not one.
pub(crate) fn check_dns_subdomain(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case \
             alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        ))
    }
}

/// Every label value of `obj` is one the API server accepts (k8s.io/apimachinery
/// pkg/util/validation `IsValidLabelValue`: at most 63 characters, empty or alphanumeric at both
/// ends with `-`, `_` and `.` between); the error names the first that is not. Keys are not
/// checked here.
pub(crate) fn check_label_values(obj: &Value) -> Result<(), (String, String)> {
    let Some(labels) = obj.pointer("/metadata/labels").and_then(Value::as_object) else {
        return Ok(());
    };
    for (key, value) in labels {
        let value = value.as_str().unwrap_or_default();
        let bytes = value.as_bytes();
        let edge = |b: Option<&u8>| b.is_none_or(|b| b.is_ascii_alphanumeric());
        let ok = value.len() <= 63
            && edge(bytes.first())
            && edge(bytes.last())
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !ok {
            let why = if value.len() > 63 {
                "must be no more than 63 characters".to_owned()
            } else {
                "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character".to_owned()
            };
            return Err((
                format!("metadata.labels[{key}]"),
                format!("Invalid value: \"{value}\": {why}"),
            ));
        }
    }
    Ok(())
}

/// Standard base64 with padding (Secret `data`).
pub(crate) fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let sym = |i: u32| char::from(TABLE[(i & 63) as usize]);
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(sym(n >> 18));
        out.push(sym(n >> 12));
        out.push(if chunk.len() > 1 { sym(n >> 6) } else { '=' });
        out.push(if chunk.len() > 2 { sym(n) } else { '=' });
    }
    out
}

/// Hex encoding, to make continue tokens opaque.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

#[cfg(test)]
mod tests {

    #[test]
    fn label_values_follow_apimachinery() {
        let obj = |v: &str| serde_json::json!({"metadata": {"labels": {"k": v}}});
        for ok in ["", "a", "a-b_c.d", &"x".repeat(63)] {
            assert!(check_label_values(&obj(ok)).is_ok(), "{ok}");
        }
        for bad in ["-a", "a-", "a b", "a/b", &"x".repeat(64)] {
            let (field, _) = check_label_values(&obj(bad)).unwrap_err();
            assert_eq!(field, "metadata.labels[k]");
        }
    }

    use super::*;

    #[test]
    fn uid_looks_like_a_v4_uuid() {
        let uid = new_uid();
        let parts: Vec<&str> = uid.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'));
        assert_ne!(uid, new_uid());
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn names_are_checked() {
        assert!(check_dns_subdomain("a-b.c").is_ok());
        assert!(check_dns_subdomain("A").is_err());
        assert!(check_dns_subdomain("-a").is_err());
        assert!(check_dns_subdomain("").is_err());
        assert_eq!(unhex(&hex(b"1/ns/x")).as_deref(), Some(&b"1/ns/x"[..]));
    }
}
