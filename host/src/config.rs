//! The host's configuration file (`ferry serve --config FILE`, TOML):
//!
//! ```toml
//! [host]
//! max_memory_mib = 4096      # cap on any model's linear memory
//! total_instances = 256      # instance slots across all models
//! fuel = false               # count fuel (needed for per-model fuel limits)
//! max_body_bytes = 67108864  # largest HTTP request body
//! require_self_tests = true  # a version that ships no self-tests does not go live
//! max_upload_bytes = 4294967296
//!
//! [models.default]           # limits for every model without its own section
//! deadline_ms = 1000
//!
//! [models.digits-onnx]       # limits for one model (fields as in runtime::ModelLimits)
//! max_instances = 2
//! memory_bytes = 536870912
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

use crate::runtime::ModelLimits;

/// Host-wide settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostSection {
    /// Cap on any model's linear memory, in MiB.
    pub max_memory_mib: u64,
    /// Instance slots across all models.
    pub total_instances: u32,
    /// Count fuel, so per-model fuel limits apply.
    pub fuel: bool,
    /// Largest HTTP request body, in bytes.
    pub max_body_bytes: usize,
    /// Refuse to serve a version that ships no self-tests.
    pub require_self_tests: bool,
    /// Largest uploaded file (component, weights, config or tests), in bytes.
    pub max_upload_bytes: u64,
}

impl Default for HostSection {
    fn default() -> Self {
        HostSection {
            max_memory_mib: 4096,
            total_instances: 256,
            fuel: false,
            max_body_bytes: 64 << 20,
            require_self_tests: true,
            max_upload_bytes: 4 << 30,
        }
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostConfig {
    /// Host-wide settings.
    pub host: HostSection,
    /// Limits by model name; `default` applies to models without a section.
    pub models: BTreeMap<String, ModelLimits>,
}

impl HostConfig {
    /// Reads a TOML configuration file.
    pub fn load(path: &Path) -> anyhow::Result<HostConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text)
            .with_context(|| format!("{} is not a valid Ferry configuration", path.display()))
    }

    /// The limits for `model`: its own section, else `[models.default]`, else the built-in defaults.
    pub fn limits_for(&self, model: &str) -> ModelLimits {
        self.models
            .get(model)
            .or_else(|| self.models.get("default"))
            .cloned()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_sections_override_the_default_section() {
        let config: HostConfig = toml::from_str(
            "[host]\nfuel = true\n[models.default]\ndeadline_ms = 50\n[models.digits-onnx]\nmax_instances = 2\n",
        )
        .unwrap();
        assert!(config.host.fuel);
        assert_eq!(config.limits_for("fraud").deadline_ms, 50);
        assert_eq!(config.limits_for("digits-onnx").max_instances, 2);
        assert!(toml::from_str::<HostConfig>("[host]\nfuell = true\n").is_err());
    }
}
