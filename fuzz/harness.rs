//! The admission fuzz harness, shared by the cargo-fuzz target (`fuzz_targets/admission.rs`)
//! and the corpus test (`tests/it/fuzz_corpus.rs`): one request body in, both webhooks' answers
//! out. A panic here is a finding: either the webhook panicked, or an answer broke one of the
//! invariants below.
#![allow(dead_code, clippy::expect_used, clippy::panic)]

use base64::Engine;
use jiff::Timestamp;
use pim_operator::api::{AccessPolicy, EligibleAssignment, PimGroup};
use pim_operator::attestation::Keyring;
use pim_operator::checks::SchemaChecker;
use pim_operator::core::identity::{CaseInsensitive, Principals, UsernameMapping};
use pim_operator::engine::Catalog;
use pim_operator::webhook::{Admission, MfaClaim, Stage};
use serde_json::Value;

/// What one stage answered.
#[derive(Debug)]
pub enum Answer {
    /// The body was not an AdmissionReview with a request (the API server then fails closed).
    Undecodable,
    Allowed {
        patched: bool,
    },
    Denied {
        message: String,
    },
}

pub struct Harness {
    admission: Admission,
    catalog: Catalog,
    now: Timestamp,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    /// The repository's examples as the catalog, alice's eligibility included.
    pub fn new() -> Self {
        let mut catalog = Catalog::default();
        let policy: AccessPolicy =
            serde_saphyr::from_str(include_str!("../examples/01-accesspolicy.yaml"))
                .expect("examples/01-accesspolicy.yaml");
        let group: PimGroup = serde_saphyr::from_str(include_str!("../examples/02-pimgroup.yaml"))
            .expect("examples/02-pimgroup.yaml");
        let assignment: EligibleAssignment =
            serde_saphyr::from_str(include_str!("../examples/03-eligibleassignment.yaml"))
                .expect("examples/03-eligibleassignment.yaml");
        catalog.insert_policy(policy);
        catalog.insert_group(group);
        catalog.insert_assignment(assignment);
        let keyring = Keyring::from_bytes(b"the fuzz harness's attestation key, 32+ bytes", &[])
            .expect("a valid key");
        Harness {
            admission: Admission {
                principals: Principals::new(
                    [(
                        "entra".to_owned(),
                        UsernameMapping {
                            strip_prefix: Some("oidc:".into()),
                            append_domain: Some("@contoso.com".into()),
                        },
                    )]
                    .into(),
                    CaseInsensitive::EmailLike,
                ),
                mfa_claim: MfaClaim::default(),
                auth_time_claim: None,
                keyring: Some(keyring),
                schema: SchemaChecker::new().expect("the CRD schemas"),
                operator_username: "system:serviceaccount:pim-system:pim-operator".into(),
                shortest_assignments: Default::default(),
            },
            catalog,
            now: "2026-11-20T09:00:00Z".parse().expect("a timestamp"),
        }
    }

    /// Both stages' answers to `body`, each checked against the invariants of an answer.
    pub fn review(&self, body: &[u8]) -> [Answer; 2] {
        [Stage::Mutate, Stage::Validate].map(|stage| self.review_stage(body, stage))
    }

    fn review_stage(&self, body: &[u8], stage: Stage) -> Answer {
        let Ok(out) = self.admission.review(body, stage, &self.catalog, self.now) else {
            return Answer::Undecodable;
        };
        let request: Value = serde_json::from_slice(body).expect("a reviewed body is JSON");
        assert_eq!(out["apiVersion"], "admission.k8s.io/v1", "{out}");
        assert_eq!(out["kind"], "AdmissionReview", "{out}");
        let response = &out["response"];
        assert_eq!(
            response["uid"], request["request"]["uid"],
            "the uid is echoed"
        );
        let allowed = response["allowed"].as_bool().expect("allowed is a bool");
        let patch = response.get("patch").filter(|p| !p.is_null());
        if !allowed {
            assert!(patch.is_none(), "a denial carries no patch: {out}");
            let message = response["status"]["message"]
                .as_str()
                .expect("a denial says why")
                .to_owned();
            assert!(!message.is_empty(), "a denial says why");
            return Answer::Denied { message };
        }
        let Some(patch) = patch else {
            return Answer::Allowed { patched: false };
        };
        assert_eq!(
            stage,
            Stage::Mutate,
            "only the mutating webhook patches: {out}"
        );
        assert_eq!(response["patchType"], "JSONPatch", "{out}");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(patch.as_str().expect("the patch is base64 text"))
            .expect("the patch is base64");
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("a JSON patch");
        let mut object = request["request"]["object"].clone();
        json_patch::patch(&mut object, &patch).expect("the patch applies to the object");
        // A new request is stamped with the caller, never with what the client wrote.
        if request["request"]["operation"] == "CREATE" {
            let username = request["request"]["userInfo"]["username"].clone();
            assert_eq!(
                object["spec"]["requester"]["username"], username,
                "{object}"
            );
        }
        Answer::Allowed { patched: true }
    }
}
