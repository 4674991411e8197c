//! Running a fuzz target: case counts (`FERRY_FUZZ_CASES`), the seed (`FERRY_FUZZ_SEED`), no
//! regression files, the count of cases printed past the test harness's capture, and tallies of
//! what the cases came to. Shared by `host/tests/fuzz` and `tests/e2e/fuzz_guest.rs`.

#![allow(dead_code)]

use std::io::Write;
use std::time::Instant;

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

/// The seed used when `FERRY_FUZZ_SEED` is not set: CI runs the same cases every time.
const DEFAULT_SEED: u64 = 0x00f3_7272_7946_757a;

fn seed() -> u64 {
    match std::env::var("FERRY_FUZZ_SEED").ok().as_deref() {
        None | Some("") => DEFAULT_SEED,
        Some("random") => {
            use std::hash::BuildHasher;
            std::collections::hash_map::RandomState::new().hash_one(Instant::now())
        }
        Some(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("FERRY_FUZZ_SEED={s:?} is not a number or `random`")),
    }
}

/// Cases a target runs: `FERRY_FUZZ_CASES`, else its CI default.
pub fn cases(ci_default: u32) -> u32 {
    match std::env::var("FERRY_FUZZ_CASES").ok().as_deref() {
        None | Some("") => ci_default,
        Some(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("FERRY_FUZZ_CASES={s:?} is not a number")),
    }
}

/// Writes a line to the process's stderr, past the test harness's capture.
pub fn say(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
    let _ = err.flush();
}

/// Runs `test` on `cases(ci_default)` inputs from `strategy`. A failure is shrunk to a minimal input
/// and reported with the seed; nothing is written to `proptest-regressions/` (a failure worth keeping
/// becomes a plain `#[test]` with its minimal input).
pub fn run<S>(
    target: &str,
    ci_default: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    let cases = cases(ci_default);
    let seed = seed();
    let mut bytes = [0u8; 32];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = (seed >> ((i % 8) * 8)) as u8 ^ (i as u8);
    }
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 4096,
        // Generated inputs are filtered rarely; a target that rejects too much is a broken target.
        max_global_rejects: cases.saturating_mul(2).max(1024),
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
    let calls = std::cell::Cell::new(0u64);
    let started = Instant::now();
    let outcome = runner.run(&strategy, |input| {
        calls.set(calls.get() + 1);
        test(input)
    });
    let secs = started.elapsed().as_secs_f64();
    match outcome {
        Ok(()) => say(&format!(
            "fuzz {target}: {cases} cases passed in {secs:.1} s (seed {seed})"
        )),
        Err(TestError::Fail(reason, input)) => panic!(
            "fuzz {target}: failed after {} cases (seed {seed}): {reason}\nminimal input: {input:#?}",
            calls.get()
        ),
        Err(TestError::Abort(reason)) => panic!("fuzz {target}: aborted (seed {seed}): {reason}"),
    }
}

/// Counts of what a target's cases came to (answers by status, say), printed after the run so the
/// log shows that a target exercises both sides of what it checks.
#[derive(Default)]
pub struct Tally(std::cell::RefCell<std::collections::BTreeMap<String, u64>>);

impl Tally {
    pub fn note(&self, outcome: impl Into<String>) {
        *self.0.borrow_mut().entry(outcome.into()).or_default() += 1;
    }

    pub fn report(&self, target: &str) {
        let parts: Vec<String> = self
            .0
            .borrow()
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        say(&format!("fuzz {target}: {}", parts.join(", ")));
    }
}
