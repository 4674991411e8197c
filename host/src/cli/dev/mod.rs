//! `ferry dev`: the inner loop of a model author. Builds the project, starts a local host (the real
//! `ferry serve`, on an empty store of its own, so the sandbox and limits are production's), loads the
//! project as a version, prints its self-tests and a `curl` with the project's example request, then
//! watches the project: a source change rebuilds, re-tests and hot-swaps; a change to the weights or
//! tests alone reloads without a rebuild. A broken build or a failing self-test keeps the last good
//! version serving and shows why. Ctrl-C stops the host and everything else it started.

mod host;
mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::client::ServerArgs;
use super::project::Project;
use super::push::{component_from, push, sha256_file, Push};
use super::CacheArgs;
use host::DevHost;
use watch::{Change, Snapshot};

#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// The project directory.
    #[arg(default_value = ".")]
    path: PathBuf,
    /// Address the local host listens on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Host configuration (TOML) for the local host [default: a production host's defaults].
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    cache: CacheArgs,
}

/// The alias the loaded version serves under, as in production.
const ALIAS: &str = "production";

/// Set by SIGINT or SIGTERM.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    // Only an atomic store: all a signal handler may safely do.
    STOP.store(true, Ordering::SeqCst);
}

/// Ctrl-C (or SIGTERM) sets [`STOP`], which every wait of `ferry dev` checks: the watch loop, the
/// host's start, a load (`Push::stopped`). A build in progress gets the terminal's Ctrl-C itself.
fn catch_stop_signals() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_stop_signal as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGTERM,
            on_stop_signal as *const () as libc::sighandler_t,
        );
    }
}

pub(crate) fn stopping() -> bool {
    STOP.load(Ordering::SeqCst)
}

pub fn run(args: DevArgs) -> anyhow::Result<i32> {
    let project = Project::find(&args.path)?.with_context(|| {
        format!(
            "{} is not in a model project (create one with `ferry new NAME [--lang rust|python|js]`)",
            args.path.display()
        )
    })?;
    // One `ferry dev` per project: a second would wipe the first's store under it.
    let lock_path = project.dir.join("target/ferry/dev.lock");
    std::fs::create_dir_all(lock_path.parent().expect("the lock has a folder"))?;
    let lock = std::fs::File::create(&lock_path)
        .with_context(|| format!("creating {}", lock_path.display()))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another `ferry dev` is serving this project (it holds {}): stop it first, or use that one",
            lock_path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", lock_path.display()))
        }
    }
    catch_stop_signals();
    let store = project.dir.join("target/ferry/dev-store");
    let Some(mut host) = DevHost::start(args.listen, &store, args.config.as_ref())? else {
        println!("\nferry dev: stopped");
        return Ok(0);
    };
    println!(
        "ferry dev: serving {} ({:?}) on {} — Ctrl-C stops",
        project.name, project.language, host.url
    );
    let mut session = Session {
        server: ServerArgs {
            server: host.url.clone(),
            token: None,
            // The shell's tokens are production's: never sent to a dev host.
            anonymous: true,
        },
        project,
        cache: args.cache,
        serving: None,
        pushed: Vec::new(),
        last_inputs: None,
        serving_inputs: None,
    };
    let mut seen = Snapshot::take(&session.project);
    session.reload(Change::Manifest);
    println!("watching {} for changes", session.project.dir.display());
    while !stopping() {
        if !host.running() {
            if stopping() {
                break;
            }
            anyhow::bail!("the local host stopped (its message is above)");
        }
        std::thread::sleep(watch::POLL);
        let now = Snapshot::take(&session.project);
        if now.change_since(&seen).is_none() {
            continue;
        }
        // What changed is judged once the files are still (an editor's save, a checkout or a
        // training run is several writes), against what the last reload saw.
        let settled = watch::settle(&session.project, now, stopping);
        let Some(change) = settled.change_since(&seen) else {
            seen = settled;
            continue;
        };
        if change == Change::Manifest && !session.reread_manifest() {
            seen = Snapshot::take(&session.project);
            continue;
        }
        // Taken before the build: a save during it is seen on the next round.
        seen = Snapshot::take(&session.project);
        session.reload(change);
    }
    host.stop();
    println!("\nferry dev: stopped the local host");
    Ok(0)
}

/// The loop's state.
struct Session {
    server: ServerArgs,
    project: Project,
    cache: CacheArgs,
    /// The version the alias points at.
    serving: Option<String>,
    /// Versions loaded this session, oldest first.
    pushed: Vec<String>,
    /// What the last version loaded was made of (component and files, by sha256): a change that
    /// leaves them the same (a save without an edit, a build that rewrote `Cargo.lock`) loads nothing.
    last_inputs: Option<String>,
    /// What the serving version is made of: going back to it (undoing an edit that failed) loads
    /// nothing either.
    serving_inputs: Option<String>,
}

impl Session {
    fn still_serving(&self) -> String {
        match &self.serving {
            Some(v) => format!("version {v} keeps serving"),
            None => "nothing serves yet; fix it and save".to_owned(),
        }
    }

    /// Reads `ferry.toml` again after it changed; false (with the reason printed) when the new one
    /// cannot be served by this session.
    fn reread_manifest(&mut self) -> bool {
        match Project::find(&self.project.dir) {
            Ok(Some(p)) if p.name == self.project.name => {
                self.project = p;
                true
            }
            Ok(Some(p)) => {
                println!(
                    "ferry.toml now names model `{}`; restart `ferry dev` to serve it ({})",
                    p.name,
                    self.still_serving()
                );
                false
            }
            Ok(None) => {
                println!("ferry.toml is gone; {}", self.still_serving());
                false
            }
            Err(e) => {
                println!("✗ ferry.toml: {e:#} — {}", self.still_serving());
                false
            }
        }
    }

    /// Builds when sources changed, loads a version, swaps the alias when it is ready.
    fn reload(&mut self, change: Change) {
        if stopping() {
            return;
        }
        // Built only when the sources differ from what the component was built from: a touch, or
        // the `Cargo.lock` the first build wrote, rebuilds nothing.
        let component = if change != Change::Manifest && self.project.stale().is_none() {
            if change == Change::Sources {
                println!("\n— sources unchanged since the last build");
            }
            self.project.component()
        } else {
            println!("\n— building {}", self.project.name);
            match super::build::build(&self.project, &self.cache) {
                Ok(path) => path,
                Err(_) if stopping() => return,
                Err(e) => {
                    println!("✗ build failed: {e:#}\n  {}", self.still_serving());
                    return;
                }
            }
        };
        if stopping() {
            return;
        }
        let files = self.project.files.clone();
        let inputs = match inputs_key(&component, &self.project) {
            Ok(key) => key,
            Err(e) => {
                println!("✗ {e:#} — {}", self.still_serving());
                return;
            }
        };
        if self.last_inputs.as_deref() == Some(inputs.as_str())
            || self.serving_inputs.as_deref() == Some(inputs.as_str())
        {
            println!(
                "  nothing a version is made of changed since the last load, or since the serving version: {}",
                self.still_serving()
            );
            self.last_inputs = Some(inputs);
            return;
        }
        println!("— loading {}", self.project.name);
        let result =
            component_from(&self.server, &self.project.name, &component).and_then(|source| {
                push(Push {
                    server: &self.server,
                    model: &self.project.name,
                    version: None,
                    component: source,
                    files: &files,
                    limits: self.project.limits.as_ref(),
                    alias: Some(ALIAS),
                    wait: Duration::from_secs(600),
                    stopped: &stopping,
                })
            });
        let pushed = match result {
            Ok(p) => p,
            Err(e) => {
                if !stopping() {
                    println!("✗ loading failed: {e:#} — {}", self.still_serving());
                }
                return;
            }
        };
        self.last_inputs = Some(inputs.clone());
        self.pushed.push(pushed.version.clone());
        print_self_tests(&pushed.description);
        if !pushed.ready() {
            println!(
                "✗ version {} did not load — {}",
                pushed.version,
                self.still_serving()
            );
            return;
        }
        let previous = self.serving.replace(pushed.version.clone());
        self.serving_inputs = Some(inputs);
        println!("✓ version {} serves `{ALIAS}`", pushed.version);
        self.forget_all_but(&pushed.version, previous.as_deref());
        self.show_example();
    }

    /// Deletes the versions this session loaded but `keep` and `previous` (kept one swap longer, for
    /// requests still in flight on it), so a long session holds two versions, not hundreds.
    fn forget_all_but(&mut self, keep: &str, previous: Option<&str>) {
        let mut kept = Vec::new();
        for version in std::mem::take(&mut self.pushed) {
            if version == keep || Some(version.as_str()) == previous {
                kept.push(version);
                continue;
            }
            let path = format!("/v1/models/{}/versions/{version}", self.project.name);
            if let Err(e) = self.server.request("DELETE", &path).call() {
                println!("  (could not delete old version {version}: {e})");
                kept.push(version);
            }
        }
        self.pushed = kept;
    }

    /// Prints a ready-to-paste `curl` for the project's example request, and the answer to it.
    fn show_example(&self) {
        let Some((route, body)) = example_request(&self.project) else {
            println!(
                "  (no example request: add example-request.json, or a case to the tests file, to get a curl here)"
            );
            return;
        };
        let url = format!("{}{route}", self.server.server);
        let text = body.to_string();
        println!(
            "  curl -s -X POST {url} -H 'content-type: application/json' -d '{}'",
            text.replace('\'', r"'\''")
        );
        let answer = ureq::post(&url)
            .timeout(Duration::from_secs(30))
            .set("content-type", "application/json")
            .send_string(&text);
        match answer {
            Ok(r) => println!("  → {}", r.into_string().unwrap_or_default().trim_end()),
            Err(ureq::Error::Status(code, r)) => println!(
                "  → HTTP {code}: {}",
                r.into_string().unwrap_or_default().trim_end()
            ),
            Err(e) => println!("  → {e}"),
        }
    }
}

/// The sha256s of what a version is made of, as one string.
fn inputs_key(component: &Path, project: &Project) -> anyhow::Result<String> {
    let mut hasher = Sha256::new();
    for path in std::iter::once(component.to_path_buf()).chain(
        project
            .version_file_stamps()
            .into_iter()
            .map(|(path, _, _)| path),
    ) {
        // Streamed, as push hashes its parts: gigabytes of weights cost no gigabytes here.
        hasher.update(path.to_string_lossy().as_bytes());
        hasher.update(sha256_file(&path)?.as_bytes());
    }
    hasher.update(serde_json::to_vec(&project.limits).unwrap_or_default());
    Ok(hex::encode(hasher.finalize()))
}

/// The version's self-tests, case by case, as the host ran them (`push` has printed its state, and
/// why it failed).
fn print_self_tests(version: &Value) {
    let tests = &version["self_tests"];
    let cases = tests["cases"].as_array().cloned().unwrap_or_default();
    let width = cases
        .iter()
        .filter_map(|c| c["name"].as_str().map(str::len))
        .max()
        .unwrap_or(0);
    for case in &cases {
        let passed = case["passed"].as_bool().unwrap_or(false);
        println!(
            "  {}  {:width$}  max|Δ| {:.2e}",
            if passed { "PASS" } else { "FAIL" },
            case["name"].as_str().unwrap_or("?"),
            case["worst_delta"].as_f64().unwrap_or(0.0),
        );
        if !passed {
            println!("        {}", case["detail"].as_str().unwrap_or_default());
        }
    }
    if tests.is_object() {
        println!("  {} passed, {} failed", tests["passed"], tests["failed"]);
    }
}

/// The project's example request: `example-request.json` when it has one, else the first case of its
/// tests file. Returns the route and the body.
fn example_request(project: &Project) -> Option<(String, Value)> {
    let name = &project.name;
    let route_for = |body: &Value| {
        if body.get("inputs").is_some_and(Value::is_array) {
            format!("/v2/models/{name}/infer")
        } else {
            format!("/v1/models/{name}/predict")
        }
    };
    let read =
        |path: &Path| -> Option<Value> { serde_json::from_slice(&std::fs::read(path).ok()?).ok() };
    if let Some(body) = read(&project.dir.join("example-request.json")) {
        return Some((route_for(&body), body));
    }
    let tests = read(project.files.tests.as_ref()?)?;
    let case = tests["cases"].as_array()?.first()?.clone();
    if let Some(request) = case.get("request") {
        return Some((format!("/v1/models/{name}/predict"), request.clone()));
    }
    let inputs = case.get("inputs")?;
    Some((
        format!("/v2/models/{name}/infer"),
        serde_json::json!({ "inputs": inputs }),
    ))
}
