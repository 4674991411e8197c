//! What a model's traffic policy says, as the store keeps it: where an alias points (one version, or
//! a weighted split across versions), which candidate version shadows the model, and what share of
//! requests the prediction log keeps. The behaviour — picking a split's version, running shadow
//! copies, writing the log — lives in `serving::traffic`; this is the data every host reads alike.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where an alias points. In the store a plain target is the version's name (as it always was), a
/// weighted one an object: `{"split": {"3": 90, "4": 10}, "routing_key_field": "/features/rider_id"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AliasTarget {
    /// Every request goes to this version.
    Version(String),
    /// Requests are spread over versions by weight, sticky per routing key.
    Split(Split),
}

/// A weighted alias.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Split {
    /// Version → weight (any positive integers; shares are weight / sum).
    pub split: BTreeMap<String, u32>,
    /// Where a feature-style request carries its routing key when it has no `ferry-routing-key`
    /// header: a JSON pointer into the body (RFC 6901, e.g. `/features/rider_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_key_field: Option<String>,
}

/// Most versions one alias may split over.
pub const MAX_SPLIT: usize = 16;

impl AliasTarget {
    /// A target pointing at one version.
    pub fn version(v: impl Into<String>) -> AliasTarget {
        AliasTarget::Version(v.into())
    }

    /// Every version the target may send requests to (weight 0 included: it is still named).
    pub fn versions(&self) -> Vec<&str> {
        match self {
            AliasTarget::Version(v) => vec![v.as_str()],
            AliasTarget::Split(s) => s.split.keys().map(String::as_str).collect(),
        }
    }

    /// The versions that get a share (weight above 0).
    pub fn weighted_versions(&self) -> Vec<&str> {
        match self {
            AliasTarget::Version(v) => vec![v.as_str()],
            AliasTarget::Split(s) => s
                .split
                .iter()
                .filter(|(_, w)| **w > 0)
                .map(|(v, _)| v.as_str())
                .collect(),
        }
    }

    /// True when the target names `version`.
    pub fn names(&self, version: &str) -> bool {
        self.versions().contains(&version)
    }

    /// Checks a target a user sent: names, weights, size, the routing key field.
    pub fn check(&self) -> Result<(), String> {
        let AliasTarget::Split(s) = self else {
            return Ok(());
        };
        if s.split.is_empty() {
            return Err("a split names at least one version".into());
        }
        if s.split.len() > MAX_SPLIT {
            return Err(format!(
                "a split names at most {MAX_SPLIT} versions, this one {}",
                s.split.len()
            ));
        }
        if s.split.values().all(|w| *w == 0) {
            return Err("a split needs a version with a weight above 0".into());
        }
        if s.split.values().map(|w| *w as u64).sum::<u64>() > u32::MAX as u64 {
            return Err("the split's weights add up to more than 4294967295".into());
        }
        if let Some(field) = &s.routing_key_field {
            if !field.is_empty() && !field.starts_with('/') {
                return Err(format!(
                    "routing_key_field `{field}` is not a JSON pointer (it starts with `/`, e.g. `/features/rider_id`)"
                ));
            }
        }
        Ok(())
    }

    /// A one-version split is that version.
    pub fn simplified(self) -> AliasTarget {
        match self {
            AliasTarget::Split(s) if s.split.len() == 1 && s.routing_key_field.is_none() => {
                AliasTarget::Version(s.split.into_keys().next().expect("one entry"))
            }
            other => other,
        }
    }
}

impl std::fmt::Display for AliasTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AliasTarget::Version(v) => f.write_str(v),
            AliasTarget::Split(s) => {
                let parts: Vec<String> = s.split.iter().map(|(v, w)| format!("{v}:{w}")).collect();
                write!(f, "split({})", parts.join(","))
            }
        }
    }
}

/// A model's traffic policy beyond its aliases (`models/<model>/traffic.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrafficPolicy {
    /// A candidate version that gets a copy of a share of the model's requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<Shadow>,
    /// The prediction log's share of the model's requests.
    pub log: LogPolicy,
}

/// Shadow traffic: copies of requests run on `version` off the request path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shadow {
    /// The candidate.
    pub version: String,
    /// Share of requests copied, 0–100.
    pub percent: Percent,
}

/// What the prediction log keeps of a model.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogPolicy {
    /// Share of requests logged, 0–100.
    pub percent: Percent,
}

/// A percentage kept as hundredths of a percent, so policies compare exactly (0.01 % steps).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Percent(u32);

impl Percent {
    /// 100 %.
    pub const ALL: Percent = Percent(10_000);

    /// From a percentage, refused outside 0–100.
    pub fn new(percent: f64) -> Result<Percent, String> {
        if !(0.0..=100.0).contains(&percent) {
            return Err(format!("a percentage is between 0 and 100, not {percent}"));
        }
        Ok(Percent((percent * 100.0).round() as u32))
    }

    /// As a percentage.
    pub fn get(self) -> f64 {
        self.0 as f64 / 100.0
    }

    /// True for a draw in `0..10_000` that falls in the share.
    pub fn takes(self, draw: u32) -> bool {
        draw < self.0
    }

    /// True when nothing is taken.
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl Serialize for Percent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.get())
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Percent::new(f64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_target_is_stored_as_the_version_name_and_a_split_as_an_object() {
        let plain: AliasTarget = serde_json::from_str("\"3\"").unwrap();
        assert_eq!(plain, AliasTarget::version("3"));
        assert_eq!(serde_json::to_string(&plain).unwrap(), "\"3\"");
        let split: AliasTarget = serde_json::from_str(r#"{"split": {"3": 90, "4": 10}}"#).unwrap();
        assert_eq!(split.versions(), ["3", "4"]);
        assert!(split.check().is_ok());
        assert_eq!(split.to_string(), "split(3:90,4:10)");
        let bad: AliasTarget = serde_json::from_str(r#"{"split": {"3": 0}}"#).unwrap();
        assert!(bad.check().unwrap_err().contains("weight above 0"));
        let field: AliasTarget =
            serde_json::from_str(r#"{"split": {"3": 1}, "routing_key_field": "rider"}"#).unwrap();
        assert!(field.check().unwrap_err().contains("JSON pointer"));
        let one: AliasTarget = serde_json::from_str(r#"{"split": {"3": 5}}"#).unwrap();
        assert_eq!(one.simplified(), AliasTarget::version("3"));
    }

    #[test]
    fn percentages_are_bounded_and_exact() {
        let p: TrafficPolicy = serde_json::from_str(
            r#"{"shadow": {"version": "4", "percent": 12.5}, "log": {"percent": 100}}"#,
        )
        .unwrap();
        assert_eq!(p.shadow.as_ref().unwrap().percent.get(), 12.5);
        assert!(p.log.percent.takes(9_999));
        assert!(serde_json::from_str::<TrafficPolicy>(r#"{"log": {"percent": 101}}"#).is_err());
        assert!(serde_json::from_str::<TrafficPolicy>(r#"{"logs": {}}"#).is_err());
        assert_eq!(TrafficPolicy::default().log.percent, Percent::default());
    }
}
