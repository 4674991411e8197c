//! Garbage collection of the store: blobs no manifest names (past a grace period) and host records
//! not heard from for a day.

use std::time::{Duration, SystemTime};

use super::keys::host_key;
use super::Store;
use crate::stamps::unix_ms;
use crate::storage::{blob_cache, StorageError};

impl Store {
    /// Deletes blobs that no manifest names and that are older than `grace` (an upload in flight
    /// writes its blobs before its manifest: the grace period keeps them), and host records not
    /// heard from for a day. Returns the blobs deleted and their bytes.
    pub async fn collect_garbage(&self, grace: Duration) -> Result<(usize, u64), StorageError> {
        let models = self.all_models().await?;
        let named: std::collections::HashSet<&String> = models
            .values()
            .flat_map(|m| &m.manifests)
            .flat_map(|m| m.blobs())
            .collect();
        let cutoff = SystemTime::now() - grace;
        let (mut deleted, mut bytes) = (0, 0);
        for blob in self.storage.list("blobs/").await? {
            let sha = blob.key.trim_start_matches("blobs/").to_owned();
            if !blob_cache::is_sha256(&sha) || named.contains(&sha) || blob.modified > cutoff {
                continue;
            }
            self.storage.delete(&blob.key).await?;
            tracing::info!(
                blob = sha,
                bytes = blob.size,
                "garbage-collected a blob no version names"
            );
            deleted += 1;
            bytes += blob.size;
        }
        let day_ago = unix_ms(SystemTime::now()).saturating_sub(86_400_000);
        for host in self.hosts().await? {
            if host.heartbeat_unix_ms < day_ago {
                self.storage.delete(&host_key(&host.host)).await?;
            }
        }
        Ok((deleted, bytes))
    }
}
