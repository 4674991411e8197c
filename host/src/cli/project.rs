//! A model project: `ferry.toml` at its root names the model, its language, what a build reads and the
//! files that make a version, so that `ferry build`, `ferry test`, `ferry push` and `ferry dev` need no
//! arguments inside it. Projects made before the manifest (a `Cargo.toml` or a `pyproject.toml` alone)
//! are read with what `ferry new` wrote then: `weights.json`, `tests.json`, `config.json` and
//! `profile.json` beside it, when they exist.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context;
use serde::Deserialize;

use super::VersionFiles;
use crate::registry::VersionLimits;

/// The manifest's file name.
pub const MANIFEST: &str = "ferry.toml";

/// The languages a model can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Rust,
    Python,
    Js,
}

/// `ferry.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    model: ModelSection,
    #[serde(default)]
    build: BuildSection,
    #[serde(default)]
    version: VersionSection,
    /// The limits the team asks for: sent with every version (each host lowers its operator's limits
    /// to them, never raises them), and what `ferry test` and `ferry dev` run under.
    limits: Option<VersionLimits>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelSection {
    name: String,
    language: Language,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BuildSection {
    /// JavaScript: the module whose default export is the model class.
    entry: Option<String>,
    /// Files and folders a build reads.
    sources: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionSection {
    weights: Option<String>,
    config: Option<String>,
    tests: Option<String>,
    profile: Option<String>,
    #[serde(default)]
    graphs: BTreeMap<String, String>,
}

/// A model project found on disk.
#[derive(Debug, Clone)]
pub struct Project {
    /// The project's root (where `ferry.toml`, `Cargo.toml` or `pyproject.toml` is).
    pub dir: PathBuf,
    /// The model's name.
    pub name: String,
    pub language: Language,
    /// JavaScript: the entry module, relative to `dir`.
    pub entry: String,
    /// What a build reads, relative to `dir`.
    sources: Vec<PathBuf>,
    /// The files of a version, as paths from the current directory.
    pub files: VersionFiles,
    /// The limits the team asks for (`[limits]`), when the manifest has them.
    pub limits: Option<VersionLimits>,
}

/// Folders a source walk never enters: build output, installed packages, caches, version control.
const SKIPPED: [&str; 4] = ["target", "node_modules", "__pycache__", "training"];

impl Project {
    /// The project `start` is in: the nearest enclosing folder with a `ferry.toml` that has a
    /// `[model]` table (a host's configuration file may be called `ferry.toml` too), else `start`
    /// itself when it holds a `Cargo.toml` or a `pyproject.toml`. `None` outside any project.
    pub fn find(start: &Path) -> anyhow::Result<Option<Project>> {
        let start = if start.as_os_str().is_empty() {
            Path::new(".")
        } else {
            start
        };
        let absolute =
            std::path::absolute(start).with_context(|| format!("resolving {}", start.display()))?;
        for dir in absolute.ancestors() {
            let manifest = dir.join(MANIFEST);
            if manifest.is_file() && is_project_manifest(&manifest)? {
                return Project::read(&relative_to_cwd(dir)).map(Some);
            }
        }
        if start.join("Cargo.toml").is_file() {
            return legacy(start, Language::Rust);
        }
        if start.join("pyproject.toml").is_file() {
            return legacy(start, Language::Python);
        }
        Ok(None)
    }

    /// The project whose manifest is `dir/ferry.toml`.
    pub fn read(dir: &Path) -> anyhow::Result<Project> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let manifest: Manifest = toml::from_str(&text)
            .with_context(|| format!("{} is not a valid project manifest", path.display()))?;
        crate::registry::check_name("model", &manifest.model.name)
            .with_context(|| format!("{}: [model] name", path.display()))?;
        let in_project = |file: &String| dir.join(file);
        let mut graphs = Vec::new();
        for (name, file) in &manifest.version.graphs {
            crate::registry::check_graph_name(name)
                .with_context(|| format!("{}: [version.graphs]", path.display()))?;
            graphs.push((name.clone(), dir.join(file)));
        }
        if let Some(limits) = &manifest.limits {
            limits
                .check()
                .map_err(|e| anyhow::anyhow!("{}: [limits]: {e}", path.display()))?;
        }
        let language = manifest.model.language;
        let sources = match manifest.build.sources {
            Some(listed) => listed.iter().map(PathBuf::from).collect(),
            None => default_sources(dir, language),
        };
        Ok(Project {
            dir: dir.to_path_buf(),
            name: manifest.model.name,
            language,
            entry: manifest
                .build
                .entry
                .unwrap_or_else(|| "model.js".to_owned()),
            sources,
            files: VersionFiles {
                weights: manifest.version.weights.as_ref().map(in_project),
                config: manifest.version.config.as_ref().map(in_project),
                tests: manifest.version.tests.as_ref().map(in_project),
                profile: manifest.version.profile.as_ref().map(in_project),
                graphs,
            },
            limits: manifest.limits,
        })
    }

    /// Where `ferry build` puts the component: `target/ferry/NAME.wasm`.
    pub fn component(&self) -> PathBuf {
        self.dir
            .join("target/ferry")
            .join(format!("{}.wasm", self.name))
    }

    /// `flags` where given, else the manifest's files.
    pub fn files_with(&self, flags: &VersionFiles) -> VersionFiles {
        VersionFiles {
            weights: flags.weights.clone().or_else(|| self.files.weights.clone()),
            config: flags.config.clone().or_else(|| self.files.config.clone()),
            tests: flags.tests.clone().or_else(|| self.files.tests.clone()),
            profile: flags.profile.clone().or_else(|| self.files.profile.clone()),
            graphs: if flags.graphs.is_empty() {
                self.files.graphs.clone()
            } else {
                flags.graphs.clone()
            },
        }
    }

    /// Every file a build reads, with its modification time and length: what `ferry dev` watches
    /// for a rebuild.
    pub fn source_files(&self) -> Vec<(PathBuf, SystemTime, u64)> {
        let version_files: Vec<PathBuf> = self.version_file_paths();
        let mut out = Vec::new();
        for source in &self.sources {
            walk(&self.dir.join(source), &mut out);
        }
        out.retain(|(p, _, _)| !version_files.contains(p));
        out.sort();
        out.dedup_by(|a, b| a.0 == b.0);
        out
    }

    /// The version's files with their modification times and lengths (missing ones left out).
    pub fn version_file_stamps(&self) -> Vec<(PathBuf, SystemTime, u64)> {
        let mut out = Vec::new();
        for path in self.version_file_paths() {
            if let Ok(meta) = std::fs::metadata(&path) {
                out.push((
                    path,
                    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    meta.len(),
                ));
            }
        }
        out
    }

    fn version_file_paths(&self) -> Vec<PathBuf> {
        let f = &self.files;
        [&f.weights, &f.config, &f.tests, &f.profile]
            .into_iter()
            .flatten()
            .cloned()
            .chain(f.graphs.iter().map(|(_, p)| p.clone()))
            .collect()
    }

    /// Why the component must be built again (it is missing, or a source is newer), or `None` when
    /// it is up to date.
    pub fn stale(&self) -> Option<String> {
        let built = match std::fs::metadata(self.component()).and_then(|m| m.modified()) {
            Ok(t) => t,
            Err(_) => return Some(format!("{} is not built", self.component().display())),
        };
        self.source_files()
            .into_iter()
            .find(|(_, modified, _)| *modified > built)
            .map(|(path, _, _)| format!("{} changed", path.display()))
    }
}

/// Whether a `ferry.toml` is a project's (it has a `[model]` table) rather than, say, a host's
/// configuration.
fn is_project_manifest(path: &Path) -> anyhow::Result<bool> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?;
    Ok(table.contains_key("model"))
}

/// `dir` as a path from the current directory when it is below it, so that messages print short
/// paths; else as it is.
fn relative_to_cwd(dir: &Path) -> PathBuf {
    let cwd = std::env::current_dir().ok();
    match cwd.as_deref().and_then(|c| dir.strip_prefix(c).ok()) {
        Some(rel) if rel.as_os_str().is_empty() => PathBuf::from("."),
        Some(rel) => rel.to_path_buf(),
        None => dir.to_path_buf(),
    }
}

/// What a language's build reads when the manifest does not say.
fn default_sources(dir: &Path, language: Language) -> Vec<PathBuf> {
    match language {
        Language::Rust => ["src", "Cargo.toml", "Cargo.lock", "build.rs"]
            .map(PathBuf::from)
            .to_vec(),
        // The build imports modules from the project's root (and the bundle folders, listed in
        // pyproject.toml, which a manifest's `sources` names).
        Language::Python => root_files(dir, "py", "pyproject.toml"),
        Language::Js => root_files(dir, "js", "package.json"),
    }
}

/// Files at `dir`'s root ending in `.EXT`, and `also`.
fn root_files(dir: &Path, ext: &str, also: &str) -> Vec<PathBuf> {
    let mut out = vec![PathBuf::from(also)];
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = PathBuf::from(entry.file_name());
            if name.extension().is_some_and(|e| e == ext) {
                out.push(name);
            }
        }
    }
    out.sort();
    out
}

/// Adds `path` (a file, or every file below a folder) to `out`.
fn walk(path: &Path, out: &mut Vec<(PathBuf, SystemTime, u64)>) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    if meta.is_file() {
        out.push((
            path.to_path_buf(),
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            meta.len(),
        ));
        return;
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || SKIPPED.contains(&name.as_ref()) {
            continue;
        }
        walk(&entry.path(), out);
    }
}

/// A project made before the manifest; `None` when the file names no package (a Cargo workspace's
/// root, say).
fn legacy(dir: &Path, language: Language) -> anyhow::Result<Option<Project>> {
    let (file, table, key) = match language {
        Language::Rust => ("Cargo.toml", "package", "name"),
        _ => ("pyproject.toml", "project", "name"),
    };
    let path = dir.join(file);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let manifest: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?;
    let Some(name) = manifest
        .get(table)
        .and_then(|t| t.get(key))
        .and_then(|n| n.as_str())
    else {
        return Ok(None);
    };
    let beside = |file: &str| Some(dir.join(file)).filter(|p| p.is_file());
    Ok(Some(Project {
        dir: dir.to_path_buf(),
        name: name.to_owned(),
        language,
        entry: String::new(),
        sources: default_sources(dir, language),
        files: VersionFiles {
            weights: beside("weights.json"),
            config: beside("config.json"),
            tests: beside("tests.json"),
            profile: beside("profile.json"),
            graphs: Vec::new(),
        },
        limits: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, file: &str, text: &str) {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn a_manifest_names_the_model_its_files_and_limits() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            MANIFEST,
            "[model]\nname = \"eta\"\nlanguage = \"rust\"\n[version]\nweights = \"w.json\"\n\
             graphs = { model = \"m.onnx\" }\n[limits]\ndeadline_ms = 50\n",
        );
        write(dir.path(), "src/lib.rs", "");
        write(dir.path(), "src/nested/more.rs", "");
        write(dir.path(), "target/junk.rs", "");
        let p = Project::find(&dir.path().join("src/nested"))
            .unwrap()
            .unwrap();
        assert_eq!((p.name.as_str(), p.language), ("eta", Language::Rust));
        assert!(p.files.weights.as_ref().unwrap().ends_with("w.json"));
        assert_eq!(p.files.graphs.len(), 1);
        assert_eq!(p.limits.as_ref().unwrap().deadline_ms, Some(50));
        let sources: Vec<_> = p.source_files().into_iter().map(|s| s.0).collect();
        assert_eq!(sources.len(), 2, "{sources:?}");
        assert_eq!(
            p.stale().unwrap(),
            format!("{} is not built", p.component().display())
        );

        write(
            dir.path(),
            MANIFEST,
            "[model]\nname = \"eta\"\nlanguage = \"cobol\"\n",
        );
        let err = Project::find(dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains("language"), "{err:#}");
        write(
            dir.path(),
            MANIFEST,
            "[model]\nname = \"eta\"\nlanguage = \"rust\"\n[limits]\nmemory = 5\n",
        );
        let err = Project::find(dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains("memory"), "{err:#}");
    }

    #[test]
    fn a_host_configuration_called_ferry_toml_is_not_a_project() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), MANIFEST, "[models.eta]\ndeadline_ms = 5\n");
        write(dir.path(), "p/Cargo.toml", "[package]\nname = \"old\"\n");
        write(dir.path(), "p/weights.json", "{}");
        assert!(Project::find(dir.path()).unwrap().is_none());
        let p = Project::find(&dir.path().join("p")).unwrap().unwrap();
        assert_eq!(p.name, "old");
        assert!(p.files.weights.is_some() && p.files.tests.is_none());
        write(dir.path(), "w/Cargo.toml", "[workspace]\nmembers = []\n");
        assert!(Project::find(&dir.path().join("w")).unwrap().is_none());
    }
}
