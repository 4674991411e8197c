//! A request's stages, timed when someone asks (a `ferry-timing` header, a W3C `traceparent`, or a
//! log at debug level): route, queue, instance, guest, graph, encode. The front door opens a
//! [`Stages`] for the request's task ([`scope`]); each layer adds its stage with [`record`]
//! wherever it runs on that task (the async worker or `block_in_place` alike), and a call handed to
//! another thread carries it there ([`current`], [`scope_sync`]). A request nobody asked about pays
//! one thread-local look per stage.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// A stage of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Routing to a version and taking a place in its queue.
    Route,
    /// Waiting in the version's queue for a turn.
    Queue,
    /// Taking an instance from the version's pool (bringing an evicted version back included).
    Instance,
    /// The guest call, host calls included.
    Guest,
    /// Host-side graph runs during the guest call.
    Graph,
    /// Encoding the answer.
    Encode,
}

const STAGES: [Stage; 6] = [
    Stage::Route,
    Stage::Queue,
    Stage::Instance,
    Stage::Guest,
    Stage::Graph,
    Stage::Encode,
];

impl Stage {
    /// Its name in `Server-Timing` and the log.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Route => "route",
            Stage::Queue => "queue",
            Stage::Instance => "instance",
            Stage::Guest => "guest",
            Stage::Graph => "graph",
            Stage::Encode => "encode",
        }
    }
}

/// One request's time per stage (a stage met twice, as a call that gave way and ran again, adds).
#[derive(Debug, Default)]
pub struct Stages {
    ns: [AtomicU64; STAGES.len()],
}

impl Stages {
    fn add(&self, stage: Stage, took: Duration) {
        let ns = took.as_nanos().min(u64::MAX as u128) as u64;
        self.ns[stage as usize].fetch_add(ns, Relaxed);
    }

    /// Each stage met, with its time.
    pub fn met(&self) -> impl Iterator<Item = (Stage, Duration)> + '_ {
        STAGES.iter().filter_map(|stage| {
            let ns = self.ns[*stage as usize].load(Relaxed);
            (ns > 0).then(|| (*stage, Duration::from_nanos(ns)))
        })
    }

    /// The stages as a `Server-Timing` value (milliseconds), with `total`.
    pub fn server_timing(&self, total: Duration) -> String {
        let mut out = String::new();
        for (stage, took) in self.met() {
            out.push_str(&format!(
                "{};dur={:.3}, ",
                stage.name(),
                took.as_secs_f64() * 1e3
            ));
        }
        out.push_str(&format!("total;dur={:.3}", total.as_secs_f64() * 1e3));
        out
    }
}

tokio::task_local! {
    static CURRENT: Arc<Stages>;
}

/// Runs `request` with `stages` open for its stages.
pub async fn scope<F: std::future::Future>(stages: Arc<Stages>, request: F) -> F::Output {
    CURRENT.scope(stages, request).await
}

/// Runs `f` (on another thread) with `stages` open, when there are any.
pub fn scope_sync<R>(stages: Option<Arc<Stages>>, f: impl FnOnce() -> R) -> R {
    match stages {
        Some(stages) => CURRENT.sync_scope(stages, f),
        None => f(),
    }
}

/// The stages open on this task, to carry to another thread.
pub fn current() -> Option<Arc<Stages>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// Adds `took` to `stage` of the request this task serves, if its stages are open.
pub fn record(stage: Stage, took: Duration) {
    let _ = CURRENT.try_with(|stages| stages.add(stage, took));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stages_are_recorded_only_inside_a_scope_and_carried_to_another_thread() {
        record(Stage::Guest, Duration::from_millis(5)); // nobody asked: nothing happens
        let stages = Arc::new(Stages::default());
        scope(stages.clone(), async {
            record(Stage::Queue, Duration::from_micros(250));
            record(Stage::Guest, Duration::from_millis(2));
            record(Stage::Guest, Duration::from_millis(1));
            let carried = current();
            std::thread::spawn(move || {
                scope_sync(carried, || record(Stage::Graph, Duration::from_millis(1)))
            })
            .join()
            .unwrap();
        })
        .await;
        let met: Vec<(&str, u128)> = stages
            .met()
            .map(|(s, d)| (s.name(), d.as_micros()))
            .collect();
        assert_eq!(met, vec![("queue", 250), ("guest", 3000), ("graph", 1000)]);
        assert_eq!(
            stages.server_timing(Duration::from_millis(4)),
            "queue;dur=0.250, guest;dur=3.000, graph;dur=1.000, total;dur=4.000"
        );
    }
}
