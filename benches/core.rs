//! Benchmarks of the pure core: one request's decision, and the desired membership of a
//! 10,000-member group. `cargo bench --bench core`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use jiff::{SignedDuration, Timestamp};
use pim_operator::api::activation_request::{
    ActivationRequestSpec, ActivationRequestStatus, Requester,
};
use pim_operator::core::eligibility::Eligibility;
use pim_operator::core::lifecycle::{Attestation, Facts, RequestView, Target, decide};
use pim_operator::core::membership::{Grant, GrantSource, Member, desired_membership};
use pim_operator::core::policy::Policy;

fn t0() -> Timestamp {
    "2026-03-02T09:00:00Z".parse().unwrap()
}

fn decide_one(c: &mut Criterion) {
    let spec = ActivationRequestSpec {
        group: "finreport".into(),
        duration: Some("1h".into()),
        justification: Some("quarter close".into()),
        requester: Some(Requester {
            username: "alice".into(),
            ..Default::default()
        }),
        principal: Some("alice".into()),
        ..Default::default()
    };
    let policy = Policy::default();
    let eligibilities = vec![Eligibility {
        assignment: "alice-finreport".into(),
        start: t0() - SignedDuration::from_hours(24),
        end: Some(t0() + SignedDuration::from_hours(24 * 30)),
        via_group: None,
    }];
    let status = ActivationRequestStatus::default();
    let facts = Facts {
        target: Target::Found(&policy),
        requester: Attestation::Verified,
        mfa_verified: true,
        eligibilities: &eligibilities,
        approvals: &[],
        unverified_approvals: &[],
        member_present: false,
        access_held: false,
        removal_confirmed_at: None,
        revocation_grace: SignedDuration::from_secs(30),
        removal_refused: None,
        extension: None,
        extended_by: None,
    };
    let now = t0() + SignedDuration::from_secs(1);
    c.bench_function("decide: new request, no approval", |b| {
        b.iter(|| {
            let view = RequestView {
                spec: black_box(&spec),
                created: t0(),
                status: &status,
                deleting: false,
            };
            black_box(decide(view, black_box(&facts), now))
        })
    });
    // The same request a pass later, Scheduled and waiting for the directory to confirm.
    let first = decide(
        RequestView {
            spec: &spec,
            created: t0(),
            status: &status,
            deleting: false,
        },
        &facts,
        now,
    );
    let scheduled = pim_operator::core::status::request_status(&status, &first, None, now);
    let present = Facts {
        member_present: true,
        ..facts
    };
    c.bench_function("decide: Scheduled → Active", |b| {
        b.iter(|| {
            let view = RequestView {
                spec: black_box(&spec),
                created: t0(),
                status: &scheduled,
                deleting: false,
            };
            black_box(decide(view, black_box(&present), now))
        })
    });
}

fn desired_10k(c: &mut Criterion) {
    let now = t0();
    // 10,000 members, each with a grant covering now, ending over the next hour; a tenth of them
    // also hold a second grant.
    let grants: Vec<Grant> = (0..10_000)
        .map(|i| Grant {
            member: Member::User(format!("user{i:05}")),
            start: now - SignedDuration::from_mins(5),
            end: Some(now + SignedDuration::from_secs(60 + i64::from(i % 3600))),
            source: GrantSource::Request(format!("r{i}")),
        })
        .chain((0..1_000).map(|i| Grant {
            member: Member::User(format!("user{:05}", i * 10)),
            start: now - SignedDuration::from_hours(1),
            end: None,
            source: GrantSource::Assignment(format!("a{i}")),
        }))
        .collect();
    c.bench_function("desired_membership: 10,000 members", |b| {
        b.iter(|| black_box(desired_membership(black_box(&grants), now)))
    });
}

criterion_group!(benches, decide_one, desired_10k);
criterion_main!(benches);
