//! Which refused attempts (401s and 403s) reach the audit log: at most [`REFUSALS_PER_MINUTE`] per
//! credential and route in each minute of the clock; the rest are counted, and the next record of
//! that credential and route says how many were left out (`skipped`). A loop of refusals then costs
//! the store a few objects a minute, however fast it runs. The keys are bounded too: credentials
//! come from the operator's files and routes from the router (never a model's name), and past
//! [`MAX_KEYS`] the windows of earlier minutes are forgotten.

use std::collections::HashMap;
use std::sync::Mutex;

/// Refused attempts recorded per credential and route in one minute.
pub const REFUSALS_PER_MINUTE: u32 = 10;

/// Credential and route pairs remembered at once.
const MAX_KEYS: usize = 4096;

/// What to do with one refused attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sample {
    /// Record it, saying how many of its kind were skipped since the last one recorded.
    Record {
        /// Refusals of the same credential and route counted but not recorded before it.
        skipped_before: u64,
    },
    /// Count it only.
    Skip,
}

#[derive(Debug)]
struct Window {
    minute: u64,
    recorded: u32,
    skipped: u64,
}

/// Samples refused attempts per credential and route and minute.
#[derive(Debug)]
pub struct RefusalSampler {
    per_minute: u32,
    windows: Mutex<HashMap<(String, String), Window>>,
}

impl RefusalSampler {
    /// At most `per_minute` records per credential and route and minute.
    pub fn new(per_minute: u32) -> RefusalSampler {
        RefusalSampler {
            per_minute,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a refusal of `actor` on `route` at `now_ms` (unix ms) is recorded.
    pub fn sample(&self, actor: &str, route: &str, now_ms: u64) -> Sample {
        let minute = now_ms / 60_000;
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let key = (actor.to_owned(), route.to_owned());
        if windows.len() >= MAX_KEYS && !windows.contains_key(&key) {
            windows.retain(|_, w| w.minute >= minute);
            if windows.len() >= MAX_KEYS {
                return Sample::Skip;
            }
        }
        let window = windows.entry(key).or_insert(Window {
            minute,
            recorded: 0,
            skipped: 0,
        });
        if window.minute != minute {
            // A new minute: a new allowance; what was skipped is told by the next record.
            window.minute = minute;
            window.recorded = 0;
        }
        if window.recorded < self.per_minute {
            window.recorded += 1;
            Sample::Record {
                skipped_before: std::mem::take(&mut window.skipped),
            }
        } else {
            window.skipped += 1;
            Sample::Skip
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_recorded_a_few_times_a_minute_and_the_rest_counted() {
        let sampler = RefusalSampler::new(3);
        let t0 = 1_700_000_000_000 - 1_700_000_000_000 % 60_000;
        let recorded: Vec<Sample> = (0..200)
            .map(|i| sampler.sample("fraud-team", "set_alias", t0 + i))
            .filter(|s| *s != Sample::Skip)
            .collect();
        assert_eq!(
            recorded,
            [Sample::Record { skipped_before: 0 }; 3],
            "three a minute"
        );
        // Another credential, or another route, has its own allowance.
        assert_eq!(
            sampler.sample("pricing-team", "set_alias", t0 + 300),
            Sample::Record { skipped_before: 0 }
        );
        assert_eq!(
            sampler.sample("fraud-team", "put_version", t0 + 300),
            Sample::Record { skipped_before: 0 }
        );
        // The next minute: the first record tells how many were left out.
        assert_eq!(
            sampler.sample("fraud-team", "set_alias", t0 + 60_000),
            Sample::Record {
                skipped_before: 197
            }
        );
        assert_eq!(
            sampler.sample("fraud-team", "set_alias", t0 + 60_001),
            Sample::Record { skipped_before: 0 }
        );
    }

    #[test]
    fn the_keys_remembered_are_bounded() {
        let sampler = RefusalSampler::new(1);
        for i in 0..MAX_KEYS {
            sampler.sample(&format!("actor-{i}"), "r", 0);
        }
        assert_eq!(
            sampler.sample("one-more", "r", 0),
            Sample::Skip,
            "full within the minute"
        );
        assert_eq!(
            sampler.sample("one-more", "r", 60_000),
            Sample::Record { skipped_before: 0 },
            "earlier minutes are forgotten"
        );
        assert!(sampler.windows.lock().unwrap().len() <= 1);
    }
}
