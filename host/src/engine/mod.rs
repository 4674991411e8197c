//! The process-wide wasmtime engine: one `Engine` configured for serving many small instances
//! (pooling allocator, copy-on-write memory images, SIMD), an epoch ticker that turns wall-clock
//! deadlines into interrupts, the `Linker` every model is instantiated against, and the
//! compiled-component cache.

mod cache;
mod ticker;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

pub use cache::CompileCache;
use ticker::EpochTicker;

use crate::runtime::{GuestState, ModelComponent};

/// Host-wide settings of the engine. Per-model limits live in [`crate::runtime::ModelLimits`] and are
/// clamped to these.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Largest linear memory any instance may have (a host-wide cap on every model's memory limit).
    pub max_memory_bytes: u64,
    /// Instances that may be alive at once across all models (pool slots reserved up front).
    pub total_instances: u32,
    /// Granularity of deadlines: the epoch advances once per tick.
    pub epoch_tick: Duration,
    /// Count fuel in every call, so models can have a fuel limit. Costs some speed for every model.
    pub fuel: bool,
    /// Where compiled components are cached; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            max_memory_bytes: 4 << 30,
            total_instances: 256,
            epoch_tick: Duration::from_millis(1),
            fuel: false,
            cache_dir: default_cache_dir(),
        }
    }
}

/// `$FERRY_CACHE_DIR`, else the user's cache directory (`~/.cache/ferry`).
pub fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("FERRY_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| dirs::cache_dir().map(|d| d.join("ferry")))
}

/// The engine every model version runs on.
pub struct FerryEngine {
    engine: Engine,
    linker: Linker<GuestState>,
    cache: Option<CompileCache>,
    /// Components in memory by sha256: versions that share a component (weights-only updates) share
    /// its compiled code and pre-linked instance template.
    loaded: dashmap::DashMap<String, std::sync::Weak<ModelComponent>>,
    settings: EngineSettings,
    _ticker: EpochTicker,
}

impl FerryEngine {
    /// Builds the engine and starts its epoch ticker.
    pub fn new(settings: EngineSettings) -> anyhow::Result<Arc<FerryEngine>> {
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
            .wasm_component_model(true)
            .wasm_simd(true)
            .cranelift_opt_level(OptLevel::Speed)
            .epoch_interruption(true)
            .consume_fuel(settings.fuel)
            // Guests that recurse without bound trap here instead of taking the host's stack.
            .max_wasm_stack(1 << 20)
            .parallel_compilation(true);
        let engine = Engine::new(&config)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        crate::runtime::add_to_linker(&mut linker)?;

        let cache = match &settings.cache_dir {
            Some(dir) => Some(CompileCache::open(dir, &engine)?),
            None => None,
        };
        let ticker = EpochTicker::start(engine.clone(), settings.epoch_tick);
        Ok(Arc::new(FerryEngine {
            engine,
            linker,
            cache,
            loaded: Default::default(),
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

    /// Epoch ticks that cover `deadline` (at least one).
    pub fn ticks_for(&self, deadline: Duration) -> u64 {
        let tick = self.settings.epoch_tick.as_nanos().max(1);
        (deadline.as_nanos().div_ceil(tick) as u64).max(1)
    }

    /// Compiles a component (or loads it from the cache) and checks it against the contract.
    pub fn load_component(self: &Arc<Self>, bytes: &[u8]) -> anyhow::Result<Arc<ModelComponent>> {
        check_header(bytes)?;
        let sha256 = crate::runtime::sha256_hex(bytes);
        if let Some(shared) = self.loaded.get(&sha256).and_then(|weak| weak.upgrade()) {
            return Ok(shared);
        }
        let component = match &self.cache {
            Some(cache) => cache.get_or_compile(&self.engine, &sha256, bytes)?,
            None => Component::new(&self.engine, bytes).map_err(anyhow::Error::from)?,
        };
        let component = ModelComponent::new(self.clone(), component, sha256.clone())?;
        self.loaded.retain(|_, weak| weak.strong_count() > 0);
        self.loaded.insert(sha256, Arc::downgrade(&component));
        Ok(component)
    }

    pub(crate) fn linker(&self) -> &Linker<GuestState> {
        &self.linker
    }
}

/// Refuses what is not a component before the compiler sees it, with a message an author can act on.
/// WAT text (starting with `(`) passes through: the engine parses it, which tests rely on.
fn check_header(bytes: &[u8]) -> anyhow::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> Arc<FerryEngine> {
        FerryEngine::new(EngineSettings {
            cache_dir: None,
            total_instances: 4,
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn garbage_and_core_modules_are_refused_with_a_reason() {
        let e = engine();
        let err = e
            .load_component(b"\x7fELF not wasm")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("does not start with the \\0asm header"),
            "{err}"
        );
        let module = wat::parse_str("(module)").unwrap();
        let err = e.load_component(&module).err().unwrap().to_string();
        assert!(
            err.contains("core WebAssembly module, not a component"),
            "{err}"
        );
        let mut truncated = wat::parse_str("(component (core module))").unwrap();
        truncated.truncate(truncated.len() - 3);
        assert!(e.load_component(&truncated).is_err());
    }

    #[test]
    fn a_component_without_the_model_export_is_named_as_such() {
        let err = engine()
            .load_component(b"(component)")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("does not export `ferry:model/model@0.1.0`"),
            "{err}"
        );
        assert!(err.contains("export_model!"), "{err}");
    }

    #[test]
    fn deadlines_round_up_to_whole_ticks() {
        let e = engine();
        assert_eq!(e.ticks_for(Duration::from_micros(1)), 1);
        assert_eq!(e.ticks_for(Duration::from_millis(100)), 100);
    }
}
