//! Host records (`hosts/<host>.json`): what each host of a fleet says of itself — its heartbeat,
//! whether it reaches the store, and the state of every version there.

use serde::{Deserialize, Serialize};

use super::keys::host_key;
use super::Store;
use crate::storage::{StorageError, Write};

impl Store {
    /// Publishes this host's status.
    pub async fn publish_host(&self, status: &HostStatus) -> Result<(), StorageError> {
        self.storage
            .put(
                &host_key(&status.host),
                Self::json(status),
                Write::Overwrite,
            )
            .await
            .map(|_| ())
    }

    /// Removes a host's status: it left the fleet (a graceful stop).
    pub async fn remove_host(&self, host: &str) -> Result<(), StorageError> {
        self.storage.delete(&host_key(host)).await
    }

    /// Every host's last published status.
    pub async fn hosts(&self) -> Result<Vec<HostStatus>, StorageError> {
        let mut hosts = Vec::new();
        for l in self.storage.list("hosts/").await? {
            match self.get_json::<HostStatus>(&l.key).await {
                Ok(Some((status, _))) => hosts.push(status),
                Ok(None) => {}
                Err(StorageError::Other(e)) => {
                    tracing::warn!(key = l.key, error = %e, "skipping an unreadable host status")
                }
                Err(e) => return Err(e),
            }
        }
        Ok(hosts)
    }
}

/// What one host says of itself in the store (`hosts/<host>.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct HostStatus {
    /// The host's id (`--host-id`, `FERRY_HOST_ID`, else hostname and port).
    pub host: String,
    /// Where it listens.
    pub address: String,
    /// When it last wrote this record.
    pub heartbeat_unix_ms: u64,
    /// When it started.
    pub started_unix_ms: u64,
    /// The change record generation it has applied.
    pub generation: u64,
    /// Whether its last sync reached the store.
    pub store_reachable: bool,
    /// Every version it knows, with its state there.
    pub versions: Vec<HostVersion>,
}

/// A version's state on one host.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HostVersion {
    pub model: String,
    pub version: String,
    /// `loading`, `ready`, `failed` or `unloaded`.
    pub state: String,
    /// Why it failed or is unloaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The aliases that point at it on this host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}
