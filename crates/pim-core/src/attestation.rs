//! The admission webhook's signatures over what it verified, and their checks (DESIGN §7).
//!
//! The webhook signs the requester identity (with the MFA evidence) and each approval entry with
//! an HMAC-SHA256 key only the operator holds. The controller grants only on entries whose
//! signature checks out, so an object written around the webhook grants nothing.
//!
//! A signature is `v1:<key id>:<base64url HMAC>`. The key id (the first 8 hex digits of the key's
//! SHA-256) lets a rotated key keep verifying while a new one signs.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::api::access_review::ReviewDecision;
use crate::api::activation_request::{
    ActivationRequestSpec, Approval, Authentication, Decision, Requester, Ticket,
};
use crate::api::common::Role;

type HmacSha256 = Hmac<Sha256>;

/// Shorter keys are refused: 32 bytes is HMAC-SHA256's block-strength floor.
pub const MIN_KEY_BYTES: usize = 32;
const VERSION: &str = "v1";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("attestation key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "attestation key file {path}: the key is {len} bytes; at least {MIN_KEY_BYTES} are required (for example `head -c 48 /dev/urandom | base64`)"
    )]
    TooShort { path: PathBuf, len: usize },
    #[error("attestation Secret {namespace}/{name}: {message}")]
    Secret {
        namespace: String,
        name: String,
        message: String,
    },
}

/// One HMAC key, ready to use, and its id.
#[derive(Clone)]
struct Key {
    id: String,
    mac: HmacSha256,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Key {
    /// Checks the length and prepares the MAC. Surrounding whitespace is trimmed, as Secrets
    /// often carry a trailing newline.
    fn parse(bytes: &[u8], source: &Path) -> Result<Self, KeyError> {
        let secret = bytes.trim_ascii();
        if secret.len() < MIN_KEY_BYTES {
            return Err(KeyError::TooShort {
                path: source.to_owned(),
                len: secret.len(),
            });
        }
        let mac = HmacSha256::new_from_slice(secret).map_err(|_| KeyError::TooShort {
            path: source.to_owned(),
            len: secret.len(),
        })?;
        let digest = Sha256::digest(secret);
        let id = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        Ok(Key { id, mac })
    }

    fn mac(&self, payload: &[u8]) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(payload);
        mac
    }
}

/// The signing key and the keys still accepted for verification.
#[derive(Debug, Clone)]
pub struct Keyring {
    signing: Key,
    previous: Vec<Key>,
}

impl Keyring {
    /// A keyring from raw key bytes.
    pub fn from_bytes(signing: &[u8], previous: &[&[u8]]) -> Result<Self, KeyError> {
        Ok(Keyring {
            signing: Key::parse(signing, Path::new("<signing key>"))?,
            previous: previous
                .iter()
                .map(|k| Key::parse(k, Path::new("<previous key>")))
                .collect::<Result<_, _>>()?,
        })
    }

    /// A keyring from keys read elsewhere (files, a Secret); `source` names each in errors.
    pub fn from_sources(
        signing: (&[u8], &Path),
        previous: &[(&[u8], &Path)],
    ) -> Result<Self, KeyError> {
        Ok(Keyring {
            signing: Key::parse(signing.0, signing.1)?,
            previous: previous
                .iter()
                .map(|(bytes, source)| Key::parse(bytes, source))
                .collect::<Result<_, _>>()?,
        })
    }

    /// The id of the key that signs.
    pub fn signing_key_id(&self) -> &str {
        &self.signing.id
    }

    fn sign(&self, payload: &[u8]) -> String {
        let tag = self.signing.mac(payload).finalize().into_bytes();
        format!(
            "{VERSION}:{}:{}",
            self.signing.id,
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    fn verify(&self, payload: &[u8], signature: &str) -> bool {
        let mut parts = signature.splitn(3, ':');
        let (Some(VERSION), Some(id), Some(tag)) = (parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let Ok(tag) = URL_SAFE_NO_PAD.decode(tag) else {
            return false;
        };
        std::iter::once(&self.signing)
            .chain(&self.previous)
            .filter(|k| k.id == id)
            // `verify_slice` compares in constant time.
            .any(|k| k.mac(payload).verify_slice(&tag).is_ok())
    }

    /// Signs the requester block over the spec the webhook admitted and the object's name, so
    /// that the block copied onto another object does not verify. The webhook names objects
    /// created with `generateName` itself, since the API server picks the name only after
    /// mutating admission. `spec.requester.attestation` is left out of what is signed.
    pub fn sign_requester(&self, name: &str, spec: &ActivationRequestSpec) -> Option<String> {
        Some(self.sign(&requester_payload(Some(name), spec, Some(spec.role()))?))
    }

    /// Whether the requester block carries this keyring's signature over the request as it is,
    /// under this name.
    pub fn verify_requester(&self, name: &str, spec: &ActivationRequestSpec) -> bool {
        self.verify_requester_as(Some(name), spec)
    }

    /// Whether the requester block carries a signature of the first form, which did not cover
    /// the name. Accepting it stays safe: the stamp must lie within
    /// the engine's `MAX_STAMP_SKEW` (5 minutes) of the object's
    /// creationTimestamp, and no webhook makes such stamps any more, so none can be replayed
    /// onto an object created after the upgrade.
    pub fn verify_unnamed_requester(&self, spec: &ActivationRequestSpec) -> bool {
        self.verify_requester_as(None, spec)
    }

    fn verify_requester_as(&self, name: Option<&str>, spec: &ActivationRequestSpec) -> bool {
        let Some(signature) = spec
            .requester
            .as_ref()
            .and_then(|r| r.attestation.as_deref())
        else {
            return false;
        };
        // The role as meant (an omitted role is `member`, the schema's default), then as
        // written before that default existed: a request signed then, without a role, reads
        // back with `member` filled in and still verifies.
        let role = spec.role();
        let legacy = (role == Role::Member).then_some(None);
        std::iter::once(Some(role)).chain(legacy).any(|encoded| {
            requester_payload(name, spec, encoded)
                .is_some_and(|payload| self.verify(&payload, signature))
        })
    }

    /// Signs one approval entry of the request with uid `request_uid`.
    pub fn sign_approval(&self, request_uid: &str, approval: &Approval) -> String {
        self.sign(&approval_payload(request_uid, approval))
    }

    /// Signs one decision of the access review with uid `review_uid`.
    pub fn sign_review_decision(&self, review_uid: &str, decision: &ReviewDecision) -> String {
        self.sign(&review_decision_payload(review_uid, decision))
    }

    /// Whether a review decision carries this keyring's signature for this review.
    pub fn verify_review_decision(&self, review_uid: &str, decision: &ReviewDecision) -> bool {
        decision.attestation.as_deref().is_some_and(|signature| {
            self.verify(&review_decision_payload(review_uid, decision), signature)
        })
    }

    /// Whether an approval entry carries this keyring's signature for this request.
    pub fn verify_approval(&self, request_uid: &str, approval: &Approval) -> bool {
        approval.attestation.as_deref().is_some_and(|signature| {
            self.verify(&approval_payload(request_uid, approval), signature)
        })
    }
}

/// What a review decision signature covers: the review's uid (so an entry cannot be replayed
/// onto another review, even one re-created under the same name) and the whole entry.
#[derive(Serialize)]
struct ReviewDecisionPayload<'a> {
    v: &'static str,
    review_uid: &'a str,
    entry: &'a ReviewDecision,
}

fn review_decision_payload(review_uid: &str, decision: &ReviewDecision) -> Vec<u8> {
    let entry = ReviewDecision {
        attestation: None,
        ..decision.clone()
    };
    let payload = ReviewDecisionPayload {
        v: "pim.dev/review-decision/v1",
        review_uid,
        entry: &entry,
    };
    // As for approvals: an empty payload only makes the signature fail to verify.
    serde_json::to_vec(&payload).unwrap_or_default()
}

/// What a requester signature covers: the object's name, the whole spec as created (which CEL
/// keeps immutable) and the stamped identity, with its time (checked against creationTimestamp,
/// against replays). Approvals and `deactivate` change later and are not part of it. The first
/// form (`v1`) had no name.
#[derive(Serialize)]
struct RequesterPayload<'a> {
    v: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    group: &'a str,
    role: Option<Role>,
    duration: Option<&'a str>,
    justification: Option<&'a str>,
    ticket: Option<&'a Ticket>,
    start_time: Option<&'a Time>,
    /// Left out when absent, so that requests signed before it existed still verify.
    #[serde(skip_serializing_if = "Option::is_none")]
    extends: Option<&'a str>,
    principal: Option<&'a str>,
    username: &'a str,
    uid: Option<&'a str>,
    groups: &'a [String],
    mfa: Option<&'a str>,
    /// Left out when empty, so that blocks signed before it existed still verify.
    #[serde(skip_serializing_if = "Authentication::is_empty")]
    authentication: &'a Authentication,
    stamped_at: Option<&'a Time>,
}

/// The payload with `role` encoded as given (see `verify_requester`).
fn requester_payload(
    name: Option<&str>,
    spec: &ActivationRequestSpec,
    role: Option<Role>,
) -> Option<Vec<u8>> {
    let Requester {
        username,
        uid,
        groups,
        mfa,
        authentication,
        stamped_at,
        attestation: _,
    } = spec.requester.as_ref()?;
    serde_json::to_vec(&RequesterPayload {
        v: if name.is_some() {
            "pim.dev/requester/v2"
        } else {
            "pim.dev/requester/v1"
        },
        name,
        group: &spec.group,
        role,
        duration: spec.duration.as_deref(),
        justification: spec.justification.as_deref(),
        ticket: spec.ticket.as_ref(),
        start_time: spec.start_time.as_ref(),
        extends: spec.extends.as_deref(),
        principal: spec.principal.as_deref(),
        username,
        uid: uid.as_deref(),
        groups,
        mfa: mfa.as_deref(),
        authentication,
        stamped_at: stamped_at.as_ref(),
    })
    .ok()
}

/// What an approval signature covers: the request's uid (so an entry cannot be replayed onto
/// another request, even one re-created under the same name) and the whole entry.
#[derive(Serialize)]
struct ApprovalPayload<'a> {
    v: &'static str,
    request_uid: &'a str,
    approver: &'a str,
    decision: Decision,
    reason: Option<&'a str>,
    time: Option<&'a Time>,
    groups: &'a [String],
    /// Left out when absent, so that entries signed before it existed still verify.
    #[serde(skip_serializing_if = "Option::is_none")]
    mfa: Option<&'a str>,
    #[serde(skip_serializing_if = "Authentication::is_empty")]
    authentication: &'a Authentication,
}

fn approval_payload(request_uid: &str, approval: &Approval) -> Vec<u8> {
    let payload = ApprovalPayload {
        v: "pim.dev/approval/v1",
        request_uid,
        approver: &approval.approver,
        decision: approval.decision,
        reason: approval.reason.as_deref(),
        time: approval.time.as_ref(),
        groups: &approval.groups,
        mfa: approval.mfa.as_deref(),
        authentication: &approval.authentication,
    };
    // Serialising plain strings, enums and timestamps cannot fail; an empty payload would only
    // make every signature fail to verify.
    serde_json::to_vec(&payload).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &str = "g-x7k2p";

    fn ring() -> Keyring {
        Keyring::from_bytes(&[7u8; 32], &[]).unwrap()
    }

    fn spec() -> ActivationRequestSpec {
        ActivationRequestSpec {
            group: "g".into(),
            duration: Some("1h".into()),
            justification: Some("incident 42".into()),
            principal: Some("alice".into()),
            requester: Some(Requester {
                username: "oidc:alice".into(),
                uid: Some("u-1".into()),
                groups: vec!["devs".into()],
                mfa: Some("amr=mfa".into()),
                authentication: Default::default(),
                stamped_at: Some(Time("2026-01-01T10:00:00Z".parse().unwrap())),
                attestation: None,
            }),
            ..Default::default()
        }
    }

    fn signed(ring: &Keyring) -> ActivationRequestSpec {
        let mut spec = spec();
        let sig = ring.sign_requester(NAME, &spec).unwrap();
        spec.requester.as_mut().unwrap().attestation = Some(sig);
        spec
    }

    #[test]
    fn a_signed_requester_verifies_and_any_change_breaks_it() {
        let ring = ring();
        let spec = signed(&ring);
        assert!(ring.verify_requester(NAME, &spec));
        type Mutation = Box<dyn Fn(&mut ActivationRequestSpec)>;
        let mutations: Vec<Mutation> = vec![
            Box::new(|s| s.principal = Some("bob".into())),
            Box::new(|s| s.group = "h".into()),
            Box::new(|s| s.role = Some(Role::Owner)),
            Box::new(|s| s.duration = Some("2h".into())),
            Box::new(|s| s.justification = None),
            Box::new(|s| s.requester.as_mut().unwrap().username = "bob".into()),
            Box::new(|s| s.requester.as_mut().unwrap().groups.push("admins".into())),
            Box::new(|s| s.requester.as_mut().unwrap().mfa = None),
            Box::new(|s| s.requester.as_mut().unwrap().stamped_at = None),
        ];
        for (i, mutate) in mutations.iter().enumerate() {
            let mut forged = spec.clone();
            mutate(&mut forged);
            assert!(!ring.verify_requester(NAME, &forged), "mutation {i}");
        }
        // Approvals and deactivate are not covered: they change after creation.
        let mut later = spec.clone();
        later.deactivate = Some(true);
        later.approvals.push(Approval::default());
        assert!(ring.verify_requester(NAME, &later));
    }

    #[test]
    fn a_requester_signature_is_bound_to_the_objects_name() {
        let ring = ring();
        let spec = signed(&ring);
        assert!(ring.verify_requester(NAME, &spec));
        // Copied onto an object of another name (a replay around the webhook), it fails.
        assert!(!ring.verify_requester("g-other", &spec));
        assert!(!ring.verify_requester("", &spec));
        // A named signature is not an unnamed one either.
        assert!(!ring.verify_unnamed_requester(&spec));
    }

    #[test]
    fn a_first_form_signature_without_a_name_still_verifies_as_unnamed() {
        let ring = ring();
        let mut spec = spec();
        let payload = requester_payload(None, &spec, Some(spec.role())).unwrap();
        spec.requester.as_mut().unwrap().attestation = Some(ring.sign(&payload));
        assert!(ring.verify_unnamed_requester(&spec));
        assert!(!ring.verify_requester(NAME, &spec));
        let mut forged = spec.clone();
        forged.principal = Some("bob".into());
        assert!(!ring.verify_unnamed_requester(&forged));
    }

    #[test]
    fn an_omitted_role_and_member_sign_alike() {
        let ring = ring();
        // Signed without a role, read back with the schema's default filled in, and the reverse.
        let signed_without = signed(&ring);
        let mut defaulted = signed_without.clone();
        defaulted.role = Some(Role::Member);
        assert!(ring.verify_requester(NAME, &defaulted));
        let mut explicit = spec();
        explicit.role = Some(Role::Member);
        let sig = ring.sign_requester(NAME, &explicit).unwrap();
        explicit.requester.as_mut().unwrap().attestation = Some(sig.clone());
        assert!(ring.verify_requester(NAME, &explicit));
        let mut omitted = explicit.clone();
        omitted.role = None;
        assert!(ring.verify_requester(NAME, &omitted));
        // An omitted role is never owner.
        let mut owner = signed_without;
        owner.role = Some(Role::Owner);
        assert!(!ring.verify_requester(NAME, &owner));
    }

    #[test]
    fn unsigned_garbled_and_foreign_signatures_fail() {
        let ring = ring();
        assert!(!ring.verify_requester(NAME, &spec()));
        let other = Keyring::from_bytes(&[8u8; 32], &[]).unwrap();
        assert!(!ring.verify_requester(NAME, &signed(&other)));
        for garbage in [
            "",
            "v1",
            "v1::",
            "v2:abc:def",
            "v1:zzzz:!!!",
            "v1:00000000:AAAA",
        ] {
            let mut spec = spec();
            spec.requester.as_mut().unwrap().attestation = Some(garbage.into());
            assert!(!ring.verify_requester(NAME, &spec), "{garbage:?}");
        }
        // Right key id, wrong tag.
        let mut spec = signed(&ring);
        let sig = spec
            .requester
            .as_ref()
            .unwrap()
            .attestation
            .clone()
            .unwrap();
        let tampered = format!("{}A", &sig[..sig.len() - 1]);
        let tampered = if tampered == sig {
            format!("{}B", &sig[..sig.len() - 1])
        } else {
            tampered
        };
        spec.requester.as_mut().unwrap().attestation = Some(tampered);
        assert!(!ring.verify_requester(NAME, &spec));
    }

    #[test]
    fn approvals_are_bound_to_the_request_uid_and_the_entry() {
        let ring = ring();
        let mut approval = Approval {
            approver: "bob".into(),
            decision: Decision::Approve,
            reason: Some("ok".into()),
            time: Some(Time("2026-01-01T10:05:00Z".parse().unwrap())),
            groups: vec!["approvers".into()],
            mfa: None,
            authentication: Default::default(),
            attestation: None,
        };
        approval.attestation = Some(ring.sign_approval("uid-1", &approval));
        assert!(ring.verify_approval("uid-1", &approval));
        assert!(!ring.verify_approval("uid-2", &approval));
        let mut deny = approval.clone();
        deny.decision = Decision::Deny;
        assert!(!ring.verify_approval("uid-1", &deny));
        let mut other = approval.clone();
        other.approver = "carol".into();
        assert!(!ring.verify_approval("uid-1", &other));
        let mut grouped = approval.clone();
        grouped.groups.push("more".into());
        assert!(!ring.verify_approval("uid-1", &grouped));
        // MFA evidence is covered: added to an entry signed without it, it fails.
        let mut claimed = approval.clone();
        claimed.mfa = Some("amr=mfa".into());
        assert!(!ring.verify_approval("uid-1", &claimed));
        let mut with_mfa = claimed.clone();
        with_mfa.attestation = Some(ring.sign_approval("uid-1", &with_mfa));
        assert!(ring.verify_approval("uid-1", &with_mfa));
        with_mfa.mfa = None;
        assert!(!ring.verify_approval("uid-1", &with_mfa));
        approval.attestation = None;
        assert!(!ring.verify_approval("uid-1", &approval));
    }

    #[test]
    fn a_rotated_key_still_verifies_what_it_signed() {
        let old = Keyring::from_bytes(&[1u8; 40], &[]).unwrap();
        let spec = signed(&old);
        let rotated = Keyring::from_bytes(&[2u8; 40], &[&[1u8; 40]]).unwrap();
        assert!(rotated.verify_requester(NAME, &spec));
        assert_ne!(rotated.signing_key_id(), old.signing_key_id());
        let dropped = Keyring::from_bytes(&[2u8; 40], &[]).unwrap();
        assert!(!dropped.verify_requester(NAME, &spec));
    }
}
