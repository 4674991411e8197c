//! The runtime's half of the engine: the linker every model is instantiated against (the contract's
//! host imports and deny-by-default WASI), and components in memory, shared by every version that
//! uses the same code or the same snapshot.

use std::sync::{Arc, Mutex, Weak};

use anyhow::Context;
use dashmap::DashMap;
use wasmtime::component::Linker;

use super::{GuestState, ModelComponent, ModelLimits};
use crate::engine::{check_header, EngineSettings, FerryEngine};

/// The engine plus what the runtime adds to it.
pub struct ModelRuntime {
    engine: Arc<FerryEngine>,
    linker: Linker<GuestState>,
    /// Components in memory by content key: versions that share code (weights-only updates) or a
    /// snapshot share its compiled code and pre-linked instance template.
    loaded: DashMap<String, Weak<ModelComponent>>,
    snapshots: bool,
    /// The runtime of versions with a fuel limit when this engine counts none (see
    /// [`ModelRuntime::for_limits`]); made when the first such version loads.
    counting_fuel: Mutex<Option<Arc<ModelRuntime>>>,
}

impl ModelRuntime {
    /// Builds the engine and the linker. `snapshots` turns initialised snapshots on (the default for
    /// serving); off, every instance runs `init` itself.
    pub fn new(settings: EngineSettings, snapshots: bool) -> anyhow::Result<Arc<ModelRuntime>> {
        ModelRuntime::on(FerryEngine::new(settings)?, snapshots)
    }

    fn on(engine: Arc<FerryEngine>, snapshots: bool) -> anyhow::Result<Arc<ModelRuntime>> {
        let mut linker = Linker::new(engine.engine());
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        // Its blocking stream and poll functions, replaced by ones that work on an async worker too.
        crate::host_api::wasi_io::add_to_linker(&mut linker, GuestState::wasi_io)?;
        super::add_to_linker(&mut linker)?;
        // Granted per version: a component that imports it is refused unless its version has graphs.
        crate::host_api::graph::add_to_linker(&mut linker, GuestState::wasi_nn)?;
        Ok(Arc::new(ModelRuntime {
            engine,
            linker,
            loaded: DashMap::new(),
            snapshots,
            counting_fuel: Mutex::new(None),
        }))
    }

    /// The runtime that runs versions with `limits`: this one, unless they have a fuel limit and
    /// this engine counts no fuel; then a second engine that counts it, made for the first such
    /// version. Counting fuel is compiled into a guest's code and costs each of its calls (about 5 %
    /// of a small model's request, benches/request-cost.sh): a model without a fuel limit never
    /// pays it, whatever another model on the host asked for. (`[host] fuel = true` counts every
    /// model's fuel, for the cost reports: then this engine counts it and is the only one.)
    pub fn for_limits(self: &Arc<Self>, limits: &ModelLimits) -> anyhow::Result<Arc<ModelRuntime>> {
        if limits.fuel.is_none() || self.engine.settings().fuel {
            return Ok(self.clone());
        }
        let mut counting = self.counting_fuel.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(runtime) = &*counting {
            return Ok(runtime.clone());
        }
        let runtime = self
            .engine
            .counting_fuel()
            .and_then(|engine| ModelRuntime::on(engine, self.snapshots))
            .context("starting the engine that counts fuel (the version has a fuel limit)")?;
        tracing::info!(
            "a version has a fuel limit: its calls run on a second engine that counts fuel"
        );
        *counting = Some(runtime.clone());
        Ok(runtime)
    }

    /// The engines this runtime has made: its own, and the one that counts fuel once made.
    #[cfg(test)]
    fn engines(&self) -> Vec<Arc<FerryEngine>> {
        let counting = self.counting_fuel.lock().unwrap_or_else(|p| p.into_inner());
        std::iter::once(self.engine.clone())
            .chain(counting.as_ref().map(|r| r.engine.clone()))
            .collect()
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<FerryEngine> {
        &self.engine
    }

    /// Whether versions are served from snapshots of their initialised instance.
    pub fn snapshots(&self) -> bool {
        self.snapshots
    }

    /// Compiles a component (or loads it from the cache) and checks it against the contract.
    pub fn load_component(&self, bytes: &[u8]) -> anyhow::Result<Arc<ModelComponent>> {
        check_header(bytes)?;
        let sha256 = super::sha256_hex(bytes);
        self.component(&sha256, || self.engine.compile(&sha256, bytes))
    }

    /// The component named `key`, shared when already in memory, else made by `compile` and
    /// checked against the contract.
    pub(crate) fn component(
        &self,
        key: &str,
        compile: impl FnOnce() -> anyhow::Result<wasmtime::component::Component>,
    ) -> anyhow::Result<Arc<ModelComponent>> {
        if let Some(shared) = self.loaded.get(key).and_then(|weak| weak.upgrade()) {
            return Ok(shared);
        }
        let component = compile()?;
        let component =
            ModelComponent::new(self.engine.clone(), &self.linker, component, key.to_owned())?;
        self.loaded.retain(|_, weak| weak.strong_count() > 0);
        self.loaded
            .insert(key.to_owned(), Arc::downgrade(&component));
        Ok(component)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn runtime() -> Arc<ModelRuntime> {
        ModelRuntime::new(
            EngineSettings {
                cache_dir: None,
                total_instances: 4,
                ..Default::default()
            },
            true,
        )
        .unwrap()
    }

    #[test]
    fn only_versions_with_a_fuel_limit_run_on_the_engine_that_counts_fuel() {
        let plain = runtime();
        let unlimited = ModelLimits::default();
        let limited = ModelLimits {
            fuel: Some(1_000),
            ..Default::default()
        };
        assert!(Arc::ptr_eq(&plain.for_limits(&unlimited).unwrap(), &plain));
        assert_eq!(
            plain.engines().len(),
            1,
            "made only when a version needs it"
        );
        let counting = plain.for_limits(&limited).unwrap();
        assert!(!Arc::ptr_eq(&counting, &plain));
        assert!(counting.engine().settings().fuel);
        assert!(!plain.engine().settings().fuel);
        assert!(
            Arc::ptr_eq(&plain.for_limits(&limited).unwrap(), &counting),
            "made once"
        );
        assert!(Arc::ptr_eq(
            &counting.for_limits(&limited).unwrap(),
            &counting
        ));
        assert_eq!(plain.engines().len(), 2);
        // A host that counts every model's fuel has the one engine.
        let all = ModelRuntime::new(
            EngineSettings {
                cache_dir: None,
                total_instances: 4,
                fuel: true,
                ..Default::default()
            },
            true,
        )
        .unwrap();
        assert!(Arc::ptr_eq(&all.for_limits(&limited).unwrap(), &all));
        assert_eq!(all.engines().len(), 1);
    }

    #[test]
    fn garbage_and_core_modules_are_refused_with_a_reason() {
        let r = runtime();
        let err = r
            .load_component(b"\x7fELF not wasm")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("does not start with the \\0asm header"),
            "{err}"
        );
        let module = wat::parse_str("(module)").unwrap();
        let err = r.load_component(&module).err().unwrap().to_string();
        assert!(
            err.contains("core WebAssembly module, not a component"),
            "{err}"
        );
        let mut truncated = wat::parse_str("(component (core module))").unwrap();
        truncated.truncate(truncated.len() - 3);
        assert!(r.load_component(&truncated).is_err());
    }

    #[test]
    fn a_component_without_the_model_export_is_named_as_such() {
        let err = runtime()
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
}
