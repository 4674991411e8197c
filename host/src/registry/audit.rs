//! The audit log: every management action — who, what, when, from which target to which — as one
//! immutable object in the store:
//!
//! ```text
//! audit/<model>/<unix ms, 15 digits>-<host>-<sequence><random>.json
//! ```
//!
//! Each record is written with create-if-absent and never rewritten, so the log is append-only on
//! any backend, and many hosts append to it without coordinating (the host id and the random part
//! keep their keys apart). Keys sort by time, so the newest are the last of a listing; one folder per
//! model makes "what happened to `fraud-features`" one listing of that folder. Nothing else in the
//! store reads `audit/`: the registry's listings, sync and garbage collection look at `models/`,
//! `blobs/` and `hosts/` only.
//!
//! A record is written after its action succeeded, and a failure to write it never turns the done
//! action into an error: it is retried, then logged and counted (`ferry_audit_write_failures_total`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::store::{check_name, unix_ms};
use crate::storage::{Storage, StorageError, Write};

/// Where the records live in the store.
pub const PREFIX: &str = "audit/";

/// The `action` of a refused attempt; `attempted` says what was tried.
pub const DENIED: &str = "denied";

/// Most records one query returns.
pub const MAX_LIMIT: usize = 1000;

/// How many times a record is written before the failure is given up on.
const WRITE_ATTEMPTS: u32 = 4;

/// One management action, as the log keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When it was done.
    pub at_unix_ms: u64,
    /// Who did it: the credential's name (`admin` for the admin token, `anonymous` without auth).
    pub actor: String,
    /// What: `put_version`, `set_alias`, `rollback`, `delete_version`, `load_model`,
    /// `unload_model`, `set_traffic`, or [`DENIED`].
    pub action: String,
    /// For a refused attempt: the action it tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempted: Option<String>,
    /// On which model.
    pub model: String,
    /// The alias moved, for alias actions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// The version concerned (uploaded, deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// What it was before (an alias's earlier target: a version or a split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Value>,
    /// What it became (an alias's new target; an upload's blobs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Value>,
    /// For a refused attempt: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The request's id (`x-request-id`), to find it in the logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The host that did it.
    pub host: String,
}

impl AuditRecord {
    /// A record of `action` by `actor` on `model`, now. The log fills in the host.
    pub fn new(actor: &str, action: &str, model: &str) -> AuditRecord {
        AuditRecord {
            at_unix_ms: unix_ms(SystemTime::now()),
            actor: actor.to_owned(),
            action: action.to_owned(),
            attempted: None,
            model: model.to_owned(),
            alias: None,
            version: None,
            from: None,
            to: None,
            reason: None,
            request_id: None,
            host: String::new(),
        }
    }

    /// A refused attempt at `attempted`, and why.
    pub fn denied(actor: &str, attempted: &str, model: &str, reason: &str) -> AuditRecord {
        AuditRecord {
            attempted: Some(attempted.to_owned()),
            reason: Some(reason.to_owned()),
            ..AuditRecord::new(actor, DENIED, model)
        }
    }

    /// With the alias concerned.
    pub fn alias(mut self, alias: &str) -> Self {
        self.alias = Some(alias.to_owned());
        self
    }

    /// With the version concerned.
    pub fn version(mut self, version: &str) -> Self {
        self.version = Some(version.to_owned());
        self
    }

    /// With what it was before (nothing when `None`).
    pub fn from(mut self, from: Option<Value>) -> Self {
        self.from = from;
        self
    }

    /// With what it became.
    pub fn to(mut self, to: Value) -> Self {
        self.to = Some(to);
        self
    }

    /// With the request's id.
    pub fn request_id(mut self, id: Option<&str>) -> Self {
        self.request_id = id.map(str::to_owned);
        self
    }
}

/// The store's audit log, as one host appends to it and reads it.
#[derive(Debug, Clone)]
pub struct AuditLog {
    storage: Arc<dyn Storage>,
    host: String,
    /// Orders this host's records within one millisecond.
    sequence: Arc<AtomicU64>,
}

impl AuditLog {
    /// The audit log in `storage` (a store's), written as `host`.
    pub fn new(storage: Arc<dyn Storage>, host: &str) -> AuditLog {
        AuditLog {
            storage,
            host: host.to_owned(),
            sequence: Arc::new(AtomicU64::new(0)),
        }
    }

    fn key(&self, record: &AuditRecord) -> String {
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed) % (1 << 32);
        let random = &uuid::Uuid::new_v4().simple().to_string()[..8];
        format!(
            "{PREFIX}{}/{:015}-{}-{sequence:08x}{random}.json",
            record.model, record.at_unix_ms, self.host
        )
    }

    /// Writes `record` (as this host), retrying a store that does not answer; returns its key.
    pub async fn append(&self, mut record: AuditRecord) -> Result<String, StorageError> {
        check_name("model", &record.model).map_err(|e| StorageError::Other(e.to_string()))?;
        record.host = self.host.clone();
        let bytes = Bytes::from(serde_json::to_vec_pretty(&record).expect("records serialise"));
        let mut attempt = 0;
        loop {
            attempt += 1;
            let key = self.key(&record);
            match self.storage.put(&key, bytes.clone(), Write::Create).await {
                Ok(_) => return Ok(key),
                // A key is never reused: another one, at once.
                Err(StorageError::AlreadyExists(_)) if attempt < WRITE_ATTEMPTS => continue,
                Err(e @ (StorageError::Unavailable(_) | StorageError::Disk(_)))
                    if attempt < WRITE_ATTEMPTS =>
                {
                    tracing::debug!(error = %e, attempt, "audit record not written yet; retrying");
                    tokio::time::sleep(Duration::from_millis(100 << (2 * (attempt - 1)))).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes `record`; a failure is logged and counted, never returned: the action it records is
    /// done, and saying otherwise would have the caller repeat it.
    pub async fn record(&self, record: AuditRecord) {
        let (actor, action, model) = (
            record.actor.clone(),
            record.action.clone(),
            record.model.clone(),
        );
        if let Err(e) = self.append(record).await {
            metrics::counter!("ferry_audit_write_failures_total").increment(1);
            tracing::error!(actor, action, model, error = %e, "the audit record of a done action could not be written");
        }
    }

    /// The newest `limit` records (at most [`MAX_LIMIT`]), of `model` or of every model, newest
    /// first. A record that cannot be read is skipped with a warning rather than hiding the rest.
    pub async fn recent(
        &self,
        model: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StorageError> {
        let prefix = match model {
            Some(model) => {
                check_name("model", model).map_err(|e| StorageError::Other(e.to_string()))?;
                format!("{PREFIX}{model}/")
            }
            None => PREFIX.to_owned(),
        };
        let mut keys: Vec<String> = self
            .storage
            .list(&prefix)
            .await?
            .into_iter()
            .map(|l| l.key)
            .filter(|k| k.ends_with(".json"))
            .collect();
        // By file name: time first, across models' folders.
        let name = |k: &String| k.rsplit('/').next().unwrap_or_default().to_owned();
        keys.sort_by_key(|k| std::cmp::Reverse(name(k)));
        keys.truncate(limit.min(MAX_LIMIT));
        let reads = futures_util::stream::iter(keys)
            .map(|key| async move { (self.storage.get(&key).await, key) })
            .buffered(16)
            .collect::<Vec<_>>()
            .await;
        let mut records = Vec::with_capacity(reads.len());
        for (read, key) in reads {
            match read {
                Ok(object) => match serde_json::from_slice::<AuditRecord>(&object.bytes) {
                    Ok(record) => records.push(record),
                    Err(e) => {
                        tracing::warn!(key, error = %e, "skipping an unreadable audit record")
                    }
                },
                Err(StorageError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(dir: &std::path::Path, host: &str) -> AuditLog {
        let storage = crate::storage::open(dir.join("store").to_str().unwrap()).unwrap();
        AuditLog::new(storage, host)
    }

    #[tokio::test]
    async fn records_come_back_newest_first_by_model_from_every_host() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (log(dir.path(), "host-a"), log(dir.path(), "host-b"));
        let at = |ms, record: AuditRecord| AuditRecord {
            at_unix_ms: ms,
            ..record
        };
        a.append(at(
            1_000,
            AuditRecord::new("fraud-team", "put_version", "fraud-x").version("1"),
        ))
        .await
        .unwrap();
        b.append(at(
            2_000,
            AuditRecord::new("fraud-team", "set_alias", "fraud-x")
                .alias("production")
                .from(Some(Value::from("1")))
                .to(serde_json::json!({"split": {"1": 90, "2": 10}}))
                .request_id(Some("req-7")),
        ))
        .await
        .unwrap();
        a.append(at(
            3_000,
            AuditRecord::denied("fraud-team", "delete_version", "pricing-eta", "not yours"),
        ))
        .await
        .unwrap();
        // Two records of one host in one millisecond keep their order.
        a.append(at(
            4_000,
            AuditRecord::new("admin", "unload_model", "fraud-x"),
        ))
        .await
        .unwrap();
        a.append(at(
            4_000,
            AuditRecord::new("admin", "load_model", "fraud-x"),
        ))
        .await
        .unwrap();

        let all = a.recent(None, 100).await.unwrap();
        let actions: Vec<&str> = all.iter().map(|r| r.action.as_str()).collect();
        assert_eq!(
            actions,
            [
                "load_model",
                "unload_model",
                "denied",
                "set_alias",
                "put_version"
            ]
        );
        assert_eq!(all[3].host, "host-b");
        assert_eq!(all[3].to.as_ref().unwrap()["split"]["2"], 10);
        assert_eq!(all[3].request_id.as_deref(), Some("req-7"));
        assert_eq!(all[2].attempted.as_deref(), Some("delete_version"));

        let fraud = b.recent(Some("fraud-x"), 2).await.unwrap();
        assert_eq!(
            fraud.iter().map(|r| r.action.as_str()).collect::<Vec<_>>(),
            ["load_model", "unload_model"]
        );
        assert!(b.recent(Some("nothing-here"), 10).await.unwrap().is_empty());
        assert!(
            b.recent(Some("../models"), 10).await.is_err(),
            "a model name, not a path"
        );
    }

    #[tokio::test]
    async fn records_are_created_never_overwritten_and_fields_absent_stay_absent() {
        let dir = tempfile::tempdir().unwrap();
        let log = log(dir.path(), "h");
        let key = log
            .append(AuditRecord::new("anonymous", "delete_version", "m").version("3"))
            .await
            .unwrap();
        assert!(key.starts_with("audit/m/") && key.contains("-h-"), "{key}");
        let text = std::fs::read_to_string(dir.path().join("store").join(&key)).unwrap();
        let json: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["host"], "h");
        for absent in ["from", "to", "alias", "attempted", "reason", "request_id"] {
            assert!(json.get(absent).is_none(), "{absent} in {text}");
        }
        let storage = log.storage.clone();
        let again = storage
            .put(&key, Bytes::from_static(b"{}"), Write::Create)
            .await;
        assert!(
            matches!(again, Err(StorageError::AlreadyExists(_))),
            "append-only"
        );
        assert!(log
            .append(AuditRecord::new("x", "put_version", "../etc"))
            .await
            .is_err());
    }
}
