//! A real `ferry serve` process on a free loopback port, over a store seeded with `ferry add`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::workspace;

/// The `ferry` binary cargo built beside this test binary.
pub fn ferry_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test> → target/<profile>/ferry
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join(format!("ferry{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p ferry`",
        bin.display()
    );
    bin
}

/// One version to seed the store with.
pub struct Seed<'a> {
    pub model: &'a str,
    pub version: &'a str,
    pub component: PathBuf,
    pub weights: Option<PathBuf>,
    pub tests: Option<PathBuf>,
    /// The training profile (`--profile`).
    pub profile: Option<PathBuf>,
    pub config: Option<serde_json::Value>,
    /// Named ONNX graphs (`--graph NAME=FILE`).
    pub graphs: Vec<(String, PathBuf)>,
}

impl<'a> Seed<'a> {
    /// A sample model from target/models with whatever files it has beside it (weights, config,
    /// tests, `<name>.graph.<NAME>.onnx` graphs).
    pub fn sample(name: &'a str, version: &'a str) -> Seed<'a> {
        let dir = workspace().join("target/models");
        let beside = |ext: &str| Some(dir.join(format!("{name}.{ext}"))).filter(|p| p.exists());
        let prefix = format!("{name}.graph.");
        let mut graphs: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter_map(|e| {
                let file = e.file_name().into_string().ok()?;
                let graph = file
                    .strip_prefix(&prefix)?
                    .strip_suffix(".onnx")?
                    .to_owned();
                Some((graph, e.path()))
            })
            .collect();
        graphs.sort();
        Seed {
            model: name,
            version,
            component: dir.join(format!("{name}.wasm")),
            weights: beside("weights"),
            tests: beside("tests.json"),
            profile: beside("profile.json"),
            config: beside("config.json")
                .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()),
            graphs,
        }
    }

    /// The hostile guest as model `model`, configured with `config`.
    pub fn hostile(model: &'a str, config: serde_json::Value) -> Seed<'a> {
        Seed {
            model,
            version: "1",
            component: workspace().join("target/test-guests/hostile-guest.wasm"),
            weights: None,
            tests: None,
            profile: None,
            config: Some(config),
            graphs: Vec::new(),
        }
    }
}

/// Runs `ferry add` for `seed` into `store`.
pub fn add(store: &Path, seed: &Seed) {
    let mut cmd = Command::new(ferry_bin());
    cmd.arg("add")
        .arg(&seed.component)
        .args(["--model", seed.model, "--version", seed.version])
        .arg("--store")
        .arg(store)
        .arg("--cache-dir")
        .arg(store.with_file_name("cache"));
    if let Some(w) = &seed.weights {
        cmd.arg("--weights").arg(w);
    }
    if let Some(p) = &seed.profile {
        cmd.arg("--profile").arg(p);
    }
    if let Some(t) = &seed.tests {
        cmd.arg("--tests").arg(t);
    }
    for (name, file) in &seed.graphs {
        cmd.arg("--graph").arg(format!("{name}={}", file.display()));
    }
    if let Some(c) = &seed.config {
        let path = store.with_file_name(format!("{}-{}.config.json", seed.model, seed.version));
        std::fs::write(&path, c.to_string()).unwrap();
        cmd.arg("--config").arg(path);
    }
    let out = cmd.output().expect("run ferry add");
    assert!(
        out.status.success(),
        "ferry add {}: {}",
        seed.model,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Where a test server's compiled code lives.
#[derive(PartialEq, Eq)]
enum Compiled {
    /// With every other test server's of the run that shares it.
    SharedByTheRun,
    /// In its own cache directory.
    Own,
}

/// The compiled-code directory this test process's servers share: made at first use, after
/// removing those of test processes no longer running, and removed at exit. Never one of an earlier
/// run: a snapshot's name and its self-test note name the model's files, not the host build that
/// made them, so a later build must take its own.
fn shared_compiled() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let root = workspace().join("target/ferry-test-cache/served");
        for entry in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let running = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<u32>().ok())
                .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
            if !running {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let dir = root.join(std::process::id().to_string());
        std::fs::create_dir_all(&dir).unwrap();
        reap_at_exit_dir(dir.clone());
        dir
    })
}

/// A running server; killed when dropped.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    _dir: tempfile::TempDir,
    port: u16,
    extra_args: Vec<String>,
    env: Vec<(String, String)>,
}

fn spawn(dir: &Path, port: u16, extra_args: &[String], env: &[(String, String)]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .unwrap();
    let child = Command::new(ferry_bin())
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--store")
        .arg(dir.join("store"))
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .arg("--config")
        .arg(dir.join("ferry.toml"))
        .args(extra_args)
        .env("FERRY_LOG", "ferry=info,warn")
        // The ONNX Runtime that host-side graphs load, installed once per checkout.
        .env("FERRY_TOOLS_DIR", crate::workspace().join("target/tools"))
        .env_remove("FERRY_ADMIN_TOKEN")
        .env_remove("FERRY_INFERENCE_TOKEN")
        .env_remove("FERRY_TOKENS_FILE")
        // A run's own OpenTelemetry settings never reach the servers it tests (the span-export test
        // sets its own).
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_PROTOCOL")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_RESOURCE_ATTRIBUTES")
        .env_remove("OTEL_TRACES_SAMPLER")
        .env_remove("OTEL_TRACES_SAMPLER_ARG")
        .env_remove("OTEL_TRACES_EXPORTER")
        .env_remove("OTEL_SDK_DISABLED")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start ferry serve");
    reap_at_exit(child.id());
    child
}

static LIVE: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());
static LEFT_AT_EXIT: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

extern "C" fn clean_up_at_exit() {
    if let Ok(pids) = LIVE.lock() {
        for pid in pids.iter() {
            // SAFETY: kill(2) on a pid this process spawned.
            unsafe { libc::kill(*pid as libc::pid_t, libc::SIGKILL) };
        }
    }
    if let Ok(dirs) = LEFT_AT_EXIT.lock() {
        for dir in dirs.iter() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Removes `dir` at exit, after the servers that may use it are killed.
fn reap_at_exit_dir(dir: PathBuf) {
    LEFT_AT_EXIT.lock().unwrap().push(dir);
    register_exit_hook();
}

fn register_exit_hook() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    // SAFETY: registers a plain extern "C" function.
    HOOK.call_once(|| unsafe {
        libc::atexit(clean_up_at_exit);
    });
}

/// A server must not outlive the test binary, even one held in a static that is never dropped: the
/// test harness exits through `exit`, which runs this hook.
pub fn reap_at_exit(pid: u32) {
    register_exit_hook();
    LIVE.lock().unwrap().push(pid);
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    /// Seeds a fresh store, writes `config_toml`, starts `ferry serve`, waits until it is ready.
    pub fn start(seeds: &[Seed], config_toml: &str) -> Server {
        Server::start_with(seeds, config_toml, &[])
    }

    /// Like [`Server::start`], with more `ferry serve` arguments (e.g. `--admin-token`).
    pub fn start_with(seeds: &[Seed], config_toml: &str, extra_args: &[&str]) -> Server {
        Server::start_in(
            seeds,
            config_toml,
            extra_args,
            Compiled::SharedByTheRun,
            &[],
        )
    }

    /// Like [`Server::start`], with more environment (`FERRY_LOG` to filter its log otherwise,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, ...).
    pub fn start_with_env(seeds: &[Seed], config_toml: &str, env: &[(&str, &str)]) -> Server {
        Server::start_in(seeds, config_toml, &[], Compiled::SharedByTheRun, env)
    }

    /// Like [`Server::start_with`], with compiled code of its own: for a test that counts or
    /// removes what its host compiled, or needs its host to compile.
    pub fn start_alone(seeds: &[Seed], config_toml: &str, extra_args: &[&str]) -> Server {
        Server::start_in(seeds, config_toml, extra_args, Compiled::Own, &[])
    }

    fn start_in(
        seeds: &[Seed],
        config_toml: &str,
        extra_args: &[&str],
        compiled: Compiled,
        env: &[(&str, &str)],
    ) -> Server {
        let dir = tempfile::tempdir().unwrap();
        if compiled == Compiled::SharedByTheRun {
            // Compiled code is named by content and engine (hosts of a fleet may share a cache
            // directory too), so a sample model is compiled once per run, not once per test.
            std::fs::create_dir_all(dir.path().join("cache")).unwrap();
            std::os::unix::fs::symlink(shared_compiled(), dir.path().join("cache/compiled"))
                .unwrap();
        }
        let store = dir.path().join("store");
        for seed in seeds {
            add(&store, seed);
        }
        std::fs::create_dir_all(&store).unwrap();
        std::fs::write(dir.path().join("ferry.toml"), config_toml).unwrap();
        let port = free_port();
        let extra_args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let child = spawn(dir.path(), port, &extra_args, &env);
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
            port,
            extra_args,
            env,
        };
        server.wait_ready(Duration::from_secs(300));
        server
    }

    /// The store directory.
    pub fn store(&self) -> PathBuf {
        self._dir.path().join("store")
    }

    /// The host's cache directory (compiled components, uploads in progress); its `compiled` is
    /// shared by the run's servers unless the server was started [`Server::start_alone`].
    pub fn cache(&self) -> PathBuf {
        self._dir.path().join("cache")
    }

    /// Replaces the configuration file; a [`Server::restart`] reads it.
    pub fn set_config(&self, config_toml: &str) {
        std::fs::write(self._dir.path().join("ferry.toml"), config_toml).unwrap();
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process outright (SIGKILL): no draining, no cleanup.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts `ferry serve` again on the same store, port and arguments; waits until ready.
    pub fn restart(&mut self) {
        self.kill9();
        self.child = spawn(self._dir.path(), self.port, &self.extra_args, &self.env);
        self.wait_ready(Duration::from_secs(300));
    }

    fn wait_ready(&self, limit: Duration) {
        let started = Instant::now();
        while started.elapsed() < limit {
            if ureq::get(&self.url("/v2/health/ready")).call().is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "ferry serve was not ready within {limit:?}; log:\n{}",
            self.log()
        );
    }

    /// A URL on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Waits until `model` has a busy instance (a call in flight), as /metrics reports it.
    pub fn wait_busy(&self, model: &str) {
        let needle = format!("ferry_instances{{model=\"{model}\",version=\"1\",state=\"busy\"}} 1");
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            let text = ureq::get(&self.url("/metrics"))
                .call()
                .ok()
                .and_then(|r| r.into_string().ok())
                .unwrap_or_default();
            if text.contains(&needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("{model} never had a call in flight");
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("server.log")).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the process to exit; returns whether it exited cleanly.
    pub fn terminate(mut self) -> bool {
        self.stop()
    }

    /// As [`Server::terminate`], keeping the store and the log to look at afterwards.
    pub fn stop(&mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
