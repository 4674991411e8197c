//! `ferry add`: put a version into a store directory directly, without a server — for seeding a
//! store (the quick start does this with the sample models) or preparing one offline. A running
//! server picks the version up at its next start.

use std::path::PathBuf;

use anyhow::Context;

use crate::registry::{check_name, Store, VersionManifest};
use crate::runtime::ModelLimits;

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// The model component (`.wasm`).
    component: PathBuf,
    /// The model's name.
    #[arg(long)]
    model: String,
    /// The version's name (default: the next number).
    #[arg(long)]
    version: Option<String>,
    #[command(flatten)]
    files: super::VersionFiles,
    /// Limits for this version (JSON, the fields of a model's limits).
    #[arg(long)]
    limits: Option<PathBuf>,
    /// The store directory.
    #[arg(long, default_value = "ferry-store", env = "FERRY_STORE")]
    store: PathBuf,
}

pub fn run(args: AddArgs) -> anyhow::Result<i32> {
    check_name("model", &args.model)?;
    let store = Store::open(&args.store)?;
    let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let component = read(&args.component)?;
    if component.get(..4) != Some(b"\0asm") {
        anyhow::bail!(
            "{} is not a WebAssembly component",
            args.component.display()
        );
    }
    if let Some(p) = &args.files.config {
        serde_json::from_slice::<serde_json::Value>(&read(p)?)
            .with_context(|| format!("{} is not JSON", p.display()))?;
    }
    let limits: Option<ModelLimits> = args
        .limits
        .as_ref()
        .map(|p| {
            serde_json::from_slice(&read(p)?).with_context(|| format!("limits in {}", p.display()))
        })
        .transpose()?;
    let put = |p: &Option<PathBuf>| p.as_ref().map(|p| store.put_blob(&read(p)?)).transpose();
    let (sequence, next) = store.next_version(&args.model)?;
    if let Some(v) = &args.version {
        check_name("version", v)?;
        if store
            .versions()?
            .get(&args.model)
            .is_some_and(|vs| vs.iter().any(|m| &m.version == v))
        {
            anyhow::bail!(
                "model {} already has a version {v}; versions are immutable, pick another name",
                args.model
            );
        }
    }
    let manifest = VersionManifest {
        model: args.model.clone(),
        version: args.version.unwrap_or(next),
        sequence,
        component_sha256: store.put_blob(&component)?,
        weights_sha256: put(&args.files.weights)?,
        config_sha256: put(&args.files.config)?,
        tests_sha256: put(&args.files.tests)?,
        limits,
    };
    store.put_version(&manifest)?;
    println!("{} version {}", manifest.model, manifest.version);
    println!("  component_sha256 {}", manifest.component_sha256);
    if let Some(w) = &manifest.weights_sha256 {
        println!("  weights_sha256   {w}");
    }
    Ok(0)
}
