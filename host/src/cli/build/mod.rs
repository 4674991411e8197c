//! `ferry build [PATH]`: builds a model project — Rust (`Cargo.toml`) or Python (`pyproject.toml` with a
//! `[tool.ferry]` table) — into a component at `PATH/target/ferry/NAME.wasm`, installing the toolchain
//! piece it needs, then checks the component against the contract and reports its size and exports.

mod python;
mod rust;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::CacheArgs;
use crate::engine::EngineSettings;
use crate::runtime::ModelRuntime;

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The project directory.
    #[arg(default_value = ".")]
    path: PathBuf,
    #[command(flatten)]
    cache: CacheArgs,
}

/// Where a project's component lands: `PATH/target/ferry/NAME.wasm`.
fn output_path(project: &Path, name: &str) -> PathBuf {
    project.join("target/ferry").join(format!("{name}.wasm"))
}

/// Reads a TOML manifest, naming the file in every error.
fn read_manifest(path: &Path) -> anyhow::Result<toml::Table> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))
}

pub fn run(args: BuildArgs) -> anyhow::Result<i32> {
    let started = Instant::now();
    let out = if args.path.join("Cargo.toml").exists() {
        rust::build(&args.path)?
    } else if args.path.join("pyproject.toml").exists() {
        python::build(&args.path)?
    } else {
        bail!(
            "{} has neither a Cargo.toml nor a pyproject.toml: not a model project \
             (create one with `ferry new NAME [--lang rust|python]`)",
            args.path.display()
        );
    };
    check(&out, started.elapsed(), &args.cache)?;
    Ok(0)
}

/// Loads the built component as the host would and reports what it exports.
fn check(out: &Path, build_time: Duration, cache: &CacheArgs) -> anyhow::Result<()> {
    let bytes = std::fs::read(out).with_context(|| format!("reading {}", out.display()))?;
    let runtime = ModelRuntime::new(
        EngineSettings {
            cache_dir: cache.dir(),
            total_instances: 4,
            ..Default::default()
        },
        true,
    )?;
    let component = runtime
        .load_component(&bytes)
        .with_context(|| format!("{} does not match the Ferry contract", out.display()))?;
    let exports: Vec<String> = component
        .pre_component_type()
        .exports(runtime.engine().engine())
        .map(|(n, _)| n.to_owned())
        .collect();
    println!(
        "built {} ({:.2} MB) in {:.1?}",
        out.display(),
        bytes.len() as f64 / 1e6,
        build_time
    );
    println!(
        "  exports {}; matches {}",
        exports.join(", "),
        crate::CONTRACT
    );
    Ok(())
}
