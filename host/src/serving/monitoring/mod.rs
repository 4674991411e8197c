//! Monitoring, off the request path: a sampled share of the requests to each version that ships a
//! training profile (and of a shadow's copies) is counted against that profile by one worker thread
//! (`drift`). A request pays one draw and, when sampled, a non-blocking hand-over of what it already
//! holds; when the worker falls behind, samples are dropped and counted, never waited for. The
//! samples waiting hold at most [`MAX_QUEUED_BYTES`] of requests and answers.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use tokio::sync::mpsc::{channel, error::TrySendError, Receiver, Sender};

use super::{Output, Payload};
use crate::config::MonitoringSection;
use crate::drift::VersionDrift;
use crate::runtime::tensor_bytes;

/// Bytes of requests and answers the waiting samples may hold together (a larger sample is dropped).
pub const MAX_QUEUED_BYTES: u64 = 64 << 20;

/// The sampler and its worker.
#[derive(Clone)]
pub struct Monitoring {
    inner: Arc<Inner>,
}

struct Inner {
    /// The share sampled, in hundredths of a percent (as `super::draw` draws).
    share: u32,
    queue: Sender<Sample>,
    queued_bytes: Arc<AtomicU64>,
    dropped: AtomicU64,
    threshold: f64,
}

struct Sample {
    drift: Arc<VersionDrift>,
    payload: Payload,
    output: Option<Output>,
    bytes: u64,
}

impl Monitoring {
    /// Starts the worker (none when nothing is sampled).
    pub fn start(section: &MonitoringSection) -> Monitoring {
        let share = (section.sample_percent.clamp(0.0, 100.0) * 100.0).round() as u32;
        let (queue, samples) = channel(section.queue.max(1));
        let queued_bytes = Arc::new(AtomicU64::new(0));
        if share > 0 {
            let queued_bytes = queued_bytes.clone();
            std::thread::Builder::new()
                .name("ferry-monitor".into())
                .spawn(move || work(samples, &queued_bytes))
                .expect("spawning the monitoring worker");
        }
        Monitoring {
            inner: Arc::new(Inner {
                share,
                queue,
                queued_bytes,
                dropped: AtomicU64::new(0),
                threshold: section.drift_threshold,
            }),
        }
    }

    /// True for a request drawn into the sample.
    pub fn takes(&self) -> bool {
        self.inner.share > 0 && super::draw() < self.inner.share
    }

    /// Hands a sampled request (and its answer, when it answered) to the worker, or drops it when
    /// the worker is behind.
    pub fn offer(&self, drift: &Arc<VersionDrift>, payload: &Payload, output: Option<&Output>) {
        let inner = &self.inner;
        let bytes = payload_bytes(payload) + output.map_or(0, output_bytes);
        let held = inner.queued_bytes.fetch_add(bytes, Relaxed) + bytes;
        if held > MAX_QUEUED_BYTES {
            inner.queued_bytes.fetch_sub(bytes, Relaxed);
            self.count_dropped();
            return;
        }
        let sample = Sample {
            drift: drift.clone(),
            payload: payload.clone(),
            output: output.cloned(),
            bytes,
        };
        if let Err(TrySendError::Full(sample) | TrySendError::Closed(sample)) =
            inner.queue.try_send(sample)
        {
            inner.queued_bytes.fetch_sub(sample.bytes, Relaxed);
            self.count_dropped();
        }
    }

    fn count_dropped(&self) {
        self.inner.dropped.fetch_add(1, Relaxed);
        metrics::counter!("ferry_monitoring_dropped_total").increment(1);
    }

    /// Samples dropped because the worker was behind.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Relaxed)
    }

    /// The share of requests sampled, in percent.
    pub fn sample_percent(&self) -> f64 {
        f64::from(self.inner.share) / 100.0
    }

    /// A population stability index above this reads as drifting.
    pub fn threshold(&self) -> f64 {
        self.inner.threshold
    }
}

/// Counts a sample against its version's profile (also called by the shadow workers for a
/// candidate's sampled copies, which are already off the request path). A panic in the counting
/// (a bug) costs that sample, never the thread that counts.
pub fn observe(drift: &VersionDrift, payload: &Payload, output: Option<&Output>) {
    let counted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        count(drift, payload, output)
    }));
    if let Err(panic) = counted {
        tracing::error!(
            message = %crate::panics::message(panic.as_ref()),
            "counting a drift sample panicked; the sample is left out"
        );
    }
}

fn count(drift: &VersionDrift, payload: &Payload, output: Option<&Output>) {
    match payload {
        Payload::Features(request) => {
            let answer = match output {
                Some(Output::Features(answer)) => Some(answer.as_str()),
                _ => None,
            };
            drift.observe_json(request, answer);
        }
        Payload::Tensors(request) => {
            let outputs = match output {
                Some(Output::Tensors(outputs)) => Some(outputs.as_slice()),
                _ => None,
            };
            drift.observe_tensors(&request.inputs, outputs);
        }
    }
}

fn work(mut samples: Receiver<Sample>, queued_bytes: &AtomicU64) {
    while let Some(sample) = samples.blocking_recv() {
        observe(&sample.drift, &sample.payload, sample.output.as_ref());
        queued_bytes.fetch_sub(sample.bytes, Relaxed);
    }
}

fn payload_bytes(payload: &Payload) -> u64 {
    match payload {
        Payload::Features(text) => text.len() as u64,
        Payload::Tensors(request) => request.inputs.iter().map(tensor_bytes).sum::<usize>() as u64,
    }
}

fn output_bytes(output: &Output) -> u64 {
    match output {
        Output::Features(text) => text.len() as u64,
        Output::Tensors(tensors) => tensors.iter().map(tensor_bytes).sum::<usize>() as u64,
    }
}
