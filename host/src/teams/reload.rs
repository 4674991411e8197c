//! Reloading the tokens file while serving. The file is polled by content hash rather than watched:
//! a Kubernetes Secret mount changes by swapping a symlink two levels up (`..data`), which file
//! watches on the file itself do not see, and one small read every two seconds costs nothing.
//!
//! A changed file that parses takes effect at once, for the next request. One that does not — or
//! cannot be read — leaves the credentials in force as they were: revoking by mistake every team's
//! access with a typo would be an outage, so the error is logged, counted
//! (`ferry_tokens_reloads_total{outcome="refused"}`) and shown by `ferry_tokens_file_valid` 0 until
//! the file is fixed. Each change is applied or refused once, not every poll.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{parse_file, Teams};

/// How often the tokens file is read again.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// What the watcher last saw of the file.
pub(super) enum Seen {
    /// Nothing yet (no file).
    Nothing,
    /// Content with this sha256, whether it was applied or refused.
    Content([u8; 32]),
    /// A read that failed, with its error.
    Unreadable(String),
}

/// What a look at the file did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// Nothing changed since the last look (or there is no file).
    Unchanged,
    /// The file changed and is in force, with this many credentials (the admin token's included).
    Applied {
        /// Credentials now in force.
        credentials: usize,
    },
    /// The file changed and was refused; the credentials before stay in force.
    Refused(String),
}

/// The polling task; dropping it stops the polling.
pub struct Watcher(tokio::task::JoinHandle<()>);

impl Drop for Watcher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Teams {
    /// Reads the tokens file now and applies it if it changed (see the module docs).
    pub async fn reload(&self) -> Reload {
        match &self.file {
            Some(path) => self.apply_read(tokio::fs::read(path).await),
            None => Reload::Unchanged,
        }
    }

    /// Polls the tokens file every `every` on the current runtime; `None` without a file.
    pub fn watch(self: &Arc<Self>, every: Duration) -> Option<Watcher> {
        self.file.as_ref()?;
        let teams = self.clone();
        Some(Watcher(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await; // the first tick is now, and the file was just read
            loop {
                tick.tick().await;
                teams.reload().await;
            }
        })))
    }

    fn apply_read(&self, read: std::io::Result<Vec<u8>>) -> Reload {
        let path = self
            .file
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = match read {
            Ok(bytes) => bytes,
            Err(e) => {
                let error = format!("cannot read it: {e}");
                if matches!(&*seen, Seen::Unreadable(before) if *before == error) {
                    return Reload::Unchanged;
                }
                *seen = Seen::Unreadable(error.clone());
                return self.refuse(&path, error);
            }
        };
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        if matches!(&*seen, Seen::Content(before) if *before == digest) {
            return Reload::Unchanged;
        }
        *seen = Seen::Content(digest);
        match parse_file(&bytes, &self.fixed()) {
            Ok(credentials) => {
                self.install(credentials);
                let names = self.names();
                tracing::info!(file = %path, credentials = ?names, "tokens file reloaded");
                metrics::counter!("ferry_tokens_reloads_total", "outcome" => "applied")
                    .increment(1);
                Reload::Applied {
                    credentials: names.len(),
                }
            }
            Err(e) => self.refuse(&path, format!("{e:#}")),
        }
    }

    fn refuse(&self, path: &str, error: String) -> Reload {
        tracing::error!(file = %path, error = %error, "the changed tokens file is refused; the credentials before stay in force");
        metrics::counter!("ferry_tokens_reloads_total", "outcome" => "refused").increment(1);
        self.refused();
        Reload::Refused(error)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::tokens_file;
    use super::super::Action;
    use super::*;

    #[tokio::test]
    async fn a_good_change_takes_effect_a_bad_one_keeps_what_was_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        std::fs::write(
            &path,
            tokens_file(&[("fraud-team", "t1", &["fraud-*"], &["deploy"])]),
        )
        .unwrap();
        let teams = Teams::load(Some("root"), Some(&path)).unwrap();
        assert_eq!(teams.reload().await, Reload::Unchanged);

        // A new team, and fraud-team's scope widened.
        std::fs::write(
            &path,
            tokens_file(&[
                ("fraud-team", "t1", &["fraud-*", "chargeback"], &["deploy"]),
                ("pricing-team", "t2", &["pricing-*"], &["promote"]),
            ]),
        )
        .unwrap();
        assert_eq!(teams.reload().await, Reload::Applied { credentials: 3 });
        let fraud = teams.authenticate(Some("t1")).unwrap();
        assert_eq!(fraud.may(Action::PutVersion, "chargeback"), Ok(()));
        assert_eq!(
            teams.authenticate(Some("t2")).unwrap().actor(),
            "pricing-team"
        );
        assert_eq!(teams.reload().await, Reload::Unchanged, "applied once");

        // A typo: refused once, and everything stays as it was.
        std::fs::write(
            &path,
            "[[credential]]\nname = \"pricing-team\"\nroles = [\"promote\"]\n",
        )
        .unwrap();
        let Reload::Refused(error) = teams.reload().await else {
            panic!("a file that does not parse is refused")
        };
        assert!(error.contains("token_sha256"), "{error}");
        assert!(!teams.file_valid.load(std::sync::atomic::Ordering::Relaxed));
        assert_eq!(
            teams.reload().await,
            Reload::Unchanged,
            "refused once, not every poll"
        );
        assert_eq!(
            teams.authenticate(Some("t2")).unwrap().actor(),
            "pricing-team"
        );
        assert_eq!(teams.authenticate(Some("root")).unwrap().actor(), "admin");

        // Gone for a while (a botched mount): still what was in force; back, and applied.
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(teams.reload().await, Reload::Refused(e) if e.contains("cannot read")));
        assert_eq!(teams.reload().await, Reload::Unchanged);
        assert!(teams.authenticate(Some("t1")).is_ok());
        std::fs::write(
            &path,
            tokens_file(&[("fraud-team", "t3", &["fraud-*"], &["deploy"])]),
        )
        .unwrap();
        assert_eq!(teams.reload().await, Reload::Applied { credentials: 2 });
        assert!(teams.file_valid.load(std::sync::atomic::Ordering::Relaxed));
        assert!(
            teams.authenticate(Some("t1")).is_err(),
            "the old token is revoked"
        );
        assert!(
            teams.authenticate(Some("t2")).is_err(),
            "and so is the removed team"
        );
        assert_eq!(
            teams.authenticate(Some("t3")).unwrap().actor(),
            "fraud-team"
        );
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn the_watcher_follows_a_secret_mounts_symlink_swap() {
        // The layout the kubelet writes: tokens.toml → ..data/tokens.toml, ..data → a timestamped
        // directory; an update writes a new directory and renames a new `..data` link over the old.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let generation = |n: u32, token: &str| {
            let g = root.join(format!("..2024_{n}"));
            std::fs::create_dir(&g).unwrap();
            std::fs::write(
                g.join("tokens.toml"),
                tokens_file(&[("fraud-team", token, &["fraud-*"], &["deploy"])]),
            )
            .unwrap();
            let link = root.join(format!("..data_tmp{n}"));
            std::os::unix::fs::symlink(g.file_name().unwrap(), &link).unwrap();
            std::fs::rename(&link, root.join("..data")).unwrap();
        };
        generation(1, "old");
        std::os::unix::fs::symlink("..data/tokens.toml", root.join("tokens.toml")).unwrap();
        let teams = Arc::new(Teams::load(None, Some(&root.join("tokens.toml"))).unwrap());
        let _watcher = teams.watch(Duration::from_millis(20)).unwrap();
        generation(2, "new");
        let started = std::time::Instant::now();
        while teams.authenticate(Some("new")).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the swap was never seen"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(teams.authenticate(Some("old")).is_err());
    }
}
