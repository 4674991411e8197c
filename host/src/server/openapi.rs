//! The published contract: an OpenAPI 3.1 document of every route, generated from the handlers'
//! `#[utoipa::path]` annotations and served at `GET /openapi.json`. Each handler states its own
//! statuses; the statuses its layers add (credentials, body limits, the request time limit) are
//! added here by the handler's tag, which names the group of routes it is mounted in
//! ([`super::router`]). `scripts/schemathesis.sh` fuzzes a real server against it.
//!
//! Schemas are honest but loose where the body is the model's own JSON (feature-style predict) or
//! a report whose fields grow (model descriptions, statistics): the fields a client relies on are
//! listed, more may come.

#![allow(dead_code)] // The schema types below describe bodies; they are never built.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::http::{header, HeaderValue};
use axum::response::IntoResponse;
use serde_json::{json, Value};
use utoipa::{IntoParams, IntoResponses, OpenApi, ToSchema};

use super::{audit, management, oip, predict};

/// The document, built once.
pub fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serialises");
        add_layer_statuses(&mut doc);
        // The OIP REST specification writes the server-metadata path with a trailing slash too.
        let mut slash = doc["paths"]["/v2"].clone();
        slash["get"]["operationId"] = json!("server_metadata_slash");
        doc["paths"]["/v2/"] = slash;
        // And the console answers with a trailing slash as browsers add it.
        let mut console = doc["paths"]["/ui"].clone();
        console["get"]["operationId"] = json!("console_slash");
        doc["paths"]["/ui/"] = console;
        doc
    })
}

/// `GET /openapi.json`: this document.
#[utoipa::path(get, path = "/openapi.json", tag = "open",
    responses((status = 200, description = "This OpenAPI 3.1 document", body = Object, content_type = "application/json")))]
pub async fn serve_document() -> impl IntoResponse {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    let bytes = BYTES.get_or_init(|| serde_json::to_vec(document()).expect("serialises"));
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes.as_slice(),
    )
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ferry",
        description = "Serves machine-learning models compiled to sandboxed WebAssembly components: the Open Inference Protocol v2 (REST), feature-style JSON predictions, and management. Errors answer `{\"error\": \"...\"}`; a 503 carries Retry-After."
    ),
    paths(
        serve_document,
        oip::server_metadata,
        oip::live,
        oip::ready,
        oip::metadata,
        oip::model_ready,
        oip::infer,
        oip::metadata_version,
        oip::model_version_ready,
        oip::infer_version,
        predict::predict,
        predict::predict_version,
        super::render_metrics,
        oip::all_stats,
        oip::model_stats,
        oip::model_config,
        oip::model_version_config,
        oip::model_version_stats,
        super::monitoring::monitoring,
        predict::list,
        predict::describe,
        management::delete_version,
        management::put_version,
        management::set_alias,
        management::traffic,
        management::set_traffic,
        management::rollback,
        management::fleet,
        audit::list,
        super::console::history::history,
        super::console::history::model_history,
        super::console::caller::caller,
        super::console::assets::page,
        super::console::assets::asset,
        management::repository_index,
        management::repository_load,
        management::repository_unload,
    ),
    components(schemas(ErrorBody)),
    tags(
        (name = "open", description = "Open to anyone: server metadata, health, this document."),
        (name = "inference", description = "Inference; with `--inference-token`, a bearer token (401 without it)."),
        (name = "reads", description = "`/metrics`, statistics and configs, under the read rules: with credentials configured, a bearer token (401), and a credential that may read it (403)."),
        (name = "management", description = "Management; with credentials configured, a bearer token (401) whose credential covers the model (403)."),
    ),
)]
struct ApiDoc;

/// The statuses a route's layers answer with, by the tag of its group (see [`super::router`]).
fn layer_statuses(tag: &str) -> Vec<(u16, &'static str)> {
    let token = (
        401,
        "No bearer token, or one nobody has (when credentials are configured).",
    );
    let read_scope = (
        403,
        "A credential that may not read this (a scrape-only one).",
    );
    let too_large = (
        413,
        "The request's declared Content-Length is over the route's body limit.",
    );
    let too_long = (
        503,
        "The request took longer than the host's request time limit.",
    );
    match tag {
        "inference" => vec![token, too_large, too_long],
        "reads" => vec![token, read_scope],
        "management" => vec![token, read_scope, too_large, too_long],
        _ => vec![],
    }
}

/// Adds each group's layer statuses to its operations, and a required `Retry-After` header to
/// every 503.
fn add_layer_statuses(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for operation in item.values_mut() {
            let tag = operation["tags"][0].as_str().unwrap_or_default().to_owned();
            let responses = operation["responses"]
                .as_object_mut()
                .expect("every operation has responses");
            for (status, description) in layer_statuses(&tag) {
                responses
                    .entry(status.to_string())
                    .or_insert_with(|| error_response(description));
            }
            if let Some(unavailable) = responses.get_mut("503") {
                unavailable["headers"]["Retry-After"] = json!({
                    "description": "Seconds after which trying again may succeed.",
                    "required": true,
                    "schema": { "type": "string", "pattern": "^[0-9]+$" },
                });
            }
        }
    }
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } },
    })
}

/// Every failure's body.
#[derive(ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    error: String,
}

// ---- Parameters ----

/// A model.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ModelPath {
    /// The model's name.
    #[param(
        pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$",
        example = "digits-onnx"
    )]
    model: String,
}

/// A model and one of its versions or aliases.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct VersionPath {
    /// The model's name.
    #[param(
        pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$",
        example = "digits-onnx"
    )]
    model: String,
    /// A version, or an alias of the model (`production`, ...).
    #[param(pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$", example = "1")]
    version: String,
}

/// A feature-style model.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct FeatureModelPath {
    /// The model's name.
    #[param(
        pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$",
        example = "fraud-features"
    )]
    model: String,
}

/// A feature-style model and one of its versions or aliases.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct FeatureVersionPath {
    /// The model's name.
    #[param(
        pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$",
        example = "fraud-features"
    )]
    model: String,
    /// A version, or an alias of the model (`production`, ...).
    #[param(pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$", example = "1")]
    version: String,
}

/// A model to manage.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ManagedModelPath {
    /// The model's name.
    #[param(pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$", example = "scratch")]
    model: String,
}

/// A model to manage and one of its versions.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ManagedVersionPath {
    /// The model's name.
    #[param(pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$", example = "scratch")]
    model: String,
    /// The version's name.
    #[param(pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$", example = "1")]
    version: String,
}

/// A model's alias.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct AliasPath {
    /// The model's name.
    #[param(pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$", example = "scratch")]
    model: String,
    /// The alias (`production`, `canary`, ...).
    #[param(
        pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$",
        example = "production"
    )]
    alias: String,
}

/// Headers an inference request may carry.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct InferHeaders {
    /// The binary tensor data extension: the length of the JSON part of the body; the inputs'
    /// binary data follows it.
    #[param(rename = "Inference-Header-Content-Length")]
    inference_header_content_length: Option<u64>,
}

/// Headers a feature-style request may carry.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct PredictHeaders {
    /// The key that keeps a caller on one side of a weighted alias.
    #[param(rename = "ferry-routing-key")]
    ferry_routing_key: Option<String>,
}

/// Headers of an upload.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct UploadHeaders {
    /// The sha256 (hex) the component must have (`application/wasm` bodies).
    #[param(rename = "ferry-sha256")]
    ferry_sha256: Option<String>,
}

/// A page of the audit log.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only this model's records.
    model: Option<String>,
    /// Records per page.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The `next` of the previous page.
    after: Option<String>,
}

// ---- Bodies ----

/// An Open Inference Protocol datatype.
#[derive(ToSchema)]
#[allow(clippy::upper_case_acronyms)]
pub enum Datatype {
    BOOL,
    UINT8,
    UINT16,
    UINT32,
    UINT64,
    INT8,
    INT16,
    INT32,
    INT64,
    FP32,
    FP64,
    BYTES,
}

/// `GET /v2/health/live`.
#[derive(ToSchema)]
pub struct Live {
    live: bool,
}

/// `GET /v2/health/ready`.
#[derive(ToSchema)]
pub struct Ready {
    ready: bool,
}

/// `GET /v2/models/{model}/ready`.
#[derive(ToSchema)]
pub struct ModelReady {
    name: String,
    ready: bool,
}

/// `GET /v2`.
#[derive(ToSchema)]
pub struct ServerMetadata {
    name: String,
    version: String,
    extensions: Vec<String>,
}

/// An input or output a model declares (`-1`: any size).
#[derive(ToSchema)]
pub struct TensorMetadata {
    name: String,
    datatype: Datatype,
    shape: Vec<i64>,
}

/// `GET /v2/models/{model}`.
#[derive(ToSchema)]
pub struct ModelMetadata {
    name: String,
    /// The model's ready versions.
    versions: Vec<String>,
    platform: String,
    inputs: Vec<TensorMetadata>,
    outputs: Vec<TensorMetadata>,
}

/// One input of an inference request: its `data` (flat or nested, row-major), or
/// `parameters.binary_data_size` bytes of the binary part of the body.
#[derive(ToSchema)]
pub struct InferInput {
    name: String,
    shape: Vec<i64>,
    datatype: Datatype,
    parameters: Option<BTreeMap<String, Value>>,
    data: Option<Value>,
}

/// An output asked for (`parameters.binary_data`: in the binary part of the answer).
#[derive(ToSchema)]
pub struct RequestedOutput {
    name: String,
    parameters: Option<BTreeMap<String, Value>>,
}

/// An Open Inference Protocol request (`parameters.binary_data_output`: every output in binary).
#[derive(ToSchema)]
pub struct InferRequest {
    id: Option<String>,
    parameters: Option<BTreeMap<String, Value>>,
    inputs: Vec<InferInput>,
    outputs: Option<Vec<RequestedOutput>>,
}

/// One output of an answer: `data`, or `parameters.binary_data_size` bytes of the binary part.
#[derive(ToSchema)]
pub struct InferOutput {
    name: String,
    datatype: Datatype,
    shape: Vec<i64>,
    data: Option<Value>,
    parameters: Option<BTreeMap<String, Value>>,
}

/// An Open Inference Protocol answer (`id` echoes the request's).
#[derive(ToSchema)]
pub struct InferResponse {
    model_name: String,
    model_version: String,
    id: Option<String>,
    outputs: Vec<InferOutput>,
}

/// A feature-style request: any JSON object (e.g. `{"features": {...}}`), passed to the model.
#[derive(ToSchema)]
pub struct Features(BTreeMap<String, Value>);

/// A version as `GET /v1/models` describes it (more fields: limits, memory, usage, self-tests).
#[derive(ToSchema)]
pub struct VersionDescription {
    version: String,
    /// `loading`, `ready`, `failed`, `unloaded`, ...
    state: String,
    component_sha256: String,
    weights_sha256: Option<String>,
    /// Why it failed or was unloaded.
    reason: Option<String>,
}

/// A model as `GET /v1/models` describes it.
#[derive(ToSchema)]
pub struct ModelDescription {
    name: String,
    default_version: Option<String>,
    /// Alias → a version, or a weighted split.
    aliases: BTreeMap<String, Value>,
    traffic: Value,
    versions: Vec<VersionDescription>,
}

/// `GET /v1/models`.
#[derive(ToSchema)]
pub struct ModelList {
    models: Vec<ModelDescription>,
}

/// The answer to an upload.
#[derive(ToSchema)]
pub struct CreatedVersion {
    model: String,
    version: String,
    component_sha256: String,
    weights_sha256: Option<String>,
    graphs: BTreeMap<String, String>,
    state: String,
}

/// A `multipart/form-data` version: `component` or `component_sha256`, and optional parts; named
/// graphs come as further parts `graph:NAME`.
#[derive(ToSchema)]
pub struct VersionForm {
    #[schema(format = Binary, value_type = Option<String>)]
    component: Option<Vec<u8>>,
    /// Reuse a stored component: no upload, no compile.
    component_sha256: Option<String>,
    #[schema(format = Binary, value_type = Option<String>)]
    weights: Option<Vec<u8>>,
    /// JSON given to the model at initialisation.
    config: Option<String>,
    /// JSON self-test cases.
    tests: Option<String>,
    /// JSON: some of a model's limits, which may lower the operator's and never raise them.
    limits: Option<String>,
    /// The training profile (JSON).
    profile: Option<String>,
}

/// Where an alias points: one version, or a weighted split (sticky per `ferry-routing-key`).
#[derive(ToSchema)]
#[serde(untagged)]
pub enum AliasBody {
    Version {
        version: String,
    },
    #[serde(deny_unknown_fields)]
    Split {
        split: BTreeMap<String, u32>,
        routing_key_field: Option<String>,
    },
}

/// Where an alias points now.
#[derive(ToSchema)]
pub struct AliasAnswer {
    model: String,
    alias: String,
    version: Option<String>,
    split: Option<BTreeMap<String, u32>>,
    routing_key_field: Option<String>,
}

/// A share of a model's requests.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Share {
    #[schema(minimum = 0, maximum = 100)]
    percent: f64,
}

/// A shadow: copies of a share of requests run on a candidate version off the request path.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShadowPolicy {
    version: String,
    #[schema(minimum = 0, maximum = 100)]
    percent: f64,
}

/// A model's traffic policy beyond its aliases.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrafficPolicy {
    shadow: Option<ShadowPolicy>,
    log: Option<Share>,
}

/// `GET /v1/fleet`.
#[derive(ToSchema)]
pub struct Fleet {
    store: String,
    /// Each host's heartbeat, and per version ready / failed with the reason.
    hosts: Vec<BTreeMap<String, Value>>,
}

/// `GET /v1/history`: each model's latest interval.
#[derive(ToSchema)]
pub struct HistoryLatest {
    interval_seconds: f64,
    /// By model: `unix_s`, `requests`, `errors`, `requests_per_second`, `error_ratio`, `p50_ms`,
    /// `p99_ms`.
    models: BTreeMap<String, BTreeMap<String, Value>>,
}

/// `GET /v1/models/{model}/history`: the model's intervals, oldest first.
#[derive(ToSchema)]
pub struct ModelHistory {
    model: String,
    interval_seconds: f64,
    /// Intervals kept.
    kept: u64,
    points: Vec<BTreeMap<String, Value>>,
}

/// `GET /v1/caller`: who the token is and what it may change.
#[derive(ToSchema)]
pub struct CallerInfo {
    actor: String,
    roles: Vec<String>,
    /// The model-name patterns its credential acts on.
    models: Vec<String>,
    /// Per listed model, the actions (`set_alias`, `rollback`, ...) it may take.
    may: BTreeMap<String, Vec<String>>,
}

/// A page of the audit log, newest first (`next`: pass as `after` for the older page).
#[derive(ToSchema)]
pub struct AuditPage {
    records: Vec<BTreeMap<String, Value>>,
    next: Option<String>,
}

/// One entry of `POST /v2/repository/index`.
#[derive(ToSchema)]
pub struct RepositoryEntry {
    name: String,
    version: String,
    /// `READY`, `LOADING`, `FAILED`, ...
    state: String,
    reason: Option<String>,
}

/// Triton's statistics extension.
#[derive(ToSchema)]
pub struct Statistics {
    model_stats: Vec<BTreeMap<String, Value>>,
}

/// A model's versions' live traffic against their training profiles.
#[derive(ToSchema)]
pub struct Monitoring {
    model: String,
    sample_percent: f64,
    drift_threshold: f64,
    dropped: u64,
    versions: Vec<BTreeMap<String, Value>>,
}

/// Triton's model configuration extension.
#[derive(ToSchema)]
pub struct ModelConfig {
    name: String,
    platform: String,
    input: Vec<BTreeMap<String, Value>>,
    output: Vec<BTreeMap<String, Value>>,
}

// ---- Error responses a handler names ----

/// 400: the request is malformed.
#[derive(IntoResponses)]
#[response(status = 400)]
pub struct BadRequest(ErrorBody);

/// 403: the credential does not cover this model or action (the attempt is audited).
#[derive(IntoResponses)]
#[response(status = 403)]
pub struct Forbidden(ErrorBody);

/// 404: no such model, version or alias.
#[derive(IntoResponses)]
#[response(status = 404)]
pub struct NotFound(ErrorBody);

/// 408: the body came slower than the host's minimum rate.
#[derive(IntoResponses)]
#[response(status = 408)]
pub struct SlowBody(ErrorBody);

/// 409: a conflict (the version exists, the alias moved meanwhile, the version is aliased, a
/// version and an alias would share a name).
#[derive(IntoResponses)]
#[response(status = 409)]
pub struct Conflict(ErrorBody);

/// 413: the body, or the input it decodes to, is larger than the limit.
#[derive(IntoResponses)]
#[response(status = 413)]
pub struct TooLarge(ErrorBody);

/// 422: the model rejected the input.
#[derive(IntoResponses)]
#[response(status = 422)]
pub struct Rejected(ErrorBody);

/// 500: the model failed (trapped, panicked, ran out of memory), or the store did.
#[derive(IntoResponses)]
#[response(status = 500)]
pub struct Failed(ErrorBody);

/// 503: not ready, overloaded, over its CPU share, its breaker open, the host's request byte
/// budget spent, or the store unreachable; Retry-After says when to try again.
#[derive(IntoResponses)]
#[response(status = 503)]
pub struct Unavailable(ErrorBody);

/// 504: the model ran past its deadline or fuel.
#[derive(IntoResponses)]
#[response(status = 504)]
pub struct Deadline(ErrorBody);

/// 507: no room to store the upload.
#[derive(IntoResponses)]
#[response(status = 507)]
pub struct NoRoom(ErrorBody);

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode};
    use tower::ServiceExt;

    /// The router's route patterns, read from its `Debug` form (axum lists them there; it has no
    /// other way to enumerate them).
    fn route_patterns(router: &axum::Router) -> BTreeSet<String> {
        let text = format!("{router:?}");
        // The fallback router's own patterns (`/`, `/{*...}`) are not routes.
        let text = text.split("fallback_router").next().unwrap_or_default();
        let mut paths = BTreeSet::new();
        let mut rest = text;
        while let Some(at) = rest.find("): \"/") {
            let from = at + 4;
            let len = rest[from..].find('"').expect("a closing quote");
            let path = &rest[from..from + len];
            if !path.contains("__private__") {
                paths.insert(path.to_owned());
            }
            rest = &rest[from + len..];
        }
        paths
    }

    async fn test_router(dir: &std::path::Path) -> axum::Router {
        let storage = crate::storage::open(dir.join("store").to_str().unwrap()).unwrap();
        let blobs = crate::storage::BlobCache::open(storage, &dir.join("cache"), 1 << 30).unwrap();
        let config = crate::config::HostConfig::default();
        let policy = crate::serving::ServingPolicy::from_config(&config, crate::server::status::of);
        let settings = crate::engine::EngineSettings {
            cache_dir: None,
            total_instances: 4,
            ..Default::default()
        };
        let models = crate::runtime::ModelRuntime::new(settings, false).unwrap();
        let registry = crate::registry::Registry::new(
            crate::registry::Store::new(blobs.clone()),
            models,
            config,
        );
        let serving = crate::serving::Serving::new(
            registry,
            crate::serving::Shadows::start(crate::serving::ShadowOptions {
                workers: 1,
                queue: 1,
                nice: 10,
            }),
            crate::serving::PredictionLog::start(crate::serving::LogOptions::new(None, "openapi")),
            policy,
        );
        let options = super::super::ServeOptions {
            max_body_bytes: 1 << 20,
            teams: Arc::new(crate::teams::Teams::load(None, None).unwrap()),
            audit: crate::registry::audit::AuditLog::new(blobs.storage().clone(), "openapi"),
            inference_token: None,
            http: Default::default(),
            request_bytes_in_flight: 16 << 20,
        };
        // The table itself: the layers around it hide its routes from its Debug form.
        super::super::routes(serving, Arc::new(AtomicBool::new(true)), &options)
    }

    /// The document's operations, as `METHOD /pattern`.
    fn documented() -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for (path, item) in document()["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                out.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
        out
    }

    /// `pattern` with each `{param}` filled in.
    fn concrete(pattern: &str) -> String {
        pattern
            .split('/')
            .map(|s| {
                if s.starts_with('{') {
                    "no-such-name"
                } else {
                    s
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_route_of_the_router_is_in_the_document_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let router = test_router(dir.path()).await;
        let patterns = route_patterns(&router);
        assert!(
            patterns.len() >= 25 && patterns.contains("/v2/models/{model}/infer"),
            "the router's routes were not found in its Debug form: {patterns:?}"
        );
        // Which methods each pattern answers: anything but 405 (and never the fallback's 404).
        let mut routes = BTreeSet::new();
        for pattern in &patterns {
            for method in [
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::DELETE,
                Method::PATCH,
            ] {
                let request = Request::builder()
                    .method(method.clone())
                    .uri(concrete(pattern))
                    .body(Body::empty())
                    .unwrap();
                let response = router.clone().oneshot(request).await.unwrap();
                if response.status() == StatusCode::METHOD_NOT_ALLOWED {
                    continue;
                }
                let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                    .await
                    .unwrap();
                assert!(
                    !String::from_utf8_lossy(&body).contains("no such route"),
                    "{method} {pattern} fell through to the fallback"
                );
                routes.insert(format!("{method} {pattern}"));
            }
        }
        let documented = documented();
        let undocumented: Vec<_> = routes.difference(&documented).collect();
        let unrouted: Vec<_> = documented.difference(&routes).collect();
        assert!(
            undocumented.is_empty(),
            "routes missing from /openapi.json (annotate the handler with #[utoipa::path] and list it in ApiDoc): {undocumented:?}"
        );
        assert!(
            unrouted.is_empty(),
            "documented operations the router does not have: {unrouted:?}"
        );
        // And the document is served, open.
        let response = router
            .oneshot(
                Request::builder()
                    .uri("/openapi.json")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = axum::body::to_bytes(response.into_body(), 4 << 20)
            .await
            .unwrap();
        let served: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(served["openapi"], "3.1.0");
    }

    #[test]
    fn every_503_carries_retry_after_and_every_error_the_error_body() {
        for (path, item) in document()["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                for (status, response) in operation["responses"].as_object().unwrap() {
                    if status == "503" {
                        assert_eq!(
                            response["headers"]["Retry-After"]["required"], true,
                            "{method} {path}"
                        );
                    }
                    if status.starts_with('4') || status.starts_with('5') {
                        assert!(
                            response["content"]["application/json"]["schema"]["$ref"]
                                .as_str()
                                .is_some_and(|r| r.ends_with("/ErrorBody")),
                            "{method} {path} {status}: {response}"
                        );
                    }
                }
            }
        }
    }
}
