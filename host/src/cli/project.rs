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

/// Folders a source walk does not enter at the project's root: build output and training code.
const NOT_SOURCES_AT_ROOT: [&str; 2] = ["target", "training"];
/// Folders it enters nowhere: installed packages, and the caches an interpreter writes while a build
/// imports the model (which would otherwise look like edits).
const NEVER_SOURCES: [&str; 2] = ["node_modules", "__pycache__"];

impl Project {
    /// The project `start` is in: `start` itself when it has a `ferry.toml` with a `[model]` table
    /// (a host's configuration may be called `ferry.toml` too), or a `Cargo.toml` or `pyproject.toml`
    /// naming a package (a project made before the manifest); else the nearest enclosing folder with
    /// a project's `ferry.toml`, as `ferry test` run from `src/` expects. The climb stops at a
    /// repository's root (a `.git`), and skips manifests this user does not own (a `/tmp/ferry.toml`
    /// planted by someone else must not decide what `ferry push` sends) or cannot read. `None`
    /// outside any project.
    pub fn find(start: &Path) -> anyhow::Result<Option<Project>> {
        let start = if start.as_os_str().is_empty() {
            Path::new(".")
        } else {
            start
        };
        let absolute =
            std::path::absolute(start).with_context(|| format!("resolving {}", start.display()))?;
        let manifest = start.join(MANIFEST);
        // Where the user stands, a manifest that does not parse is an error to show.
        if manifest.is_file() && is_project_manifest(&manifest)? {
            return Project::read(start).map(Some);
        }
        if start.join("Cargo.toml").is_file() {
            if let Some(p) = legacy(start, Language::Rust)? {
                return Ok(Some(p));
            }
        }
        if start.join("pyproject.toml").is_file() {
            if let Some(p) = legacy(start, Language::Python)? {
                return Ok(Some(p));
            }
        }
        // A repository's root ends the climb, the one the user stands in included.
        if absolute.join(".git").exists() {
            return Ok(None);
        }
        for dir in absolute.ancestors().skip(1) {
            let manifest = dir.join(MANIFEST);
            if manifest.is_file() && owned_by_me(&manifest) {
                match is_project_manifest(&manifest) {
                    Ok(true) => return Project::read(&relative_to_cwd(dir)).map(Some),
                    Ok(false) => {}
                    // A parent's broken manifest is not the user's project (they stand below
                    // it); say why it was passed over and look further up.
                    Err(e) => eprintln!(
                        "warning: {} cannot be read ({e:#}); looking in the folders above it",
                        manifest.display()
                    ),
                }
            }
            if dir.join(".git").exists() {
                break;
            }
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

    /// Warns about version files the manifest names outside the project: `ferry push` uploads them,
    /// and a cloned project's `weights = "/home/me/.aws/credentials"` should not pass unseen.
    pub fn warn_about_files_outside(&self) {
        let Ok(root) = std::fs::canonicalize(&self.dir) else {
            return;
        };
        for path in self.version_file_paths() {
            if let Ok(real) = std::fs::canonicalize(&path) {
                if !real.starts_with(&root) {
                    eprintln!(
                        "warning: ferry.toml names {}, outside the project {}; it is uploaded with the \
                         version",
                        real.display(),
                        root.display()
                    );
                }
            }
        }
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
            walk(&self.dir, &self.dir.join(source), &mut out);
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

    /// The sha256 of every source, by path, and of the manifest and the `ferry` release: what a build
    /// was made from (a new `entry` in `ferry.toml`, or a `ferry` with another built-in SDK, builds
    /// again).
    pub fn source_digests(&self) -> SourceDigests {
        let digest = |path: &Path| {
            // A file that vanished between the listing and the read counts as changed.
            std::fs::read(path)
                .map(|bytes| crate::stamps::sha256_hex(&bytes))
                .unwrap_or_default()
        };
        let mut digests: BTreeMap<String, String> = self
            .source_files()
            .into_iter()
            .map(|(path, _, _)| (path.to_string_lossy().into_owned(), digest(&path)))
            .collect();
        let manifest = self.dir.join(MANIFEST);
        if manifest.is_file() {
            digests.insert(manifest.to_string_lossy().into_owned(), digest(&manifest));
        }
        digests.insert(
            FERRY_RELEASE.to_owned(),
            env!("CARGO_PKG_VERSION").to_owned(),
        );
        SourceDigests(digests)
    }

    /// Sources a build writes itself (Rust's first build writes `Cargo.lock`): recorded as they are
    /// after the build, or the next command would see them changed and build again.
    fn written_by_build(&self) -> Vec<String> {
        match self.language {
            Language::Rust => vec![self.dir.join("Cargo.lock").to_string_lossy().into_owned()],
            Language::Python | Language::Js => Vec::new(),
        }
    }

    /// Where a build records the digests of the sources it was made from.
    fn build_record(&self) -> PathBuf {
        self.component().with_extension("sources.json")
    }

    /// Records that the component was built from `sources` (digests taken before the build began,
    /// so a save during the build leaves the component stale).
    pub fn record_build(&self, sources: &SourceDigests) -> anyhow::Result<()> {
        let mut record = sources.0.clone();
        let after = self.source_digests().0;
        for path in self.written_by_build() {
            match after.get(&path) {
                Some(sha) => record.insert(path, sha.clone()),
                None => record.remove(&path),
            };
        }
        let path = self.build_record();
        std::fs::write(&path, serde_json::to_vec(&record)?)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Why the component must be built again (it is missing, or a source differs from what it was
    /// built from), or `None` when it is up to date. By content, not modification times: a file put
    /// back with an older time (`cp -p`, an archive, another checkout) is still seen.
    pub fn stale(&self) -> Option<String> {
        if !self.component().is_file() {
            return Some(format!("{} is not built", self.component().display()));
        }
        let built: Option<BTreeMap<String, String>> = std::fs::read(self.build_record())
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        let Some(built) = built else {
            return Some("its sources were not recorded when it was built".to_owned());
        };
        let now = self.source_digests().0;
        if let Some((path, _)) = now.iter().find(|(p, sha)| built.get(*p) != Some(sha)) {
            return Some(if built.contains_key(path) {
                format!("{path} changed")
            } else {
                format!("{path} is new")
            });
        }
        built
            .keys()
            .find(|p| !now.contains_key(*p))
            .map(|path| format!("{path} was removed"))
    }
}

/// The key under which a build record names the `ferry` release that made it.
const FERRY_RELEASE: &str = "ferry release";

/// The sha256s of a project's sources, by path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceDigests(BTreeMap<String, String>);

/// Whether this process's user owns `path`.
fn owned_by_me(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    std::fs::metadata(path).is_ok_and(|m| m.uid() == me)
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

/// Most files a project's sources may hold: past it the walk stops (and says so), so that a `sources`
/// entry naming a huge folder costs a bounded amount every time the project is looked at.
const MAX_SOURCE_FILES: usize = 10_000;

/// Adds `path` (a file, or every file below a folder) to `out`. Symbolic links to folders below a
/// listed folder are not followed (a link back up would loop forever); links to files are. Hidden
/// entries and [`NEVER_SOURCES`] are left out everywhere; [`NOT_SOURCES_AT_ROOT`] only at the project's root (`root`),
/// where a `sources = ["."]` would otherwise take in build output.
fn walk(root: &Path, path: &Path, out: &mut Vec<(PathBuf, SystemTime, u64)>) {
    let mut folders = vec![path.to_path_buf()];
    let mut first = true;
    while let Some(folder) = folders.pop() {
        let Ok(meta) = std::fs::metadata(&folder) else {
            continue;
        };
        if meta.is_file() {
            if out.len() >= MAX_SOURCE_FILES {
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| {
                    eprintln!(
                        "warning: more than {MAX_SOURCE_FILES} source files under {}; the rest are \
                         not watched (narrow [build] sources in ferry.toml)",
                        path.display()
                    )
                });
                return;
            }
            out.push((
                folder,
                meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                meta.len(),
            ));
            continue;
        }
        if !meta.is_dir() || (!first && is_symlink(&folder)) {
            continue;
        }
        first = false;
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        let at_root = folder == root;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.')
                || NEVER_SOURCES.contains(&name.as_ref())
                || (at_root && NOT_SOURCES_AT_ROOT.contains(&name.as_ref()))
            {
                continue;
            }
            folders.push(entry.path());
        }
    }
}

fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
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

        // Built: up to date until a source's content changes, whatever its modification time.
        write(dir.path(), "target/ferry/eta.wasm", "");
        p.record_build(&p.source_digests()).unwrap();
        assert_eq!(p.stale(), None);
        let lib = dir.path().join("src/lib.rs");
        let old_time = std::fs::metadata(&lib).unwrap().modified().unwrap();
        write(dir.path(), "src/lib.rs", "fn changed() {}");
        std::fs::File::options()
            .write(true)
            .open(&lib)
            .unwrap()
            .set_modified(old_time - std::time::Duration::from_secs(3600))
            .unwrap();
        let why = p.stale().unwrap();
        assert!(why.ends_with("lib.rs changed"), "{why}");
        write(dir.path(), "src/lib.rs", "");
        assert_eq!(p.stale(), None);
        // `target` is skipped at the root only; a new file is a change; a link back up is not
        // followed.
        write(dir.path(), "src/target/kept.rs", "");
        let why = p.stale().unwrap();
        assert!(why.ends_with("kept.rs is new"), "{why}");
        std::os::unix::fs::symlink(dir.path(), dir.path().join("src/loop")).unwrap();
        assert_eq!(p.source_files().len(), 3);
        // The first build of a Rust project writes Cargo.lock: recorded as the build left it.
        let before = p.source_digests();
        write(dir.path(), "Cargo.lock", "# written by cargo");
        p.record_build(&before).unwrap();
        assert_eq!(p.stale(), None);

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

    #[test]
    fn where_the_user_stands_wins_over_a_parent_manifest_and_a_broken_parent_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            MANIFEST,
            "[model]\nname = \"parent\"\nlanguage = \"js\"\n",
        );
        write(dir.path(), "old/Cargo.toml", "[package]\nname = \"old\"\n");
        let p = Project::find(&dir.path().join("old")).unwrap().unwrap();
        assert_eq!(
            p.name, "old",
            "a project's own Cargo.toml, not a manifest above it"
        );
        write(dir.path(), "deep/er/x.txt", "");
        let p = Project::find(&dir.path().join("deep/er")).unwrap().unwrap();
        assert_eq!(p.name, "parent");
        // A repository's root ends the climb.
        std::fs::create_dir_all(dir.path().join("repo/.git")).unwrap();
        write(dir.path(), "repo/sub/x.txt", "");
        assert!(Project::find(&dir.path().join("repo/sub"))
            .unwrap()
            .is_none());
        // A manifest above that does not parse is passed over, not an error for `ferry test x.wasm`.
        write(dir.path(), MANIFEST, "[model\n");
        assert!(Project::find(&dir.path().join("deep/er"))
            .unwrap()
            .is_none());
        // Where the user stands, it is an error to show.
        assert!(Project::find(dir.path()).is_err());
    }
}
