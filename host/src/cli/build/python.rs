//! Python projects: componentize-py (CPython compiled to Wasm) imports the model's module, snapshots
//! the interpreter and wraps it with the contract's bindings. Installs a pinned componentize-py from
//! PyPI on first use.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// The componentize-py release Ferry builds with (CPython 3.14 inside).
pub const COMPONENTIZE_PY: &str = "0.25.1";

/// The Python SDK and the contract, compiled in so a `ferry` binary builds Python models on its own.
const SDK: &[(&str, &str)] = &[
    (
        "ferry_sdk/__init__.py",
        include_str!("../../../../guest-sdk/python/ferry_sdk/__init__.py"),
    ),
    (
        "ferry_sdk/_component.py",
        include_str!("../../../../guest-sdk/python/ferry_sdk/_component.py"),
    ),
    ("wit/model.wit", include_str!("../../../../wit/model.wit")),
];
const WORLD: &str = "ferry-model";
const ENTRY_MODULE: &str = "ferry_component";

/// What `pyproject.toml` tells the build.
#[derive(Debug)]
struct Project {
    name: String,
    module: String,
    class: String,
    bundle: Vec<PathBuf>,
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

fn read_project(dir: &Path) -> anyhow::Result<Project> {
    let manifest = super::read_manifest(&dir.join("pyproject.toml"))?;
    let name = manifest
        .get("project")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .context("pyproject.toml has no [project] name")?
        .to_owned();
    let ferry = manifest.get("tool").and_then(|t| t.get("ferry")).context(
        "pyproject.toml has no [tool.ferry] table; add one with `model = \"module:Class\"` naming \
             the model class (`ferry new NAME --lang python` writes one)",
    )?;
    let model = ferry
        .get("model")
        .and_then(|m| m.as_str())
        .context("[tool.ferry] needs `model = \"module:Class\"`, e.g. \"model:EtaModel\"")?;
    let (module, class) = model
        .split_once(':')
        .filter(|(m, c)| m.split('.').all(is_identifier) && is_identifier(c))
        .with_context(|| {
            format!(
                "[tool.ferry] model = {model:?} is not `module:Class` (e.g. \"model:EtaModel\")"
            )
        })?;
    let bundle = match ferry.get("bundle") {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items
            .iter()
            .map(|item| {
                let folder = item
                    .as_str()
                    .context("[tool.ferry] bundle lists folders, as strings")?;
                let path = dir.join(folder);
                if !path.is_dir() {
                    bail!(
                        "[tool.ferry] bundle folder {folder:?} does not exist in {}",
                        dir.display()
                    );
                }
                Ok(path)
            })
            .collect::<anyhow::Result<_>>()?,
        Some(_) => bail!("[tool.ferry] bundle must be a list of folders"),
    };
    Ok(Project {
        name,
        module: module.to_owned(),
        class: class.to_owned(),
        bundle,
    })
}

/// The componentize-py to run: `$FERRY_COMPONENTIZE_PY`, else the pinned release in Ferry's tools
/// directory, installed there (in its own venv) on first use.
fn componentize_py() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("FERRY_COMPONENTIZE_PY") {
        return Ok(PathBuf::from(path));
    }
    let tools = std::env::var_os("FERRY_TOOLS_DIR")
        .map(PathBuf::from)
        .or_else(|| dirs::cache_dir().map(|d| d.join("ferry/tools")))
        .context("no cache directory for tools; set FERRY_TOOLS_DIR")?;
    let venv = tools.join(format!("componentize-py-{COMPONENTIZE_PY}"));
    let bin = venv.join("bin/componentize-py");
    // Written last: a venv without it is an interrupted install, started over (a venv cannot be built
    // elsewhere and moved: its scripts name their interpreter by absolute path).
    let installed_mark = venv.join(".ferry-installed");
    if installed_mark.exists() {
        return Ok(bin);
    }
    // Builds running side by side must not install into (or clear) the same venv at once.
    std::fs::create_dir_all(&tools).with_context(|| format!("creating {}", tools.display()))?;
    let lock =
        std::fs::File::create(tools.join(format!(".componentize-py-{COMPONENTIZE_PY}.lock")))?;
    lock.lock()
        .context("waiting for another ferry build's install")?;
    if installed_mark.exists() {
        return Ok(bin);
    }
    println!(
        "installing componentize-py {COMPONENTIZE_PY} from PyPI into {}",
        venv.display()
    );
    if venv.exists() {
        std::fs::remove_dir_all(&venv).with_context(|| format!("clearing {}", venv.display()))?;
    }
    let python = std::env::var_os("FERRY_PYTHON").unwrap_or_else(|| "python3".into());
    let venv_made = Command::new(&python)
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .with_context(|| {
            format!(
                "ferry build needs Python 3 ({}) to install componentize-py; install Python 3, or point \
                 FERRY_COMPONENTIZE_PY at a componentize-py {COMPONENTIZE_PY} executable",
                python.to_string_lossy()
            )
        })?;
    if !venv_made.success() {
        bail!("`{} -m venv` failed (see above); install the venv module (e.g. python3-venv) or set FERRY_COMPONENTIZE_PY", python.to_string_lossy());
    }
    let pip = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .arg(format!("componentize-py=={COMPONENTIZE_PY}"))
        .status()
        .context("running pip")?;
    if !pip.success() {
        let _ = std::fs::remove_dir_all(&venv);
        bail!(
            "could not install componentize-py {COMPONENTIZE_PY} from PyPI (pip's output is above). Without \
             access to PyPI, install it elsewhere (`pip install componentize-py=={COMPONENTIZE_PY}`) and set \
             FERRY_COMPONENTIZE_PY to the executable"
        );
    }
    std::fs::write(&installed_mark, COMPONENTIZE_PY)?;
    Ok(bin)
}

/// The generated entry module: imports the author's class and exports it through the SDK.
fn entry_module(project: &Project) -> String {
    format!(
        "# Generated by `ferry build`: the component's entry point.\n\
         from ferry_sdk._component import component\n\
         from {module} import {class}\n\n\
         Model = component({class})\n",
        module = project.module,
        class = project.class,
    )
}

/// Builds the Python project at `dir`; returns the component's path.
pub fn build(dir: &Path) -> anyhow::Result<PathBuf> {
    let project = read_project(dir)?;
    let componentize = componentize_py()?;

    let stage = dir.join("target/ferry/python");
    if stage.exists() {
        std::fs::remove_dir_all(&stage).with_context(|| format!("clearing {}", stage.display()))?;
    }
    for (path, text) in SDK {
        let file = stage.join(path);
        std::fs::create_dir_all(file.parent().expect("SDK paths have a parent"))?;
        std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
    }
    std::fs::write(
        stage.join(format!("{ENTRY_MODULE}.py")),
        entry_module(&project),
    )?;

    let out = super::output_path(dir, &project.name);
    let partial = out.with_extension("wasm.partial");
    let mut command = Command::new(&componentize);
    command
        .arg("-d")
        .arg(stage.join("wit"))
        .args(["-w", WORLD, "componentize", ENTRY_MODULE])
        .arg("-p")
        .arg(&stage)
        .arg("-p")
        .arg(dir);
    for folder in &project.bundle {
        command.arg("-p").arg(folder);
    }
    // componentize-py is Rust too: without this it appends its own stack to the author's traceback.
    command
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LIB_BACKTRACE", "0");
    let status = command
        .arg("-o")
        .arg(&partial)
        .status()
        .with_context(|| format!("running {}", componentize.display()))?;
    if !status.success() {
        let _ = std::fs::remove_file(&partial);
        bail!(
            "componentize-py could not build the component (its output is above). A Python traceback there \
             means `{}` failed to import or `{}` is not a ferry_sdk.Model subclass: the build imports the \
             model's module to snapshot it, so the module must import with only the standard library, \
             ferry_sdk and the [tool.ferry] bundle folders (packages with native extensions, such as numpy, \
             are not available yet)",
            project.module,
            project.class
        );
    }
    std::fs::rename(&partial, &out).with_context(|| format!("writing {}", out.display()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(toml: &str) -> anyhow::Result<Project> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pyproject.toml"), toml).unwrap();
        read_project(dir.path())
    }

    #[test]
    fn a_project_names_its_model_class_as_module_colon_class() {
        let p =
            project("[project]\nname = \"eta\"\n[tool.ferry]\nmodel = \"pkg.model:EtaModel\"\n")
                .unwrap();
        assert_eq!(
            (p.module.as_str(), p.class.as_str()),
            ("pkg.model", "EtaModel")
        );
        assert!(entry_module(&p).contains("from pkg.model import EtaModel\n"));

        let err = project("[project]\nname = \"eta\"\n[tool.ferry]\nmodel = \"model.EtaModel\"\n")
            .unwrap_err();
        assert!(err.to_string().contains("is not `module:Class`"), "{err}");
        let err = project("[project]\nname = \"eta\"\n").unwrap_err();
        assert!(err.to_string().contains("no [tool.ferry] table"), "{err}");
        let err = project(
            "[project]\nname = \"eta\"\n[tool.ferry]\nmodel = \"m:C\"\nbundle = [\"vendor\"]\n",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("\"vendor\" does not exist"),
            "{err}"
        );
    }
}
