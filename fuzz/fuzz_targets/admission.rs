//! Fuzzes the admission webhook's decoder and rules with arbitrary request bodies: any input
//! must give an answer or a decode error, never a panic, and every answer must keep the
//! invariants `harness::Harness::review` checks.
#![no_main]

#[path = "../harness.rs"]
mod harness;

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;

static HARNESS: LazyLock<harness::Harness> = LazyLock::new(harness::Harness::new);

fuzz_target!(|data: &[u8]| {
    HARNESS.review(data);
});
