//! A model version's life: loading → (compile, initialise, self-test, warm pool) → ready or failed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

use super::plan::{Have, Listing, NotLoaded, Seen};
use super::{VersionManifest, VersionSeries};
use bytes::Bytes;

use crate::host_api::graph::{GraphFile, GraphOptions, VersionGraphs};
use crate::runtime::{
    MemoryGovernor, ModelLimits, ModelRuntime, NewVersion, ReadyVersion, Refetch, StartMode,
    VersionInputs,
};
use crate::selftest::{collect_cases, run_cases, SelfTestReport};
use crate::storage::{BlobCache, StorageError};

/// Where a version is in its life.
#[derive(Debug)]
pub enum VersionState {
    /// Being compiled, initialised and self-tested.
    Loading,
    /// Serving, with what it serves with.
    Ready(Arc<ReadyVersion>),
    /// Will not serve; the reason says which step failed and why.
    Failed(String),
    /// Listed but holding no instances (comes back when promoted or loaded).
    Unloaded(NotLoaded),
}

impl From<Listing> for VersionState {
    fn from(listing: Listing) -> VersionState {
        match listing {
            Listing::Loading => VersionState::Loading,
            Listing::Failed(why) => VersionState::Failed(why),
            Listing::NotLoaded(why) => VersionState::Unloaded(why),
        }
    }
}

impl VersionState {
    /// `loading`, `ready` or `failed: <reason>`.
    pub fn describe(&self) -> String {
        match self {
            VersionState::Loading => "loading".into(),
            VersionState::Ready(_) => "ready".into(),
            VersionState::Failed(reason) => format!("failed: {reason}"),
            VersionState::Unloaded(reason) => format!("unloaded: {reason}"),
        }
    }

    /// Why a failed or unloaded version does not serve.
    pub fn reason(&self) -> Option<String> {
        match self {
            VersionState::Failed(reason) => Some(reason.clone()),
            VersionState::Unloaded(why) => Some(why.to_string()),
            VersionState::Loading | VersionState::Ready(_) => None,
        }
    }

    /// `loading`, `ready` or `failed`.
    pub fn name(&self) -> &'static str {
        match self {
            VersionState::Loading => "loading",
            VersionState::Ready(_) => "ready",
            VersionState::Failed(_) => "failed",
            VersionState::Unloaded(_) => "unloaded",
        }
    }
}

/// A version as the routing table holds it.
pub struct ModelVersion {
    /// What the version is made of.
    pub manifest: VersionManifest,
    /// Where it is in its life.
    pub state: VersionState,
    /// The limits it runs under (after host caps).
    pub limits: ModelLimits,
    /// The self-tests run at load.
    pub self_tests: Option<SelfTestReport>,
    /// Cases that passed when this same snapshot was loaded before on this host (not run again).
    pub self_tests_cached: Option<usize>,
    /// How its instances start (once its load got that far).
    pub start_mode: Option<StartMode>,
    /// The key of its snapshot in the host's compile cache, once prepared (see `leftovers`).
    pub snapshot_key: Option<String>,
    /// Its calls' fuel is counted (it has a fuel limit, or the host counts every model's): else its
    /// `usage.fuel` is not a count, and is shown as none.
    pub counts_fuel: bool,
    /// Seconds from the start of loading to ready (or failed).
    pub load_seconds: f64,
    /// Moving average of a call's duration, in nanoseconds. Starts at 1 ms, so a version's first calls
    /// are handed off the async worker until they have shown they are short.
    typical_call_ns: AtomicU64,
    /// What its calls cost and how they ended (metering, OIP statistics).
    pub usage: Usage,
    /// Its `/metrics` series (requests, latency, errors), which go when it goes.
    pub series: VersionSeries,
    /// Its training profile and live traffic beside it (see [`Monitored`]).
    pub monitored: Monitored,
}

/// Whether a version's traffic is compared with its training data.
#[derive(Debug, Default)]
pub enum Monitored {
    /// It ships no training profile.
    #[default]
    NoProfile,
    /// Its profile could not be read (the version serves all the same).
    Unreadable(String),
    /// Watched.
    Watching(Arc<crate::drift::VersionDrift>),
}

impl Monitored {
    /// What watches the version's traffic, if anything does.
    pub fn drift(&self) -> Option<&Arc<crate::drift::VersionDrift>> {
        match self {
            Monitored::Watching(drift) => Some(drift),
            _ => None,
        }
    }
}

/// Counters of a version's requests and calls: what they cost (CPU time in the guest, fuel), for
/// charging the team that owns the model, and how they ended, for the statistics Triton's clients
/// ask for. A request and a guest call differ when requests are batched (one call answers several)
/// and when a call gives way (it runs again).
#[derive(Debug, Default)]
pub struct Usage {
    /// Requests answered (each caller's request once, however it was batched; a shadow's copy
    /// counts as the candidate's request).
    pub succeeded: AtomicU64,
    /// Their time from arrival to answer, in nanoseconds.
    pub succeeded_ns: AtomicU64,
    /// Requests that failed once past the version's checks and queue (the guest's or a limit's
    /// error, their batch's failure); those refused before are counted in `/metrics` only.
    pub failed: AtomicU64,
    /// Their time, in nanoseconds.
    pub failed_ns: AtomicU64,
    /// Inferences in the answered requests: a tensor request's rows (its inputs' leading
    /// dimension), one for a feature-style request.
    pub inferences: AtomicU64,
    /// Guest calls that answered (a batch's merged call is one).
    pub calls_ok: AtomicU64,
    /// Guest calls that failed.
    pub calls_failed: AtomicU64,
    /// Time calls waited for admission, in nanoseconds.
    pub queue_ns: AtomicU64,
    /// Time spent in the guest (wall clock), in nanoseconds.
    pub compute_ns: AtomicU64,
    /// CPU time the calling threads spent in the guest, in nanoseconds.
    pub cpu_ns: AtomicU64,
    /// Fuel burnt (when the host counts fuel).
    pub fuel: AtomicU64,
    /// When the last call ended (Unix milliseconds; 0: never).
    pub last_unix_ms: AtomicU64,
    /// Callers' requests as the console's history reads them (`serving::history`).
    pub live: super::latency::LiveTraffic,
}

impl Usage {
    /// Counts one request that reached the version and ended after `took`, holding `inferences`.
    pub fn served(&self, ok: bool, took: std::time::Duration, inferences: u64) {
        let took = took.as_nanos().min(u64::MAX as u128) as u64;
        if ok {
            self.succeeded.fetch_add(1, Ordering::Relaxed);
            self.succeeded_ns.fetch_add(took, Ordering::Relaxed);
            self.inferences.fetch_add(inferences, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
            self.failed_ns.fetch_add(took, Ordering::Relaxed);
        }
    }

    /// Guest calls so far, answered or failed.
    pub fn calls(&self) -> u64 {
        self.calls_ok.load(Ordering::Relaxed) + self.calls_failed.load(Ordering::Relaxed)
    }
}

impl ModelVersion {
    /// A version listed in `state` without instances (loading, or unloaded).
    pub fn listed(manifest: VersionManifest, state: Listing) -> ModelVersion {
        ModelVersion {
            manifest,
            state: state.into(),
            limits: ModelLimits::default(),
            self_tests: None,
            self_tests_cached: None,
            start_mode: None,
            snapshot_key: None,
            counts_fuel: false,
            load_seconds: 0.0,
            typical_call_ns: AtomicU64::new(1_000_000),
            usage: Usage::default(),
            series: Default::default(),
            monitored: Monitored::NoProfile,
        }
    }

    /// How long a call to this version usually takes.
    pub fn typical_call(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.typical_call_ns.load(Ordering::Relaxed))
    }

    /// Folds one call's duration into [`ModelVersion::typical_call`] (weight 1/8; races only blur it).
    pub fn record_call(&self, took: std::time::Duration) {
        let old = self.typical_call_ns.load(Ordering::Relaxed);
        let new = (old * 7 + took.as_nanos().min(u64::MAX as u128) as u64) / 8;
        self.typical_call_ns.store(new, Ordering::Relaxed);
    }

    /// What the version serves with, when it is ready.
    pub fn ready(&self) -> Option<&Arc<ReadyVersion>> {
        match &self.state {
            VersionState::Ready(ready) => Some(ready),
            _ => None,
        }
    }

    /// True when the version serves.
    pub fn is_ready(&self) -> bool {
        self.ready().is_some()
    }

    /// True while the version loads.
    pub fn is_loading(&self) -> bool {
        matches!(self.state, VersionState::Loading)
    }

    /// The version as the planner sees it.
    pub fn planned(&self) -> Have {
        let state = match &self.state {
            VersionState::Ready(_) => Seen::Ready,
            VersionState::Loading => Seen::Loading,
            VersionState::Failed(why) => Seen::Failed(why.clone()),
            VersionState::Unloaded(why) => Seen::NotLoaded(why.clone()),
        };
        Have {
            manifest: self.manifest.clone(),
            state,
        }
    }

    /// `model@version`, for logs and labels.
    pub fn label(&self) -> String {
        format!("{}@{}", self.manifest.model, self.manifest.version)
    }

    /// Loads the version: component (compiled or cached), pool, self-tests. Never panics on a bad
    /// version: every failure becomes [`VersionState::Failed`] with the step and the cause.
    pub fn load(
        runtime: &Arc<ModelRuntime>,
        manifest: VersionManifest,
        artifacts: VersionArtifacts,
        limits: ModelLimits,
        host: &LoadOptions,
    ) -> ModelVersion {
        let started = Instant::now();
        let limits = limits.clamped(runtime.engine().settings().max_memory_bytes);
        let mut version = ModelVersion {
            limits,
            ..ModelVersion::listed(manifest, Listing::Loading)
        };
        version.state = match version.bring_up(runtime, artifacts, host) {
            Ok(ready) => VersionState::Ready(Arc::new(ready)),
            Err(e) => VersionState::Failed(format!("{e:#}")),
        };
        version.load_seconds = started.elapsed().as_secs_f64();
        version
    }

    fn bring_up(
        &mut self,
        runtime: &Arc<ModelRuntime>,
        mut artifacts: VersionArtifacts,
        host: &LoadOptions,
    ) -> anyhow::Result<ReadyVersion> {
        let tests = artifacts
            .tests
            .as_ref()
            .map(|t| String::from_utf8(t.to_vec()))
            .transpose()
            .context("the tests file is not UTF-8")?;
        // A profile that cannot be read costs the version its monitoring, not its serving (it was
        // checked when uploaded; this is a store written by something else).
        if let Some(why) = artifacts.profile_error.take() {
            self.monitored = Monitored::Unreadable(why);
        }
        if let Some(profile) = artifacts.profile.take() {
            self.monitored = match crate::drift::profile::Profile::parse(&profile) {
                Ok(profile) => Monitored::Watching(Arc::new(crate::drift::VersionDrift::new(
                    profile,
                    host.drift_window,
                ))),
                Err(e) => Monitored::Unreadable(e),
            };
        }
        let graph_files = std::mem::take(&mut artifacts.graphs);
        let (component_bytes, inputs) = artifacts.into_inputs()?;
        if let Some(weights) = &inputs.weights {
            check_fits(weights.len() as u64, self.limits.memory_bytes)?;
        }
        // Loaded once for the version, before any instance (snapshot or not) can open them.
        let graphs = if graph_files.is_empty() {
            None
        } else {
            let options = GraphOptions::from_config(&inputs.config)?;
            Some(VersionGraphs::load(
                graph_files,
                &options,
                self.limits.graph_threads,
            )?)
        };
        let label: Arc<str> = self.label().into();
        let runtime = &runtime.for_limits(&self.limits)?;
        self.counts_fuel = runtime.engine().settings().fuel;
        let (pool, prepared) = runtime.start_version(
            NewVersion {
                component: &component_bytes,
                component_sha256: &self.manifest.component_sha256,
                inputs,
                weights_sha256: self.manifest.weights_sha256.as_deref(),
                graphs: graphs.clone(),
                refetch: host.refetch.clone(),
            },
            &self.limits,
            &label,
            host.governor.clone(),
        )?;
        drop(component_bytes);
        self.start_mode = Some(prepared.mode.clone());
        self.snapshot_key = Some(prepared.key.clone());

        let mut instance = pool
            .checkout()
            .map_err(|e| anyhow::anyhow!("initialising: {e}"))?;
        let metadata = instance
            .metadata()
            .map_err(|e| anyhow::anyhow!("reading metadata: {e}"))?;
        let (model, version, limits) = (
            self.manifest.model.clone(),
            self.manifest.version.clone(),
            self.limits.clone(),
        );
        let ready =
            move |pool| ReadyVersion::new(&model, &version, pool, metadata, graphs, &limits);
        let tests_sha = self.manifest.tests_sha256.clone().unwrap_or_default();
        let snapshot = prepared.mode == StartMode::Snapshot;
        if snapshot {
            let cached = runtime.self_tests_passed(&prepared.key, &tests_sha);
            if let Some(passed) = cached.filter(|n| *n > 0 || !host.require_self_tests) {
                // The same initialised model passed these very cases on this host before.
                self.self_tests_cached = Some(passed);
                drop(instance);
                return Ok(ready(pool));
            }
        }
        let suite = instance
            .self_tests()
            .map_err(|e| anyhow::anyhow!("listing self-tests: {e}"))?;
        let cases = collect_cases(suite, tests.as_deref())?;
        if cases.is_empty() && host.require_self_tests {
            anyhow::bail!(
                "self-tests: the version ships none (add cases to the component or a tests file)"
            );
        }
        let report = run_cases(&mut instance, &cases);
        drop(instance);
        let failed: Vec<String> = report
            .outcomes
            .iter()
            .filter(|o| !o.passed)
            .map(|o| format!("`{}`: {}", o.name, o.detail))
            .collect();
        self.self_tests = Some(report);
        if !failed.is_empty() {
            anyhow::bail!(
                "self-tests: {} of {} failed: {} (the model answers differently from what its training \
                 script computed: push the tests file written with these weights, or fix the model; \
                 `ferry test` shows every case)",
                failed.len(),
                cases.len(),
                failed.join("; ")
            );
        }
        if snapshot {
            runtime.record_self_tests_passed(&prepared.key, &tests_sha, cases.len());
        }
        Ok(ready(pool))
    }
}

/// What the host lends every version it loads.
#[derive(Clone, Default)]
pub struct LoadOptions {
    /// Refuse versions that ship no self-tests.
    pub require_self_tests: bool,
    /// Keeps the host within its memory budget.
    pub governor: Option<Arc<dyn MemoryGovernor>>,
    /// Reads the version's files again, should its snapshot leave the host cache while evicted.
    pub refetch: Option<Refetch>,
    /// The window its live traffic is compared with its training profile over.
    pub drift_window: crate::drift::Window,
}

/// wasm32 addresses 4 GiB: weights an instance cannot hold are refused before `init` runs.
fn check_fits(weights: u64, memory_limit: u64) -> anyhow::Result<()> {
    const WASM32: u64 = 4 << 30;
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    if weights >= WASM32 {
        anyhow::bail!(
            "the weights are {:.0} MiB, more than a wasm32 instance can address (4 GiB of linear \
             memory): serve a model this large as a host-side graph (an ONNX graph run by the host \
             through wasi:nn, `ferry push --graph NAME=FILE.onnx`) rather than inside the component",
            mib(weights)
        );
    }
    if weights >= memory_limit {
        anyhow::bail!(
            "the weights are {:.0} MiB but an instance of this model may have {:.0} MiB of linear \
             memory: raise the model's `memory_bytes` limit (up to 4 GiB for a wasm32 instance)",
            mib(weights),
            mib(memory_limit)
        );
    }
    Ok(())
}

/// A version's files, read from the host's blob cache (or the store) and checked by sha256.
pub struct VersionArtifacts {
    /// The component's bytes.
    pub component: Bytes,
    /// The weights blob (mapped from the cache when large).
    pub weights: Option<Bytes>,
    /// The config document.
    pub config: Option<Bytes>,
    /// The tests file.
    pub tests: Option<Bytes>,
    /// The training profile.
    pub profile: Option<Bytes>,
    /// Why the profile could not be read (the version serves without monitoring).
    pub profile_error: Option<String>,
    /// The named ONNX graphs.
    pub graphs: Vec<GraphFile>,
}

impl VersionArtifacts {
    /// The component's bytes and what `init` gets.
    pub fn into_inputs(self) -> anyhow::Result<(Bytes, VersionInputs)> {
        let config = match self.config {
            Some(c) => String::from_utf8(c.to_vec()).context("the config is not UTF-8")?,
            None => "{}".into(),
        };
        Ok((
            self.component,
            VersionInputs {
                config,
                weights: self.weights,
            },
        ))
    }

    /// Reads every blob `manifest` names.
    pub async fn read(
        blobs: &BlobCache,
        manifest: &VersionManifest,
    ) -> Result<VersionArtifacts, StorageError> {
        Self::read_parts(blobs, manifest, true).await
    }

    /// Reads only what instances are made from (component, weights, config): what bringing an
    /// evicted version back needs, on a request's path. Tests, profile and graphs stay with the
    /// loaded version.
    pub async fn read_for_instances(
        blobs: &BlobCache,
        manifest: &VersionManifest,
    ) -> Result<VersionArtifacts, StorageError> {
        Self::read_parts(blobs, manifest, false).await
    }

    async fn read_parts(
        blobs: &BlobCache,
        manifest: &VersionManifest,
        all: bool,
    ) -> Result<VersionArtifacts, StorageError> {
        let optional = |sha: &Option<String>| {
            let sha = sha.clone();
            async move {
                match sha {
                    Some(sha) => blobs.read(&sha).await.map(Some),
                    None => Ok(None),
                }
            }
        };
        // What only a load reads.
        let for_load = |sha: &Option<String>| if all { sha.clone() } else { None };
        let component = blobs.read(&manifest.component_sha256).await?;
        let (profile, profile_error) = match optional(&for_load(&manifest.profile_sha256)).await {
            Ok(profile) => (profile, None),
            // Costs the version its monitoring, not its serving.
            Err(e) => (
                None,
                Some(format!("reading the profile from the store: {e}")),
            ),
        };
        Ok(VersionArtifacts {
            component,
            weights: optional(&manifest.weights_sha256).await?,
            config: optional(&manifest.config_sha256).await?,
            tests: optional(&for_load(&manifest.tests_sha256)).await?,
            profile,
            profile_error,
            graphs: if !all {
                Vec::new()
            } else {
                let mut graphs = Vec::with_capacity(manifest.graphs.len());
                for (name, sha256) in &manifest.graphs {
                    graphs.push(GraphFile {
                        name: name.clone(),
                        sha256: sha256.clone(),
                        bytes: blobs.read(sha256).await?,
                    });
                }
                graphs
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{check_fits, NotLoaded, VersionState};

    #[test]
    fn weights_beyond_wasm32_are_refused_pointing_to_host_side_graphs() {
        let err = check_fits(5 << 30, 4 << 30).unwrap_err().to_string();
        assert!(
            err.contains("more than a wasm32 instance can address"),
            "{err}"
        );
        assert!(err.contains("host-side graph"), "{err}");
        let err = check_fits(300 << 20, 256 << 20).unwrap_err().to_string();
        assert!(err.contains("raise the model's `memory_bytes`"), "{err}");
        assert!(check_fits(100 << 20, 256 << 20).is_ok());
    }

    #[test]
    fn why_a_version_is_not_loaded_reads_as_the_status_routes_have_always_said() {
        let said = |why: NotLoaded| VersionState::Unloaded(why).describe();
        assert_eq!(VersionState::Loading.reason(), None);
        assert_eq!(
            said(NotLoaded::NotWanted),
            "unloaded: not targeted by an alias and not the newest version"
        );
        assert_eq!(
            said(NotLoaded::Drained),
            "unloaded: replaced as target; drained"
        );
        assert_eq!(said(NotLoaded::OnRequest), "unloaded: unloaded on request");
        assert_eq!(
            said(NotLoaded::WaitingForStore(
                "the store is unreachable".into()
            )),
            "unloaded: waiting for the store: the store is unreachable"
        );
        assert_eq!(
            VersionState::Failed("self-tests: 1 of 2 failed".into()).reason(),
            Some("self-tests: 1 of 2 failed".into())
        );
    }
}
