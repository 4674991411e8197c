//! The host's configuration file (`ferry serve --config FILE`, TOML):
//!
//! ```toml
//! [host]
//! max_memory_mib = 4096      # cap on any model's linear memory
//! total_instances = 256      # instance slots across all models
//! fuel = false               # count every model's fuel (models with a `fuel` limit count it anyway)
//! max_body_bytes = 67108864  # largest HTTP request body
//! require_self_tests = true  # a version that ships no self-tests does not go live
//! max_upload_bytes = 4294967296
//! deterministic = true       # canonical NaNs, deterministic relaxed SIMD: replays give the same bits
//! metrics_idle_timeout_s = 900  # a per-model /metrics series not updated this long is dropped (0: never)
//!
//! [store]                    # syncing with the store (see registry::sync)
//! sync_interval_ms = 1000    # between polls of the store's change record
//! heartbeat_interval_ms = 5000
//! gc_interval_s = 3600       # between garbage collections of unnamed blobs (0: never, from this host)
//! gc_grace_s = 3600          # an unnamed blob younger than this is kept (uploads in flight)
//! reconcile_interval_s = 60  # between listings of every model's files (a change nobody announced)
//! keep_versions = 10         # unaliased versions kept per model, newest first; older ones are deleted
//!                            # (0: keep all; see registry::retention)
//!
//! [cache]                    # the host-local cache directory (--cache-dir)
//! max_bytes = 21474836480    # downloaded blobs and compiled components, least recently used go first
//!
//! [predictions]              # the prediction log (each model's share: PUT /v1/models/{m}/traffic)
//! sink = "files"             # "files" (default for a local store: <store>/predictions), "store"
//!                            # (default for s3://: objects under predictions/), or "off"
//! dir = "/var/log/ferry"     # where "files" writes (default: <store>/predictions)
//! queue = 4096               # entries waiting for the writer; beyond it they are dropped and counted
//! max_queued_bytes = 268435456  # and the bytes of input and output they may hold
//! batch_records = 1000       # records per write (an object in the store)
//! flush_interval_ms = 1000   # longest a record waits to be written
//! max_file_bytes = 67108864  # a new file past this size
//! max_files = 64             # files kept, the oldest removed
//! sync_interval_ms = 1000    # "files" fsyncs at most this often (0: every batch), and when a file ends
//!
//! [shadow]                   # copies of requests for a candidate (PUT /v1/models/{m}/traffic)
//! workers = 2                # threads running copies (default: one per core), in the idle scheduling class
//! queue = 4                  # copies waiting for a worker; beyond it they are dropped and counted
//! nice = 10                  # their niceness where the idle scheduling class is refused
//!
//! [monitoring]               # live traffic against each version's training profile (drift)
//! sample_percent = 5.0       # requests sampled (each version with a profile); 0 turns it off
//! window_s = 3600            # drift is computed over this much recent traffic
//! window_parts = 12          # the window moves by this fraction of it
//! min_rows = 200             # rows a column needs in the window before its drift is reported
//! drift_threshold = 0.25     # a population stability index above it reads as drifting
//! queue = 1024               # samples waiting for the worker; beyond it they are dropped and counted
//!
//! [console]                  # the operator console at /ui (server::console)
//! history_interval_ms = 10000  # its charts' resolution: each model's traffic is read this often
//! history_points = 360       # and this many intervals are kept (an hour)
//!
//! [http]                     # what a connection and a request may cost (server::connections)
//! max_connections = 10000    # open connections (the open-files limit is raised to allow them)
//! header_timeout_ms = 30000  # to send a request's headers, and idle between keep-alive requests
//! body_min_bytes_per_s = 16384  # a body slower than this (after body_grace_ms = 10000) is cut off
//! write_stall_ms = 30000     # an answer the client does not read
//! request_timeout_ms = 60000 # a whole request (uploads: upload_timeout_ms = 3600000)
//! drain_timeout_ms = 30000   # on graceful stop, for requests in flight; then the log is flushed
//! max_request_bytes_in_flight = 268435456  # bytes held by inference requests, raw and decoded
//! request_bytes_wait_ms = 250  # wait for room in that budget, then 503 with Retry-After
//! max_management_body_bytes = 1048576  # JSON bodies of management routes
//!
//! [models.default]           # limits for every model without its own section
//! deadline_ms = 1000
//!
//! [models.digits-onnx]       # limits for one model (fields as in runtime::ModelLimits)
//! max_instances = 2
//! memory_bytes = 536870912
//! max_batch_size = 16        # dynamic batching: rows merged from concurrent requests (runtime::batching)
//! max_queue_delay_us = 2000  # longest the first request of a batch waits for others
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
    /// Count every model's fuel, for the cost reports (`usage.fuel`, `ferry_guest_fuel_total`); it
    /// costs each call about 5 %. A model with a `fuel` limit has its fuel counted either way, on an
    /// engine of its own, so the models without one do not pay for it.
    pub fuel: bool,
    /// Largest HTTP request body, in bytes.
    pub max_body_bytes: usize,
    /// Refuse to serve a version that ships no self-tests.
    pub require_self_tests: bool,
    /// Largest uploaded file (component, weights, config or tests), in bytes.
    pub max_upload_bytes: u64,
    /// Memory the routed versions may hold (shared snapshot images once, plus instances' private
    /// memory), in bytes; least recently used versions are evicted beyond it and come back on their
    /// next request. Unset: no budget.
    pub max_resident_bytes: Option<u64>,
    /// Versions compiled and initialised at once (default: one per core).
    pub parallel_loads: Option<usize>,
    /// Serve versions from snapshots of their initialised instance (off: every instance runs `init`).
    pub snapshots: bool,
    /// Canonical NaNs and deterministic relaxed SIMD, so a logged prediction replays bit for bit.
    pub deterministic: bool,
    /// The share of the host's cores a model's guest calls are guaranteed when the host is busy,
    /// for models whose limits name no `cpu_share` (0.1: a tenth). Past it a model runs only on
    /// idle capacity.
    pub cpu_share: f64,
    /// A per-model or per-shadow-pair `/metrics` series not updated for this long is dropped, in
    /// seconds (0: never), so the series of models long gone leave the scrape. (A version's own
    /// series go with the version, at once.) Gauges the host sets are set again at every scrape; a
    /// counter that stays idle this long starts again from zero when next counted (Prometheus reads
    /// that as a counter reset).
    pub metrics_idle_timeout_s: u64,
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
            max_resident_bytes: None,
            parallel_loads: None,
            snapshots: true,
            deterministic: true,
            cpu_share: 0.1,
            metrics_idle_timeout_s: 900,
        }
    }
}

/// Syncing with the store.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// Between polls of the store's change record, in milliseconds.
    pub sync_interval_ms: u64,
    /// Between publications of this host's status when nothing changed, in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// Between garbage collections of blobs no version names, in seconds (0: never, from this host).
    pub gc_interval_s: u64,
    /// How old an unnamed blob must be before it is collected, in seconds.
    pub gc_grace_s: u64,
    /// Between listings of every model's files, the safety net for changes the change record does
    /// not name, in seconds.
    pub reconcile_interval_s: u64,
    /// Versions of a model that no alias, split or shadow names, kept per model, newest (by
    /// sequence) first; older ones are deleted from the store — as `DELETE
    /// /v1/models/{m}/versions/{v}` would, audited as `retention` — and their blobs go with the
    /// next garbage collection. 0: keep every version. See `registry::retention`.
    pub keep_versions: usize,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            sync_interval_ms: 1000,
            heartbeat_interval_ms: 5000,
            gc_interval_s: 3600,
            gc_grace_s: 3600,
            reconcile_interval_s: 60,
            keep_versions: 10,
        }
    }
}

/// The host-local cache directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSection {
    /// Bound on downloaded blobs and compiled components together, in bytes.
    pub max_bytes: u64,
}

impl Default for CacheSection {
    fn default() -> Self {
        CacheSection {
            max_bytes: 20 << 30,
        }
    }
}

/// Where the prediction log goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PredictionSink {
    /// Rotated JSON-lines files.
    Files,
    /// Batched objects in the store.
    Store,
    /// Nowhere (sampled entries are dropped and counted).
    Off,
}

/// The prediction log.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PredictionsSection {
    /// Where records go (default: files for a local store, the store for an object store).
    pub sink: Option<PredictionSink>,
    /// The directory of the files sink (default: `<store>/predictions`).
    pub dir: Option<std::path::PathBuf>,
    /// Entries waiting for the writer.
    pub queue: usize,
    /// Bytes of input and output the waiting entries may hold.
    pub max_queued_bytes: u64,
    /// Records per write.
    pub batch_records: usize,
    /// Longest a record waits to be written, in milliseconds.
    pub flush_interval_ms: u64,
    /// A new file past this size, in bytes.
    pub max_file_bytes: u64,
    /// Files kept.
    pub max_files: usize,
    /// The files sink fsyncs at most this often, in milliseconds (0: after every batch); a power
    /// cut loses at most this much of the log, never a partial line.
    pub sync_interval_ms: u64,
}

impl Default for PredictionsSection {
    fn default() -> Self {
        PredictionsSection {
            sink: None,
            dir: None,
            queue: 4096,
            max_queued_bytes: 256 << 20,
            batch_records: 1000,
            flush_interval_ms: 1000,
            max_file_bytes: 64 << 20,
            max_files: 64,
            sync_interval_ms: 1000,
        }
    }
}

/// Shadow copies.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShadowSection {
    /// Threads running copies (default: one per core).
    pub workers: Option<usize>,
    /// Copies waiting for a worker (default: two per worker).
    pub queue: Option<usize>,
    /// OS niceness of the workers (default 10).
    pub nice: Option<i32>,
}

/// Live traffic against each version's training profile (see `drift` and `serving::monitoring`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitoringSection {
    /// Percent of requests sampled, per version with a training profile (0: none).
    pub sample_percent: f64,
    /// The window drift is computed over, in seconds.
    pub window_s: u64,
    /// Parts the window moves by.
    pub window_parts: u32,
    /// Rows a column needs in the window before its drift is reported.
    pub min_rows: u64,
    /// A population stability index above this reads as drifting.
    pub drift_threshold: f64,
    /// Samples waiting for the worker; beyond it they are dropped and counted.
    pub queue: usize,
}

impl Default for MonitoringSection {
    fn default() -> MonitoringSection {
        MonitoringSection {
            sample_percent: 5.0,
            window_s: 3600,
            window_parts: 12,
            min_rows: 200,
            drift_threshold: 0.25,
            queue: 1024,
        }
    }
}

impl MonitoringSection {
    /// The window as the drift module takes it.
    pub fn window(&self) -> crate::drift::Window {
        crate::drift::Window {
            span: std::time::Duration::from_secs(self.window_s.max(1)),
            parts: self.window_parts.clamp(1, 3600),
            min_rows: self.min_rows,
        }
    }
}

/// The operator console's in-process history of each model's traffic (`serving::history`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleSection {
    /// How often each model's traffic is read, in milliseconds.
    pub history_interval_ms: u64,
    /// Intervals kept per model.
    pub history_points: usize,
}

impl Default for ConsoleSection {
    fn default() -> ConsoleSection {
        ConsoleSection {
            history_interval_ms: 10_000,
            history_points: 360,
        }
    }
}

/// Circuit breaking per version.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerSection {
    /// Calls in a row failing by the model's own fault (deadline, fuel, a limit, a trap) that trip
    /// a version's breaker (0: never).
    pub after: u32,
    /// How long a tripped version fails fast before a probe, in milliseconds.
    pub cool_down_ms: u64,
    /// The longest cool-down after failed probes (each doubles it), in milliseconds.
    pub max_cool_down_ms: u64,
}

impl Default for BreakerSection {
    fn default() -> Self {
        BreakerSection {
            after: 5,
            cool_down_ms: 5_000,
            max_cool_down_ms: 60_000,
        }
    }
}

/// What a connection and a request may cost the host before it is served (see
/// `server::connections` and `server::intake`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSection {
    /// Open connections at most (further ones wait in the kernel's backlog); never more than the
    /// limit on open files allows, which the host raises to its hard limit at start.
    pub max_connections: usize,
    /// A request's headers must be complete within this long of the connection's opening or of its
    /// previous answer, in milliseconds: it bounds slow headers and idle keep-alive connections
    /// alike (hyper runs one timer for both). Behind a load balancer that keeps idle connections
    /// longer than this, raise it above the balancer's idle timeout (or lower the balancer's), so
    /// that the host never closes a connection the balancer is about to reuse.
    pub header_timeout_ms: u64,
    /// A request body must arrive at no less than this many bytes a second (0: no minimum) ...
    pub body_min_bytes_per_s: u64,
    /// ... once this many milliseconds have passed since it began.
    pub body_grace_ms: u64,
    /// Longest an answer waits for a client that reads none of it, in milliseconds.
    pub write_stall_ms: u64,
    /// Longest a request may take, its answer included, in milliseconds (uploads excepted); keep it
    /// above the models' `deadline_ms` plus their queue timeout.
    pub request_timeout_ms: u64,
    /// Longest an upload (`PUT .../versions/{v}`) may take, in milliseconds.
    pub upload_timeout_ms: u64,
    /// On a graceful stop, how long requests in flight may still finish, in milliseconds; the
    /// prediction log is flushed after it either way.
    pub drain_timeout_ms: u64,
    /// Bytes that inference requests in flight may hold, raw and decoded, host-wide (default: a
    /// quarter of `[host] max_resident_bytes` when set, else 256 MiB; never less than what one
    /// largest body needs).
    pub max_request_bytes_in_flight: Option<u64>,
    /// How long a request waits for room in that budget before it is refused (503, Retry-After).
    pub request_bytes_wait_ms: u64,
    /// Largest body of a management route other than uploads (JSON documents), in bytes.
    pub max_management_body_bytes: usize,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            max_connections: 10_000,
            header_timeout_ms: 30_000,
            body_min_bytes_per_s: 16 << 10,
            body_grace_ms: 10_000,
            write_stall_ms: 30_000,
            request_timeout_ms: 60_000,
            upload_timeout_ms: 3_600_000,
            drain_timeout_ms: 30_000,
            max_request_bytes_in_flight: None,
            request_bytes_wait_ms: 250,
            max_management_body_bytes: 1 << 20,
        }
    }
}

impl HostConfig {
    /// The budget of bytes that inference requests in flight may hold.
    pub fn request_bytes_in_flight(&self) -> u64 {
        let floor = 2 * self.host.max_body_bytes as u64;
        self.http
            .max_request_bytes_in_flight
            .unwrap_or_else(|| {
                self.host
                    .max_resident_bytes
                    .map_or(256 << 20, |resident| resident / 4)
            })
            .max(floor)
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostConfig {
    /// Host-wide settings.
    pub host: HostSection,
    /// Syncing with the store.
    pub store: StoreSection,
    /// The host-local cache.
    pub cache: CacheSection,
    /// The prediction log.
    pub predictions: PredictionsSection,
    /// Shadow copies.
    pub shadow: ShadowSection,
    /// Circuit breaking.
    pub breaker: BreakerSection,
    /// Drift monitoring.
    pub monitoring: MonitoringSection,
    /// The operator console.
    pub console: ConsoleSection,
    /// Connections and requests: timeouts, caps, the budget of bytes in flight.
    pub http: HttpSection,
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
