//! Rust projects: `cargo build --release --target wasm32-wasip2`, installing the target when missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

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

fn crate_name(manifest: &Path) -> anyhow::Result<String> {
    super::read_manifest(manifest)?
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_owned)
        .context("Cargo.toml has no [package] name")
}

/// Builds the crate at `project`; returns the component's path.
pub fn build(project: &Path) -> anyhow::Result<PathBuf> {
    let manifest = project.join("Cargo.toml");
    let name = crate_name(&manifest)?;
    ensure_wasm_target()?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| project.join("target"));
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
    let out = super::output_path(project, &name);
    std::fs::create_dir_all(out.parent().expect("output has a parent"))?;
    std::fs::copy(&built, &out).with_context(|| format!("copying {}", built.display()))?;
    Ok(out)
}
