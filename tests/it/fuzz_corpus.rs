#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The seed corpus of the cargo-fuzz target `admission` (fuzz/), run as a regular test: every
//! file goes through both webhooks with the fuzz harness's invariants (no panic, the uid
//! echoed, denials say why, only the mutating webhook patches and its patch applies, a new
//! request is stamped with its caller). Seeds named `<stage>-<allow|deny>-…` or
//! `undecodable-…` also pin that outcome; files the fuzzer adds are held to the invariants.

#[path = "../../fuzz/harness.rs"]
mod harness;

use std::path::PathBuf;

use harness::{Answer, Harness};

/// Seeds whose denial must be for this reason (a part of the message).
const REASONS: &[(&str, &str)] = &[
    ("mutate-deny-self-approval", "your own request"),
    ("mutate-deny-forged-requester", "requester"),
    ("mutate-deny-service-account", "service account"),
    ("mutate-deny-missing-mfa-claim", "MFA"),
    ("mutate-deny-spec-edit", "immutable"),
    ("mutate-deny-approvals-at-create", "approval"),
];

fn corpus() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/admission");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_seed_keeps_the_invariants_and_its_expected_outcome() {
    let harness = Harness::new();
    let files = corpus();
    let mut pinned = std::collections::BTreeMap::<String, usize>::new();
    for file in &files {
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        let body = std::fs::read(file).unwrap();
        let [mutate, validate] = harness.review(&body);
        let expectation = name.split('-').take(2).collect::<Vec<_>>().join("-");
        let outcome = match expectation.as_str() {
            "mutate-allow" => matches!(mutate, Answer::Allowed { .. }),
            "mutate-deny" => matches!(mutate, Answer::Denied { .. }),
            "validate-allow" => matches!(validate, Answer::Allowed { .. }),
            "validate-deny" => matches!(validate, Answer::Denied { .. }),
            _ if name.starts_with("undecodable-") => {
                matches!(
                    (&mutate, &validate),
                    (Answer::Undecodable, Answer::Undecodable)
                )
            }
            _ => continue,
        };
        assert!(
            outcome,
            "{name}: expected {expectation}, got mutate {mutate:?} / validate {validate:?}"
        );
        // Some denials also pin why, so a seed cannot pass by tripping another rule.
        if let Some((_, why)) = REASONS.iter().find(|(seed, _)| *seed == name) {
            let message = match (&mutate, &validate) {
                (Answer::Denied { message }, _) | (_, Answer::Denied { message }) => message,
                _ => panic!("{name}: not denied"),
            };
            assert!(
                message.contains(why),
                "{name}: denied for {message:?}, not {why:?}"
            );
        }
        *pinned
            .entry(if name.starts_with("undecodable-") {
                "undecodable".to_owned()
            } else {
                expectation
            })
            .or_default() += 1;
    }
    // The corpus covers each outcome, so a change that lets everything through (or refuses
    // everything) fails here.
    for outcome in [
        "mutate-allow",
        "mutate-deny",
        "validate-allow",
        "validate-deny",
        "undecodable",
    ] {
        assert!(
            pinned.get(outcome).is_some_and(|n| *n > 0),
            "no seed pins {outcome}: {pinned:?}"
        );
    }
}

#[test]
fn alices_request_is_stamped_with_alice() {
    let harness = Harness::new();
    let file = corpus()
        .into_iter()
        .find(|f| f.ends_with("mutate-allow-alice-creates.json"))
        .expect("the seed");
    let [mutate, _] = harness.review(&std::fs::read(file).unwrap());
    assert!(
        matches!(mutate, Answer::Allowed { patched: true }),
        "{mutate:?}"
    );
}
