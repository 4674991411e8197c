//! Dynamic batching: concurrent tensor requests for one version merged along their leading
//! dimension into one guest call (so one graph run), the answer split back by rows. A version
//! batches when its limits ask for it (`max_batch_size` above 1) and every input it declares has a
//! variable leading dimension.
//!
//! There is no batching thread. The first request of a batch leads it: it opens the batch, waits
//! up to `max_queue_delay_us` (less once the batch is full) for requests of the same [`Shape`] to
//! join — and in any case until its turn for an instance comes, so that while every instance is
//! busy the batch keeps gathering — then makes the one call for all of them and hands each its
//! rows. Each request keeps its
//! own place in the version's admission queue until it is answered, so the queue still bounds the
//! requests waiting; the leader's place makes the call. A request that hung up before the call is
//! left out of it; if the leader hangs up before the call, the batch falls apart and each request
//! that joined it runs alone. A failed call fails each request of the batch with the error.

mod merge;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Notify};

use merge::Shape;

use super::{tensor_bytes, Admitted, CallError, Entry, Tensor, TensorRequest};

/// How a version batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPolicy {
    /// Rows a batch holds at most.
    pub max_rows: usize,
    /// Longest the first request of a batch waits for others.
    pub max_delay: Duration,
    /// Bytes of input a batch holds at most (the version's `max_input_bytes`: the merged request
    /// is one call's input).
    pub max_bytes: usize,
}

/// What a version's batches have been, for `/metrics` and `GET /v1/models/{m}`.
#[derive(Debug, Default)]
pub struct BatchStats {
    /// Guest calls made for batches (a request that found no company is counted as a batch of 1).
    pub batches: AtomicU64,
    /// Requests answered by them.
    pub requests: AtomicU64,
    /// Rows they held.
    pub rows: AtomicU64,
    /// Time their leaders waited for company, in nanoseconds.
    pub delay_ns: AtomicU64,
    /// Guest calls that answered, by the rows they held: how many, and their time in nanoseconds
    /// (the statistics extension's `batch_stats`).
    executions: Mutex<BTreeMap<u64, (u64, u64)>>,
}

impl BatchStats {
    fn executed(&self, rows: u64, took: Duration) {
        let mut executions = self.executions.lock().unwrap_or_else(|p| p.into_inner());
        let (count, ns) = executions.entry(rows).or_default();
        *count += 1;
        *ns += took.as_nanos().min(u64::MAX as u128) as u64;
    }

    /// The answered calls by size: (rows, calls, nanoseconds), smallest first.
    pub fn by_size(&self) -> Vec<(u64, u64, u64)> {
        let executions = self.executions.lock().unwrap_or_else(|p| p.into_inner());
        executions
            .iter()
            .map(|(rows, (count, ns))| (*rows, *count, *ns))
            .collect()
    }
}

/// Gathers a version's concurrent requests into batches.
pub struct Batcher {
    policy: BatchPolicy,
    open: Mutex<HashMap<Shape, Arc<Mutex<Gathering>>>>,
    stats: BatchStats,
    sizes: metrics::Histogram,
    delays: metrics::Histogram,
}

/// A batch still taking requests.
struct Gathering {
    rows: usize,
    bytes: usize,
    members: Vec<Member>,
    closed: bool,
    full: Arc<Notify>,
}

/// A request that joined a batch it does not lead.
struct Member {
    ask: Arc<TensorRequest>,
    rows: usize,
    answer: oneshot::Sender<Result<Vec<Tensor>, CallError>>,
}

impl Batcher {
    /// A batcher for `model` version `version` under `policy`.
    pub fn new(model: &str, version: &str, policy: BatchPolicy) -> Batcher {
        describe_metrics();
        let labels = [("model", model.to_owned()), ("version", version.to_owned())];
        Batcher {
            policy,
            open: Mutex::new(HashMap::new()),
            stats: BatchStats::default(),
            sizes: metrics::histogram!("ferry_batch_size", &labels),
            delays: metrics::histogram!("ferry_batch_delay_seconds", &labels),
        }
    }

    /// How it batches.
    pub fn policy(&self) -> BatchPolicy {
        self.policy
    }

    /// What its batches have been.
    pub fn stats(&self) -> &BatchStats {
        &self.stats
    }

    /// Counts a guest call made through this batcher that answered `rows` rows in `took`. A
    /// request of more rows than a batch holds (which runs alone) counts at the batch size, so
    /// that callers cannot grow the table one size at a time.
    pub fn executed(&self, rows: u64, took: Duration) {
        self.stats
            .executed(rows.min(self.policy.max_rows as u64), took);
    }

    /// How it batches and what its batches have been (`GET /v1/models/{m}`).
    pub fn describe(&self) -> serde_json::Value {
        let n = |c: &AtomicU64| c.load(Relaxed);
        let (batches, requests) = (n(&self.stats.batches), n(&self.stats.requests));
        let per_batch = |total: f64| {
            if batches == 0 {
                0.0
            } else {
                total / batches as f64
            }
        };
        serde_json::json!({
            "max_batch_size": self.policy.max_rows,
            "max_queue_delay_us": self.policy.max_delay.as_micros() as u64,
            "batches": batches,
            "requests": requests,
            "rows": n(&self.stats.rows),
            "mean_batch_size": per_batch(requests as f64),
            "mean_queue_delay_us": per_batch(n(&self.stats.delay_ns) as f64 / 1e3),
        })
    }

    /// Answers `ask`, which holds `place` in the version's queue, in a batch with whatever
    /// requests of its shape come while the batch waits; `run` makes a guest call once its turn
    /// has come (for the merged batch when this request leads one, for `ask` alone when it cannot
    /// be batched or its batch fell apart). `run` is called at most once.
    pub async fn submit<F, Fut>(
        &self,
        ask: Arc<TensorRequest>,
        place: Entry,
        run: F,
    ) -> Result<Vec<Tensor>, CallError>
    where
        F: FnOnce(Arc<TensorRequest>, Admitted) -> Fut,
        Fut: Future<Output = Result<Vec<Tensor>, CallError>>,
    {
        let Some((shape, rows)) = Shape::of(&ask, self.policy.max_rows) else {
            return run(ask, place.turn().await?).await;
        };
        let bytes = ask.inputs.iter().map(tensor_bytes).sum::<usize>();
        if let Some(joined) = self.join(&shape, &ask, rows, bytes) {
            // The place is held while the batch answers, and given back with the answer.
            return match joined.await {
                Ok(answer) => answer,
                // The batch's leader went away before its call: this request goes alone.
                Err(_) => run(ask, place.turn().await?).await,
            };
        }
        self.lead(shape, ask, rows, bytes, place, run).await
    }

    /// Joins an open batch of `shape` with room for `rows`, if there is one.
    fn join(
        &self,
        shape: &Shape,
        ask: &Arc<TensorRequest>,
        rows: usize,
        bytes: usize,
    ) -> Option<oneshot::Receiver<Result<Vec<Tensor>, CallError>>> {
        let mut open = self.open.lock().expect("batches lock");
        let gathering = open.get(shape)?.clone();
        let mut batch = gathering.lock().expect("batch lock");
        if batch.closed
            || batch.rows + rows > self.policy.max_rows
            || batch.bytes + bytes > self.policy.max_bytes
        {
            return None;
        }
        let (answer, answered) = oneshot::channel();
        batch.members.push(Member {
            ask: ask.clone(),
            rows,
            answer,
        });
        batch.rows += rows;
        batch.bytes += bytes;
        if batch.rows == self.policy.max_rows {
            // Full: no one else joins, and the leader goes now.
            batch.closed = true;
            batch.full.notify_one();
            drop(batch);
            open.remove(shape);
        }
        Some(answered)
    }

    /// Opens a batch led by `ask`, waits for company, and makes the batch's call.
    async fn lead<F, Fut>(
        &self,
        shape: Shape,
        ask: Arc<TensorRequest>,
        rows: usize,
        bytes: usize,
        place: Entry,
        run: F,
    ) -> Result<Vec<Tensor>, CallError>
    where
        F: FnOnce(Arc<TensorRequest>, Admitted) -> Fut,
        Fut: Future<Output = Result<Vec<Tensor>, CallError>>,
    {
        if rows >= self.policy.max_rows {
            // A full batch by itself.
            self.record(1, rows, Duration::ZERO);
            return run(ask, place.turn().await?).await;
        }
        let full = Arc::new(Notify::new());
        let gathering = Arc::new(Mutex::new(Gathering {
            rows,
            bytes,
            members: Vec::new(),
            closed: false,
            full: full.clone(),
        }));
        let opened = Instant::now();
        // Replaces a batch of this shape that is closed or has no room for these rows.
        self.open
            .lock()
            .expect("batches lock")
            .insert(shape.clone(), gathering.clone());
        // Should this request go away while it waits, its batch closes and its members go alone.
        let leading = Leading {
            batcher: self,
            shape: &shape,
            gathering: &gathering,
            done: false,
        };
        // The batch gathers until it is full or its delay is over, and in any case until its turn
        // comes: while every instance is busy, requests keep joining it (a batch waits for an
        // instance, never an instance for a batch past the delay).
        let gathered = async {
            tokio::select! {
                () = tokio::time::sleep(self.policy.max_delay) => {}
                () = full.notified() => {}
            }
        };
        let (admitted, ()) = tokio::join!(place.turn(), gathered);
        let waited = opened.elapsed();
        // Those that hung up while the batch gathered are left out of its call.
        let members: Vec<Member> = leading
            .finish()
            .into_iter()
            .filter(|m| !m.answer.is_closed())
            .collect();
        let admitted = match admitted {
            Ok(admitted) => admitted,
            Err(refused) => {
                // No turn (the queue's wait ran out): the batch's requests are refused alike.
                for member in members {
                    let _ = member.answer.send(Err(refused.clone()));
                }
                return Err(refused);
            }
        };
        self.record(
            members.len() + 1,
            rows + members.iter().map(|m| m.rows).sum::<usize>(),
            waited,
        );
        if members.is_empty() {
            return run(ask, admitted).await;
        }
        let requests: Vec<&TensorRequest> = std::iter::once(&*ask)
            .chain(members.iter().map(|m| &*m.ask))
            .collect();
        let merged = Arc::new(merge::merge(&requests));
        let rows: Vec<usize> = std::iter::once(rows)
            .chain(members.iter().map(|m| m.rows))
            .collect();
        drop(requests);
        let answers = run(merged, admitted)
            .await
            .and_then(|outputs| merge::split(&outputs, &rows));
        match answers {
            Ok(answers) => {
                let mut answers = answers.into_iter();
                let mine = answers.next().expect("an answer per request");
                for (member, answer) in members.into_iter().zip(answers) {
                    let _ = member.answer.send(Ok(answer));
                }
                Ok(mine)
            }
            Err(e) => {
                for member in members {
                    let _ = member.answer.send(Err(e.clone()));
                }
                Err(e)
            }
        }
    }

    /// Closes `gathering` to newcomers, takes it off the open batches (if it is still there), and
    /// answers who joined it.
    fn close(&self, shape: &Shape, gathering: &Arc<Mutex<Gathering>>) -> Vec<Member> {
        let mut open = self.open.lock().expect("batches lock");
        if open.get(shape).is_some_and(|g| Arc::ptr_eq(g, gathering)) {
            open.remove(shape);
        }
        let mut batch = gathering.lock().expect("batch lock");
        batch.closed = true;
        std::mem::take(&mut batch.members)
    }

    fn record(&self, requests: usize, rows: usize, waited: Duration) {
        self.stats.batches.fetch_add(1, Relaxed);
        self.stats.requests.fetch_add(requests as u64, Relaxed);
        self.stats.rows.fetch_add(rows as u64, Relaxed);
        self.stats
            .delay_ns
            .fetch_add(waited.as_nanos() as u64, Relaxed);
        self.sizes.record(requests as f64);
        self.delays.record(waited.as_secs_f64());
    }
}

/// A leader waiting for company; dropped before it [`Leading::finish`]es (its caller hung up), it
/// closes its batch, and the requests that joined it, their answers' senders dropped, go alone.
struct Leading<'a> {
    batcher: &'a Batcher,
    shape: &'a Shape,
    gathering: &'a Arc<Mutex<Gathering>>,
    done: bool,
}

impl Leading<'_> {
    /// Closes the batch and answers who joined it.
    fn finish(mut self) -> Vec<Member> {
        self.done = true;
        self.batcher.close(self.shape, self.gathering)
    }
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        if !self.done {
            drop(self.batcher.close(self.shape, self.gathering));
        }
    }
}

fn describe_metrics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        metrics::describe_histogram!(
            "ferry_batch_size",
            "Requests answered by one guest call of a version that batches (dynamic batching)"
        );
        metrics::describe_histogram!(
            "ferry_batch_delay_seconds",
            metrics::Unit::Seconds,
            "How long the first request of a batch waited for others before the batch's call"
        );
    });
}

#[cfg(test)]
mod tests;
