//! `ferry build [PATH]`: builds a model project into a component at `PATH/target/ferry/NAME.wasm`,
//! installing the wasm32-wasip2 target when it is missing, then checks the component against the
//! contract and reports its size and exports.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};

use super::CacheArgs;
use crate::engine::{EngineSettings, FerryEngine};

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The project directory.
    #[arg(default_value = ".")]
    path: PathBuf,
    #[command(flatten)]
    cache: CacheArgs,
}

fn ensure_wasm_target() -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    match installed {
        Ok(out)
            if String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.trim() == "wasm32-wasip2") =>
        {
            Ok(())
        }
        Ok(_) => {
            println!("installing the wasm32-wasip2 Rust target (rustup target add wasm32-wasip2)");
            let status = Command::new("rustup")
                .args(["target", "add", "wasm32-wasip2"])
                .status()?;
            if !status.success() {
                bail!("`rustup target add wasm32-wasip2` failed; install the target and run ferry build again");
            }
            Ok(())
        }
        Err(_) => {
            println!("rustup not found: assuming the toolchain has the wasm32-wasip2 target");
            Ok(())
        }
    }
}

fn crate_name(manifest: &PathBuf) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    let doc: toml::Table = toml::from_str(&text)
        .with_context(|| format!("{} is not valid TOML", manifest.display()))?;
    doc.get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_owned)
        .context("Cargo.toml has no [package] name")
}

pub fn run(args: BuildArgs) -> anyhow::Result<i32> {
    let manifest = args.path.join("Cargo.toml");
    if !manifest.exists() {
        if args.path.join("app.py").exists() {
            bail!(
                "Python model projects are not supported by `ferry build` yet; Rust projects are"
            );
        }
        bail!(
            "{} has no Cargo.toml: not a model project (create one with `ferry new NAME`)",
            args.path.display()
        );
    }
    let name = crate_name(&manifest)?;
    ensure_wasm_target()?;
    let started = Instant::now();
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| args.path.join("target"));
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("RUSTFLAGS", "-C target-feature=+simd128")
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("cargo build failed (see above)");
    }
    let built = target_dir
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    let out_dir = args.path.join("target/ferry");
    std::fs::create_dir_all(&out_dir)?;
    let out = out_dir.join(format!("{name}.wasm"));
    std::fs::copy(&built, &out).with_context(|| format!("copying {}", built.display()))?;
    let build_time = started.elapsed();

    let bytes = std::fs::read(&out)?;
    let engine = FerryEngine::new(EngineSettings {
        cache_dir: args.cache.dir(),
        total_instances: 4,
        ..Default::default()
    })?;
    let component = engine
        .load_component(&bytes)
        .with_context(|| format!("{} does not match the Ferry contract", out.display()))?;
    let ty = component.pre_component_type();
    let exports: Vec<String> = ty
        .exports(engine.engine())
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
    Ok(0)
}
