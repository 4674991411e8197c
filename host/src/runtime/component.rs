//! A compiled model component, checked against the contract and pre-linked once so that every
//! instantiation is a cheap copy-on-write slot fill.

use std::sync::Arc;

use anyhow::anyhow;
use wasmtime::component::Component;

use wasmtime::component::Linker;

use super::bindings::FerryModelPre;
use super::GuestState;
use crate::engine::FerryEngine;
use crate::CONTRACT;

const MODEL_EXPORT: &str = "ferry:model/model";

/// A component that satisfies the `ferry-model` world.
pub struct ModelComponent {
    pub(crate) engine: Arc<FerryEngine>,
    pub(crate) pre: FerryModelPre<GuestState>,
    sha256: String,
}

impl ModelComponent {
    /// Links `component` against the host; the error says what does not match the contract.
    pub(crate) fn new(
        engine: Arc<FerryEngine>,
        linker: &Linker<GuestState>,
        component: Component,
        sha256: String,
    ) -> anyhow::Result<Arc<Self>> {
        let pre = linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .and_then(|pre| FerryModelPre::new(pre).map_err(anyhow::Error::from))
            .map_err(|e| {
                anyhow!(
                    "{}\n  (wasmtime: {e:#})",
                    world_mismatch(&engine, &component)
                )
            })?;
        Ok(Arc::new(ModelComponent {
            engine,
            pre,
            sha256,
        }))
    }

    /// The component's type (imports and exports).
    pub fn pre_component_type(&self) -> wasmtime::component::types::Component {
        self.pre.instance_pre().component().component_type()
    }

    /// The content address of what was compiled (the component's sha256, or a snapshot's key).
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
}

/// Explains how `component` differs from the world this host serves.
fn world_mismatch(engine: &FerryEngine, component: &Component) -> String {
    let ty = component.component_type();
    let engine = engine.engine();
    let exports: Vec<&str> = ty.exports(engine).map(|(name, _)| name).collect();
    let imports: Vec<&str> = ty.imports(engine).map(|(name, _)| name).collect();
    let wanted = format!(
        "{MODEL_EXPORT}@{}",
        CONTRACT.rsplit('@').next().unwrap_or_default()
    );

    if let Some(other) = exports
        .iter()
        .find(|e| e.starts_with(MODEL_EXPORT) && **e != wanted)
    {
        let version = other.rsplit('@').next().unwrap_or("unversioned");
        return format!(
            "the component was built against ferry:model@{version}, but this host serves {CONTRACT}; \
             rebuild the model with this host's SDK (`ferry build`; a Rust project's ferry-sdk dependency must be this host's)"
        );
    }
    if !exports.contains(&wanted.as_str()) {
        return format!(
            "the component does not export `{wanted}`, so it is not a Ferry model (it exports: {}); \
             in Rust implement `ferry_sdk::Model` and call `export_model!`, in Python subclass \
             `ferry_sdk.Model`, then build with `ferry build`",
            if exports.is_empty() { "nothing".to_owned() } else { exports.join(", ") }
        );
    }
    let foreign: Vec<&&str> = imports
        .iter()
        .filter(|i| !i.starts_with("wasi:") && !i.starts_with("ferry:model/log@0.1."))
        .collect();
    if !foreign.is_empty() {
        return format!(
            "the component imports {} which this host does not provide (a model may import only \
             ferry:model/log and WASI); remove the dependency that needs it",
            foreign
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    "the component's exports or imports do not match the ferry-model world (a function's signature differs)".into()
}
