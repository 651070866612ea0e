//! The signature of generic webhooks and of the audit HTTP sink: HMAC-SHA256 over
//! `"<timestamp>.<body>"`, sent as
//!
//! ```text
//! X-PIM-Timestamp: 1772442000
//! X-PIM-Signature: sha256=<64 lowercase hex digits>
//! ```
//!
//! A receiver recomputes the HMAC with the shared key, compares in constant time, and rejects
//! timestamps too far from its own clock (replays).

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const TIMESTAMP_HEADER: &str = "X-PIM-Timestamp";
pub const SIGNATURE_HEADER: &str = "X-PIM-Signature";
/// A stable id per notification, the same on every retry, for receivers to drop duplicates.
pub const DELIVERY_HEADER: &str = "X-PIM-Delivery";
pub const EVENT_HEADER: &str = "X-PIM-Event";

type HmacSha256 = Hmac<Sha256>;

/// HMAC takes keys of any length, so this is always `Some`.
fn mac(key: &[u8], timestamp: i64, body: &[u8]) -> Option<HmacSha256> {
    let mut mac = HmacSha256::new_from_slice(key).ok()?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac)
}

/// The `X-PIM-Signature` value for `body` sent at `timestamp` (Unix seconds).
pub fn sign(key: &[u8], timestamp: i64, body: &[u8]) -> String {
    mac(key, timestamp, body)
        .map(|m| format!("sha256={}", hex(&m.finalize().into_bytes())))
        .unwrap_or_default()
}

/// Checks a signature in constant time.
pub fn verify(key: &[u8], timestamp: i64, body: &[u8], signature: &str) -> bool {
    let Some(hex_digest) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let Some(expected) = unhex(hex_digest) else {
        return false;
    };
    mac(key, timestamp, body).is_some_and(|m| m.verify_slice(&expected).is_ok())
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A stable id for one notification: the same for every attempt and every replica. A reminder
/// about an end (`ends`) has an id per end, so a receiver that drops repeats keeps the reminder
/// about a renewed assignment's new end.
pub fn delivery_id(
    uid: &str,
    event: &str,
    channel: &str,
    recipient: &str,
    ends: Option<jiff::Timestamp>,
) -> String {
    use sha2::Digest;
    let mut hasher = Sha256::new();
    for part in [uid, event, channel, recipient] {
        hasher.update(part.as_bytes());
        hasher.update([0u8]);
    }
    // Nothing added without an end, so the ids of the other events stay as they were.
    if let Some(ends) = ends {
        hasher.update(ends.as_second().to_string().as_bytes());
        hasher.update([0u8]);
    }
    hex(&hasher.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_rfc_4231_construction() {
        // HMAC-SHA256("key", "1.{}") computed independently.
        let sig = sign(b"key", 1, b"{}");
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64, "{sig}");
        assert!(verify(b"key", 1, b"{}", &sig));
        assert!(!verify(b"other", 1, b"{}", &sig));
        assert!(!verify(b"key", 2, b"{}", &sig));
        assert!(!verify(b"key", 1, b"{ }", &sig));
        assert!(!verify(b"key", 1, b"{}", "sha256=zz"));
        assert!(!verify(b"key", 1, b"{}", &sig.replace("sha256=", "sha1=")));
    }

    #[test]
    fn known_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let mut mac = HmacSha256::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn delivery_ids_are_stable_and_distinct() {
        let a = delivery_id("u", "activated", "mail", "bob@contoso.com", None);
        assert_eq!(
            a,
            delivery_id("u", "activated", "mail", "bob@contoso.com", None)
        );
        assert_ne!(
            a,
            delivery_id("u", "activated", "mail", "carol@contoso.com", None)
        );
        assert_ne!(
            delivery_id("u", "ab", "c", "d", None),
            delivery_id("u", "a", "bc", "d", None)
        );
        assert_eq!(a.len(), 32);
        // A reminder has an id per end it is about.
        let end = |s: &str| Some(s.parse::<jiff::Timestamp>().unwrap());
        let first = delivery_id(
            "u",
            "eligibilityEnding",
            "mail",
            "bob",
            end("2027-01-01T00:00:00Z"),
        );
        assert_eq!(
            first,
            delivery_id(
                "u",
                "eligibilityEnding",
                "mail",
                "bob",
                end("2027-01-01T00:00:00Z")
            )
        );
        assert_ne!(
            first,
            delivery_id(
                "u",
                "eligibilityEnding",
                "mail",
                "bob",
                end("2027-07-01T00:00:00Z")
            )
        );
        assert_ne!(
            first,
            delivery_id("u", "eligibilityEnding", "mail", "bob", None)
        );
    }
}
