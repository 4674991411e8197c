//! Picking a weighted alias's version. With a routing key the pick is weighted rendezvous hashing:
//! every target scores the key (`-ln(u) / weight`, `u` from SHA-256 of model, alias, key and the
//! version), and the lowest score wins. So:
//! - the same key lands on the same version on every host of a fleet (SHA-256 is the same everywhere,
//!   unlike a seeded hasher), and each version gets its weight's share of keys;
//! - changing one version's weight moves keys only to or from that version; adding or removing a
//!   version moves only the keys it takes or gave up;
//! - a target not ready here simply does not compete: its keys go to the version that scores next
//!   best for each, the same on every request, and every other key stays where it was.
//!
//! A request without a key is placed at random by weight.

use sha2::{Digest, Sha256};

use super::super::{Payload, RequestKeys};
use crate::registry::{heaviest, SplitRoute};

/// Which of `alias`'s `targets` (name, weight, and the version when it serves here) the request
/// with the routing key `key()` goes to; `None` only when none serves.
pub fn pick<'a, T>(
    model: &str,
    alias: &str,
    targets: &'a [(String, u32, Option<T>)],
    key: impl FnOnce() -> Option<String>,
) -> Option<&'a T> {
    let ready = targets
        .iter()
        .filter_map(|(name, w, v)| Some((name.as_str(), *w, v.as_ref()?)))
        .filter(|(_, w, _)| *w > 0);
    let chosen = match key() {
        Some(key) => ready
            .map(|(name, w, v)| (score(model, alias, &key, name, w), v))
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, v)| v),
        None => {
            let ready: Vec<_> = ready.collect();
            let total: u64 = ready.iter().map(|(_, w, _)| *w as u64).sum();
            let mut at = fastrand::u64(..total.max(1));
            ready
                .into_iter()
                .find(|(_, w, _)| {
                    let here = at < *w as u64;
                    at = at.saturating_sub(*w as u64);
                    here
                })
                .map(|(_, _, v)| v)
        }
    };
    chosen.or_else(|| heaviest(targets))
}

/// The routing key of a request: the caller's (a header), else the split's field of a feature-style
/// body. Strings are taken as they are, other JSON values as their JSON text.
pub fn routing_key(
    keys: &RequestKeys,
    payload: Option<&Payload>,
    split: &SplitRoute,
) -> Option<String> {
    if let Some(key) = &keys.routing_key {
        return Some(key.clone());
    }
    let (Some(field), Some(Payload::Features(body))) = (&split.routing_key_field, payload) else {
        return None;
    };
    let body: serde_json::Value = serde_json::from_str(body).ok()?;
    match body.pointer(field)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// The key's score for one target (lowest wins): `-ln(u) / weight` with `u` uniform in (0, 1]
/// from SHA-256, so a target wins a key with probability weight / total.
fn score(model: &str, alias: &str, key: &str, version: &str, weight: u32) -> f64 {
    let mut h = Sha256::new();
    for part in [model, alias, key, version] {
        // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    let bits = u64::from_le_bytes(h.finalize()[..8].try_into().expect("8 bytes"));
    // 53 bits, in (0, 1]: never 0, whose logarithm has no value.
    let u = ((bits >> 11) + 1) as f64 / (1u64 << 53) as f64;
    -u.ln() / weight as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A split's targets of `weights`, with the versions in `not_ready` not ready here (a ready
    /// target is its version's name).
    type Targets = Vec<(String, u32, Option<String>)>;

    fn split(weights: &[(&str, u32)], not_ready: &[&str]) -> Targets {
        weights
            .iter()
            .map(|(v, w)| {
                (
                    v.to_string(),
                    *w,
                    (!not_ready.contains(v)).then(|| v.to_string()),
                )
            })
            .collect()
    }

    fn pick_in(model: &str, targets: &Targets, key: Option<&str>) -> String {
        pick(model, "production", targets, || key.map(str::to_owned))
            .expect("a ready target")
            .clone()
    }

    fn on(route: &Targets, key: &str) -> String {
        pick_in("m", route, Some(key))
    }

    #[test]
    fn ninety_ten_over_ten_thousand_keys_is_within_two_points() {
        let route = split(&[("3", 90), ("4", 10)], &[]);
        let canary = (0..10_000)
            .filter(|i| on(&route, &format!("rider-{i}")) == "4")
            .count();
        assert!(
            (800..=1200).contains(&canary),
            "the canary got {canary} of 10,000 keys"
        );
    }

    #[test]
    fn changing_one_weight_moves_keys_only_to_or_from_that_version() {
        // Weights are relative: a's share goes from 10 % to about 18 %, at the others' expense.
        let before = split(&[("a", 10), ("b", 10), ("c", 80)], &[]);
        let after = split(&[("a", 22), ("b", 10), ("c", 80)], &[]);
        let mut moved = 0;
        for i in 0..5_000 {
            let k = format!("k{i}");
            let (x, y) = (on(&before, &k), on(&after, &k));
            if x != y {
                moved += 1;
                assert_eq!(
                    y, "a",
                    "key {k} moved from {x} to {y}, not to the version that grew"
                );
            }
        }
        // About 9 % of keys change hands.
        assert!((250..=700).contains(&moved), "{moved} keys moved");
        // A canary's usual step: both weights move, and keys only move to the canary.
        let (ten, twenty) = (
            split(&[("3", 90), ("4", 10)], &[]),
            split(&[("3", 80), ("4", 20)], &[]),
        );
        for i in 0..5_000 {
            let k = format!("k{i}");
            if on(&ten, &k) == "4" {
                assert_eq!(
                    on(&twenty, &k),
                    "4",
                    "a canary key went back to the old version"
                );
            }
        }
    }

    #[test]
    fn a_target_not_ready_here_gets_no_keys_and_no_other_key_moves() {
        let all = split(&[("3", 50), ("4", 40), ("5", 10)], &[]);
        let partial = split(&[("3", 50), ("4", 40), ("5", 10)], &["4"]);
        let mut rehomed = 0;
        for i in 0..3_000 {
            let k = format!("k{i}");
            let (everywhere, here) = (on(&all, &k), on(&partial, &k));
            assert_ne!(here, "4", "a key went to a version not ready here");
            if everywhere == "4" {
                assert_eq!(here, on(&partial, &k), "a re-homed key is not sticky");
                rehomed += 1;
            } else {
                assert_eq!(here, everywhere, "key {k} left a ready version");
            }
        }
        assert!(rehomed > 900, "{rehomed} keys of version 4");
        // Without a key: only ready versions, by weight (5 has 10 of the 60 ready).
        let keyless = (0..2_000)
            .filter(|_| pick_in("m", &partial, None) == "5")
            .count();
        assert!(
            (200..470).contains(&keyless),
            "{keyless} of 2000 keyless requests"
        );
        // A weight-0 version gets nothing.
        let zero = split(&[("3", 1), ("4", 0)], &[]);
        assert!((0..500).all(|i| on(&zero, &format!("z{i}")) == "3"));
    }

    #[test]
    fn keys_spread_differently_per_model() {
        let route = split(&[("a", 50), ("b", 50)], &[]);
        let same = (0..2_000)
            .filter(|i| {
                let k = format!("k{i}");
                pick_in("m1", &route, Some(&k)) == pick_in("m2", &route, Some(&k))
            })
            .count();
        assert!((800..1200).contains(&same), "{same} of 2000 agree");
    }
}
