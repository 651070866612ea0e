//! The load harness at a small size (1,000 requests), as CI's smoke run. It checks the write
//! counts and that no grant outlives its end; it does not assert times (DESIGN §12 targets are
//! measured by `cargo bench --bench loadtest`, see docs/performance.md).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use pim_testkit::loadtest::{self, Options, PriorityOptions, ServerProgram, writes_by_grant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_requests_one_write_each_way() {
    let options = Options {
        requests: 1_000,
        assignments: 1_100,
        groups: 50,
        latency: Duration::from_millis(1),
        operator_concurrency: 8,
        removal_concurrency: Some(6),
        create_concurrency: 16,
        idle: Duration::from_millis(500),
        timeout: Duration::from_secs(120),
        priority: Some(PriorityOptions {
            write_rate: 200.0,
            pending: 80,
            due: 20,
            after: Duration::from_millis(100),
            pending_end_too: false,
            wait_pending: true,
        }),
        ..Options::default()
    };
    let mut world = loadtest::World::start(options.clone()).await.unwrap();
    let summary = loadtest::run_in_world(&mut world, &options).await;
    let writes = world.directory.writes();
    world.shutdown().await;
    let summary = summary.unwrap();
    println!("{}", serde_json::to_string_pretty(&summary).unwrap());

    assert_eq!(summary.created_to_active.count, 1_000);
    assert_eq!(summary.directory_adds, 1_000, "one add per grant");
    assert_eq!(
        summary.directory_removes, 1_000,
        "one remove per revocation"
    );
    assert_eq!(summary.grants_outliving_end, 0, "no grant outlives its end");
    assert_eq!(summary.adds_after_end, 0, "no grant written after its end");
    // Nothing about an assignment changes when requests activate, expire or the clock moves
    // past no window's edge (issue 21, item 3): counted, not timed.
    for (phase, reconciles) in [
        ("activation", &summary.reconciles_per_activation),
        ("revocation", &summary.reconciles_per_revocation),
    ] {
        assert_eq!(
            reconciles.get("EligibleAssignment"),
            Some(&0.0),
            "assignment reconciles per {phase}: {reconciles:?}"
        );
    }
    assert_eq!(
        summary.reconciles_resync.get("EligibleAssignment"),
        Some(&0)
    );
    // 50 groups of 20 due at once would send far more; the setting bounds them.
    assert_eq!(summary.removal_concurrency, 6);
    assert!(
        (1..=6).contains(&summary.removals_in_flight_max),
        "{} removals in flight with removalConcurrency 6",
        summary.removals_in_flight_max
    );
    let priority = summary.priority.as_ref().unwrap();
    assert_eq!(priority.due_left, 0, "every due revocation made");
    assert_eq!(priority.revocation_lag.count, 20);
    assert_eq!(priority.adds_after_end, 0);
    assert_eq!(
        priority.pending_left, 0,
        "every held grant written in the end"
    );

    // Over the whole run, main and priority phases: every grant (one request each) added once,
    // and removed at most once; the priority run's pending grants are still live at the end.
    for ((group, user), (adds, removes)) in writes_by_grant(&writes) {
        assert_eq!(adds, 1, "{user} in {group}: {adds} adds");
        assert!(removes <= 1, "{user} in {group}: {removes} removes");
    }
    let adds = writes.iter().filter(|w| w.0).count();
    let removes = writes.iter().filter(|w| !w.0).count();
    assert_eq!(adds, 1_000 + 20 + 80);
    assert_eq!(removes, 1_000 + 20);
}

/// Revocation priority under a throttled directory, where the pending grants end at the same
/// instant as the due ones: every due revocation is made, a grant not yet written when its end
/// came is never written, one written just before is removed, and nothing is written twice.
/// Counts only, no times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_revocations_leave_nothing_past_its_end() {
    let (requests, due, pending) = (100, 20, 200);
    let options = Options {
        requests,
        assignments: requests + due + pending,
        groups: 20,
        latency: Duration::from_millis(1),
        operator_concurrency: 8,
        create_concurrency: 16,
        idle: Duration::from_millis(100),
        timeout: Duration::from_secs(120),
        priority: Some(PriorityOptions {
            write_rate: 100.0,
            pending,
            due,
            after: Duration::from_millis(200),
            pending_end_too: true,
            wait_pending: true,
        }),
        ..Options::default()
    };
    let mut world = loadtest::World::start(options.clone()).await.unwrap();
    let summary = loadtest::run_in_world(&mut world, &options).await;
    let writes = world.directory.writes();
    world.shutdown().await;
    let summary = summary.unwrap();
    println!("{}", serde_json::to_string_pretty(&summary).unwrap());

    let priority = summary.priority.as_ref().unwrap();
    assert_eq!(priority.due_left, 0, "a due revocation was left undone");
    assert_eq!(priority.adds_after_end, 0);
    assert_eq!(
        priority.pending_left, 0,
        "a grant is still in the directory after its end"
    );
    // Only a write already sent when the end came can land after it (and is then removed).
    assert!(
        priority.pending_added_after_end <= pim_operator::controller::priority::ADD_LANES,
        "{} grants written after their end",
        priority.pending_added_after_end
    );
    for ((group, user), (adds, removes)) in writes_by_grant(&writes) {
        assert!(adds <= 1, "{user} in {group}: {adds} adds");
        assert_eq!(
            removes, adds,
            "{user} in {group}: {adds} adds, {removes} removes"
        );
    }
}

/// The fake API server as a process of its own (the `fake-apiserver` binary, as the bench runs
/// it): the same counts, the server's memory reported apart, the operator's CPU measured on its
/// own threads. Counts only, no times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_can_run_apart() {
    let options = Options {
        requests: 200,
        assignments: 200,
        groups: 10,
        latency: Duration::from_millis(1),
        operator_concurrency: 8,
        create_concurrency: 16,
        idle: Duration::from_millis(200),
        timeout: Duration::from_secs(120),
        apiserver_process: Some(ServerProgram {
            program: crate::kind_e2e::fake_apiserver_bin(),
            args: Vec::new(),
        }),
        ..Options::default()
    };
    let summary = loadtest::run(options).await.unwrap();
    println!("{}", serde_json::to_string_pretty(&summary).unwrap());

    assert!(summary.apiserver_process);
    assert_eq!(summary.created_to_active.count, 200);
    assert_eq!(summary.directory_adds, 200, "one add per grant");
    assert_eq!(summary.directory_removes, 200, "one remove per revocation");
    assert_eq!(summary.grants_outliving_end, 0);
    assert!(summary.apiserver_peak_rss_mb.is_some_and(|mb| mb > 0.0));
    assert!(summary.operator_cpu_per_1k_activations > 0.0);
    // The server's write log came over the pipe: the operator's status writes are in it.
    assert!(
        summary
            .api_writes_activation
            .keys()
            .any(|k| k.starts_with("pim-operator ") && k.ends_with("/status")),
        "{:?}",
        summary.api_writes_activation
    );
}
