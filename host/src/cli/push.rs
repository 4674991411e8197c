//! `ferry push`: upload a version (or new weights for the current component), show progress, wait
//! until the server reports it ready or failed. Inside a project it needs no arguments: the project's
//! component (built first when a source is newer; not uploaded again when the server already holds
//! it, so a weights-only change compiles nothing) with the files and limits `ferry.toml` names.

use std::fs::File;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::client::{describe, json as answer, ServerArgs};
use crate::registry::VersionLimits;
use crate::stamps::sha256_hex;

#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// The component; without it, the project's (inside a project), else the current version's (a
    /// weights-only update: nothing is compiled).
    component: Option<PathBuf>,
    /// The model's name [default: the project's].
    #[arg(long)]
    model: Option<String>,
    #[command(flatten)]
    files: super::VersionFiles,
    /// The version's name (default: the next number).
    #[arg(long)]
    version: Option<String>,
    /// Point this alias at the version once it is ready (e.g. production).
    #[arg(long)]
    alias: Option<String>,
    /// Give up waiting for ready after this many seconds.
    #[arg(long, default_value_t = 600)]
    wait_seconds: u64,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    cache: super::CacheArgs,
}

/// Where a version's component comes from.
pub enum ComponentSource {
    /// Upload this file.
    Upload(PathBuf),
    /// A component the server already stores, by sha256.
    Stored(String),
    /// The model's current version's component.
    Current,
}

/// What to push.
pub struct Push<'a> {
    pub server: &'a ServerArgs,
    pub model: &'a str,
    /// The version's name (default: the next number).
    pub version: Option<String>,
    pub component: ComponentSource,
    pub files: &'a super::VersionFiles,
    pub limits: Option<&'a VersionLimits>,
    /// Point this alias at the version once it is ready.
    pub alias: Option<&'a str>,
    pub wait: Duration,
    /// Checked while waiting for the load: true gives up (`ferry dev`'s Ctrl-C).
    pub stopped: &'a dyn Fn() -> bool,
}

/// A pushed version, once the server finished loading it.
pub struct Pushed {
    pub version: String,
    /// Its description (`versions[]` of `GET /v1/models/{m}`): state, reason, self-tests.
    pub description: Value,
}

impl Pushed {
    pub fn ready(&self) -> bool {
        self.description["state"] == "ready"
    }
}

/// `Stored` when the server already holds the component at `path` (by sha256), else `Upload`.
pub fn component_from(
    server: &ServerArgs,
    model: &str,
    path: &Path,
) -> anyhow::Result<ComponentSource> {
    let sha = sha256_file(path)?;
    let stored = describe(server, model)?.is_some_and(|d| {
        d["versions"]
            .as_array()
            .is_some_and(|vs| vs.iter().any(|v| v["component_sha256"] == sha.as_str()))
    });
    Ok(if stored {
        println!(
            "component unchanged (sha256 {}…): the server's copy is reused",
            &sha[..12]
        );
        ComponentSource::Stored(sha)
    } else {
        ComponentSource::Upload(path.to_path_buf())
    })
}

/// One part of the multipart body: its header and its content.
struct Part {
    header: String,
    body: Box<dyn Read + Send>,
    len: u64,
}

/// Hashes by streaming: a 1 GB weights file costs no 1 GB of memory here either.
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut hasher = Sha256::new();
    std::io::copy(
        &mut File::open(path).with_context(|| format!("reading {}", path.display()))?,
        &mut hasher,
    )?;
    Ok(hex::encode(hasher.finalize()))
}

fn file_part(boundary: &str, name: &str, path: &Path) -> anyhow::Result<(Part, String)> {
    let sha = sha256_file(path)?;
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let header = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{}\"\r\nContent-Type: application/octet-stream\r\n\r\n",
        path.file_name().unwrap_or_default().to_string_lossy()
    );
    Ok((
        Part {
            header,
            body: Box::new(file),
            len,
        },
        sha,
    ))
}

fn text_part(boundary: &str, name: &str, text: &str) -> Part {
    Part {
        header: format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n"),
        body: Box::new(Cursor::new(text.as_bytes().to_vec())),
        len: text.len() as u64,
    }
}

fn next_version(description: &Option<Value>) -> String {
    let highest = description
        .as_ref()
        .and_then(|d| d["versions"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v["version"].as_str().and_then(|s| s.parse::<u64>().ok()))
        .max()
        .unwrap_or(0);
    (highest + 1).to_string()
}

pub fn run(args: PushArgs) -> anyhow::Result<i32> {
    let project = super::project::Project::find(Path::new("."))?;
    let model = match (&args.model, &project) {
        (Some(m), _) => m.clone(),
        (None, Some(p)) => p.name.clone(),
        (None, None) => bail!(
            "name the model (`ferry push --model NAME`), or run `ferry push` inside a model project \
             (made by `ferry new`)"
        ),
    };
    // The project speaks for its own model only: `--model other` inside it is the old weights-only
    // update of another model.
    let project = project.filter(|p| p.name == model);
    let files = match &project {
        Some(p) => {
            p.warn_about_files_outside();
            p.files_with(&args.files)
        }
        None => args.files.clone(),
    };
    let component = match (&args.component, &project) {
        (Some(path), _) => ComponentSource::Upload(path.clone()),
        (None, Some(p)) => {
            let path = super::build::up_to_date(p, &args.cache)?;
            component_from(&args.server, &model, &path)?
        }
        (None, None) => ComponentSource::Current,
    };
    let pushed = push(Push {
        server: &args.server,
        model: &model,
        version: args.version.clone(),
        component,
        files: &files,
        limits: project.as_ref().and_then(|p| p.limits.as_ref()),
        alias: args.alias.as_deref(),
        wait: Duration::from_secs(args.wait_seconds),
        stopped: &|| false,
    })?;
    Ok(if pushed.ready() { 0 } else { 1 })
}

/// Uploads a version, waits until the server has loaded it (ready or failed), and points the alias at
/// it when it is ready; prints what it does.
pub fn push(args: Push) -> anyhow::Result<Pushed> {
    let description = describe(args.server, args.model)?;
    let version = args
        .version
        .clone()
        .unwrap_or_else(|| next_version(&description));
    let boundary = format!(
        "ferry-{}",
        sha256_hex(format!("{:?}", Instant::now()).as_bytes())
            .get(..24)
            .unwrap_or("boundary")
    );

    let mut parts = Vec::new();
    let mut shas = serde_json::Map::new();
    match &args.component {
        ComponentSource::Upload(path) => {
            let (part, sha) = file_part(&boundary, "component", path)?;
            parts.push(part);
            shas.insert("component_sha256".into(), json!(sha));
        }
        ComponentSource::Stored(sha) => {
            parts.push(text_part(&boundary, "component_sha256", sha));
            shas.insert("component_sha256".into(), json!(sha));
        }
        ComponentSource::Current => {
            let Some(d) = &description else {
                bail!(
                    "model `{}` is unknown to the server: push a component first",
                    args.model
                )
            };
            let current = d["default_version"]
                .as_str()
                .context("the model has no ready version whose component could be reused")?;
            let sha = d["versions"]
                .as_array()
                .and_then(|vs| vs.iter().find(|v| v["version"] == current))
                .and_then(|v| v["component_sha256"].as_str())
                .context("the current version has no component")?
                .to_owned();
            parts.push(text_part(&boundary, "component_sha256", &sha));
            shas.insert("component_sha256".into(), json!(sha));
        }
    }
    for (name, path) in [
        ("weights", &args.files.weights),
        ("config", &args.files.config),
        ("tests", &args.files.tests),
        ("profile", &args.files.profile),
    ] {
        if let Some(path) = path {
            let (part, sha) = file_part(&boundary, name, path)?;
            parts.push(part);
            shas.insert(format!("{name}_sha256"), json!(sha));
        }
    }
    for (name, path) in &args.files.graphs {
        let (part, sha) = file_part(&boundary, &format!("graph:{name}"), path)?;
        parts.push(part);
        shas.insert(format!("graph {name} sha256"), json!(sha));
    }
    if let Some(limits) = args.limits {
        parts.push(text_part(
            &boundary,
            "limits",
            &serde_json::to_string(limits).expect("limits serialise"),
        ));
    }

    let total: u64 = parts
        .iter()
        .map(|p| p.header.len() as u64 + p.len + 2)
        .sum::<u64>()
        + boundary.len() as u64
        + 6;
    let mut body: Box<dyn Read + Send> = Box::new(Cursor::new(Vec::new()));
    for part in parts {
        body = Box::new(
            body.chain(Cursor::new(part.header.into_bytes()))
                .chain(part.body)
                .chain(Cursor::new(b"\r\n".to_vec())),
        );
    }
    body = Box::new(body.chain(Cursor::new(format!("--{boundary}--\r\n").into_bytes())));

    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template(
            "uploading {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    bar.set_message(format!("{}@{version}", args.model));
    let created = answer(
        args.server
            .request(
                "PUT",
                &format!("/v1/models/{}/versions/{version}", args.model),
            )
            .set(
                "Content-Type",
                &format!("multipart/form-data; boundary={boundary}"),
            )
            .set("Content-Length", &total.to_string())
            .send(bar.wrap_read(body)),
        "uploading",
    );
    bar.finish_and_clear();
    let created = created?;
    println!("{} version {}", args.model, version);
    for (k, v) in &shas {
        println!("  {k:<17} {}", v.as_str().unwrap_or_default());
    }
    if created["component_sha256"] != shas["component_sha256"] {
        bail!(
            "the server stored component {} but {} was sent",
            created["component_sha256"],
            shas["component_sha256"]
        );
    }

    let spinner = ProgressBar::new_spinner().with_message("compiling, initialising, self-testing");
    spinner.enable_steady_tick(Duration::from_millis(100));
    let deadline = Instant::now() + args.wait;
    let outcome = loop {
        let d = describe(&args.server, &args.model)?.context("the model disappeared")?;
        let v = d["versions"].as_array().and_then(|vs| {
            vs.iter()
                .find(|v| v["version"] == version.as_str())
                .cloned()
        });
        match v.as_ref().and_then(|v| v["state"].as_str()) {
            Some("ready") | Some("failed") | Some("unloaded") => break v.expect("found"),
            None => bail!("version {version} disappeared while loading"),
            _ if (args.stopped)() => bail!("stopped while version {version} loaded"),
            _ if Instant::now() > deadline => bail!(
                "version {version} was not ready within {} s",
                args.wait.as_secs()
            ),
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    spinner.finish_and_clear();
    match outcome["state"].as_str() {
        Some("failed") => {
            println!(
                "  state             failed: {}",
                outcome["reason"].as_str().unwrap_or("?")
            );
            return Ok(Pushed {
                version,
                description: outcome,
            });
        }
        _ => {
            let tests = &outcome["self_tests"];
            println!("  state             ready ({} self-tests passed, worst |Δ| {:.2e}, loaded in {:.2} s)",
                tests["passed"], tests["worst_delta"].as_f64().unwrap_or(0.0), outcome["load_seconds"].as_f64().unwrap_or(0.0));
        }
    }
    if let Some(alias) = args.alias {
        answer(
            args.server
                .request("PUT", &format!("/v1/models/{}/aliases/{alias}", args.model))
                .send_json(json!({ "version": version })),
            "setting the alias",
        )?;
        println!("  alias             {alias} → {version}");
    }
    Ok(Pushed {
        version,
        description: outcome,
    })
}
