//! The local host `ferry dev` serves the project on: `ferry serve` itself, as a child process, so the
//! project runs in the same sandbox, under the same limits and through the same routes as in
//! production. It dies with `ferry dev`, however that ends.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// A running `ferry serve`.
pub struct DevHost {
    child: Child,
    pub url: String,
}

/// How long the host may take to listen (it compiles nothing at start: its store is empty).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a graceful stop may take before the host is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

impl DevHost {
    /// Starts `ferry serve` on `listen` with an empty store at `store` and the host configuration
    /// `config` (the defaults without one), and waits until it answers; `None` when stopped first.
    pub fn start(
        listen: SocketAddr,
        store: &Path,
        config: Option<&PathBuf>,
    ) -> anyhow::Result<Option<Self>> {
        // A taken port is said plainly, before anything starts: otherwise whatever listens there
        // (another `ferry serve`) would answer the readiness check for a host that failed to bind.
        std::net::TcpListener::bind(listen).with_context(|| {
            format!("{listen} is taken (another `ferry serve`?): pass --listen 127.0.0.1:PORT")
        })?;
        if store.exists() {
            std::fs::remove_dir_all(store)
                .with_context(|| format!("clearing the dev store {}", store.display()))?;
        }
        let exe = std::env::current_exe().context("finding the ferry executable")?;
        let mut command = Command::new(exe);
        command
            .arg("serve")
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--store")
            .arg(store)
            .args(
                config
                    .map(|c| [PathBuf::from("--config"), c.clone()])
                    .into_iter()
                    .flatten(),
            )
            // The model's own log lines and the host's warnings; not every load and request, nor a
            // failed load's reason, which `ferry dev` prints itself.
            .env(
                "FERRY_LOG",
                std::env::var("FERRY_LOG")
                    .unwrap_or_else(|_| "warn,ferry::guest=info,ferry::registry=off".into()),
            )
            // A dev host is this user's, on loopback, open like the guide's `ferry serve`: no
            // tokens, whatever the shell exports (and `ferry dev` sends none to it).
            .env_remove("FERRY_ADMIN_TOKEN")
            .env_remove("FERRY_TOKENS_FILE")
            .env_remove("FERRY_INFERENCE_TOKEN")
            .env_remove("FERRY_METRICS_TOKEN")
            .env_remove("FERRY_STORE")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null());
        die_with_parent(&mut command);
        let child = command.spawn().context("starting `ferry serve`")?;
        let mut host = DevHost {
            child,
            url: format!("http://{listen}"),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if super::stopping() {
                host.stop();
                return Ok(None);
            }
            if let Some(status) = host.child.try_wait()? {
                bail!(
                    "the local host stopped at start ({status}; its message is above): if {listen} is \
                     taken, pass --listen 127.0.0.1:PORT"
                );
            }
            let live = ureq::get(&format!("{}/v2/health/live", host.url))
                .timeout(Duration::from_secs(2))
                .call();
            if live.is_ok() {
                return Ok(Some(host));
            }
            if Instant::now() > deadline {
                bail!("the local host did not answer on {listen} within {START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether the host is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops the host gracefully (SIGTERM: in-flight requests finish), killing it past a timeout.
    pub fn stop(&mut self) {
        if !self.running() {
            return;
        }
        // SAFETY: kill(2) on our own child's pid; the child is not yet reaped (`running` above).
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if !self.running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for DevHost {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The child gets SIGTERM when `ferry dev` dies, even by SIGKILL, so no host outlives it.
#[cfg(target_os = "linux")]
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    // SAFETY: prctl and getppid are async-signal-safe, and this closure allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // `ferry dev` died between the fork and the prctl: no signal will come, so stop now.
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_command: &mut Command) {}
