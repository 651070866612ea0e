//! The one polling helper of the tests.

// Test support: a failure here is a failing test, said as plainly as it can be.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::time::Duration;

/// How long a test waits for the operator to get somewhere: generous, since a loaded 2-core CI
/// machine runs many tests at once.
pub const WAIT: Duration = Duration::from_secs(40);

/// Polls `check` until it holds, failing the test after [`WAIT`]. The one such helper.
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually_within(WAIT, what, check).await
}

/// [`eventually`] with its own deadline, for scenarios with many objects.
pub async fn eventually_within<F, Fut>(wait: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
