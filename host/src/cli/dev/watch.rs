//! What changed in a project since the last look. A project is tens of files, so `ferry dev` polls
//! their modification times and lengths a few times a second rather than subscribing to the kernel's
//! events: polling costs nothing here, works on every filesystem (network mounts and containers'
//! bind mounts included), and sees a file an editor saves by writing a copy and renaming it over the
//! original the same way as one written in place.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::cli::project::{Project, MANIFEST};

/// A project's files as last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    manifest: Option<SystemTime>,
    sources: Vec<(PathBuf, SystemTime, u64)>,
    version_files: Vec<(PathBuf, SystemTime, u64)>,
}

/// What a change asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// `ferry.toml` changed: read the project again, rebuild and reload.
    Manifest,
    /// A source changed: rebuild, then reload.
    Sources,
    /// Only a version's files (weights, tests, config, profile, graphs) changed: reload with the
    /// component as it is.
    VersionFiles,
}

impl Snapshot {
    pub fn take(project: &Project) -> Snapshot {
        Snapshot {
            manifest: std::fs::metadata(project.dir.join(MANIFEST))
                .and_then(|m| m.modified())
                .ok(),
            sources: project.source_files(),
            version_files: project.version_file_stamps(),
        }
    }

    /// What differs from `earlier`, the largest change first.
    pub fn change_since(&self, earlier: &Snapshot) -> Option<Change> {
        if self.manifest != earlier.manifest {
            Some(Change::Manifest)
        } else if self.sources != earlier.sources {
            Some(Change::Sources)
        } else if self.version_files != earlier.version_files {
            Some(Change::VersionFiles)
        } else {
            None
        }
    }
}

/// How often the project is looked at.
pub const POLL: Duration = Duration::from_millis(250);

/// Longest a settle waits for the files to be still: a file rewritten without pause (a log a
/// source folder should not hold) must not stall the loop.
const MOST_SETTLING: Duration = Duration::from_secs(3);

/// Waits until the project has been still for `POLL` after a change (an editor's save, or a training
/// script writing weights and then tests, is several writes), at most [`MOST_SETTLING`] or until
/// `stopped`, and returns the last snapshot.
pub fn settle(project: &Project, mut latest: Snapshot, stopped: fn() -> bool) -> Snapshot {
    let deadline = std::time::Instant::now() + MOST_SETTLING;
    loop {
        std::thread::sleep(POLL);
        let now = Snapshot::take(project);
        if now == latest || stopped() || std::time::Instant::now() > deadline {
            return now;
        }
        latest = now;
    }
}
