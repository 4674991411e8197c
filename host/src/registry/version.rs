//! A model version's life: loading → (compile, initialise, self-test, warm pool) → ready or failed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

use super::VersionManifest;
use crate::engine::FerryEngine;
use crate::runtime::{Admission, InstancePool, ModelLimits, ModelMetadata, VersionInputs};
use crate::selftest::{collect_cases, run_cases, SelfTestReport};
use crate::storage::{BlobCache, StorageError};

/// Where a version is in its life.
#[derive(Debug, Clone, PartialEq)]
pub enum VersionState {
    /// Being compiled, initialised and self-tested.
    Loading,
    /// Serving.
    Ready,
    /// Will not serve; the reason says which step failed and why.
    Failed(String),
    /// Listed but holding no instances; the reason says why (comes back when promoted or loaded).
    Unloaded(String),
}

impl VersionState {
    /// `loading`, `ready` or `failed: <reason>`.
    pub fn describe(&self) -> String {
        match self {
            VersionState::Loading => "loading".into(),
            VersionState::Ready => "ready".into(),
            VersionState::Failed(reason) => format!("failed: {reason}"),
            VersionState::Unloaded(reason) => format!("unloaded: {reason}"),
        }
    }

    /// `loading`, `ready` or `failed`.
    pub fn name(&self) -> &'static str {
        match self {
            VersionState::Loading => "loading",
            VersionState::Ready => "ready",
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
    /// Its warm instances (ready versions only).
    pub pool: Option<Arc<InstancePool>>,
    /// What the model declares (ready versions only).
    pub metadata: Option<ModelMetadata>,
    /// The self-tests run at load.
    pub self_tests: Option<SelfTestReport>,
    /// The bounded queue in front of the pool.
    pub admission: Admission,
    /// Seconds from the start of loading to ready (or failed).
    pub load_seconds: f64,
    /// Moving average of a call's duration, in nanoseconds. Starts at 1 ms, so a version's first calls
    /// are handed off the async worker until they have shown they are short.
    typical_call_ns: AtomicU64,
}

impl ModelVersion {
    /// A version listed in `state` without instances (loading, or unloaded).
    pub fn listed(manifest: VersionManifest, state: VersionState) -> ModelVersion {
        ModelVersion {
            manifest,
            state,
            limits: ModelLimits::default(),
            pool: None,
            metadata: None,
            self_tests: None,
            admission: Admission::new(1, 0, Default::default()),
            load_seconds: 0.0,
            typical_call_ns: AtomicU64::new(1_000_000),
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

    /// True when the version serves.
    pub fn is_ready(&self) -> bool {
        self.state == VersionState::Ready && self.pool.is_some()
    }

    /// `model@version`, for logs and labels.
    pub fn label(&self) -> String {
        format!("{}@{}", self.manifest.model, self.manifest.version)
    }

    /// Loads the version: component (compiled or cached), pool, self-tests. Never panics on a bad
    /// version: every failure becomes [`VersionState::Failed`] with the step and the cause.
    pub fn load(
        engine: &Arc<FerryEngine>,
        manifest: VersionManifest,
        artifacts: VersionArtifacts,
        limits: ModelLimits,
        require_self_tests: bool,
    ) -> ModelVersion {
        let started = Instant::now();
        let limits = limits.clamped(engine.settings().max_memory_bytes);
        let mut version = ModelVersion {
            admission: Admission::new(
                limits.max_instances,
                limits.max_queue,
                limits.queue_timeout(),
            ),
            limits,
            ..ModelVersion::listed(manifest, VersionState::Loading)
        };
        match version.bring_up(engine, artifacts, require_self_tests) {
            Ok(()) => version.state = VersionState::Ready,
            Err(e) => {
                version.state = VersionState::Failed(format!("{e:#}"));
                version.pool = None;
            }
        }
        version.load_seconds = started.elapsed().as_secs_f64();
        version
    }

    fn bring_up(
        &mut self,
        engine: &Arc<FerryEngine>,
        artifacts: VersionArtifacts,
        require_self_tests: bool,
    ) -> anyhow::Result<()> {
        let VersionArtifacts {
            component: component_bytes,
            weights,
            config,
            tests,
        } = artifacts;
        let config = config
            .map(String::from_utf8)
            .transpose()
            .context("the config is not UTF-8")?;
        let tests = tests
            .map(String::from_utf8)
            .transpose()
            .context("the tests file is not UTF-8")?;

        let component = engine
            .load_component(&component_bytes)
            .context("compiling")?;
        let inputs = Arc::new(VersionInputs {
            config: config.unwrap_or_else(|| "{}".into()),
            weights,
        });
        let pool = InstancePool::start(component, self.limits.clone(), inputs, self.label())
            .map_err(|e| anyhow::anyhow!("initialising: {e}"))?;

        let mut instance = pool
            .checkout()
            .map_err(|e| anyhow::anyhow!("initialising: {e}"))?;
        self.metadata = Some(
            instance
                .metadata()
                .map_err(|e| anyhow::anyhow!("reading metadata: {e}"))?,
        );
        let suite = instance
            .self_tests()
            .map_err(|e| anyhow::anyhow!("listing self-tests: {e}"))?;
        let cases = collect_cases(suite, tests.as_deref())?;
        if cases.is_empty() && require_self_tests {
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
        self.pool = Some(pool);
        Ok(())
    }
}

/// A version's files, read from the host's blob cache (or the store) and checked by sha256.
pub struct VersionArtifacts {
    /// The component's bytes.
    pub component: Vec<u8>,
    /// The weights blob.
    pub weights: Option<Vec<u8>>,
    /// The config document.
    pub config: Option<Vec<u8>>,
    /// The tests file.
    pub tests: Option<Vec<u8>>,
}

impl VersionArtifacts {
    /// Reads every blob `manifest` names.
    pub async fn read(
        blobs: &BlobCache,
        manifest: &VersionManifest,
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
        Ok(VersionArtifacts {
            component: blobs.read(&manifest.component_sha256).await?,
            weights: optional(&manifest.weights_sha256).await?,
            config: optional(&manifest.config_sha256).await?,
            tests: optional(&manifest.tests_sha256).await?,
        })
    }
}
