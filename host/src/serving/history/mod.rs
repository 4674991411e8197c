//! A small in-process history of each model's traffic, for the operator console's charts: every
//! `interval` a thread reads each version's callers' counters
//! ([`crate::registry::latency::LiveTraffic`]) and keeps, per model, one [`Point`] — requests,
//! errors, p50 and p99 of that interval, and its measured length — for the last `points` intervals
//! (an hour by default). A request pays three relaxed atomic adds for it; the thread stops when the
//! registry goes.
//!
//! Memory is bounded: a point is 40 bytes, `points` per model (about 14 KB at the defaults), and the
//! thread's own copy of the counters it last read, per version that has had traffic (about 900
//! bytes); models and versions leave the history when they leave the table. Readers take the lock
//! only to copy points out; the thread computes without it and takes it once per interval to add
//! them.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::registry::latency::{quantile_ms, BUCKETS};
use crate::registry::{ModelVersion, Registry};

/// One interval of a model's traffic (every version together).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// When the interval ended (Unix seconds).
    pub unix_s: u64,
    /// Its length as measured, in seconds (the thread may be late on a busy host).
    pub seconds: f32,
    /// Callers' requests that reached a version in it, answered or refused.
    pub requests: u32,
    /// Of which answered with a 5xx.
    pub errors: u32,
    /// Their median time, in milliseconds (absent without requests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<f32>,
    /// Their 99th percentile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f32>,
}

/// The history's shape, as its readers need it to scale rates.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Between two points.
    pub interval: Duration,
    /// Points kept per model.
    pub points: usize,
}

/// Every model's recent traffic; cheap to clone.
#[derive(Clone)]
pub struct History {
    shape: Shape,
    points: Arc<Mutex<HashMap<String, VecDeque<Point>>>>,
}

/// What the thread last read of each model's versions (its own: readers never wait on it).
#[derive(Default)]
struct Reader {
    models: HashMap<String, HashMap<String, Seen>>,
    last: Option<Instant>,
}

struct Seen {
    /// Which version it read: a version loaded again under the same name counts from zero. A weak
    /// reference keeps its address from being reused while it is held.
    version: Weak<ModelVersion>,
    requests: u64,
    errors: u64,
    latencies: Box<[u64; BUCKETS]>,
}

static ZERO: [u64; BUCKETS] = [0; BUCKETS];

impl History {
    /// Starts reading `registry` every `shape.interval` on a thread of its own.
    pub fn start(registry: &Arc<Registry>, shape: Shape) -> History {
        let history = History {
            shape: Shape {
                interval: shape.interval.max(Duration::from_millis(100)),
                points: shape.points.clamp(1, 100_000),
            },
            points: Arc::default(),
        };
        let registry = Arc::downgrade(registry);
        let keeper = history.clone();
        std::thread::Builder::new()
            .name("ferry-history".into())
            .spawn(move || {
                let mut reader = Reader {
                    last: Some(Instant::now()),
                    ..Reader::default()
                };
                loop {
                    std::thread::sleep(keeper.shape.interval);
                    let Some(registry) = registry.upgrade() else {
                        return;
                    };
                    let points = reader.read(&registry);
                    drop(registry);
                    keeper.add(points);
                }
            })
            .expect("spawning the history reader");
        history
    }

    /// Between two points, and how many are kept.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// A model's points, oldest first (empty for a model it has not seen).
    pub fn model(&self, model: &str) -> Vec<Point> {
        lock(&self.points)
            .get(model)
            .map(|p| p.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Every model's newest point.
    pub fn latest(&self) -> BTreeMap<String, Point> {
        lock(&self.points)
            .iter()
            .filter_map(|(m, p)| Some((m.clone(), *p.back()?)))
            .collect()
    }

    /// Adds a point per model read; a model not read (gone from the table) leaves.
    fn add(&self, points: HashMap<String, Point>) {
        let mut kept = lock(&self.points);
        kept.retain(|m, _| points.contains_key(m));
        for (model, point) in points {
            let line = kept.entry(model).or_default();
            if line.len() == self.shape.points {
                line.pop_front();
            }
            line.push_back(point);
        }
    }
}

impl Reader {
    /// Reads every version's counters once: a point per model, of the traffic since the last read.
    fn read(&mut self, registry: &Registry) -> HashMap<String, Point> {
        let now = Instant::now();
        let seconds = self
            .last
            .replace(now)
            .map_or(0.0, |last| now.duration_since(last).as_secs_f32());
        let unix_s = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let table = registry.table();
        self.models.retain(|m, _| table.models.contains_key(m));
        let mut points = HashMap::with_capacity(table.models.len());
        for (model, entry) in &table.models {
            let seen = self.models.entry(model.clone()).or_default();
            seen.retain(|v, _| entry.versions.contains_key(v));
            let mut requests = 0u64;
            let mut errors = 0u64;
            let mut latencies = [0u64; BUCKETS];
            for (name, version) in &entry.versions {
                let live = &version.usage.live;
                let now_requests = live.requests.load(Ordering::Relaxed);
                if now_requests == 0 {
                    // Nothing yet: nothing to remember (a version never called costs no copy).
                    seen.remove(name);
                    continue;
                }
                let now = Seen {
                    version: Arc::downgrade(version),
                    requests: now_requests,
                    errors: live.errors.load(Ordering::Relaxed),
                    latencies: Box::new(live.latencies.snapshot()),
                };
                let (before_requests, before_errors, before_latencies) = match seen.get(name) {
                    Some(s) if Weak::ptr_eq(&s.version, &now.version) => {
                        (s.requests, s.errors, &*s.latencies)
                    }
                    _ => (0, 0, &ZERO),
                };
                requests += now.requests.saturating_sub(before_requests);
                errors += now.errors.saturating_sub(before_errors);
                for (sum, (n, b)) in latencies
                    .iter_mut()
                    .zip(now.latencies.iter().zip(before_latencies.iter()))
                {
                    *sum += n.saturating_sub(*b);
                }
                seen.insert(name.clone(), now);
            }
            // Counters are read one by one while requests land: never more errors than requests.
            let errors = errors.min(requests);
            points.insert(
                model.clone(),
                Point {
                    unix_s,
                    seconds,
                    requests: requests.min(u32::MAX as u64) as u32,
                    errors: errors.min(u32::MAX as u64) as u32,
                    p50_ms: quantile_ms(&latencies, 0.5).map(|v| v as f32),
                    p99_ms: quantile_ms(&latencies, 0.99).map(|v| v as f32),
                },
            );
        }
        points
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding it leaves at worst one interval half-added: keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}
