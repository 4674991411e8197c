//! Pinned tools Ferry installs on first use, each in its own directory under the tools directory
//! (`$FERRY_TOOLS_DIR`, else the user's cache directory): from PyPI, componentize-py for `ferry build`
//! of Python models and the ONNX Runtime shared library (the `onnxruntime` wheel) for host-side graphs;
//! from npm, jco for JavaScript models.

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

/// Runs `install` into `tools/NAME` unless a finished install is there. Safe to call from processes
/// running side by side: one installs, the others wait for it.
fn install_once(
    name: &str,
    what: &str,
    install: impl FnOnce(&std::path::Path) -> anyhow::Result<()>,
) -> anyhow::Result<PathBuf> {
    let tools = tools_dir()?;
    let dir = tools.join(name);
    // Written last: a directory without it is an interrupted install, started over (a venv or a
    // node_modules cannot be built elsewhere and moved: their scripts name paths absolutely).
    let installed_mark = dir.join(".ferry-installed");
    if installed_mark.exists() {
        return Ok(dir);
    }
    std::fs::create_dir_all(&tools).with_context(|| format!("creating {}", tools.display()))?;
    let lock = std::fs::File::create(tools.join(format!(".{name}.lock")))?;
    if lock.try_lock().is_err() {
        eprintln!("waiting for another ferry's install of {what}");
        lock.lock()
            .with_context(|| format!("waiting for another ferry's install of {what}"))?;
    }
    if installed_mark.exists() {
        return Ok(dir);
    }
    eprintln!("installing {what} into {}", dir.display());
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    if let Err(e) = install(&dir) {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(e);
    }
    std::fs::write(&installed_mark, name)?;
    Ok(dir)
}

impl PypiTool {
    /// The tool's venv, installed there on first use.
    pub fn venv(&self) -> anyhow::Result<PathBuf> {
        let (package, version) = (self.package, self.version);
        install_once(
            &format!("{package}-{version}"),
            &format!("{package} {version} from PyPI"),
            |venv| {
                let python = std::env::var_os("FERRY_PYTHON").unwrap_or_else(|| "python3".into());
                let venv_made = Command::new(&python)
                    .args(["-m", "venv"])
                    .arg(venv)
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
                    bail!(
                        "could not install {package} {version} from PyPI (pip's output is above). Without \
                         access to PyPI, install it elsewhere (`pip install {package}=={version}`) and set {}",
                        self.override_var
                    );
                }
                Ok(())
            },
        )
    }
}

/// Pinned npm packages installed together into one `node_modules`.
pub struct NpmTool {
    /// The directory's name under the tools directory.
    pub name: &'static str,
    /// `(package, version)`: each pinned exactly, dependencies that jco only names by range included,
    /// so two machines build with the same code.
    pub packages: &'static [(&'static str, &'static str)],
    /// The environment variable that points at an installed copy instead.
    pub override_var: &'static str,
}

impl NpmTool {
    /// The directory holding `node_modules`, installed there on first use.
    pub fn dir(&self) -> anyhow::Result<PathBuf> {
        let specs: Vec<String> = self
            .packages
            .iter()
            .map(|(p, v)| format!("{p}@{v}"))
            .collect();
        install_once(self.name, &format!("{} from npm", specs.join(" ")), |dir| {
            std::fs::create_dir_all(dir)?;
            // A package.json of its own, so npm installs here and not into an enclosing project.
            std::fs::write(dir.join("package.json"), "{\"private\": true}\n")?;
            let npm = std::env::var_os("FERRY_NPM").unwrap_or_else(|| "npm".into());
            let status = Command::new(&npm)
                    .args([
                        "install",
                        "--no-audit",
                        "--no-fund",
                        "--loglevel=error",
                        "--save-exact",
                    ])
                    .args(&specs)
                    .current_dir(dir)
                    .status()
                    .with_context(|| {
                        format!(
                            "Ferry needs Node.js and npm ({}) to install {}; install Node.js 20.19 or newer \
                             (e.g. `apt-get install nodejs npm`), or set {}",
                            npm.to_string_lossy(),
                            specs.join(" "),
                            self.override_var
                        )
                    })?;
            if !status.success() {
                bail!(
                        "could not install {} from npm (npm's output is above). Without access to the npm \
                         registry, install them elsewhere and set {}",
                        specs.join(" "),
                        self.override_var
                    );
            }
            Ok(())
        })
    }
}
