//! The prediction log: a sampled share of each model's requests (its `TrafficPolicy`), each with
//! everything needed to run it again and compare bit for bit — the version's sha256s, the exact input
//! and the exact output — written off the request path. A request hands its entry to a bounded queue
//! and goes on; when the queue is full the entry is dropped and counted, never waited for. One writer
//! thread turns entries into JSON lines and hands batches to the sink:
//!
//! - **files** (the embedded default, `<store>/predictions/`): `<start unix ms>-<host>-<n>.jsonl`, a new
//!   file past `max_file_bytes`, the oldest of this host's (its id exactly) removed past `max_files`.
//!   A batch is written whole; a write that fails (a full disk) is cut back to the last whole line;
//!   the file is fsynced at most every `sync_interval` and whenever it ends (rotation, stop);
//! - **store** (a fleet's default): one object per model per batch,
//!   `predictions/<model>/<unix ms>-<host>-<n>.jsonl`, written create-only, so every host of a fleet
//!   logs into its object store without coordinating.
//!
//! Inputs and outputs are logged exactly: feature-style JSON as the text the guest got and gave
//! (written as itself where it can be, [`line`]), tensors as their little-endian bytes in base64
//! (the binary tensor extension's layout), so NaNs, signed zeros and every float bit survive.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

mod line;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::super::{metrics, Output, Payload, ServeError, TensorRequest};
use crate::registry::ModelVersion;
use crate::runtime::{tensor_bytes, Tensor};
use crate::stamps::unix_ms;
use crate::storage::{Storage, Write};
use crate::tensor::{binary, datatype_name, datatype_of, parse_datatype};

/// One logged prediction, as read back from a line of the log (the writer writes lines straight
/// from the request's entry, [`line`]). Read it from the line's own text (`serde_json::from_str`):
/// a feature-style text is taken as the line's exact bytes, which a `Value` in between would lose.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LogRecord {
    /// The request's id (`x-request-id`, made up when the caller sent none).
    pub id: String,
    /// When the request arrived.
    pub time_unix_ms: u64,
    /// The host that answered.
    pub host: String,
    /// The model.
    pub model: String,
    /// The version that answered.
    pub version: String,
    /// What that version is made of: enough to run it again from the store.
    pub component_sha256: String,
    /// Its weights.
    #[serde(default)]
    pub weights_sha256: Option<String>,
    /// Its config.
    #[serde(default)]
    pub config_sha256: Option<String>,
    /// Its graphs (name → sha256).
    #[serde(default)]
    pub graphs: BTreeMap<String, String>,
    /// The entry point: `predict` or `infer`.
    pub route: String,
    /// The input, exactly.
    pub input: LoggedInput,
    /// The output, exactly (absent when the call failed).
    #[serde(default)]
    pub output: Option<LoggedOutput>,
    /// 200, or the error's status.
    pub status: u16,
    /// The error, when there was one.
    #[serde(default)]
    pub error: Option<String>,
    /// From arrival to answer, in microseconds.
    pub latency_us: u64,
}

/// A logged input.
#[derive(Debug, Clone, PartialEq)]
pub enum LoggedInput {
    /// A feature-style request: the JSON text the guest got.
    Features {
        /// The text.
        json: String,
    },
    /// A tensor request.
    Tensors {
        /// The inputs.
        tensors: Vec<LoggedTensor>,
        /// The parameters' JSON text.
        parameters: String,
        /// Outputs asked for (none: all).
        outputs: Vec<String>,
    },
}

/// A logged output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoggedOutput {
    /// The guest's JSON text.
    Features {
        /// The text.
        json: String,
    },
    /// Output tensors.
    Tensors {
        /// The tensors.
        tensors: Vec<LoggedTensor>,
    },
}

impl<'de> Deserialize<'de> for LoggedInput {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Tensors {
            tensors: Vec<LoggedTensor>,
            parameters: String,
            #[serde(default)]
            outputs: Vec<String>,
        }
        // Read whole first: which form it is shows only in its keys (and a verbatim JSON text is
        // taken as the exact bytes of the line, which only a raw value keeps).
        let raw = Box::<RawValue>::deserialize(d)?;
        if let Some(json) = line::read_json_text(&raw).map_err(serde::de::Error::custom)? {
            return Ok(LoggedInput::Features { json });
        }
        let t: Tensors = serde_json::from_str(raw.get()).map_err(|e| {
            serde::de::Error::custom(format!(
                "input is neither a JSON text (`verbatim` or `json`) nor tensors: {e}"
            ))
        })?;
        Ok(LoggedInput::Tensors {
            tensors: t.tensors,
            parameters: t.parameters,
            outputs: t.outputs,
        })
    }
}

impl<'de> Deserialize<'de> for LoggedOutput {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Tensors {
            tensors: Vec<LoggedTensor>,
        }
        let raw = Box::<RawValue>::deserialize(d)?;
        if let Some(json) = line::read_json_text(&raw).map_err(serde::de::Error::custom)? {
            return Ok(LoggedOutput::Features { json });
        }
        let t: Tensors = serde_json::from_str(raw.get()).map_err(|e| {
            serde::de::Error::custom(format!(
                "output is neither a JSON text (`verbatim` or `json`) nor tensors: {e}"
            ))
        })?;
        Ok(LoggedOutput::Tensors { tensors: t.tensors })
    }
}

/// A tensor as its exact bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedTensor {
    /// Its name.
    pub name: String,
    /// Its OIP datatype.
    pub datatype: String,
    /// Its shape.
    pub shape: Vec<u64>,
    /// Its elements, little-endian (BYTES: each a 4-byte length and the bytes), in base64.
    pub data_base64: String,
}

impl LoggedTensor {
    /// The exact bytes of `t`.
    pub fn of(t: &Tensor) -> LoggedTensor {
        LoggedTensor {
            name: t.name.clone(),
            datatype: datatype_name(datatype_of(&t.data)).to_owned(),
            shape: t.shape.clone(),
            data_base64: base64::engine::general_purpose::STANDARD.encode(binary::encode(&t.data)),
        }
    }

    /// The tensor back, or what is wrong with the record.
    pub fn tensor(&self) -> Result<Tensor, String> {
        let datatype = parse_datatype(&self.datatype)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.data_base64)
            .map_err(|e| format!("tensor `{}`: data_base64: {e}", self.name))?;
        let count = self
            .shape
            .iter()
            .try_fold(1u64, |n, d| n.checked_mul(*d))
            .filter(|n| *n <= bytes.len() as u64 * 8 + 1)
            .ok_or_else(|| {
                format!(
                    "tensor `{}`: shape {:?} does not fit its data",
                    self.name, self.shape
                )
            })?;
        let data = binary::decode(datatype, &bytes, count as usize)
            .map_err(|e| format!("tensor `{}`: {e}", self.name))?;
        Ok(Tensor {
            name: self.name.clone(),
            shape: self.shape.clone(),
            data,
        })
    }
}

impl LoggedInput {
    /// The payload back, to run again.
    pub fn payload(&self) -> Result<Payload, String> {
        Ok(match self {
            LoggedInput::Features { json } => Payload::Features(Arc::new(json.clone())),
            LoggedInput::Tensors {
                tensors,
                parameters,
                outputs,
            } => Payload::Tensors(Arc::new(TensorRequest {
                inputs: tensors
                    .iter()
                    .map(LoggedTensor::tensor)
                    .collect::<Result<_, _>>()?,
                parameters: parameters.clone(),
                outputs: outputs.clone(),
            })),
        })
    }
}

impl LoggedOutput {
    /// The exact form of `output`: two outputs are equal bit for bit when these are equal.
    pub fn of(output: &Output) -> LoggedOutput {
        match output {
            Output::Features(json) => LoggedOutput::Features {
                json: json.to_string(),
            },
            Output::Tensors(t) => LoggedOutput::Tensors {
                tensors: t.iter().map(LoggedTensor::of).collect(),
            },
        }
    }

    /// The output back, for a comparison that is not bit for bit.
    pub fn output(&self) -> Result<Output, String> {
        Ok(match self {
            LoggedOutput::Features { json } => Output::Features(Arc::new(json.clone())),
            LoggedOutput::Tensors { tensors } => Output::Tensors(Arc::new(
                tensors
                    .iter()
                    .map(LoggedTensor::tensor)
                    .collect::<Result<_, _>>()?,
            )),
        })
    }
}

/// What a request hands to the log: references, turned into a record by the writer thread.
pub struct Entry {
    /// When the request arrived.
    pub at: SystemTime,
    /// Its id.
    pub request_id: Option<String>,
    /// The version that answered.
    pub version: Arc<ModelVersion>,
    /// The input.
    pub payload: Payload,
    /// The answer.
    pub outcome: Result<Output, ServeError>,
    /// The status the front end answered with.
    pub status: u16,
    /// From arrival to answer.
    pub latency: Duration,
}

impl Entry {
    /// About what the entry holds in memory while it waits (its input and output).
    fn bytes(&self) -> u64 {
        let input = match &self.payload {
            Payload::Features(text) => text.len(),
            Payload::Tensors(t) => {
                t.inputs.iter().map(tensor_bytes).sum::<usize>() + t.parameters.len()
            }
        };
        let output = match &self.outcome {
            Ok(o) => match o {
                Output::Features(text) => text.len(),
                Output::Tensors(t) => t.iter().map(tensor_bytes).sum(),
            },
            Err(_) => 0,
        };
        (input + output) as u64 + 512
    }

    fn model(&self) -> &str {
        &self.version.manifest.model
    }
}

/// Where records go.
#[derive(Clone)]
pub enum LogSink {
    /// Rotated JSON-lines files in a directory.
    Files(PathBuf),
    /// Batched objects under `predictions/` in the store.
    Store(Arc<dyn Storage>),
}

/// How the log runs.
#[derive(Clone)]
pub struct LogOptions {
    /// Where records go (`None`: nowhere, every sampled entry is dropped and counted).
    pub sink: Option<LogSink>,
    /// This host's name, in records and object names.
    pub host: String,
    /// Entries waiting for the writer; beyond it they are dropped.
    pub queue: usize,
    /// Bytes of input and output the waiting entries may hold; beyond it they are dropped (a queue
    /// of large tensors is bounded by this, not by its length).
    pub max_queued_bytes: u64,
    /// Records per batch (an object in the store).
    pub batch_records: usize,
    /// Longest a record waits to be written.
    pub flush_interval: Duration,
    /// A file is closed and a new one begun past this size.
    pub max_file_bytes: u64,
    /// Files kept; the oldest go.
    pub max_files: usize,
    /// The files sink fsyncs at most this often (zero: after every batch), and when a file ends.
    pub sync_interval: Duration,
}

impl LogOptions {
    /// Defaults around `sink`.
    pub fn new(sink: Option<LogSink>, host: impl Into<String>) -> LogOptions {
        LogOptions {
            sink,
            host: host.into(),
            queue: 4096,
            max_queued_bytes: 256 << 20,
            batch_records: 1000,
            flush_interval: Duration::from_secs(1),
            max_file_bytes: 64 << 20,
            max_files: 64,
            sync_interval: Duration::from_secs(1),
        }
    }
}

/// Counters of the log, for `/metrics` and tests.
#[derive(Debug, Default)]
pub struct LogCounts {
    /// Entries handed over.
    pub accepted: AtomicU64,
    /// Entries dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Records written.
    pub written: AtomicU64,
    /// Records lost because the sink failed.
    pub failed: AtomicU64,
    /// Bytes the waiting entries hold now.
    pub queued_bytes: AtomicU64,
}

/// The queue in front of the writer.
pub struct PredictionLog {
    queue: SyncSender<(Entry, u64)>,
    counts: Arc<LogCounts>,
    stop: Arc<Stop>,
    /// No sink: entries are dropped (and counted) at once.
    discard: bool,
    max_queued_bytes: u64,
}

/// Asks the writer to write what it holds and finish (a host stopping), and says when it has.
#[derive(Default)]
struct Stop {
    asked: std::sync::atomic::AtomicBool,
    done: std::sync::Mutex<bool>,
    finished: std::sync::Condvar,
}

impl PredictionLog {
    /// Starts the writer thread. Call within a tokio runtime when the sink is the store.
    pub fn start(options: LogOptions) -> PredictionLog {
        let (queue, entries) = sync_channel(options.queue);
        let counts: Arc<LogCounts> = Default::default();
        let writer: Box<dyn BatchWriter> = match &options.sink {
            Some(LogSink::Files(dir)) => Box::new(FileWriter::new(dir.clone(), &options)),
            Some(LogSink::Store(storage)) => Box::new(StoreWriter {
                storage: storage.clone(),
                runtime: tokio::runtime::Handle::try_current().ok(),
                host: options.host.clone(),
                next: 0,
            }),
            None => Box::new(Discard),
        };
        let discard = options.sink.is_none();
        let mut log = Self::with_writer(options, entries, queue, counts, writer);
        log.discard = discard;
        log
    }

    fn with_writer(
        options: LogOptions,
        entries: Receiver<(Entry, u64)>,
        queue: SyncSender<(Entry, u64)>,
        counts: Arc<LogCounts>,
        mut writer: Box<dyn BatchWriter>,
    ) -> PredictionLog {
        let options_bytes = options.max_queued_bytes;
        let writer_counts = counts.clone();
        let stop: Arc<Stop> = Default::default();
        let writer_stop = stop.clone();
        std::thread::Builder::new()
            .name("ferry-prediction-log".into())
            .spawn(move || {
                write_loop(
                    &entries,
                    &options,
                    writer.as_mut(),
                    &writer_counts,
                    &writer_stop,
                );
                *writer_stop.done.lock().unwrap() = true;
                writer_stop.finished.notify_all();
            })
            .expect("spawning the prediction log's writer");
        PredictionLog {
            queue,
            counts,
            stop,
            discard: false,
            max_queued_bytes: options_bytes,
        }
    }

    /// Writes every entry handed over so far and stops the writer, waiting up to `limit` for it
    /// (a host stopping: what it answered is logged before it goes). Entries offered afterwards are
    /// dropped and counted.
    pub fn close(&self, limit: Duration) -> bool {
        self.stop.asked.store(true, Relaxed);
        let done = self.stop.done.lock().unwrap();
        let (done, _) = self
            .stop
            .finished
            .wait_timeout_while(done, limit, |done| !*done)
            .unwrap();
        *done
    }

    /// Hands over an entry; drops it (counted) when the queue is full. Never blocks.
    pub fn offer(&self, entry: Entry) {
        let bytes = entry.bytes();
        let queued = &self.counts.queued_bytes;
        let room = !self.discard
            && queued
                .fetch_update(Relaxed, Relaxed, |q| {
                    (q + bytes <= self.max_queued_bytes).then_some(q + bytes)
                })
                .is_ok();
        let refused = if room {
            // The size travels with the entry: the writer gives back exactly what was taken.
            match self.queue.try_send((entry, bytes)) {
                Ok(()) => None,
                Err(TrySendError::Full((entry, _)) | TrySendError::Disconnected((entry, _))) => {
                    queued.fetch_sub(bytes, Relaxed);
                    Some(entry)
                }
            }
        } else {
            Some(entry)
        };
        match refused {
            None => {
                self.counts.accepted.fetch_add(1, Relaxed);
            }
            Some(entry) => {
                self.counts.dropped.fetch_add(1, Relaxed);
                metrics::prediction_log_dropped(entry.model());
            }
        }
    }

    /// The log's counters.
    pub fn counts(&self) -> &LogCounts {
        &self.counts
    }
}

fn write_loop(
    entries: &Receiver<(Entry, u64)>,
    options: &LogOptions,
    writer: &mut dyn BatchWriter,
    counts: &LogCounts,
    stop: &Stop,
) {
    let mut batch = Batch::default();
    let mut oldest: Option<Instant> = None;
    // The writer wakes on its own clock and takes whatever waits, rather than being woken by every
    // entry: a request's hand-over is then a lock and a push, never a wake-up of another thread.
    let tick = options
        .flush_interval
        .clamp(Duration::from_millis(1), Duration::from_millis(20));
    loop {
        std::thread::sleep(tick);
        let mut closed = false;
        // At most a batch per turn: a queue refilled as fast as it is drained must not keep the
        // writer taking entries (and the memory they hold) past the queue's bound.
        while batch.len() < options.batch_records.max(1) {
            match entries.try_recv() {
                Ok((entry, bytes)) => {
                    counts.queued_bytes.fetch_sub(bytes, Relaxed);
                    batch.push(&entry, &options.host);
                    oldest.get_or_insert_with(Instant::now);
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        if stop.asked.load(Relaxed) {
            for (entry, bytes) in entries.try_iter() {
                counts.queued_bytes.fetch_sub(bytes, Relaxed);
                batch.push(&entry, &options.host);
            }
            closed = true;
        }
        let due = oldest.is_some_and(|t| t.elapsed() >= options.flush_interval);
        if !batch.is_empty() && (closed || due || batch.len() >= options.batch_records) {
            let (written, failure) = writer.write(&batch);
            counts.written.fetch_add(written.len() as u64, Relaxed);
            metrics::prediction_log_written(written.iter().map(|&i| batch.model_of(i)));
            if let Some(e) = failure {
                let lost = (batch.len() - written.len()) as u64;
                counts.failed.fetch_add(lost, Relaxed);
                metrics::prediction_log_failed(lost);
                tracing::error!(error = %e, records = lost, "the prediction log lost records");
            }
            batch.clear();
            oldest = None;
        }
        if closed {
            writer.finish();
            return;
        }
        writer.tick();
    }
}

/// Why records did not reach the log's sink; the cause is kept for the log line that says so.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The host was started without a sink.
    #[error("no prediction log sink is configured")]
    NoSink,
    /// The store sink runs on the host's async runtime, which was not there.
    #[error("the store sink needs the host's async runtime")]
    NoRuntime,
    /// A log file could not be created or written (a full disk).
    #[error("{doing} {}: {source}", path.display())]
    File {
        /// What the writer was doing.
        doing: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A batch's object could not be written to the store.
    #[error("writing {key}: {source}")]
    Store {
        /// The object.
        key: String,
        /// Why.
        #[source]
        source: crate::storage::StorageError,
    },
}

/// One sink's way of writing a batch: answers the records written, and why the rest were not.
trait BatchWriter: Send {
    fn write(&mut self, batch: &Batch) -> (Vec<usize>, Option<LogError>);
    /// Makes what was written durable (the log is stopping).
    fn finish(&mut self) {}
    /// Called on every turn of the writer: makes durable what is due.
    fn tick(&mut self) {}
}

/// All of `batch`, or none of it with the reason.
fn whole(batch: &Batch, result: Result<(), LogError>) -> (Vec<usize>, Option<LogError>) {
    match result {
        Ok(()) => ((0..batch.len()).collect(), None),
        Err(e) => (Vec::new(), Some(e)),
    }
}

/// Lines waiting to go to the sink together, written as their entries arrive: an entry is dropped
/// as soon as its line is written, so a batch holds no version (nor its instances) alive.
#[derive(Default)]
pub(super) struct Batch {
    bytes: Vec<u8>,
    /// Each line's end in `bytes` and its version (an index in `versions`).
    lines: Vec<(usize, usize)>,
    versions: line::VersionFields,
}

/// A batch's buffer larger than this is not kept for the next batch (one of large tensors).
const KEPT_BATCH_BYTES: usize = 4 << 20;

impl Batch {
    fn push(&mut self, entry: &Entry, host: &str) {
        let version = line::write(&mut self.bytes, entry, host, &mut self.versions);
        self.lines.push((self.bytes.len(), version));
    }

    fn len(&self) -> usize {
        self.lines.len()
    }

    fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Line `i`, with its newline.
    fn line(&self, i: usize) -> &[u8] {
        let start = i.checked_sub(1).map_or(0, |p| self.lines[p].0);
        &self.bytes[start..self.lines[i].0]
    }

    fn model_of(&self, i: usize) -> &str {
        self.versions.model(self.lines[i].1)
    }

    /// Empties the batch, keeping its buffer (allocating and freeing a batch's large buffer each
    /// time had glibc consolidate its heap each time) unless it grew past [`KEPT_BATCH_BYTES`].
    fn clear(&mut self) {
        self.bytes.clear();
        self.bytes.shrink_to(KEPT_BATCH_BYTES);
        self.lines.clear();
        self.versions = Default::default();
    }
}

struct Discard;

impl BatchWriter for Discard {
    fn write(&mut self, batch: &Batch) -> (Vec<usize>, Option<LogError>) {
        whole(batch, Err(LogError::NoSink))
    }
}

struct FileWriter {
    dir: PathBuf,
    host: String,
    max_file_bytes: u64,
    max_files: usize,
    current: Option<(std::fs::File, u64)>,
    opened: u64,
    sync_interval: Duration,
    /// When the current file was last fsynced, while it holds lines that were not.
    unsynced_since: Option<Instant>,
    /// Fsyncs done (for tests).
    syncs: u64,
}

/// Whether `name` is one of `host`'s log files: `<unix ms>-<host>-<n>.jsonl` with exactly that host
/// (host `web` does not own `web-2`'s files, though both contain `-web-`).
fn owned_by(name: &str, host: &str) -> bool {
    let Some(stem) = name.strip_suffix(".jsonl") else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let Some((time, rest)) = stem.split_once('-') else {
        return false;
    };
    let Some((owner, count)) = rest.rsplit_once('-') else {
        return false;
    };
    digits(time) && digits(count) && owner == host
}

/// Appends `bytes` (whole lines) to `file`, which holds `size` bytes of whole lines, with `write`;
/// when it fails part way (a full disk), cuts the file back to `size`, so no partial line is left.
/// Answers the new size, or why not (and whether the file is still whole).
fn append_whole(
    file: &mut std::fs::File,
    size: u64,
    bytes: &[u8],
    write: impl FnOnce(&mut std::fs::File, &[u8]) -> std::io::Result<()>,
) -> Result<u64, (std::io::Error, bool)> {
    match write(file, bytes) {
        Ok(()) => Ok(size + bytes.len() as u64),
        Err(e) => {
            let whole = file.set_len(size).is_ok();
            Err((e, whole))
        }
    }
}

impl FileWriter {
    fn new(dir: PathBuf, options: &LogOptions) -> FileWriter {
        FileWriter {
            dir,
            host: options.host.clone(),
            max_file_bytes: options.max_file_bytes,
            max_files: options.max_files.max(1),
            current: None,
            opened: 0,
            sync_interval: options.sync_interval,
            unsynced_since: None,
            syncs: 0,
        }
    }

    /// Fsyncs the current file if it holds lines not yet synced.
    fn sync(&mut self) {
        if let (Some((file, _)), Some(_)) = (&self.current, self.unsynced_since) {
            if let Err(e) = file.sync_data() {
                tracing::warn!(error = %e, dir = %self.dir.display(), "cannot fsync the prediction log");
            }
            self.syncs += 1;
            self.unsynced_since = None;
        }
    }

    fn open(&mut self) -> Result<(), LogError> {
        // The file that ends is made durable before the next begins.
        self.sync();
        crate::files::create_dir_all(&self.dir).map_err(|source| LogError::File {
            doing: "cannot create",
            path: self.dir.clone(),
            source,
        })?;
        // Zero-padded, so names sort by time (and by this writer's count within a millisecond).
        self.opened += 1;
        let path = self.dir.join(format!(
            "{:013}-{}-{:06}.jsonl",
            unix_ms(SystemTime::now()),
            self.host,
            self.opened
        ));
        let file = std::fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|source| LogError::File {
                doing: "cannot create",
                path: path.clone(),
                source,
            })?;
        // The new file's name is durable before lines are counted as written in it.
        if let Err(e) = crate::files::sync_dir(&self.dir) {
            tracing::warn!(error = %e, dir = %self.dir.display(), "cannot fsync the prediction log's directory");
        }
        self.current = Some((file, 0));
        self.retain();
        Ok(())
    }

    /// Removes this host's oldest files beyond `max_files`.
    fn retain(&self) {
        let Ok(listing) = std::fs::read_dir(&self.dir) else {
            return;
        };
        // Only this host's files: a directory several hosts share keeps each one's own.
        let mut files: Vec<PathBuf> = listing
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| owned_by(n, &self.host))
            })
            .collect();
        files.sort();
        let excess = files.len().saturating_sub(self.max_files);
        for old in &files[..excess] {
            let _ = std::fs::remove_file(old);
        }
    }
}

impl BatchWriter for FileWriter {
    fn write(&mut self, batch: &Batch) -> (Vec<usize>, Option<LogError>) {
        let result = self.append_lines(&batch.bytes);
        whole(batch, result)
    }

    fn finish(&mut self) {
        self.sync();
    }

    fn tick(&mut self) {
        self.sync_if_due();
    }
}

impl FileWriter {
    fn append_lines(&mut self, bytes: &[u8]) -> Result<(), LogError> {
        if self
            .current
            .as_ref()
            .is_none_or(|(_, size)| *size > 0 && size + bytes.len() as u64 > self.max_file_bytes)
        {
            self.open()?;
        }
        self.append_with(bytes, |file, bytes| {
            file.write_all(bytes).and_then(|_| file.flush())
        })
    }

    /// Appends whole lines with `write`, then fsyncs when the last fsync is `sync_interval` old.
    fn append_with(
        &mut self,
        bytes: &[u8],
        write: impl FnOnce(&mut std::fs::File, &[u8]) -> std::io::Result<()>,
    ) -> Result<(), LogError> {
        let (file, size) = self.current.as_mut().expect("opened before");
        match append_whole(file, *size, bytes, write) {
            Ok(new_size) => *size = new_size,
            Err((source, whole)) => {
                let e = LogError::File {
                    doing: "writing the prediction log in",
                    path: self.dir.clone(),
                    source,
                };
                // A full disk loses this batch, not the log, and leaves no partial line: the file
                // is cut back to its last whole line (or, if even that fails, left for a new one).
                if !whole {
                    self.sync();
                    self.current = None;
                }
                return Err(e);
            }
        }
        self.unsynced_since.get_or_insert_with(Instant::now);
        self.sync_if_due();
        Ok(())
    }

    /// Fsyncs when the oldest line not yet synced was written `sync_interval` ago: at most one
    /// fsync per interval, and no line waits much longer than that for one.
    fn sync_if_due(&mut self) {
        if self
            .unsynced_since
            .is_some_and(|since| since.elapsed() >= self.sync_interval)
        {
            self.sync();
        }
    }
}

struct StoreWriter {
    storage: Arc<dyn Storage>,
    runtime: Option<tokio::runtime::Handle>,
    host: String,
    next: u64,
}

impl BatchWriter for StoreWriter {
    fn write(&mut self, batch: &Batch) -> (Vec<usize>, Option<LogError>) {
        let Some(runtime) = self.runtime.as_ref() else {
            return whole(batch, Err(LogError::NoRuntime));
        };
        let mut by_model: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for i in 0..batch.len() {
            by_model.entry(batch.model_of(i)).or_default().push(i);
        }
        let now = unix_ms(SystemTime::now());
        let (mut written, mut failure) = (Vec::new(), None);
        // One object per model: a failed one loses its records, not the others'.
        for (model, records) in by_model {
            self.next += 1;
            let key = format!(
                "predictions/{model}/{now:013}-{}-{}.jsonl",
                self.host, self.next
            );
            let mut bytes = Vec::new();
            for &i in &records {
                bytes.extend_from_slice(batch.line(i));
            }
            let bytes = bytes::Bytes::from(bytes);
            match runtime.block_on(self.storage.put(&key, bytes, Write::Create)) {
                Ok(_) => written.extend(records),
                Err(source) => failure = Some(LogError::Store { key, source }),
            }
        }
        (written, failure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::TensorData;
    use serde_json::Value;

    #[test]
    fn tensors_survive_the_log_bit_for_bit() {
        let t = Tensor {
            name: "x".into(),
            shape: vec![2, 2],
            data: TensorData::Fp32(vec![f32::NAN, -0.0, 1.0e-45, f32::from_bits(0x7fc0_0001)]),
        };
        let logged = LoggedTensor::of(&t);
        let line = serde_json::to_string(&logged).unwrap();
        let back: LoggedTensor = serde_json::from_str(&line).unwrap();
        let TensorData::Fp32(v) = back.tensor().unwrap().data else {
            panic!("FP32 came back as another type")
        };
        let TensorData::Fp32(w) = &t.data else {
            unreachable!()
        };
        assert_eq!(
            v.iter().map(|f| f.to_bits()).collect::<Vec<_>>(),
            w.iter().map(|f| f.to_bits()).collect::<Vec<_>>()
        );
        let bad = LoggedTensor {
            shape: vec![u64::MAX, 4],
            ..logged
        };
        assert!(bad.tensor().unwrap_err().contains("does not fit"));
    }

    fn version() -> Arc<ModelVersion> {
        let manifest = crate::registry::VersionManifest {
            model: "fraud".into(),
            version: "3".into(),
            sequence: 3,
            component_sha256: "c0".repeat(32),
            weights_sha256: Some("e1".repeat(32)),
            config_sha256: None,
            tests_sha256: None,
            profile_sha256: None,
            graphs: Default::default(),
            limits: None,
        };
        Arc::new(ModelVersion::listed(
            manifest,
            crate::registry::Listing::Loading,
        ))
    }

    fn entry(i: usize) -> Entry {
        Entry {
            at: SystemTime::now(),
            request_id: Some(format!("req-{i}")),
            version: version(),
            payload: Payload::Features(Arc::new(format!("{{\"i\": {i}}}"))),
            outcome: Ok(Output::Features(Arc::new("{\"score\": 0.5}".into()))),
            status: 200,
            latency: Duration::from_micros(42),
        }
    }

    /// A sink that holds the writer until told to go on, and keeps what it was given.
    struct Held {
        go: std::sync::mpsc::Receiver<()>,
        got: Arc<std::sync::Mutex<Vec<LogRecord>>>,
    }

    /// `entries` as a batch of host `h1`.
    fn batch_of(entries: &[Entry]) -> Batch {
        let mut batch = Batch::default();
        for e in entries {
            batch.push(e, "h1");
        }
        batch
    }

    /// The records a batch's lines are read back as.
    fn records_of(batch: &Batch) -> Vec<LogRecord> {
        let text = std::str::from_utf8(&batch.bytes).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// The records `entries` are read back as, from their lines.
    fn read_back(entries: &[Entry]) -> Vec<LogRecord> {
        records_of(&batch_of(entries))
    }

    impl BatchWriter for Held {
        fn write(&mut self, batch: &Batch) -> (Vec<usize>, Option<LogError>) {
            let _ = self.go.recv();
            self.got.lock().unwrap().extend(records_of(batch));
            whole(batch, Ok(()))
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking_the_request() {
        let (go, held) = std::sync::mpsc::channel();
        let got: Arc<std::sync::Mutex<Vec<LogRecord>>> = Default::default();
        let options = LogOptions {
            queue: 4,
            batch_records: 1,
            flush_interval: Duration::from_millis(1),
            ..LogOptions::new(None, "h1")
        };
        let (queue, entries) = sync_channel(options.queue);
        let log = PredictionLog::with_writer(
            options,
            entries,
            queue,
            Default::default(),
            Box::new(Held {
                go: held,
                got: got.clone(),
            }),
        );
        // With the writer stuck, 1,000 requests hand over their entries: none may wait. (Were
        // `offer` to block, this thread would never get past the loop and the test would hang.)
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let offering = std::thread::spawn(move || {
            for i in 0..1000 {
                log.offer(entry(i));
            }
            done_tx.send(()).unwrap();
            log
        });
        done_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("offering to a full queue blocked");
        let log = offering.join().unwrap();
        let (accepted, dropped) = (
            log.counts().accepted.load(Relaxed),
            log.counts().dropped.load(Relaxed),
        );
        assert_eq!(accepted + dropped, 1000);
        // The queue's 4, and the batch of at most 4 the writer took before the sink held it.
        assert!(
            accepted <= 8 && dropped >= 992,
            "accepted {accepted}, dropped {dropped}"
        );
        for _ in 0..accepted {
            go.send(()).unwrap();
        }
        let started = Instant::now();
        while log.counts().written.load(Relaxed) < accepted {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "accepted entries were not written"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let records = got.lock().unwrap().clone();
        let first = &records[0];
        assert_eq!(
            (first.model.as_str(), first.version.as_str(), first.status),
            ("fraud", "3", 200)
        );
        assert_eq!(first.id, "req-0");
        assert_eq!(first.component_sha256, "c0".repeat(32));
        assert_eq!(
            first.weights_sha256.as_deref(),
            Some("e1".repeat(32).as_str())
        );
        assert_eq!(
            first.input,
            LoggedInput::Features {
                json: "{\"i\": 0}".into()
            }
        );
        assert_eq!(
            first.output,
            Some(LoggedOutput::Features {
                json: "{\"score\": 0.5}".into()
            })
        );
        assert_eq!(
            (first.latency_us, first.route.as_str(), first.host.as_str()),
            (42, "predict", "h1")
        );
    }

    #[test]
    fn files_rotate_past_their_size_and_the_oldest_go() {
        let dir = tempfile::tempdir().unwrap();
        let options = LogOptions {
            batch_records: 10,
            flush_interval: Duration::from_millis(1),
            max_file_bytes: 2_000,
            max_files: 3,
            ..LogOptions::new(Some(LogSink::Files(dir.path().to_owned())), "h1")
        };
        let mut writer = FileWriter::new(dir.path().to_owned(), &options);
        for batch in 0..10 {
            let entries: Vec<Entry> = (0..10).map(|i| entry(batch * 10 + i)).collect();
            assert!(writer.write(&batch_of(&entries)).1.is_none());
        }
        let mut files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert_eq!(files.len(), 3, "{files:?}");
        let last = std::fs::read_to_string(files.last().unwrap()).unwrap();
        let records: Vec<LogRecord> = last
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(records.last().unwrap().id, "req-99");
    }

    #[test]
    fn rotation_counts_and_removes_only_files_of_this_exact_host() {
        assert!(owned_by("0001700000000000-web-000001.jsonl", "web"));
        assert!(!owned_by("0001700000000000-web-2-000001.jsonl", "web"));
        assert!(owned_by("0001700000000000-web-2-000001.jsonl", "web-2"));
        assert!(!owned_by("0001700000000000-web-000001.jsonl", "web-2"));
        assert!(!owned_by("0001700000000000-web-000001.json", "web"));
        assert!(!owned_by("x-web-000001.jsonl", "web"));
        let dir = tempfile::tempdir().unwrap();
        // web-2's files, older than any of web's.
        for n in 1..=3 {
            std::fs::write(
                dir.path().join(format!("0000000000001-web-2-{n:06}.jsonl")),
                b"{}\n",
            )
            .unwrap();
        }
        let options = LogOptions {
            max_files: 2,
            ..LogOptions::new(Some(LogSink::Files(dir.path().to_owned())), "web")
        };
        let mut writer = FileWriter::new(dir.path().to_owned(), &options);
        for _ in 0..4 {
            writer.open().unwrap();
        }
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let count = |host: &str| names.iter().filter(|n| owned_by(n, host)).count();
        assert_eq!((count("web"), count("web-2")), (2, 3), "{names:?}");
    }

    #[test]
    fn a_failed_write_leaves_no_partial_line_and_the_next_batch_follows_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let options = LogOptions::new(Some(LogSink::Files(dir.path().to_owned())), "h1");
        let mut writer = FileWriter::new(dir.path().to_owned(), &options);
        let first = batch_of(&(0..3).map(entry).collect::<Vec<_>>());
        assert!(writer.write(&first).1.is_none());
        // A full disk half way through the next batch.
        let second = batch_of(&(3..6).map(entry).collect::<Vec<_>>()).bytes;
        let err = writer
            .append_with(&second, |file, bytes| {
                file.write_all(&bytes[..bytes.len() / 2])?;
                Err(std::io::Error::from_raw_os_error(28)) // ENOSPC
            })
            .unwrap_err();
        let err = err.to_string();
        assert!(err.contains("writing the prediction log"), "{err}");
        let third = batch_of(&(6..8).map(entry).collect::<Vec<_>>());
        assert!(writer.write(&third).1.is_none());
        let files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(
            files.len(),
            1,
            "the file was cut back, not given up: {files:?}"
        );
        let text = std::fs::read_to_string(&files[0]).unwrap();
        let ids: Vec<String> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<LogRecord>(l)
                    .expect("whole lines only")
                    .id
            })
            .collect();
        assert_eq!(ids, ["req-0", "req-1", "req-2", "req-6", "req-7"]);
    }

    #[test]
    fn fsyncs_are_bounded_by_the_interval_and_done_when_a_file_ends() {
        let dir = tempfile::tempdir().unwrap();
        let batch = batch_of(&(0..2).map(entry).collect::<Vec<_>>());
        // Every batch.
        let every = LogOptions {
            sync_interval: Duration::ZERO,
            ..LogOptions::new(Some(LogSink::Files(dir.path().join("a"))), "h1")
        };
        let mut writer = FileWriter::new(dir.path().join("a"), &every);
        for _ in 0..5 {
            assert!(writer.write(&batch).1.is_none());
        }
        assert_eq!(writer.syncs, 5);
        // At most once an interval, and at the end.
        let rarely = LogOptions {
            sync_interval: Duration::from_secs(3600),
            ..LogOptions::new(Some(LogSink::Files(dir.path().join("b"))), "h1")
        };
        let mut writer = FileWriter::new(dir.path().join("b"), &rarely);
        for _ in 0..5 {
            assert!(writer.write(&batch).1.is_none());
            writer.tick();
        }
        assert_eq!(writer.syncs, 0);
        writer.finish();
        assert_eq!(writer.syncs, 1);
        writer.finish();
        assert_eq!(writer.syncs, 1, "nothing new, no fsync");
    }

    #[test]
    fn features_and_tensor_inputs_are_told_apart_when_read_back() {
        let f: LoggedInput = serde_json::from_str(r#"{"json": "{\"a\": 1}"}"#).unwrap();
        assert_eq!(
            f,
            LoggedInput::Features {
                json: r#"{"a": 1}"#.into()
            }
        );
        let f: LoggedInput = serde_json::from_str(r#"{"verbatim": {"a": 1}}"#).unwrap();
        assert_eq!(
            f,
            LoggedInput::Features {
                json: r#"{"a": 1}"#.into()
            }
        );
        let e = serde_json::from_str::<LoggedInput>(r#"{"verbatim_": {}}"#).unwrap_err();
        assert!(e.to_string().contains("neither a JSON text"), "{e}");
        let t: LoggedInput =
            serde_json::from_str(r#"{"tensors": [], "parameters": "{}"}"#).unwrap();
        assert!(matches!(t, LoggedInput::Tensors { .. }));
    }

    #[test]
    fn feature_texts_are_written_verbatim_when_they_can_be_and_always_read_back_exactly() {
        // (text, as a request, written verbatim): a request's text is JSON (the front end checked
        // it); a guest's answer may be anything.
        let texts = [
            // One value, nothing around it: written as itself, spaces and number forms kept.
            (
                r#"{"features": {"amount": 1.50, "city": "Zürich \"x\""}}"#,
                true,
                true,
            ),
            (r#""a string answer""#, true, true),
            ("[1e2,-0.0]", true, true),
            // Line breaks between tokens: written as spaces, their places kept.
            ("{\n  \"features\": {\"a\": [1,\n 2]}\n}", true, true),
            ("{\r\n\"a\":\t1\r\n}", true, true),
            // Whitespace around the value: kept beside it.
            ("{\"a\": 1}\r\n", true, true),
            (" \t{}\n\n", true, true),
            // Kept escaped: answers that are not JSON.
            ("not json", false, false),
            ("\n", false, false),
            ("{\"a\": 1} {\"b\": 2}", false, false),
            ("{\"a\": \"x\ny\"}", false, false),
            ("", false, false),
        ];
        for (text, request, verbatim) in texts {
            let json = text.to_owned();
            let e = Entry {
                payload: if request {
                    Payload::Features(Arc::new(json.clone()))
                } else {
                    entry(0).payload
                },
                outcome: Ok(Output::Features(Arc::new(json.clone()))),
                ..entry(0)
            };
            let line = String::from_utf8(batch_of(std::slice::from_ref(&e)).bytes).unwrap();
            assert_eq!(line.matches('\n').count(), 1, "one line: {line}");
            assert!(line.ends_with('\n'), "{line}");
            assert!(serde_json::from_str::<Value>(&line).is_ok(), "{line}");
            let verbatims = line.matches(r#"{"verbatim":"#).count();
            let escaped = line.matches(r#"{"json":"#).count();
            let expected = if request {
                [2 * verbatim as usize, 2 * !verbatim as usize]
            } else {
                // The input is `entry`'s own (one line, verbatim).
                [1 + verbatim as usize, !verbatim as usize]
            };
            assert_eq!([verbatims, escaped], expected, "{text:?}: {line}");
            let back = &read_back(std::slice::from_ref(&e))[0];
            if request {
                assert_eq!(back.input, LoggedInput::Features { json: json.clone() });
            }
            assert_eq!(back.output, Some(LoggedOutput::Features { json }));
        }
    }

    #[test]
    fn a_line_holds_every_field_of_the_record_it_is_read_back_as() {
        let mut manifest = version().manifest.clone();
        manifest.config_sha256 = Some("a\"b\\c".into());
        manifest.graphs.insert("model".into(), "d4".repeat(32));
        let version = Arc::new(ModelVersion::listed(
            manifest,
            crate::registry::Listing::Loading,
        ));
        let tensor = Tensor {
            name: "x".into(),
            shape: vec![1, 2],
            data: crate::runtime::TensorData::Fp32(vec![f32::NAN, -0.0]),
        };
        let request = Payload::Tensors(Arc::new(TensorRequest {
            inputs: vec![tensor.clone()],
            parameters: r#"{"p": "q"}"#.into(),
            outputs: vec!["y".into()],
        }));
        let answered = Entry {
            at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_000_000_123),
            request_id: Some("id with \"quotes\"\n".into()),
            version: version.clone(),
            payload: request.clone(),
            outcome: Ok(Output::Tensors(Arc::new(vec![tensor.clone()]))),
            status: 200,
            latency: Duration::from_micros(184),
        };
        let failed = Entry {
            request_id: None,
            outcome: Err(ServeError::Invalid("\"busy\"\n".into())),
            status: 503,
            ..entry(1)
        };
        let records = read_back(&[answered, failed]);
        let m = &version.manifest;
        assert_eq!(
            records[0],
            LogRecord {
                id: "id with \"quotes\"\n".into(),
                time_unix_ms: 1_796_000_000_123,
                host: "h1".into(),
                model: m.model.clone(),
                version: m.version.clone(),
                component_sha256: m.component_sha256.clone(),
                weights_sha256: m.weights_sha256.clone(),
                config_sha256: m.config_sha256.clone(),
                graphs: m.graphs.clone(),
                route: "infer".into(),
                input: LoggedInput::Tensors {
                    tensors: vec![LoggedTensor::of(&tensor)],
                    parameters: r#"{"p": "q"}"#.into(),
                    outputs: vec!["y".into()],
                },
                output: Some(LoggedOutput::Tensors {
                    tensors: vec![LoggedTensor::of(&tensor)]
                }),
                status: 200,
                error: None,
                latency_us: 184,
            }
        );
        let failed = &records[1];
        assert_eq!((failed.status, failed.output.as_ref()), (503, None));
        assert!(
            failed.error.as_deref().unwrap().contains("\"busy\""),
            "{failed:?}"
        );
        assert_eq!(failed.id.len(), 36, "an id is made up: {failed:?}");
        assert_eq!(failed.config_sha256, None);
        assert!(failed.graphs.is_empty());
    }

    #[test]
    fn a_batch_holds_no_version_alive_and_names_each_lines_model() {
        let other = Arc::new(ModelVersion::listed(
            crate::registry::VersionManifest {
                model: "eta".into(),
                ..version().manifest.clone()
            },
            crate::registry::Listing::Loading,
        ));
        let (a, b) = (
            entry(0),
            Entry {
                version: other.clone(),
                ..entry(1)
            },
        );
        let fraud = a.version.clone();
        let batch = batch_of(&[a, b, entry(2)]);
        assert_eq!(Arc::strong_count(&other), 1, "the batch holds the version");
        assert_eq!(Arc::strong_count(&fraud), 1, "the batch holds the version");
        let models: Vec<&str> = (0..batch.len()).map(|i| batch.model_of(i)).collect();
        assert_eq!(models, ["fraud", "eta", "fraud"]);
        let lines: Vec<&[u8]> = (0..batch.len()).map(|i| batch.line(i)).collect();
        assert_eq!(lines.concat(), batch.bytes);
        assert!(std::str::from_utf8(lines[1])
            .unwrap()
            .contains(r#""model":"eta""#));
    }

    #[test]
    fn strings_are_escaped_exactly_when_a_byte_needs_it() {
        let needs = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
        for len in 0..20 {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = b;
                    assert_eq!(line::needs_escape(&bytes), needs(b), "{bytes:?}");
                    // Bytes of multi-byte characters around it change nothing.
                    bytes
                        .iter_mut()
                        .filter(|x| **x == b'a')
                        .for_each(|x| *x = 0xc3);
                    assert_eq!(line::needs_escape(&bytes), needs(b), "{bytes:?}");
                }
            }
        }
    }

    #[test]
    fn a_verbatim_text_whose_line_breaks_do_not_fit_it_is_refused() {
        for input in [
            r#"{"verbatim": {"a": 1}, "lf_at": [1]}"#,
            r#"{"verbatim": {"a": 1}, "cr_at": [99]}"#,
        ] {
            let e = serde_json::from_str::<LoggedInput>(input).unwrap_err();
            assert!(e.to_string().contains("not a space of the text"), "{e}");
        }
        let f: LoggedInput =
            serde_json::from_str(r#"{"verbatim": {"a": 1}, "lf_at": [5]}"#).unwrap();
        assert_eq!(
            f,
            LoggedInput::Features {
                json: "{\"a\":\n1}".into()
            }
        );
    }
}
