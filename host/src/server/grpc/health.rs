//! `grpc.health.v1.Health`, the health check load balancers and Kubernetes' gRPC probes ask: the
//! host (service `""`) and the inference service serve once the store is loaded, as
//! `/v2/health/ready` says over HTTP.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::Health;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// The services a health check may name.
const SERVICES: [&str; 2] = ["", "inference.GRPCInferenceService"];

/// How often a `Watch` looks again (readiness changes once, at start).
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// The health service over the host's readiness.
pub(super) struct Checks {
    pub(super) loaded: Arc<AtomicBool>,
}

impl Checks {
    fn status(&self, service: &str) -> ServingStatus {
        if !SERVICES.contains(&service) {
            ServingStatus::ServiceUnknown
        } else if self.loaded.load(Ordering::Acquire) {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        }
    }
}

fn answer(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

#[tonic::async_trait]
impl Health for Checks {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        match self.status(&request.get_ref().service) {
            ServingStatus::ServiceUnknown => Err(Status::not_found(format!(
                "no service `{}` here (ask for \"\" or inference.GRPCInferenceService)",
                request.get_ref().service
            ))),
            status => Ok(Response::new(answer(status))),
        }
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    /// The status now, then each change, for as long as the caller listens.
    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let service = request.into_inner().service;
        let loaded = self.loaded.clone();
        let changes = futures_util::stream::unfold(None, move |last: Option<ServingStatus>| {
            let checks = Checks {
                loaded: loaded.clone(),
            };
            let service = service.clone();
            async move {
                let mut now = checks.status(&service);
                while Some(now) == last {
                    tokio::time::sleep(WATCH_EVERY).await;
                    now = checks.status(&service);
                }
                Some((Ok(answer(now)), Some(now)))
            }
        });
        Ok(Response::new(Box::pin(changes)))
    }
}
