//! Durable files on the host's own disk: atomic replacement (temporary file, fsync, rename, fsync of
//! the directory) and a size bound on a cache directory with least-recently-used eviction. One home
//! for both, used by the local store, the blob cache and the compile cache.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A temporary name beside `path`, unique within this process and across processes.
pub fn temp_beside(path: &Path) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    path.with_file_name(format!(".tmp-{}-{n}-{name}", std::process::id()))
}

/// Makes a rename or removal in `dir` durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Creates `dir` and its missing parents durably: each directory created is synced into its parent,
/// so a crash cannot leave a file whose folder is gone (a rename made durable in a folder that is
/// not). Nothing is synced when `dir` already exists.
pub fn create_dir_all(dir: &Path) -> std::io::Result<()> {
    create_dir_all_with(dir, sync_dir)
}

fn create_dir_all_with(
    dir: &Path,
    mut sync: impl FnMut(&Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    // The directories missing, innermost first.
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(path) = at.filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
        missing.push(path);
        at = path.parent();
    }
    std::fs::create_dir_all(dir)?;
    for created in missing.iter().rev() {
        let parent = match created.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        sync(parent)?;
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically: a crash leaves the old file or the new one, never a part.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .expect("paths written atomically have a parent");
    create_dir_all(dir)?;
    let tmp = temp_beside(path);
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Moves a finished file (already synced) to `path` atomically, replacing what is there.
pub fn install(file: &Path, path: &Path) -> std::io::Result<()> {
    let dir = path.parent().expect("installed paths have a parent");
    create_dir_all(dir)?;
    std::fs::rename(file, path)?;
    sync_dir(dir)
}

/// Marks a cached file as just used, so eviction takes it last.
pub fn touch(path: &Path) {
    if let Ok(file) = std::fs::File::options().append(true).open(path) {
        let _ = file.set_modified(SystemTime::now());
    }
}

/// Removes the least recently used files under `roots` (by modification time, which [`touch`] moves)
/// until the files there take at most `max_bytes` together. Temporary files (`.tmp-*`) are left
/// alone: they belong to writes in progress. Returns the bytes freed.
pub fn evict_least_recently_used(roots: &[PathBuf], max_bytes: u64) -> u64 {
    let mut files = Vec::new();
    let mut stack = roots.to_vec();
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if !entry.file_name().to_string_lossy().starts_with(".tmp-") {
                let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                files.push((used, meta.len(), entry.path()));
            }
        }
    }
    let mut total: u64 = files.iter().map(|(_, len, _)| len).sum();
    if total <= max_bytes {
        return 0;
    }
    files.sort();
    let mut freed = 0;
    for (_, len, path) in files {
        if total <= max_bytes {
            break;
        }
        // A compiled component still mapped by a running version stays mapped after the unlink.
        if std::fs::remove_file(&path).is_ok() {
            tracing::info!(path = %path.display(), bytes = len, "evicted from the host cache");
            total -= len;
            freed += len;
        }
    }
    freed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_directory_created_is_synced_into_its_parent() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        let mut synced = Vec::new();
        create_dir_all_with(&deep, |p| {
            synced.push(p.to_owned());
            sync_dir(p)
        })
        .unwrap();
        assert!(deep.is_dir());
        assert_eq!(
            synced,
            [
                dir.path().to_owned(),
                dir.path().join("a"),
                dir.path().join("a/b")
            ],
            "outermost first, each new folder's parent"
        );
        synced.clear();
        create_dir_all_with(&deep, |p| {
            synced.push(p.to_owned());
            Ok(())
        })
        .unwrap();
        assert!(synced.is_empty(), "nothing new, nothing synced");
        write_atomically(&dir.path().join("x/y/file"), b"z").unwrap();
        assert_eq!(std::fs::read(dir.path().join("x/y/file")).unwrap(), b"z");
    }

    #[test]
    fn eviction_takes_the_least_recently_used_first() {
        let dir = tempfile::tempdir().unwrap();
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            let path = dir.path().join("sub").join(name);
            write_atomically(&path, &[0u8; 100]).unwrap();
            let when = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000 + i as u64);
            std::fs::File::options()
                .append(true)
                .open(&path)
                .unwrap()
                .set_modified(when)
                .unwrap();
        }
        touch(&dir.path().join("sub/a"));
        assert_eq!(evict_least_recently_used(&[dir.path().into()], 200), 100);
        let left: Vec<_> = ["a", "b", "c"]
            .iter()
            .filter(|n| dir.path().join("sub").join(n).exists())
            .collect();
        assert_eq!(left, [&"a", &"c"]);
        assert_eq!(evict_least_recently_used(&[dir.path().into()], 1_000), 0);
    }
}
