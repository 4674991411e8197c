//! The process's wasmtime engine (and a second one that counts fuel, for the versions with a fuel
//! limit: `FerryEngine::counting_fuel`), configured for serving many small instances
//! (pooling allocator, copy-on-write memory images, SIMD), an epoch ticker that turns wall-clock
//! deadlines into interrupts, and the caches of compiled code (whole components on disk, Cranelift's
//! per-function cache in memory). It knows nothing of the guest: the runtime owns the linker and
//! what an instance is.

pub mod background;
mod cache;
pub mod cpu;
mod incremental;
mod ticker;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

pub use cache::CompileCache;
pub use incremental::{IncrementalCache, IncrementalStats};
use ticker::EpochTicker;

/// Host-wide settings of the engine. Per-model limits (the runtime's `ModelLimits`) are clamped to
/// these.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Largest linear memory any instance may have (a host-wide cap on every model's memory limit).
    pub max_memory_bytes: u64,
    /// Instances that may be alive at once across all models (pool slots reserved up front).
    pub total_instances: u32,
    /// Granularity of deadlines: the epoch advances once per tick.
    pub epoch_tick: Duration,
    /// Count fuel in every call of every model on this engine (about 5 % of a small model's call).
    pub fuel: bool,
    /// Where compiled components are cached; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
    /// Run guests deterministically where Wasm leaves a choice: NaN results get the one canonical bit
    /// pattern and relaxed SIMD its deterministic lowering, so a call gives the same bits on any host
    /// and CPU — what lets a logged prediction be replayed exactly (`ferry replay`).
    pub deterministic: bool,
    /// Bytes of Cranelift's per-function cache kept in memory, so that a component recompiled with
    /// other data (a snapshot of new weights) reuses the machine code of its unchanged functions.
    pub incremental_cache_bytes: usize,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            max_memory_bytes: 4 << 30,
            total_instances: 256,
            epoch_tick: Duration::from_millis(1),
            fuel: false,
            cache_dir: default_cache_dir(),
            deterministic: true,
            incremental_cache_bytes: 512 << 20,
        }
    }
}

/// `$FERRY_CACHE_DIR`, else the user's cache directory (`~/.cache/ferry`).
pub fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("FERRY_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| dirs::cache_dir().map(|d| d.join("ferry")))
}

/// An engine model versions run on.
pub struct FerryEngine {
    engine: Engine,
    cache: Option<CompileCache>,
    /// One compile per key at a time: versions loading together that share code wait for the first
    /// compile and then find it in the cache, instead of each compiling it.
    compiling: dashmap::DashMap<String, Arc<std::sync::Mutex<()>>>,
    incremental: Arc<IncrementalCache>,
    settings: EngineSettings,
    _ticker: EpochTicker,
}

impl FerryEngine {
    /// Builds the engine and starts its epoch ticker.
    pub fn new(settings: EngineSettings) -> anyhow::Result<Arc<FerryEngine>> {
        FerryEngine::build(settings, None)
    }

    /// An engine like this one that counts fuel, for the versions that have a fuel limit when this
    /// one does not (see `ModelRuntime::for_limits`). Its compiled code is cached apart (the engine
    /// hash differs); Cranelift's per-function cache is shared, its keys naming what was compiled.
    pub fn counting_fuel(&self) -> anyhow::Result<Arc<FerryEngine>> {
        let settings = EngineSettings {
            fuel: true,
            ..self.settings.clone()
        };
        FerryEngine::build(settings, Some(self.incremental.clone()))
    }

    fn build(
        settings: EngineSettings,
        incremental: Option<Arc<IncrementalCache>>,
    ) -> anyhow::Result<Arc<FerryEngine>> {
        let mut pool = PoolingAllocationConfig::default();
        // A Rust or Python model is one core module with one memory plus a few adapter shims.
        pool.total_component_instances(settings.total_instances)
            .total_core_instances(settings.total_instances * 8)
            .total_memories(settings.total_instances * 2)
            .total_tables(settings.total_instances * 8)
            .total_stacks(settings.total_instances)
            .max_memory_size(settings.max_memory_bytes as usize)
            // Keep recently used slots warm so re-instantiating a version reuses its paged-in image.
            .max_unused_warm_slots(settings.total_instances / 4);

        let mut config = Config::new();
        config
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .memory_reservation(settings.max_memory_bytes.max(1 << 32))
            // A snapshot's memory is dense and may be gigabytes: always map it copy-on-write from the
            // compiled file (the default refuses images above 16 MiB unless they look sparse, and
            // then copies the data into every instance).
            .memory_guaranteed_dense_image_size(settings.max_memory_bytes.max(1 << 32))
            .wasm_component_model(true)
            .wasm_simd(true)
            .cranelift_opt_level(OptLevel::Speed)
            .epoch_interruption(true)
            .consume_fuel(settings.fuel)
            // Guests that recurse without bound trap here instead of taking the host's stack.
            .max_wasm_stack(1 << 20)
            .cranelift_nan_canonicalization(settings.deterministic)
            .relaxed_simd_deterministic(settings.deterministic)
            .parallel_compilation(true);
        // The compile cache's directory depends on the engine's compatibility hash, which the
        // incremental cache does not change: open it from an engine without one first.
        let cache = match &settings.cache_dir {
            Some(dir) => Some(CompileCache::open(dir, &Engine::new(&config)?)?),
            None => None,
        };
        let incremental = incremental.unwrap_or_else(|| {
            Arc::new(IncrementalCache::new(
                settings.incremental_cache_bytes,
                cache.as_ref().map(|c| c.incremental_dir()),
            ))
        });
        config.enable_incremental_compilation(incremental.clone())?;
        let engine = Engine::new(&config)?;
        let ticker = EpochTicker::start(engine.clone(), settings.epoch_tick);
        Ok(Arc::new(FerryEngine {
            engine,
            cache,
            compiling: Default::default(),
            incremental,
            settings,
            _ticker: ticker,
        }))
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The host-wide settings.
    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    /// The component compiled from `bytes`, cached under `key` (which must name the bytes: a
    /// content hash): loaded from the cache when there, else compiled now (reusing unchanged
    /// functions from Cranelift's cache) and stored. WAT text is accepted (tests rely on it).
    pub fn compile(&self, key: &str, bytes: &[u8]) -> anyhow::Result<Component> {
        let lock = self.compiling.entry(key.to_owned()).or_default().clone();
        let _one = lock.lock().unwrap_or_else(|p| p.into_inner());
        let compiled = background::compile(|| self.compile_now(key, bytes));
        self.compiling
            .remove_if(key, |_, l| Arc::strong_count(l) <= 2);
        compiled
    }

    fn compile_now(&self, key: &str, bytes: &[u8]) -> anyhow::Result<Component> {
        match &self.cache {
            Some(cache) => cache.get_or_compile(&self.engine, key, bytes),
            None => {
                let compiled = self.engine.precompile_component(bytes)?;
                // SAFETY: produced by `precompile_component` on this very engine just above.
                Ok(unsafe { Component::deserialize(&self.engine, &compiled) }?)
            }
        }
    }

    /// The component cached under `key`, if this host compiled it before.
    pub fn cached(&self, key: &str) -> Option<Component> {
        self.cache.as_ref()?.get(&self.engine, key)
    }

    /// The on-disk compile cache, when there is one.
    pub fn compile_cache(&self) -> Option<&CompileCache> {
        self.cache.as_ref()
    }

    /// How Cranelift's per-function cache has done so far.
    pub fn incremental_stats(&self) -> IncrementalStats {
        self.incremental.stats()
    }
}

/// Refuses what is not a component before the compiler sees it, with a message an author can act on.
/// WAT text (starting with `(`) passes through: the engine parses it, which tests rely on.
pub(crate) fn check_header(bytes: &[u8]) -> anyhow::Result<()> {
    const MAGIC: &[u8] = b"\0asm";
    if bytes.first() == Some(&b'(') {
        return Ok(());
    }
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        anyhow::bail!("not a WebAssembly component: the file does not start with the \\0asm header ({} bytes)", bytes.len());
    }
    // Bytes 4..8: version and layer. Layer 0 is a core module, layer 1 a component.
    if bytes[6..8] == [0, 0] {
        anyhow::bail!(
            "this is a core WebAssembly module, not a component: build the model with \
             `cargo build --target wasm32-wasip2` (or `ferry build`)"
        );
    }
    Ok(())
}
