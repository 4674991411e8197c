//! The protocol-neutral call: one function takes a request for a model (model, version or alias,
//! payload, caller) and returns the answer or a typed error. Front ends (the REST routes today, gRPC
//! later) only translate their wire format to a [`Request`] and the [`Answer`] back; everything a
//! request goes through lives here once:
//!
//! route (alias, weighted split by routing key) → a place in the version's admission queue (before
//! the front end decodes the payload: [`Serving::admit`]) → check the payload against what the
//! version declares → the version's circuit breaker ([`crate::runtime::Breaker`]) → its turn → call the guest ([`call`]), held
//! to its model's CPU share ([`shares`]) → metering and metrics → shadow copy and prediction log
//! ([`traffic`]), both off the request path.

mod call;
mod entry;
pub mod history;
mod inputs;
mod metering;
pub mod metrics;
pub mod monitoring;
pub mod shares;
pub mod traffic;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::registry::{ModelVersion, Registry, Route, RouteError, Routed};
use crate::runtime::{CallError, Entry, Tensor};

pub use crate::runtime::TensorRequest;

pub use crate::runtime::BreakerPolicy;
pub use entry::{EntryPoint, Infer, Predict};
pub use shares::CpuShares;
pub use traffic::log::{LogOptions, LogRecord, LogSink, PredictionLog};
pub use traffic::shadow::{ShadowOptions, Shadows};

/// A request for a model, as every front end hands it over: `ask` is what one entry point
/// ([`EntryPoint::Ask`]) is asked.
#[derive(Debug, Clone)]
pub struct Request<A> {
    /// The model.
    pub model: String,
    /// A version or alias name; `None`: the model's default (the `production` alias, else the
    /// newest ready version).
    pub version: Option<String>,
    /// What the model is asked.
    pub ask: A,
    /// Its id and routing key.
    pub keys: RequestKeys,
}

/// A request's keys, as the front end found them (not who the caller is: that is `teams::Caller`).
#[derive(Debug, Clone, Default)]
pub struct RequestKeys {
    /// The request's id (logged with its prediction).
    pub request_id: Option<String>,
    /// The key a weighted alias keeps sticky (header `ferry-routing-key` over HTTP).
    pub routing_key: Option<String>,
}

/// What a model is asked, whichever entry point (see [`entry`]); shared with a shadow copy and the
/// log, never copied for them.
#[derive(Debug, Clone)]
pub enum Payload {
    /// A feature-style request: a JSON object's text, passed to the guest unchanged.
    Features(Arc<String>),
    /// A tensor request (Open Inference Protocol).
    Tensors(Arc<TensorRequest>),
}

impl Payload {
    /// Inferences the request holds, as the statistics count them: a tensor request's rows (its
    /// first input's leading dimension; one for a scalar), one for a feature-style request.
    pub fn inferences(&self) -> u64 {
        match self {
            Payload::Features(_) => 1,
            // The declared rows, but never more than the elements sent: a zero-width tensor
            // declaring 2^62 rows counts as one.
            Payload::Tensors(ask) => ask.inputs.first().map_or(1, |t| {
                let rows = t.shape.first().copied().unwrap_or(1);
                rows.min(crate::runtime::elements(&t.data).max(1) as u64)
            }),
        }
    }

    /// The entry point, for metrics and the log.
    pub fn route(&self) -> &'static str {
        match self {
            Payload::Features(_) => "predict",
            Payload::Tensors(_) => "infer",
        }
    }
}

/// A model's answer, whichever entry point; shared like [`Payload`].
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// The guest's JSON text.
    Features(Arc<String>),
    /// Output tensors.
    Tensors(Arc<Vec<Tensor>>),
}

/// The answer (of the entry point called: [`EntryPoint::Reply`]) and the version that gave it.
pub struct Answer<R> {
    /// The version that answered (a weighted alias picks one).
    pub version: Arc<ModelVersion>,
    /// What it answered; shared with a shadow comparison and the log, never copied for them.
    pub output: Arc<R>,
}

/// Why a request got no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ServeError {
    /// Nowhere to go: unknown model or version, nothing ready.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// The request does not fit what the version declares (before the guest is called).
    #[error("{0}")]
    Invalid(String),
    /// The version takes the other entry point: tensors (`takes_tensors`) or feature-style JSON
    /// (before the guest is called; a front end names its own route for it).
    #[error(
        "model `{model}` takes {}",
        if *takes_tensors { "tensor requests, not JSON features" } else { "feature-style requests, not tensors" }
    )]
    WrongEntryPoint { model: String, takes_tensors: bool },
    /// The call into the guest failed.
    #[error(transparent)]
    Call(#[from] CallError),
}

/// What a front end reports a [`ServeError`] as (an HTTP status); the serving layer records the same
/// number in its metrics and prediction log. Given by the front end (`server::status::of`).
pub type Statuses = fn(&ServeError) -> u16;

/// How a host holds models to their CPU shares and trips failing versions.
#[derive(Debug, Clone)]
pub struct ServingPolicy {
    /// The share of the host's cores of a model whose limits name none.
    pub cpu_share: f64,
    /// When a version's breaker trips.
    pub breaker: BreakerPolicy,
    /// How the front end reports a failed request, for the metrics and the log.
    pub statuses: Statuses,
    /// Which requests are counted against their version's training profile.
    pub monitoring: crate::config::MonitoringSection,
    /// What the console's history of each model's traffic keeps.
    pub history: history::Shape,
}

impl ServingPolicy {
    /// The policy a configuration file sets, with the front end's `statuses`.
    pub fn from_config(config: &crate::config::HostConfig, statuses: Statuses) -> ServingPolicy {
        let b = &config.breaker;
        ServingPolicy {
            statuses,
            monitoring: config.monitoring.clone(),
            history: history::Shape {
                interval: std::time::Duration::from_millis(config.console.history_interval_ms),
                points: config.console.history_points,
            },
            cpu_share: config.host.cpu_share,
            breaker: BreakerPolicy {
                after: b.after,
                cool_down: std::time::Duration::from_millis(b.cool_down_ms.max(1)),
                max_cool_down: std::time::Duration::from_millis(
                    b.max_cool_down_ms.max(b.cool_down_ms.max(1)),
                ),
            },
        }
    }
}

/// The serving side of a host: the registry's routing table plus the traffic machinery.
pub struct Serving {
    registry: Arc<Registry>,
    shadows: Shadows,
    log: PredictionLog,
    shares: CpuShares,
    breaker: BreakerPolicy,
    statuses: Statuses,
    monitoring: monitoring::Monitoring,
    history: history::History,
}

impl Serving {
    /// Serving over `registry`, with its shadow workers and prediction log, under `policy`.
    pub fn new(
        registry: Arc<Registry>,
        shadows: Shadows,
        log: PredictionLog,
        policy: ServingPolicy,
    ) -> Arc<Serving> {
        Arc::new(Serving {
            history: history::History::start(&registry, policy.history),
            registry,
            shadows,
            log,
            shares: CpuShares::new(policy.cpu_share),
            breaker: policy.breaker,
            statuses: policy.statuses,
            monitoring: monitoring::Monitoring::start(&policy.monitoring),
        })
    }

    /// Each model's recent traffic, for the console.
    pub fn history(&self) -> &history::History {
        &self.history
    }

    /// The models' CPU accounts.
    pub fn shares(&self) -> &CpuShares {
        &self.shares
    }

    /// The registry.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The drift sampler.
    pub fn monitoring(&self) -> &monitoring::Monitoring {
        &self.monitoring
    }

    /// The shadow workers (their agreement statistics).
    pub fn shadows(&self) -> &Shadows {
        &self.shadows
    }

    /// The prediction log.
    pub fn log(&self) -> &PredictionLog {
        &self.log
    }

    /// Answers `request` at entry point `K`: the one path every front end's inference request
    /// takes.
    pub async fn call<K: EntryPoint>(
        &self,
        request: Request<K::Ask>,
    ) -> Result<Answer<K::Reply>, ServeError> {
        let ask = Arc::new(request.ask);
        let payload = K::payload(&ask);
        let ticket = self.admit(
            &request.model,
            request.version.as_deref(),
            &request.keys,
            payload.route(),
            Some(&payload),
        )?;
        ticket.call::<K>(self, ask, request.keys).await
    }

    /// The first half of [`Serving::call`], before the request's payload is decoded: routes it
    /// (alias, split) and takes its place in the version's admission queue, so that a request the
    /// version would refuse (its queue full) is refused before decoding costs anything. `payload`,
    /// when already known, lets a split route by one of its fields; without it a split routes by the
    /// caller's key alone. `route` names the entry point for metrics.
    pub fn admit(
        &self,
        model: &str,
        version: Option<&str>,
        keys: &RequestKeys,
        route: &'static str,
        payload: Option<&Payload>,
    ) -> Result<Ticket, ServeError> {
        let started = Instant::now();
        let at = SystemTime::now();
        let table = self.registry.table();
        let version = match table.route(model, version)? {
            Route::Version(v) => v,
            Route::Split(split) => {
                traffic::split::pick(model, &split.alias, &split.targets, || {
                    traffic::split::routing_key(keys, payload, &split)
                })
                .cloned()
                .ok_or_else(|| RouteError::NoReadyVersion(model.to_owned()))?
            }
        };
        // The route was found, so the model is in this table.
        let entry = &table.models[model];
        let policy = entry.traffic.clone();
        let shadow = policy
            .shadow
            .as_ref()
            .filter(|s| s.version != version.manifest.version && s.percent.takes(draw()))
            .and_then(|s| entry.versions.get(&s.version))
            .and_then(Routed::of);
        let serves_live = shadow
            .as_ref()
            .is_some_and(|c| entry.targets(&c.manifest.version));
        drop(table);
        // A tripped version fails fast before its queue: its requests cost no place, no decoding.
        match version
            .ready
            .breaker
            .check()
            .and_then(|()| version.ready.admission.enter())
        {
            Ok(place) => {
                crate::timing::record(crate::timing::Stage::Route, started.elapsed());
                Ok(Ticket {
                    started,
                    at,
                    version,
                    shadow,
                    serves_live,
                    policy,
                    place,
                })
            }
            Err(refused) => {
                // Refused before its guest ran: counted, neither compared nor logged.
                version.series.call_error(&refused);
                let e = ServeError::Call(refused);
                let status = (self.statuses)(&e);
                version.series.request(route, status, started.elapsed());
                // The console's history counts it too: an outage shows as errors, not silence.
                version.usage.live.record(status, started.elapsed());
                Err(e)
            }
        }
    }
}

/// A request routed to a version and holding its place there, waiting for its payload
/// ([`Serving::admit`]); dropped unused, it gives the place back.
pub struct Ticket {
    started: Instant,
    at: SystemTime,
    version: Routed,
    shadow: Option<Routed>,
    serves_live: bool,
    policy: Arc<crate::registry::TrafficPolicy>,
    place: Entry,
}

impl Ticket {
    /// The version the request goes to.
    pub fn version(&self) -> &Routed {
        &self.version
    }

    /// The second half of [`Serving::call`]: checks `ask` against what the version declares, runs
    /// it at entry point `K` when its turn comes, then metrics, the shadow copy and the prediction
    /// log.
    pub async fn call<K: EntryPoint>(
        self,
        serving: &Serving,
        ask: Arc<K::Ask>,
        keys: RequestKeys,
    ) -> Result<Answer<K::Reply>, ServeError> {
        let version = self.version;
        let payload = K::payload(&ask);
        let route = payload.route();
        let reply = match inputs::check(&version, &payload) {
            Ok(()) => {
                serving
                    .answer::<K>(&version, &ask, &payload, self.place)
                    .await
            }
            Err(refused) => Err(refused),
        };
        let elapsed = self.started.elapsed();
        let reply = reply.map(Arc::new);
        // The answer with its entry point erased, for the shadow comparison and the log.
        let outcome = reply.as_ref().map(K::output).map_err(Clone::clone);
        let status = outcome.as_ref().map_or_else(serving.statuses, |_| 200);
        version.series.request(route, status, elapsed);
        version.usage.live.record(status, elapsed);
        if let Err(ServeError::Call(e)) = &outcome {
            version.series.call_error(e);
        }
        // A request refused before its guest ran (a bad input, a full queue) has nothing to compare
        // and is no prediction.
        let reached_guest = !matches!(
            outcome,
            Err(ServeError::Invalid(_)
                | ServeError::WrongEntryPoint { .. }
                | ServeError::Call(CallError::Overloaded(_) | CallError::Tripped { .. }))
        );
        if reached_guest {
            version
                .usage
                .served(outcome.is_ok(), elapsed, payload.inferences());
            if let Some(drift) = version.monitored.drift() {
                if serving.monitoring.takes() {
                    serving
                        .monitoring
                        .offer(drift, &payload, outcome.as_ref().ok());
                }
            }
        }
        if let (Some(candidate), true) = (self.shadow, reached_guest) {
            // A candidate's sampled copies are counted against its own profile by the shadow
            // worker that runs them, so its prediction shift shows before it is promoted.
            let drift = candidate
                .monitored
                .drift()
                .filter(|_| serving.monitoring.takes())
                .cloned();
            serving.shadows.offer(
                drift,
                candidate,
                self.serves_live,
                version.version.clone(),
                payload.clone(),
                outcome.clone(),
                serving.statuses,
            );
        }
        // Requests refused before the guest ran are not predictions: metrics count them, the log not.
        if reached_guest && self.policy.log.percent.takes(draw()) {
            serving.log.offer(traffic::log::Entry {
                at: self.at,
                request_id: keys.request_id,
                version: version.version.clone(),
                payload,
                outcome: outcome.clone(),
                status,
                latency: elapsed,
            });
        }
        reply.map(|output| Answer {
            version: version.version,
            output,
        })
    }
}

impl Serving {
    /// The answer to `ask` (`payload`, erased): in a batch when the version batches tensor
    /// requests (`place` then waits with the batch, and the batch's leader's takes the turn for
    /// the batch's call, through the breaker), else by a call of its own.
    async fn answer<K: EntryPoint>(
        &self,
        version: &Routed,
        ask: &Arc<K::Ask>,
        payload: &Payload,
        place: Entry,
    ) -> Result<K::Reply, ServeError> {
        if let (Some(batcher), Payload::Tensors(tensors)) = (&version.ready.batcher, payload) {
            let rows = batcher
                .submit(tensors.clone(), place, |merged, admitted| async move {
                    let pass = version.ready.breaker.admit()?;
                    let began = Instant::now();
                    let result =
                        call::run_admitted::<Infer>(&self.shares, version, &merged, admitted).await;
                    if result.is_ok() {
                        let rows = Payload::Tensors(merged).inferences();
                        batcher.executed(rows, began.elapsed());
                    }
                    pass.settle(&self.breaker, result.as_ref().err());
                    result
                })
                .await?;
            return Ok(K::reply(Output::Tensors(Arc::new(rows)))
                .expect("a tensor request is answered with tensors"));
        }
        Ok(self.call_guest::<K>(version, ask, place).await?)
    }

    /// The guest call, through the version's circuit breaker, once `place`'s turn comes.
    async fn call_guest<K: EntryPoint>(
        &self,
        version: &Routed,
        ask: &Arc<K::Ask>,
        place: Entry,
    ) -> Result<K::Reply, CallError> {
        let pass = version.ready.breaker.admit()?;
        let result = call::run::<K>(&self.shares, version, ask, place).await;
        pass.settle(&self.breaker, result.as_ref().err());
        result
    }
}

/// A draw for sampling shares, in hundredths of a percent.
fn draw() -> u32 {
    fastrand::u32(..10_000)
}
