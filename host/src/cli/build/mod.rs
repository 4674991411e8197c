//! `ferry build [PATH]`: builds a model project — Rust (`Cargo.toml`), Python (`pyproject.toml` with a
//! `[tool.ferry]` table) or JavaScript (`ferry.toml` naming the entry module) — into a component at
//! `PATH/target/ferry/NAME.wasm`, installing the toolchain piece it needs, then checks the component
//! against the contract and reports its size and exports.

mod js;
mod python;
mod rust;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::project::{Language, Project};
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
    let Some(project) = Project::find(&args.path)? else {
        bail!(
            "{} is not in a model project: no ferry.toml, Cargo.toml or pyproject.toml \
             (create one with `ferry new NAME [--lang rust|python|js]`)",
            args.path.display()
        );
    };
    build(&project, &args.cache)?;
    Ok(0)
}

/// Builds `project` and checks the component against the contract; returns the component's path.
pub fn build(project: &Project, cache: &CacheArgs) -> anyhow::Result<PathBuf> {
    // One build of a project at a time (`ferry dev` and a `ferry push` in another terminal share
    // the staging folders and the output).
    let lock_path = project.dir.join("target/ferry/.build.lock");
    std::fs::create_dir_all(lock_path.parent().expect("the lock has a folder"))?;
    let lock = std::fs::File::create(&lock_path)
        .with_context(|| format!("creating {}", lock_path.display()))?;
    if lock.try_lock().is_err() {
        println!("waiting for another build of {} to finish", project.name);
        lock.lock()
            .with_context(|| format!("locking {}", lock_path.display()))?;
    }
    let started = Instant::now();
    // Taken before the build: a source saved while it runs leaves the component stale.
    let sources = project.source_digests();
    let out = match project.language {
        Language::Rust => rust::build(&project.dir)?,
        Language::Python => python::build(&project.dir)?,
        Language::Js => js::build(project)?,
    };
    if out != project.component() {
        bail!(
            "the build wrote {} but the project's component is {}: the name in ferry.toml must be the \
             package's name",
            out.display(),
            project.component().display()
        );
    }
    check(&out, started.elapsed(), cache)?;
    project.record_build(&sources)?;
    Ok(out)
}

/// The project's component, built first when it is missing or a source changed since it was built.
pub fn up_to_date(project: &Project, cache: &CacheArgs) -> anyhow::Result<PathBuf> {
    match project.stale() {
        Some(why) => {
            println!("building {} ({why})", project.name);
            build(project, cache)
        }
        None => Ok(project.component()),
    }
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
