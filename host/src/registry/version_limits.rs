//! The limits a version runs under: the one place where the limits that come with a version
//! (`ferry add --limits`, the upload's `limits` part) meet the operator's configuration.
//!
//! The operator's limits for the model (`[models.NAME]`, else `[models.default]`, else the built-in
//! defaults, with the host's `cpu_share` for a model that names none) are the ceiling. A version may
//! ask for less on any field, never for more: each field it names is lowered to at most the
//! operator's, and each field it leaves out is the operator's. Values no sane version asks for — a
//! deadline or wait longer than a day, a CPU share outside (0, 1] — are refused when the version is
//! written; a store written by others that holds them anyway gets the operator's ceiling, never a
//! panic. The host-wide memory cap applies after this ([`ModelLimits::clamped`]).

use serde::{Deserialize, Serialize};

use crate::config::HostConfig;
use crate::runtime::ModelLimits;

/// Longest deadline, `init` deadline or queue wait, in milliseconds (a day): longer ones are refused
/// from a version and cut to this from the operator's configuration (an `Instant` that far out
/// overflows).
pub const MAX_DURATION_MS: u64 = 24 * 3600 * 1000;

/// Limits a version asks for: the fields of [`ModelLimits`], each optional. What the store's
/// manifests always held (every field named) reads as a request for all of them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct VersionLimits {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_instances: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_instances: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_queue: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_input_bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output_bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_log_bytes_per_call: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_deadline_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graph_threads: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_share: Option<f64>,
    /// A version may batch less than the operator allows (0 or 1: not at all), never more.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_batch_size: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_queue_delay_us: Option<u64>,
}

impl VersionLimits {
    /// Reads limits a version comes with (JSON, the fields of a model's limits) and checks them.
    pub fn parse(json: &[u8]) -> Result<VersionLimits, String> {
        let what = |e: &dyn std::fmt::Display| {
            format!("limits are a JSON object of a model's limit fields (e.g. {{\"deadline_ms\": 200}}): {e}")
        };
        let value: serde_json::Value = serde_json::from_slice(json).map_err(|e| what(&e))?;
        if !value.is_object() {
            return Err(what(&"not an object"));
        }
        let limits: VersionLimits = serde_json::from_value(value).map_err(|e| what(&e))?;
        limits.check()?;
        Ok(limits)
    }

    /// Refuses values no version may ask for.
    pub fn check(&self) -> Result<(), String> {
        for (name, ms) in [
            ("deadline_ms", self.deadline_ms),
            ("init_deadline_ms", self.init_deadline_ms),
            ("queue_timeout_ms", self.queue_timeout_ms),
        ] {
            if let Some(ms) = ms.filter(|ms| *ms > MAX_DURATION_MS) {
                return Err(format!(
                    "limit {name} = {ms} is out of range: at most {MAX_DURATION_MS} (a day)"
                ));
            }
        }
        if let Some(share) = self.cpu_share {
            if !(share.is_finite() && share > 0.0 && share <= 1.0) {
                return Err(format!(
                    "limit cpu_share = {share} is out of range: above 0, at most 1"
                ));
            }
        }
        Ok(())
    }
}

/// The limits `model`'s version runs under on a host with `config`, given what the version asks
/// for (see the module docs).
pub fn effective_limits(
    config: &HostConfig,
    model: &str,
    asked: Option<&VersionLimits>,
) -> ModelLimits {
    clamp(&config.limits_for(model), config.host.cpu_share, asked)
}

/// `operator`'s limits, lowered where `asked` asks for less; `host_cpu_share` is the share of a
/// model whose limits name none.
pub fn clamp(
    operator: &ModelLimits,
    host_cpu_share: f64,
    asked: Option<&VersionLimits>,
) -> ModelLimits {
    let mut out = operator.clone();
    for ms in [
        &mut out.deadline_ms,
        &mut out.init_deadline_ms,
        &mut out.queue_timeout_ms,
    ] {
        *ms = (*ms).min(MAX_DURATION_MS);
    }
    let Some(asked) = asked else {
        return out;
    };
    fn lower<T: Ord + Copy>(ceiling: &mut T, asked: Option<T>) {
        if let Some(asked) = asked {
            *ceiling = asked.min(*ceiling);
        }
    }
    lower(&mut out.memory_bytes, asked.memory_bytes);
    lower(&mut out.deadline_ms, asked.deadline_ms);
    lower(&mut out.max_instances, asked.max_instances);
    lower(&mut out.min_instances, asked.min_instances);
    lower(&mut out.queue_timeout_ms, asked.queue_timeout_ms);
    lower(&mut out.max_queue, asked.max_queue);
    lower(&mut out.max_input_bytes, asked.max_input_bytes);
    lower(&mut out.max_output_bytes, asked.max_output_bytes);
    lower(
        &mut out.max_log_bytes_per_call,
        asked.max_log_bytes_per_call,
    );
    lower(&mut out.init_deadline_ms, asked.init_deadline_ms);
    lower(&mut out.graph_threads, asked.graph_threads);
    lower(&mut out.max_batch_size, asked.max_batch_size);
    lower(&mut out.max_queue_delay_us, asked.max_queue_delay_us);
    // No fuel limit is the most; a version may ask to be counted.
    out.fuel = match (operator.fuel, asked.fuel) {
        (Some(ceiling), Some(asked)) => Some(asked.min(ceiling)),
        (ceiling, asked) => ceiling.or(asked),
    };
    // A share that is not a number in (0, 1] asks for nothing (a store written by others may hold one).
    let asked_share = asked
        .cpu_share
        .filter(|s| s.is_finite() && *s > 0.0 && *s <= 1.0);
    if let Some(share) = asked_share {
        let ceiling = operator.cpu_share.unwrap_or(host_cpu_share);
        out.cpu_share = Some(if ceiling.is_finite() {
            share.min(ceiling)
        } else {
            share
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operator() -> ModelLimits {
        ModelLimits {
            memory_bytes: 64 << 20,
            deadline_ms: 500,
            fuel: Some(1_000_000),
            max_instances: 3,
            min_instances: 2,
            queue_timeout_ms: 50,
            max_queue: 16,
            max_input_bytes: 1 << 20,
            max_output_bytes: 2 << 20,
            max_log_bytes_per_call: 4096,
            init_deadline_ms: 10_000,
            graph_threads: 2,
            cpu_share: Some(0.2),
            max_batch_size: 8,
            max_queue_delay_us: 500,
        }
    }

    fn greedy() -> VersionLimits {
        VersionLimits {
            memory_bytes: Some(u64::MAX),
            deadline_ms: Some(MAX_DURATION_MS),
            fuel: Some(u64::MAX),
            max_instances: Some(usize::MAX),
            min_instances: Some(1000),
            queue_timeout_ms: Some(MAX_DURATION_MS),
            max_queue: Some(usize::MAX),
            max_input_bytes: Some(usize::MAX),
            max_output_bytes: Some(usize::MAX),
            max_log_bytes_per_call: Some(usize::MAX),
            init_deadline_ms: Some(MAX_DURATION_MS),
            graph_threads: Some(64),
            cpu_share: Some(1.0),
            max_batch_size: Some(usize::MAX),
            max_queue_delay_us: Some(u64::MAX),
        }
    }

    fn modest() -> VersionLimits {
        VersionLimits {
            memory_bytes: Some(32 << 20),
            deadline_ms: Some(100),
            fuel: Some(10),
            max_instances: Some(1),
            min_instances: Some(1),
            queue_timeout_ms: Some(5),
            max_queue: Some(2),
            max_input_bytes: Some(100),
            max_output_bytes: Some(200),
            max_log_bytes_per_call: Some(10),
            init_deadline_ms: Some(1000),
            graph_threads: Some(1),
            cpu_share: Some(0.05),
            max_batch_size: Some(2),
            max_queue_delay_us: Some(100),
        }
    }

    /// Each field of `asked` alone, over the operator's limits.
    fn one_field(field: &str, from: &VersionLimits) -> ModelLimits {
        let mut json = serde_json::to_value(from).unwrap();
        let value = json[field].take();
        let mut only = serde_json::Map::new();
        only.insert(field.to_owned(), value);
        let only: VersionLimits = serde_json::from_value(only.into()).unwrap();
        clamp(&operator(), 0.1, Some(&only))
    }

    #[test]
    fn asking_for_more_gets_the_operators_limit_on_every_field() {
        assert_eq!(clamp(&operator(), 0.1, Some(&greedy())), operator());
    }

    #[test]
    fn asking_for_less_gets_less_on_every_field() {
        let got = clamp(&operator(), 0.1, Some(&modest()));
        let m = modest();
        assert_eq!(got.memory_bytes, m.memory_bytes.unwrap());
        assert_eq!(got.deadline_ms, m.deadline_ms.unwrap());
        assert_eq!(got.fuel, m.fuel);
        assert_eq!(got.max_instances, m.max_instances.unwrap());
        assert_eq!(got.min_instances, m.min_instances.unwrap());
        assert_eq!(got.queue_timeout_ms, m.queue_timeout_ms.unwrap());
        assert_eq!(got.max_queue, m.max_queue.unwrap());
        assert_eq!(got.max_input_bytes, m.max_input_bytes.unwrap());
        assert_eq!(got.max_output_bytes, m.max_output_bytes.unwrap());
        assert_eq!(
            got.max_log_bytes_per_call,
            m.max_log_bytes_per_call.unwrap()
        );
        assert_eq!(got.init_deadline_ms, m.init_deadline_ms.unwrap());
        assert_eq!(got.graph_threads, m.graph_threads.unwrap());
        assert_eq!(got.cpu_share, m.cpu_share);
    }

    #[test]
    fn each_field_alone_is_clamped_and_leaves_the_others_to_the_operator() {
        let fields = serde_json::to_value(operator()).unwrap();
        for field in fields.as_object().unwrap().keys() {
            let more = one_field(field, &greedy());
            assert_eq!(more, operator(), "{field}: asking for more changes nothing");
            let less = serde_json::to_value(one_field(field, &modest())).unwrap();
            let (op, modest) = (
                serde_json::to_value(operator()).unwrap(),
                serde_json::to_value(modest()).unwrap(),
            );
            for (other, value) in less.as_object().unwrap() {
                let want = if other == field {
                    &modest[other]
                } else {
                    &op[other]
                };
                assert_eq!(value, want, "{field} asked less: {other}");
            }
        }
    }

    #[test]
    fn fields_left_out_are_the_operators() {
        assert_eq!(
            clamp(&operator(), 0.1, Some(&VersionLimits::default())),
            operator()
        );
        assert_eq!(clamp(&operator(), 0.1, None), operator());
    }

    #[test]
    fn fuel_and_cpu_share_left_open_by_the_operator() {
        let open = ModelLimits {
            fuel: None,
            cpu_share: None,
            ..operator()
        };
        let asked = VersionLimits {
            fuel: Some(5),
            cpu_share: Some(0.9),
            ..Default::default()
        };
        let got = clamp(&open, 0.1, Some(&asked));
        assert_eq!(got.fuel, Some(5), "asking to be counted is asking for less");
        assert_eq!(
            got.cpu_share,
            Some(0.1),
            "the host's default share is the ceiling"
        );
        assert_eq!(clamp(&open, 0.1, None).cpu_share, None);
    }

    #[test]
    fn extreme_values_are_refused_not_panics() {
        for doc in [
            r#"{"deadline_ms": 18446744073709551615}"#,
            r#"{"init_deadline_ms": 86400001}"#,
            r#"{"queue_timeout_ms": 18446744073709551615}"#,
            r#"{"cpu_share": 0}"#,
            r#"{"cpu_share": -1}"#,
            r#"{"cpu_share": 1.5}"#,
            r#"{"deadline_ms": -1}"#,
            r#"{"memory_mb": 5}"#,
            r#"[]"#,
        ] {
            let err = VersionLimits::parse(doc.as_bytes()).unwrap_err();
            assert!(!err.is_empty(), "{doc}");
        }
        let err = VersionLimits::parse(br#"{"deadline_ms": 18446744073709551615}"#).unwrap_err();
        assert!(err.contains("deadline_ms"), "{err}");
        assert!(VersionLimits::parse(br#"{"deadline_ms": 86400000, "fuel": null}"#).is_ok());
    }

    #[test]
    fn extreme_values_already_in_a_store_or_a_config_become_sane() {
        // Written by others, unchecked: the operator's ceiling applies, and the deadline becomes an
        // Instant without overflow.
        let asked = VersionLimits {
            deadline_ms: Some(u64::MAX),
            cpu_share: Some(f64::NAN),
            ..Default::default()
        };
        let got = clamp(&operator(), 0.1, Some(&asked));
        assert_eq!(got.deadline_ms, 500);
        assert_eq!(got.cpu_share, Some(0.2));
        let wild = ModelLimits {
            deadline_ms: u64::MAX,
            init_deadline_ms: u64::MAX,
            queue_timeout_ms: u64::MAX,
            ..operator()
        };
        let got = clamp(&wild, 0.1, None);
        assert_eq!(got.deadline_ms, MAX_DURATION_MS);
        let _ =
            std::time::Instant::now() + got.deadline() + got.init_deadline() + got.queue_timeout();
    }

    #[test]
    fn every_model_limit_can_be_asked_for_and_old_manifests_still_read() {
        // A manifest written before versions asked field by field holds every field of ModelLimits;
        // a field added to ModelLimits must be added here too (and to `clamp`).
        let full = serde_json::to_vec(&ModelLimits::default()).unwrap();
        let read: VersionLimits = serde_json::from_slice(&full).unwrap();
        let back = serde_json::to_value(&read).unwrap();
        let model_fields = serde_json::to_value(ModelLimits::default()).unwrap();
        for (field, value) in model_fields.as_object().unwrap() {
            if !value.is_null() {
                assert_eq!(&back[field], value, "{field}");
            }
        }
        assert_eq!(
            clamp(&ModelLimits::default(), 0.1, Some(&read)),
            ModelLimits::default()
        );
    }

    #[test]
    fn the_models_section_is_the_ceiling() {
        let config: HostConfig = toml::from_str(
            "[host]\ncpu_share = 0.3\n[models.default]\ndeadline_ms = 50\n[models.fraud]\ndeadline_ms = 20\n",
        )
        .unwrap();
        let asked = VersionLimits {
            deadline_ms: Some(1000),
            cpu_share: Some(0.9),
            ..Default::default()
        };
        assert_eq!(
            effective_limits(&config, "fraud", Some(&asked)).deadline_ms,
            20
        );
        let other = effective_limits(&config, "eta", Some(&asked));
        assert_eq!(other.deadline_ms, 50);
        assert_eq!(other.cpu_share, Some(0.3));
    }
}
