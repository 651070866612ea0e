//! The webhook's latency harness at a small size, as CI's smoke run: the real webhook over HTTPS
//! answers every review of the mix as expected. It asserts no time; the figures come from
//! `cargo bench --bench admission` (docs/performance.md).

use std::time::Duration;

use pim_testkit::admission_load::{self, Options};

#[test]
fn every_review_of_the_mix_is_answered_as_expected() {
    let options = Options {
        rate: 50.0,
        duration: Duration::from_secs(1),
        requests: 200,
        assignments: 240,
        groups: 10,
        webhook_threads: 2,
        client_threads: 1,
    };
    let summary = admission_load::run(options).unwrap();
    println!("{}", summary.table());
    assert_eq!(summary.errors, 0, "{:?}", summary.error_samples);
    assert_eq!(summary.sent, 50);
    assert_eq!(summary.allowed + summary.denied_as_expected, 50);
    // Every operation of the mix was sent at least once in the warm-up, and checked there.
    assert_eq!(summary.open_requests, 180, "one in ten requests has ended");
}
