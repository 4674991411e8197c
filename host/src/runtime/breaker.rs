//! Circuit breaking per version. A version whose calls keep failing by its own fault (deadline,
//! fuel, a limit, a trap, a panic: [`CallError::is_model_fault`]) `after` times in a row is tripped:
//! for a cool-down its requests fail fast ([`CallError::Tripped`], which says why), costing no
//! instance and no CPU. Then one request at a time is let through as a probe; its success closes the
//! breaker, its failure opens it again for twice as long (up to `max_cool_down`). Trips, probes and
//! recoveries are logged and counted here; the front ends publish them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use super::CallError;
use crate::stamps::unix_ms;

/// When a breaker trips and how long it stays open.
#[derive(Debug, Clone)]
pub struct BreakerPolicy {
    /// Model faults in a row that trip it (0: never).
    pub after: u32,
    /// The first cool-down.
    pub cool_down: Duration,
    /// The longest cool-down, however often probes fail.
    pub max_cool_down: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            after: 5,
            cool_down: Duration::from_secs(5),
            max_cool_down: Duration::from_secs(60),
        }
    }
}

/// A version's breaker.
#[derive(Debug)]
pub struct Breaker {
    /// The version it guards: its model and name, as its logs name them.
    model: String,
    version: String,
    state: Mutex<State>,
    trips: AtomicU64,
    /// Trips by the kind of fault that tripped it.
    trips_by_kind: Mutex<BTreeMap<&'static str, u64>>,
    probes_failed: AtomicU64,
    recoveries: AtomicU64,
    rejected: AtomicU64,
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Closed,
    /// Counting faults in a row.
    Failing { faults: u32 },
    /// Failing fast until `until`.
    Open(Trip),
    /// One probe is out.
    Probing(Trip),
}

#[derive(Debug, Clone)]
struct Trip {
    reason: String,
    since_unix_ms: u64,
    until: Instant,
    cool_down: Duration,
}

/// A request let through the breaker; [`Pass::settle`] reports how its call ended. A probe dropped
/// unsettled (its caller went away) lets the next request probe instead.
#[must_use]
pub struct Pass<'a> {
    breaker: &'a Breaker,
    probe: bool,
}

impl Breaker {
    /// A closed breaker for `version` of `model`.
    pub fn new(model: impl Into<String>, version: impl Into<String>) -> Breaker {
        Breaker {
            model: model.into(),
            version: version.into(),
            state: Default::default(),
            trips: Default::default(),
            trips_by_kind: Default::default(),
            probes_failed: Default::default(),
            recoveries: Default::default(),
            rejected: Default::default(),
        }
    }

    /// Lets a request through, or refuses it while the breaker is open or a probe is out.
    pub fn admit(&self) -> Result<Pass<'_>, CallError> {
        let mut state = self.lock();
        let probe = match &*state {
            State::Closed | State::Failing { .. } => false,
            State::Open(trip) if Instant::now() >= trip.until => {
                let trip = trip.clone();
                tracing::info!(model = %self.model, version = %self.version, "circuit breaker: probing whether the version recovered");
                *state = State::Probing(trip);
                true
            }
            State::Open(trip) | State::Probing(trip) => {
                let refusal = refusal(trip);
                drop(state);
                self.rejected.fetch_add(1, Relaxed);
                return Err(refusal);
            }
        };
        Ok(Pass {
            breaker: self,
            probe,
        })
    }

    /// What [`Breaker::admit`] would refuse now, refused (and counted) the same way, but with no
    /// probe let through: checked before a request takes a place in its version's queue, so that a
    /// tripped version's requests cost no place and no decoding.
    pub fn check(&self) -> Result<(), CallError> {
        let state = self.lock();
        let trip = match &*state {
            State::Open(trip) if Instant::now() < trip.until => trip,
            State::Probing(trip) => trip,
            _ => return Ok(()),
        };
        let refusal = refusal(trip);
        drop(state);
        self.rejected.fetch_add(1, Relaxed);
        Err(refusal)
    }

    /// True while requests fail fast.
    pub fn is_open(&self) -> bool {
        matches!(*self.lock(), State::Open(_) | State::Probing(_))
    }

    /// The breaker's state, for the version's description.
    pub fn describe(&self) -> Value {
        let state = self.lock();
        let (name, trip, faults) = match &*state {
            State::Closed => ("closed", None, 0),
            State::Failing { faults } => ("closed", None, *faults),
            State::Open(t) => ("open", Some(t), 0),
            State::Probing(t) => ("probing", Some(t), 0),
        };
        let mut out = json!({
            "state": name,
            "faults_in_a_row": faults,
            "trips": self.trips.load(Relaxed),
            "probes_failed": self.probes_failed.load(Relaxed),
            "recoveries": self.recoveries.load(Relaxed),
            "rejected": self.rejected.load(Relaxed),
        });
        if let Some(trip) = trip {
            out["reason"] = json!(trip.reason);
            out["since_unix_ms"] = json!(trip.since_unix_ms);
            out["retry_in_ms"] = json!(trip
                .until
                .saturating_duration_since(Instant::now())
                .as_millis() as u64);
        }
        out
    }

    /// Trips so far, by the kind of fault that tripped it.
    pub fn trips_by_kind(&self) -> Vec<(&'static str, u64)> {
        let trips = self.trips_by_kind.lock().unwrap_or_else(|e| e.into_inner());
        trips.iter().map(|(k, n)| (*k, *n)).collect()
    }

    /// Probes so far: (failed, recovered).
    pub fn probes(&self) -> (u64, u64) {
        (
            self.probes_failed.load(Relaxed),
            self.recoveries.load(Relaxed),
        )
    }

    /// Requests failed fast so far.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn after_call(
        &self,
        state: &mut State,
        policy: &BreakerPolicy,
        outcome: Option<&CallError>,
        probe: bool,
    ) {
        if !probe && matches!(state, State::Open(_) | State::Probing(_)) {
            // A call let through before the trip ended after it: the probe decides, not this one.
            return;
        }
        let fault = outcome.filter(|e| e.is_model_fault());
        let (model, name) = (&self.model, &self.version);
        match (std::mem::take(state), fault) {
            (State::Probing(trip), Some(e)) => {
                let cool_down = (trip.cool_down * 2).min(policy.max_cool_down);
                tracing::warn!(model = %model, version = %name, "circuit breaker: the probe failed ({e}); open for another {cool_down:?}");
                self.probes_failed.fetch_add(1, Relaxed);
                *state = State::Open(Trip {
                    until: Instant::now() + cool_down,
                    cool_down,
                    ..trip
                });
            }
            (State::Probing(trip), None) => {
                if outcome.is_some_and(|e| !answered(e)) {
                    // Refused before it could show anything (a full queue): the next request probes.
                    *state = State::Open(Trip {
                        until: Instant::now(),
                        ..trip
                    });
                    return;
                }
                tracing::info!(model = %model, version = %name, "circuit breaker: the probe succeeded; the version serves again");
                self.recoveries.fetch_add(1, Relaxed);
                *state = State::Closed;
            }
            (State::Open(trip), _) => *state = State::Open(trip),
            (previous, Some(e)) => {
                let faults = match previous {
                    State::Failing { faults } => faults + 1,
                    _ => 1,
                };
                if policy.after == 0 || faults < policy.after {
                    *state = State::Failing { faults };
                    return;
                }
                let reason =
                    format!("{model}@{name} failed its last {faults} calls; the last one: {e}");
                tracing::warn!(model = %model, version = %name, "circuit breaker tripped for {:?}: {reason}", policy.cool_down);
                self.trips.fetch_add(1, Relaxed);
                *self
                    .trips_by_kind
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(e.kind())
                    .or_default() += 1;
                *state = State::Open(Trip {
                    reason,
                    since_unix_ms: unix_ms(SystemTime::now()),
                    until: Instant::now() + policy.cool_down,
                    cool_down: policy.cool_down,
                });
            }
            (State::Failing { faults }, None) if outcome.is_some_and(|e| !answered(e)) => {
                // A full queue says nothing about the model: the run of faults goes on.
                *state = State::Failing { faults };
            }
            (_, None) => *state = State::Closed,
        }
    }
}

/// The fast failure of a request while `trip` holds.
fn refusal(trip: &Trip) -> CallError {
    CallError::Tripped {
        reason: trip.reason.clone(),
        retry_in: trip
            .until
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1)),
    }
}

/// False for refusals that happen before or beside the guest's work and say nothing of its health.
fn answered(e: &CallError) -> bool {
    !matches!(
        e,
        CallError::Overloaded(_) | CallError::OverShare { .. } | CallError::Tripped { .. }
    )
}

impl Pass<'_> {
    /// Reports how the call ended (`None`: it answered).
    pub fn settle(self, policy: &BreakerPolicy, outcome: Option<&CallError>) {
        let mut state = self.breaker.lock();
        self.breaker
            .after_call(&mut state, policy, outcome, self.probe);
        drop(state);
        std::mem::forget(self);
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        if self.probe {
            let mut state = self.breaker.lock();
            if let State::Probing(trip) = std::mem::take(&mut *state) {
                *state = State::Open(Trip {
                    until: Instant::now(),
                    ..trip
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version() -> Breaker {
        Breaker::new("m", "1")
    }

    fn policy(cool_down_ms: u64) -> BreakerPolicy {
        BreakerPolicy {
            after: 3,
            cool_down: Duration::from_millis(cool_down_ms),
            max_cool_down: Duration::from_millis(4 * cool_down_ms),
        }
    }

    fn call(b: &Breaker, p: &BreakerPolicy, outcome: Option<CallError>) -> Result<(), CallError> {
        let pass = b.admit()?;
        pass.settle(p, outcome.as_ref());
        Ok(())
    }

    const LATE: CallError = CallError::DeadlineExceeded(Duration::from_millis(50));

    #[test]
    fn faults_in_a_row_trip_it_and_a_probe_closes_it() {
        let (v, p) = (version(), policy(40));
        call(&v, &p, Some(LATE)).unwrap();
        call(&v, &p, Some(LATE)).unwrap();
        call(&v, &p, None).unwrap(); // an answer clears the run
        for _ in 0..3 {
            call(&v, &p, Some(CallError::Trapped("boom".into()))).unwrap();
        }
        let err = call(&v, &p, None).unwrap_err();
        let CallError::Tripped { reason, .. } = &err else {
            panic!("{err}")
        };
        assert!(
            reason.contains("failed its last 3 calls") && reason.contains("boom"),
            "{reason}"
        );
        assert_eq!(v.describe()["state"], "open");
        std::thread::sleep(Duration::from_millis(50));
        // One probe at a time: while it is out, others fail fast.
        let probe = v.admit().unwrap();
        assert!(v.admit().is_err());
        probe.settle(&p, None);
        assert_eq!(v.describe()["state"], "closed");
        assert_eq!(v.describe()["recoveries"], 1);
        call(&v, &p, None).unwrap();
    }

    #[test]
    fn a_failed_probe_doubles_the_cool_down_and_an_abandoned_one_frees_the_probe() {
        let (v, p) = (version(), policy(30));
        for _ in 0..3 {
            call(&v, &p, Some(LATE)).unwrap();
        }
        std::thread::sleep(Duration::from_millis(35));
        call(&v, &p, Some(LATE)).unwrap(); // the probe fails: open for 60 ms
        assert!(call(&v, &p, None).is_err(), "cooling down again");
        let retry_in = v.describe()["retry_in_ms"].as_u64().unwrap();
        assert!(retry_in > 30, "the cool-down doubled: {retry_in} ms left");
        std::thread::sleep(Duration::from_millis(65));
        drop(v.admit().unwrap()); // a probe whose caller went away
        call(&v, &p, None).unwrap(); // the next request probes
        assert_eq!(v.describe()["state"], "closed");
        assert_eq!(v.describe()["probes_failed"], 1);
    }

    #[test]
    fn refusals_and_the_models_own_errors_do_not_trip_it() {
        let (v, p) = (version(), policy(30));
        for _ in 0..10 {
            call(&v, &p, Some(CallError::InvalidInput("no".into()))).unwrap();
            call(&v, &p, Some(CallError::Overloaded(Duration::ZERO))).unwrap();
            call(
                &v,
                &p,
                Some(CallError::OverShare {
                    share_percent: 10,
                    deadline: Duration::from_secs(1),
                }),
            )
            .unwrap();
        }
        assert_eq!(v.describe()["state"], "closed");
        assert_eq!(v.describe()["trips"], 0);
    }
}
