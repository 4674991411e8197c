//! Picking a weighted alias's version. With a routing key the pick is consistent hashing: the key
//! (with the model and alias) hashes to a point in `[0, total weight)`, and the targets own
//! consecutive ranges in the order of their names. The same key lands on the same version on every
//! host of a fleet (SHA-256 is the same everywhere, unlike a seeded hasher), and changing the weights
//! moves only the keys in the ranges that changed hands. A key whose range belongs to a target not
//! ready here is placed again, the same way, among the ready ones (so it is sticky there too). A
//! request without a key is placed at random by weight.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::super::{Caller, Payload};
use crate::registry::{ModelVersion, SplitRoute};

/// The version of `split` that the request with the routing key `key()` goes to.
pub fn pick(
    model: &str,
    split: &SplitRoute,
    key: impl FnOnce() -> Option<String>,
) -> Arc<ModelVersion> {
    let all: Vec<(&str, u32)> = split
        .targets
        .iter()
        .map(|(v, w, _)| (v.as_str(), *w))
        .collect();
    let ready: Vec<(&str, u32)> = split
        .targets
        .iter()
        .filter(|(_, _, v)| v.is_some())
        .map(|(v, w, _)| (v.as_str(), *w))
        .collect();
    let chosen = match key() {
        Some(key) => {
            let first = place(&all, point(model, &split.alias, &key, 0));
            if split
                .targets
                .iter()
                .any(|(v, _, r)| *v == first && r.is_some())
            {
                first
            } else {
                place(&ready, point(model, &split.alias, &key, 1))
            }
        }
        None => place(&ready, fastrand::u64(..)),
    };
    split
        .targets
        .iter()
        .find(|(v, _, _)| v == chosen)
        .and_then(|(_, _, v)| v.clone())
        .or_else(|| split.heaviest().cloned())
        .expect("a split route has a ready target")
}

/// The routing key of a request: the caller's (a header), else the split's field of a feature-style
/// body. Strings are taken as they are, other JSON values as their JSON text.
pub fn routing_key(caller: &Caller, payload: &Payload, split: &SplitRoute) -> Option<String> {
    if let Some(key) = &caller.routing_key {
        return Some(key.clone());
    }
    let (Some(field), Payload::Features(body)) = (&split.routing_key_field, payload) else {
        return None;
    };
    let body: serde_json::Value = serde_json::from_str(body).ok()?;
    match body.pointer(field)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// Where a key falls, as 64 uniformly spread bits; `round` 1 is the second placement.
fn point(model: &str, alias: &str, key: &str, round: u8) -> u64 {
    let mut h = Sha256::new();
    for part in [model.as_bytes(), alias.as_bytes(), key.as_bytes()] {
        // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.update([round]);
    u64::from_le_bytes(h.finalize()[..8].try_into().expect("8 bytes"))
}

/// The target whose range holds `point` scaled to the total weight.
fn place<'a>(targets: &[(&'a str, u32)], point: u64) -> &'a str {
    let total: u64 = targets.iter().map(|(_, w)| *w as u64).sum();
    if total == 0 {
        return targets.first().map_or("", |(v, _)| v);
    }
    let mut at = ((point as u128 * total as u128) >> 64) as u64;
    for (v, w) in targets {
        if at < *w as u64 {
            return v;
        }
        at -= *w as u64;
    }
    targets.last().map_or("", |(v, _)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(targets: &[(&str, u32)], keys: impl Iterator<Item = String>, version: &str) -> f64 {
        let mut n = 0;
        let mut hits = 0;
        for k in keys {
            n += 1;
            if place(targets, point("m", "production", &k, 0)) == version {
                hits += 1;
            }
        }
        hits as f64 / n as f64
    }

    #[test]
    fn ninety_ten_over_ten_thousand_keys_is_within_two_points() {
        let targets = [("3", 90), ("4", 10)];
        let keys = (0..10_000).map(|i| format!("rider-{i}"));
        let canary = share(&targets, keys, "4");
        assert!((canary - 0.10).abs() <= 0.02, "canary got {canary}");
    }

    #[test]
    fn changing_weights_moves_only_the_keys_of_the_ranges_that_changed() {
        let before = [("3", 90), ("4", 10)];
        let after = [("3", 80), ("4", 20)];
        for i in 0..5_000 {
            let p = point("m", "production", &format!("k{i}"), 0);
            if place(&before, p) == "4" {
                assert_eq!(
                    place(&after, p),
                    "4",
                    "a canary key went back to the old version"
                );
            }
        }
    }

    fn version(name: &str) -> Arc<ModelVersion> {
        let manifest = crate::registry::VersionManifest {
            model: "m".into(),
            version: name.into(),
            sequence: 1,
            component_sha256: "00".repeat(32),
            weights_sha256: None,
            config_sha256: None,
            tests_sha256: None,
            graphs: Default::default(),
            limits: None,
        };
        Arc::new(ModelVersion::listed(
            manifest,
            crate::registry::VersionState::Ready,
        ))
    }

    #[test]
    fn a_target_not_ready_here_gets_no_keys_and_its_keys_stay_put_elsewhere() {
        let route = |four_ready: bool| SplitRoute {
            alias: "production".into(),
            targets: vec![
                ("3".into(), 50, Some(version("3"))),
                ("4".into(), 40, four_ready.then(|| version("4"))),
                ("5".into(), 10, Some(version("5"))),
            ],
            routing_key_field: None,
        };
        let (all, partial) = (route(true), route(false));
        let mut moved_home = 0;
        for i in 0..3_000 {
            let key = || Some(format!("k{i}"));
            let everywhere = pick("m", &all, key).manifest.version.clone();
            let here = pick("m", &partial, key).manifest.version.clone();
            assert_ne!(here, "4", "a key went to a version not ready here");
            if everywhere != "4" {
                assert_eq!(here, everywhere, "key k{i} left a ready version");
            } else {
                // Placed again among the ready ones, the same way every time.
                assert_eq!(here, pick("m", &partial, key).manifest.version);
                moved_home += 1;
            }
        }
        assert!(moved_home > 900, "{moved_home} keys of version 4");
        // Without a key: only ready versions, by weight.
        let keyless = (0..2_000)
            .filter(|_| pick("m", &partial, || None).manifest.version == "5")
            .count();
        assert!(
            (200..470).contains(&keyless),
            "{keyless} of 2000 keyless requests on the 10-weight version"
        );
    }

    #[test]
    fn keys_spread_differently_per_model() {
        let targets = [("a", 50), ("b", 50)];
        let same = (0..2_000)
            .filter(|i| {
                let k = format!("k{i}");
                place(&targets, point("m1", "p", &k, 0)) == place(&targets, point("m2", "p", &k, 0))
            })
            .count();
        assert!((800..1200).contains(&same), "{same} of 2000 agree");
    }
}
