//! The audit log: every management action — who, what, when, from which target to which — as
//! immutable objects in the store, each record under one name in two folders:
//!
//! ```text
//! audit/@all/<999999999999999 − unix ms, 15 digits>-<host>-<ffffffff − sequence><random>.json
//! audit/<model>/<the same name>
//! ```
//!
//! Each record is written with create-if-absent and never rewritten, so the log is append-only on
//! any backend, and many hosts append to it without coordinating (the host id and the random part
//! keep their names apart). Names sort newest first (the time is counted down), so the newest page
//! of a folder is the start of its listing, and the next page a listing that starts after the last
//! name answered (S3's `start-after`): a page costs what it answers, never a listing of the whole
//! tree. `@all` (no model can be named so) is every record in time order; a model's folder is its
//! history. A refused attempt that concerns no model (a read of the fleet, say) is in `@all` only.
//! Records written before this layout (`<unix ms>-…`, oldest first) are still read, after the
//! newer ones, from their model's folder. Nothing else in the store reads `audit/`: the registry's
//! listings, sync and garbage collection look at `models/`, `blobs/` and `hosts/` only.
//!
//! A record is written after its action succeeded, and a failure to write it never turns the done
//! action into an error: it is retried, then logged and counted (`ferry_audit_write_failures_total`).
//! Refused attempts are sampled first ([`RefusalSampler`]): a loop of 403s costs a few records a
//! minute, the rest counted.

mod sampler;

pub use sampler::{RefusalSampler, Sample, REFUSALS_PER_MINUTE};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::store::check_name;
use crate::stamps::unix_ms;
use crate::storage::{Failure, Storage, StorageError, Write};

/// Where the records live in the store.
pub const PREFIX: &str = "audit/";

/// The `action` of a refused attempt; `attempted` says what was tried.
pub const DENIED: &str = "denied";

/// Most records one query returns.
pub const MAX_LIMIT: usize = 1000;

/// The folder holding every record, in time order.
pub const TIMELINE: &str = "@all";

/// The largest time a name counts down from (15 digits of milliseconds: past the year 33000).
const NEWEST: u64 = 999_999_999_999_999;

/// Every name of this layout sorts after this; names of the layout before it, before.
const LAYOUT_FLOOR: &str = "1";

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
    /// For a refused attempt: how many refused attempts of the same credential and route were
    /// counted but not recorded since the previous record of them (see [`RefusalSampler`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<u64>,
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
            skipped: None,
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

/// One page of the log, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The records.
    pub records: Vec<AuditRecord>,
    /// The cursor of the next (older) page, when there is one.
    pub next: Option<String>,
}

/// Checks a page cursor: the name of a record, as a page's `next` gave it.
pub fn check_cursor(cursor: &str) -> Result<(), String> {
    let ok = !cursor.is_empty()
        && cursor.len() <= 200
        && cursor
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !cursor.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid cursor {cursor:?}: pass the `next` of the page before"
        ))
    }
}

/// Where a record name of the layout before this one (`<unix ms>-…`, oldest first) sorts in this
/// one (newest first); `None` for a name that is neither.
fn legacy_order(name: &str) -> Option<String> {
    let (ms, rest) = (name.get(..15)?, name.get(15..)?);
    let ms: u64 = ms
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| ms.parse().ok())??;
    Some(format!("{:015}{rest}", NEWEST.saturating_sub(ms)))
}

/// The store's audit log, as one host appends to it and reads it.
#[derive(Debug, Clone)]
pub struct AuditLog {
    storage: Arc<dyn Storage>,
    host: String,
    /// Orders this host's records within one millisecond.
    sequence: Arc<AtomicU64>,
    /// Which refused attempts are recorded.
    refusals: Arc<RefusalSampler>,
}

impl AuditLog {
    /// The audit log in `storage` (a store's), written as `host`.
    pub fn new(storage: Arc<dyn Storage>, host: &str) -> AuditLog {
        AuditLog {
            storage,
            host: host.to_owned(),
            sequence: Arc::new(AtomicU64::new(0)),
            refusals: Arc::new(RefusalSampler::new(REFUSALS_PER_MINUTE)),
        }
    }

    /// A new record name: newest first, then this host's later records of one millisecond first.
    fn name(&self, record: &AuditRecord) -> String {
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed) % (1 << 32);
        let random = &uuid::Uuid::new_v4().simple().to_string()[..8];
        format!(
            "{:015}-{}-{:08x}{random}.json",
            NEWEST.saturating_sub(record.at_unix_ms),
            self.host,
            u64::from(u32::MAX) - sequence
        )
    }

    /// Writes `bytes` at `key` (create-if-absent), retrying a store that does not answer.
    async fn create(&self, key: &str, bytes: &Bytes) -> Result<(), StorageError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.storage.put(key, bytes.clone(), Write::Create).await {
                Ok(_) => return Ok(()),
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

    /// Writes `record` (as this host) in the timeline and in its model's folder (a record of no
    /// model, `model` empty, in the timeline only), retrying a store that does not answer; returns
    /// its key.
    pub async fn append(&self, mut record: AuditRecord) -> Result<String, StorageError> {
        if !record.model.is_empty() {
            check_name("model", &record.model)
                .map_err(|e| StorageError::Other(Failure::new(&record.model, e)))?;
        }
        record.host = self.host.clone();
        let bytes = Bytes::from(serde_json::to_vec_pretty(&record).expect("records serialise"));
        let mut attempt = 0;
        let name = loop {
            attempt += 1;
            let name = self.name(&record);
            match self
                .create(&format!("{PREFIX}{TIMELINE}/{name}"), &bytes)
                .await
            {
                Ok(()) => break name,
                // A name is never reused: another one, at once.
                Err(StorageError::AlreadyExists(_)) if attempt < WRITE_ATTEMPTS => continue,
                Err(e) => return Err(e),
            }
        };
        if record.model.is_empty() {
            return Ok(format!("{PREFIX}{TIMELINE}/{name}"));
        }
        let key = format!("{PREFIX}{}/{name}", record.model);
        match self.create(&key, &bytes).await {
            Ok(()) | Err(StorageError::AlreadyExists(_)) => Ok(key),
            Err(e) => Err(e),
        }
    }

    /// A refused attempt on `route` (a route's pattern, or an action): recorded when the sampler
    /// lets it through, else only counted (`ferry_audit_refusals_skipped_total`). Never fails.
    pub async fn refusal(&self, mut record: AuditRecord, route: &str) {
        match self
            .refusals
            .sample(&record.actor, route, record.at_unix_ms)
        {
            Sample::Record { skipped_before } => {
                record.skipped = (skipped_before > 0).then_some(skipped_before);
                self.record(record).await
            }
            Sample::Skip => {
                metrics::counter!("ferry_audit_refusals_skipped_total").increment(1);
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
        Ok(self.page(model, None, limit).await?.records)
    }

    /// Up to `limit` records (at most [`MAX_LIMIT`]) of `model` or of every model, newest first,
    /// older than the record named by `after` (a page's `next`), and the cursor of the page after.
    /// One listing that starts after the cursor and stops at `limit` (and, for a model with records
    /// of the layout before this one, a listing of those).
    pub async fn page(
        &self,
        model: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page, StorageError> {
        let folder = match model {
            Some(model) => {
                check_name("model", model)
                    .map_err(|e| StorageError::Other(Failure::new(model, e)))?;
                model
            }
            None => TIMELINE,
        };
        if let Some(cursor) = after {
            check_cursor(cursor).map_err(|e| StorageError::Other(Failure::new(cursor, e)))?;
        }
        let limit = limit.clamp(1, MAX_LIMIT);
        let prefix = format!("{PREFIX}{folder}/");
        let after = after.map(|c| format!("{c}.json"));
        // (where it sorts, its key), newest first.
        let start = match &after {
            Some(name) if name.as_str() > LAYOUT_FLOOR => format!("{prefix}{name}"),
            _ => format!("{prefix}{LAYOUT_FLOOR}"),
        };
        let mut names: Vec<(String, String)> = self
            .storage
            .list_page(&prefix, Some(&start), limit + 1)
            .await?
            .into_iter()
            .filter(|l| l.key.ends_with(".json"))
            .map(|l| (l.key[prefix.len()..].to_owned(), l.key))
            .collect();
        if names.len() <= limit && model.is_some() {
            let mut older: Vec<(String, String)> = self
                .legacy(&prefix)
                .await?
                .into_iter()
                .filter(|(order, _)| after.as_ref().is_none_or(|a| order > a))
                .collect();
            older.sort();
            names.extend(older);
        }
        let next = (names.len() > limit).then(|| {
            let (order, _) = &names[limit - 1];
            order.trim_end_matches(".json").to_owned()
        });
        names.truncate(limit);
        let keys: Vec<String> = names.into_iter().map(|(_, key)| key).collect();
        Ok(Page {
            records: self.read(keys).await?,
            next,
        })
    }

    /// The records of a model's folder written in the layout before this one (names that begin
    /// with the time, all before [`LAYOUT_FLOOR`]), each with where it sorts in this one.
    async fn legacy(&self, prefix: &str) -> Result<Vec<(String, String)>, StorageError> {
        const BATCH: usize = 256;
        let floor = format!("{prefix}{LAYOUT_FLOOR}");
        let mut found = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .storage
                .list_page(prefix, after.as_deref(), BATCH)
                .await?;
            let full = page.len() == BATCH;
            for listed in page {
                if listed.key >= floor {
                    return Ok(found);
                }
                let name = &listed.key[prefix.len()..];
                if let Some(order) = legacy_order(name).filter(|_| name.ends_with(".json")) {
                    found.push((order, listed.key.clone()));
                }
                after = Some(listed.key);
            }
            if !full {
                return Ok(found);
            }
        }
    }

    /// Reads records, in order; one that cannot be read is skipped with a warning.
    async fn read(&self, keys: Vec<String>) -> Result<Vec<AuditRecord>, StorageError> {
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
    async fn pages_follow_the_cursor_newest_first_and_read_the_layout_before_last() {
        let dir = tempfile::tempdir().unwrap();
        let log = log(dir.path(), "web");
        // A record of the layout before this one: oldest of all, read after the others.
        let legacy = AuditRecord {
            at_unix_ms: 500,
            host: "old".into(),
            ..AuditRecord::new("admin", "put_version", "m").version("0")
        };
        std::fs::create_dir_all(dir.path().join("store/audit/m")).unwrap();
        std::fs::write(
            dir.path()
                .join("store/audit/m/000000000000500-old-00000000abcd1234.json"),
            serde_json::to_vec(&legacy).unwrap(),
        )
        .unwrap();
        for i in 1..=25u64 {
            let model = if i % 5 == 0 { "" } else { "m" };
            log.append(AuditRecord {
                at_unix_ms: 1_000 + i,
                ..AuditRecord::new("admin", "put_version", model).version(&i.to_string())
            })
            .await
            .unwrap();
        }
        let versions = |page: &Page| -> Vec<String> {
            page.records
                .iter()
                .map(|r| r.version.clone().unwrap())
                .collect()
        };
        // Every record, model or none, in the timeline: 10, 10, 5.
        let first = log.page(None, None, 10).await.unwrap();
        assert_eq!(
            versions(&first),
            ["25", "24", "23", "22", "21", "20", "19", "18", "17", "16"]
        );
        let second = log.page(None, first.next.as_deref(), 10).await.unwrap();
        assert_eq!(versions(&second)[0], "15");
        let third = log.page(None, second.next.as_deref(), 10).await.unwrap();
        assert_eq!(versions(&third), ["5", "4", "3", "2", "1"]);
        assert_eq!(third.next, None, "the last page");
        // A model's history: its own records, then the older layout's.
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = log.page(Some("m"), after.as_deref(), 7).await.unwrap();
            seen.extend(versions(&page));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let want: Vec<String> = (1..=25u64)
            .rev()
            .filter(|i| i % 5 != 0)
            .map(|i| i.to_string())
            .chain(["0".to_owned()])
            .collect();
        assert_eq!(seen, want);
        assert!(log.page(None, Some("../x"), 5).await.is_err());
        assert!(check_cursor("999999999998975-web-fffffffeabcd1234").is_ok());
    }

    #[tokio::test]
    async fn refusals_are_sampled_before_they_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let log = log(dir.path(), "h");
        for _ in 0..50 {
            log.refusal(
                AuditRecord::denied("team", "set_alias", "m", "not yours"),
                "set_alias",
            )
            .await;
        }
        let records = log.recent(Some("m"), 100).await.unwrap();
        assert!(
            !records.is_empty() && records.len() <= 2 * REFUSALS_PER_MINUTE as usize,
            "{}",
            records.len()
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
