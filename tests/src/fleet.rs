//! Hosts of a fleet: `ferry serve` processes on free loopback ports sharing one store (an S3 prefix),
//! each with its own cache directory, as pods of a Deployment would be.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::s3::S3Store;
use crate::server::{ferry_bin, free_port, reap_at_exit};

/// One `ferry serve` on a shared store; killed when dropped.
pub struct Host {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// The host's id in the fleet's status.
    pub id: String,
    port: u16,
    store_url: String,
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
}

/// The configuration fleet tests run hosts with: the default sync interval, short heartbeats.
pub const FLEET_CONFIG: &str = "[store]\nheartbeat_interval_ms = 1000\n";

impl Host {
    /// Starts a host on `store_url` (settings from `s3`) and waits until it is ready.
    pub fn start(s3: &S3Store, store_url: &str, id: &str, config_toml: &str) -> Host {
        let host = Host::launch(s3, store_url, id, config_toml);
        host.wait_ready(Duration::from_secs(300));
        host
    }

    /// Starts a host without waiting for it to be ready.
    pub fn launch(s3: &S3Store, store_url: &str, id: &str, config_toml: &str) -> Host {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ferry.toml"), config_toml).unwrap();
        let port = free_port();
        let (store_url, env) = (store_url.to_owned(), s3.aws());
        let child = Host::spawn(&dir, port, &store_url, id, &env);
        Host {
            child,
            base: format!("http://127.0.0.1:{port}"),
            id: id.to_owned(),
            port,
            store_url,
            env,
            dir,
        }
    }

    fn spawn(
        dir: &tempfile::TempDir,
        port: u16,
        store_url: &str,
        id: &str,
        env: &[(String, String)],
    ) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("server.log"))
            .unwrap();
        let child = Command::new(ferry_bin())
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--store", store_url])
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .arg("--config")
            .arg(dir.path().join("ferry.toml"))
            .args(["--host-id", id])
            .envs(env.iter().cloned())
            .env("FERRY_LOG", "ferry=info,warn")
            .env_remove("FERRY_ADMIN_TOKEN")
            .env_remove("FERRY_INFERENCE_TOKEN")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start ferry serve");
        reap_at_exit(child.id());
        child
    }

    /// The host's cache directory.
    pub fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// A URL on this host.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Kills the process outright (SIGKILL).
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the host again, same port, cache and store; waits until ready.
    pub fn restart(&mut self) {
        self.kill9();
        self.child = Host::spawn(&self.dir, self.port, &self.store_url, &self.id, &self.env);
        self.wait_ready(Duration::from_secs(300));
    }

    /// Whether the host answers ready now.
    pub fn is_ready(&self) -> bool {
        ureq::get(&self.url("/v2/health/ready")).call().is_ok()
    }

    /// Waits until the host is ready.
    pub fn wait_ready(&self, limit: Duration) {
        let started = Instant::now();
        while started.elapsed() < limit {
            if ureq::get(&self.url("/v2/health/ready")).call().is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "host {} was not ready within {limit:?}; log:\n{}",
            self.id,
            self.log()
        );
    }

    /// What the host logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
