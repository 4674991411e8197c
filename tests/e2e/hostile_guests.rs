//! Each hostile guest is contained: its call fails with the exact error kind, its instance is dropped,
//! and a healthy model in the same host still answers correctly right after.

use ferry::runtime::{CallError, InstancePool, LimitExceeded, ModelLimits};
use ferry_tests::{assert_bystander_answers, start_version, test_guest};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn hostile(attack: &str, limits: ModelLimits) -> Arc<InstancePool> {
    let config = json!({ "attack": attack, "output_bytes": 4 << 20 });
    start_version(
        &test_guest("hostile-guest"),
        config,
        None,
        limits,
        &format!("hostile-{attack}"),
    )
}

fn attack(attack: &str, limits: ModelLimits) -> CallError {
    // No minimum: nothing refills the pool behind the test's back, so what it holds is what came back.
    let pool = hostile(
        attack,
        ModelLimits {
            min_instances: 0,
            ..limits
        },
    );
    let err = pool
        .checkout()
        .unwrap()
        .predict(r#"{"x": 1}"#)
        .expect_err("the attack must fail the call");
    if err.poisons_instance() {
        assert_eq!(
            pool.stats().idle,
            0,
            "a poisoned instance must not go back to the pool"
        );
    }
    assert_bystander_answers();
    err
}

#[test]
fn infinite_loop_hits_the_deadline() {
    let started = Instant::now();
    let err = attack(
        "infinite-loop",
        ModelLimits {
            deadline_ms: 100,
            ..Default::default()
        },
    );
    assert_eq!(err, CallError::DeadlineExceeded(Duration::from_millis(100)));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the loop was not interrupted promptly"
    );
}

#[test]
fn infinite_loop_runs_out_of_fuel_when_fuel_is_limited() {
    let err = attack(
        "infinite-loop",
        ModelLimits {
            fuel: Some(50_000_000),
            deadline_ms: 60_000,
            ..Default::default()
        },
    );
    assert_eq!(err, CallError::FuelExhausted(50_000_000));
}

#[test]
fn memory_bomb_hits_the_memory_limit() {
    let err = attack(
        "memory-bomb",
        ModelLimits {
            memory_bytes: 64 << 20,
            ..Default::default()
        },
    );
    match err {
        CallError::Limit(LimitExceeded::Memory { desired, limit }) => {
            assert_eq!(limit, 64 << 20);
            assert!(desired > limit);
        }
        other => panic!("expected the memory limit, got {other:?}"),
    }
}

#[test]
fn stack_overflow_is_a_stack_overflow() {
    assert_eq!(
        attack("stack-overflow", ModelLimits::default()),
        CallError::StackOverflow
    );
}

#[test]
fn trap_is_reported_as_a_trap() {
    let err = attack("trap", ModelLimits::default());
    assert!(
        matches!(&err, CallError::Trapped(m) if m.contains("unreachable")),
        "{err:?}"
    );
}

#[test]
fn rust_panic_is_reported_with_its_message() {
    let err = attack("panic", ModelLimits::default());
    assert!(
        matches!(&err, CallError::Panicked(m) if m.contains("hostile guest panicked on purpose")),
        "{err:?}"
    );
}

#[test]
fn log_flood_hits_the_log_limit() {
    let err = attack(
        "log-flood",
        ModelLimits {
            max_log_bytes_per_call: 32 << 10,
            ..Default::default()
        },
    );
    assert_eq!(
        err,
        CallError::Limit(LimitExceeded::Log { limit: 32 << 10 })
    );
}

#[test]
fn files_sockets_and_environment_are_denied() {
    let pool = hostile("sandbox-escape", ModelLimits::default());
    let answer = pool
        .checkout()
        .unwrap()
        .predict("{}")
        .expect("the guest reports what it could not do");
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert!(
        answer["file"].is_string(),
        "reading /etc/passwd must fail: {answer}"
    );
    assert!(
        answer["socket"].is_string(),
        "connecting a socket must fail: {answer}"
    );
    assert_eq!(
        answer["env_vars"], 0,
        "the host's environment must not leak: {answer}"
    );
    assert_bystander_answers();
}

#[test]
fn output_over_the_limit_is_refused() {
    let err = attack(
        "huge-output",
        ModelLimits {
            max_output_bytes: 1 << 20,
            ..Default::default()
        },
    );
    assert!(
        matches!(err, CallError::OutputTooLarge { size, limit: 1_048_576 } if size > 4 << 20),
        "{err:?}"
    );
}

#[test]
fn input_over_the_limit_is_refused_before_the_guest_runs() {
    let pool = hostile(
        "",
        ModelLimits {
            max_input_bytes: 1024,
            ..Default::default()
        },
    );
    let big = json!({ "pad": "y".repeat(4096) }).to_string();
    let err = pool.checkout().unwrap().predict(&big).unwrap_err();
    assert!(
        matches!(err, CallError::InputTooLarge { limit: 1024, .. }),
        "{err:?}"
    );
    assert_eq!(
        pool.checkout().unwrap().predict(r#"{"ok": 1}"#).unwrap(),
        r#"{"echo":{"ok":1}}"#
    );
}

#[test]
fn a_poisoned_instance_is_replaced_and_the_version_serves_again() {
    // The same component with no attack configured echoes; a trapping version's pool refills itself.
    let pool = hostile(
        "trap",
        ModelLimits {
            min_instances: 1,
            max_instances: 1,
            ..Default::default()
        },
    );
    for _ in 0..3 {
        let err = pool.checkout().unwrap().predict("{}").unwrap_err();
        assert!(matches!(err, CallError::Trapped(_)), "{err:?}");
    }
    // Every failed call dropped its instance; the pool's live count never leaked.
    let deadline = Instant::now() + Duration::from_secs(10);
    while pool.stats().live != 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(pool.stats().live, 1);
    assert_bystander_answers();
}

#[test]
fn a_failing_init_is_an_error_not_a_version() {
    let err = ferry_tests::try_start_version(
        &test_guest("hostile-guest"),
        json!({"attack": "fail-init"}),
        None,
        ModelLimits::default(),
        "fail-init",
    )
    .err()
    .expect("init must fail");
    assert_eq!(
        format!("{err:#}"),
        format!(
            "initialising: {}",
            CallError::ModelFailed("refusing to start: fail-init".into())
        )
    );
    assert_bystander_answers();
}

#[test]
fn overload_is_a_bounded_wait_then_a_clear_error() {
    let pool = hostile(
        "",
        ModelLimits {
            min_instances: 1,
            max_instances: 1,
            queue_timeout_ms: 50,
            ..Default::default()
        },
    );
    let held = pool.checkout().unwrap();
    let started = Instant::now();
    let err = pool.checkout().err().expect("the only instance is busy");
    assert_eq!(err, CallError::Overloaded(Duration::from_millis(50)));
    assert!(started.elapsed() >= Duration::from_millis(50));
    drop(held);
    assert!(
        pool.checkout().is_ok(),
        "the returned instance serves the next caller"
    );
}
