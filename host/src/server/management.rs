//! Management routes: upload a version, move aliases, roll back, delete, the OIP repository
//! extension, and the fleet's status. Each change is checked against the caller's credential first
//! and recorded in the audit log once done (see [`super::auth`]). Uploads stream to the host's
//! cache directory while being hashed and counted, so a 1 GB artifact needs no 1 GB of memory; only
//! once the whole request is good do they stream on to the store (a multipart upload on S3), and
//! nothing is left behind when it is not.

use std::path::PathBuf;

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::Json;
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::change::{act, to_the_end, Change};
use super::error::ApiError;
use super::multipart;
use super::openapi as doc;
use super::AppState;
use crate::registry::{AliasTarget, ChangeError, Split, TrafficPolicy, VersionManifest};
use crate::stamps::unix_ms;
use crate::storage::BlobCache;

/// Header with the sha256 the uploader expects the component to have.
pub const SHA_HEADER: &str = "ferry-sha256";

/// Named graphs one version may carry (`graph:NAME` parts).
const MAX_GRAPHS: usize = 16;

/// Largest `config` or `tests` part of an upload: JSON documents the host parses whole (at load,
/// and to check them), unlike weights and graphs, which it maps.
const MAX_DOCUMENT_PART: u64 = 64 << 20;

/// Files streamed into the host's upload area, removed on drop unless committed as blobs.
struct PendingUploads {
    blobs: BlobCache,
    files: Vec<(PathBuf, String)>,
}

impl PendingUploads {
    /// Streams `body` to a temporary file, hashing it; refuses more than `cap` bytes (413).
    async fn ingest<E: std::fmt::Display>(
        &mut self,
        what: &str,
        mut body: impl Stream<Item = Result<Bytes, E>> + Unpin,
        cap: u64,
    ) -> Result<(String, u64), ApiError> {
        let (path, file) = self
            .blobs
            .upload_file()
            .map_err(|e| ApiError::new(StatusCode::INSUFFICIENT_STORAGE, format!("{e:#}")))?;
        self.files.push((path, String::new()));
        let mut file = tokio::fs::File::from_std(file);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let storage = |e: std::io::Error| {
            ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                format!("cannot store the {what}: {e}"),
            )
        };
        while let Some(chunk) = body.next().await {
            let chunk =
                chunk.map_err(|e| ApiError::bad_request(format!("reading the {what}: {e}")))?;
            size += chunk.len() as u64;
            if size > cap {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the {what} is larger than the upload limit of {cap} bytes"),
                ));
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(storage)?;
        }
        file.sync_all().await.map_err(storage)?;
        let sha = hex::encode(hasher.finalize());
        self.files.last_mut().expect("pushed above").1 = sha.clone();
        Ok((sha, size))
    }

    fn path_of(&self, sha: &str) -> Option<&PathBuf> {
        self.files.iter().find(|(_, s)| s == sha).map(|(p, _)| p)
    }

    /// Streams every upload into the store's blobs.
    async fn commit(mut self) -> Result<(), ApiError> {
        for (path, sha) in std::mem::take(&mut self.files) {
            if let Err(e) = self.blobs.commit_upload(&path, &sha).await {
                let _ = std::fs::remove_file(&path);
                return Err(e.into());
            }
        }
        Ok(())
    }
}

impl Drop for PendingUploads {
    fn drop(&mut self) {
        for (path, _) in &self.files {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Checks that an uploaded file is a valid WebAssembly component before it becomes a blob.
fn validate_component(path: &PathBuf) -> Result<(), ApiError> {
    let bytes = std::fs::read(path)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if bytes.get(..4) != Some(b"\0asm") {
        return Err(ApiError::bad_request(
            "the component is not WebAssembly (no \\0asm header)",
        ));
    }
    if bytes.get(6..8) == Some(&[0, 0]) {
        return Err(ApiError::bad_request(
            "this is a core WebAssembly module, not a component: build with --target wasm32-wasip2",
        ));
    }
    wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
        .validate_all(&bytes)
        .map_err(|e| {
            ApiError::bad_request(format!("the component is not valid WebAssembly: {e}"))
        })?;
    Ok(())
}

/// `PUT /v1/models/{model}/versions/{version}`: the body is the component (`application/wasm`), or a
/// `multipart/form-data` version (`component` or `component_sha256`, and optional `weights`, `config`,
/// `tests`, `limits` — JSON, some of a model's limit fields, which may lower the operator's limits
/// for the model and never raise them). Answers 201 once the version is stored; loading continues in the background.
#[utoipa::path(put, path = "/v1/models/{model}/versions/{version}", tag = "management",
    params(doc::ManagedVersionPath, doc::UploadHeaders),
    request_body(description = "The component's bytes, or a multipart version",
        content(("application/wasm"), (doc::VersionForm = "multipart/form-data"))),
    responses((status = 201, description = "Stored; loading goes on in the background", body = doc::CreatedVersion),
        doc::BadRequest, doc::Forbidden, doc::NotFound, doc::SlowBody, doc::Conflict, doc::TooLarge,
        doc::Failed, doc::Unavailable, doc::NoRoom))]
pub async fn put_version(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
    change: Change<act::PutVersion>,
    request: Request,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let registry = state.registry.clone();
    let mut manifest: VersionManifest =
        registry.new_manifest(&model, Some(version.clone())).await?;
    if registry
        .table()
        .models
        .get(&model)
        .is_some_and(|m| m.versions.contains_key(&version))
    {
        return Err(ChangeError::Conflict(format!(
            "model `{model}` already has a version `{version}`; versions are immutable"
        ))
        .into());
    }
    // One namespace per model, before any of the body is read (the store checks again on create).
    if registry
        .table()
        .models
        .get(&model)
        .is_some_and(|m| m.aliases.contains_key(&version))
    {
        return Err(crate::registry::names::version_clash(&model, &version).into());
    }
    let cap = registry.config().host.max_upload_bytes;
    // Refuse a declared oversize body before reading any of it (a multipart version holds up to four
    // files and its graphs, each under the cap).
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let parts_allowed = if request
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"multipart/"))
    {
        4 + MAX_GRAPHS as u64
    } else {
        1
    };
    if declared.is_some_and(|len| len > cap.saturating_mul(parts_allowed) + (64 << 10)) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the upload is larger than the upload limit of {cap} bytes"),
        ));
    }
    let expected_sha = request
        .headers()
        .get(SHA_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_ascii_lowercase());
    let is_multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("multipart/form-data"));

    let mut uploads = PendingUploads {
        blobs: registry.store().blobs().clone(),
        files: Vec::new(),
    };
    let mut component: Option<String> = None;
    let mut reused_component: Option<String> = None;
    if is_multipart {
        let mut form = multipart::Form::from_request(request).await?;
        while let Some(field) = form.next_part().await? {
            let name = field.name().unwrap_or_default().to_owned();
            match name.as_str() {
                "component" => component = Some(uploads.ingest("component", field, cap).await?.0),
                "component_sha256" => reused_component = Some(multipart::short_text(field, "component_sha256").await?.trim().to_ascii_lowercase()),
                "weights" => manifest.weights_sha256 = Some(uploads.ingest("weights", field, cap).await?.0),
                // JSON documents the host parses whole: held to a document's size, not a blob's.
                "config" => manifest.config_sha256 = Some(uploads.ingest("config", field, cap.min(MAX_DOCUMENT_PART)).await?.0),
                "tests" => manifest.tests_sha256 = Some(uploads.ingest("tests", field, cap.min(MAX_DOCUMENT_PART)).await?.0),
                "profile" => manifest.profile_sha256 = Some(uploads.ingest("profile", field, cap.min(MAX_DOCUMENT_PART)).await?.0),
                "limits" => {
                    let text = multipart::short_text(field, "limits").await?;
                    let limits = crate::registry::VersionLimits::parse(text.as_bytes())
                        .map_err(|e| ApiError::bad_request(format!("part `limits`: {e}")))?;
                    manifest.limits = Some(limits);
                }
                other if other.starts_with("graph:") => {
                    let graph = other["graph:".len()..].to_owned();
                    crate::registry::check_graph_name(&graph).map_err(|e| ApiError::bad_request(format!("part `{other}`: {e}")))?;
                    if manifest.graphs.len() >= MAX_GRAPHS {
                        return Err(ApiError::bad_request(format!("a version has at most {MAX_GRAPHS} graphs")));
                    }
                    let sha = uploads.ingest("graph", field, cap).await?.0;
                    manifest.graphs.insert(graph, sha);
                }
                other => return Err(ApiError::bad_request(format!("unknown part `{other}` (expected component, component_sha256, weights, config, tests, profile, limits, graph:NAME)"))),
            }
        }
    } else {
        component = Some(
            uploads
                .ingest("component", request.into_body().into_data_stream(), cap)
                .await?
                .0,
        );
    }

    manifest.component_sha256 = match (component, reused_component) {
        (Some(sha), None) => {
            if let Some(expected) = &expected_sha {
                if *expected != sha {
                    return Err(ApiError::bad_request(format!(
                        "sha256 mismatch: the component has {sha}, {SHA_HEADER} says {expected}"
                    )));
                }
            }
            let path = uploads.path_of(&sha).cloned().expect("just uploaded");
            tokio::task::spawn_blocking(move || validate_component(&path))
                .await
                .expect("validation does not panic")?;
            sha
        }
        (None, Some(sha)) => {
            if !registry.store().blobs().exists(&sha).await? {
                return Err(ApiError::bad_request(format!(
                    "component_sha256 {sha} is not in the store; upload the component"
                )));
            }
            sha
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "send either `component` or `component_sha256`, not both",
            ))
        }
        (None, None) => {
            return Err(ApiError::bad_request(
                "a version needs a component: a `component` part or a `component_sha256` part",
            ))
        }
    };
    for (sha, what) in [
        (&manifest.config_sha256, "config"),
        (&manifest.tests_sha256, "tests"),
        (&manifest.profile_sha256, "profile"),
    ] {
        let Some(sha) = sha else { continue };
        let path = uploads.path_of(sha).cloned().expect("just uploaded");
        // Up to the upload cap of JSON: parsed off the async workers.
        tokio::task::spawn_blocking(move || {
            let text = std::fs::read_to_string(&path)
                .map_err(|_| ApiError::bad_request(format!("the {what} is not UTF-8 text")))?;
            if what == "config" {
                serde_json::from_str::<Value>(&text)
                    .map_err(|e| ApiError::bad_request(format!("the config is not JSON: {e}")))?;
            } else if what == "profile" {
                crate::drift::profile::Profile::parse(text.as_bytes())
                    .map_err(|e| ApiError::bad_request(format!("part `profile`: {e}")))?;
            } else {
                crate::selftest::parse_tests_document(&text, "tests file")
                    .map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
            }
            Ok::<_, ApiError>(())
        })
        .await
        .expect("validation does not panic")?;
    }

    // On a task of its own: a client that hangs up mid-commit neither leaves staged files behind
    // nor abandons a multipart upload to the store half way (the commit finishes or fails whole).
    to_the_end(uploads.commit()).await?;
    let version_state = change
        .run(|record| async move {
            let version_state = registry.create_version(manifest).await?;
            let m = &version_state.manifest;
            let blobs = json!({
                "component_sha256": m.component_sha256,
                "weights_sha256": m.weights_sha256,
                "config_sha256": m.config_sha256,
                "tests_sha256": m.tests_sha256,
                "profile_sha256": m.profile_sha256,
                "graphs": m.graphs,
                "limits": m.limits,
            });
            let record = record.version(&m.version).to(blobs);
            Ok((version_state, record))
        })
        .await?;
    let manifest = &version_state.manifest;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "model": manifest.model,
            "version": manifest.version,
            "component_sha256": manifest.component_sha256,
            "weights_sha256": manifest.weights_sha256,
            "graphs": manifest.graphs,
            "state": version_state.state.name(),
        })),
    ))
}

/// The body of an alias move: `{"version": "V"}`, or `{"split": {"V1": 90, "V2": 10}}` with an
/// optional `"routing_key_field": "/features/rider_id"`.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum AliasBody {
    /// One version.
    Version {
        /// The version.
        version: String,
    },
    /// A weighted split.
    Split(Split),
}

fn alias_answer(model: &str, alias: &str, target: &AliasTarget) -> Json<Value> {
    let mut answer = json!({ "model": model, "alias": alias });
    match target {
        AliasTarget::Version(v) => answer["version"] = json!(v),
        AliasTarget::Split(s) => {
            answer["split"] = json!(s.split);
            if let Some(field) = &s.routing_key_field {
                answer["routing_key_field"] = json!(field);
            }
        }
    }
    Json(answer)
}

/// A management route's JSON document: read only once the caller's permission is checked, and at
/// most the host's management body limit of it (413 past it).
async fn json_document(state: &AppState, body: axum::body::Body) -> Result<Value, ApiError> {
    let limit = state.max_management_body_bytes;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(c) = cause {
            if c.is::<http_body_util::LengthLimitError>() {
                return ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the request body is larger than the limit of {limit} bytes"),
                );
            }
            if super::connections::is_slow_body(c) {
                return ApiError::new(StatusCode::REQUEST_TIMEOUT, c.to_string());
            }
            cause = c.source();
        }
        ApiError::bad_request(format!("the request body could not be read: {e}"))
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("the request body is not a JSON document: {e}")))
}

/// `PUT /v1/models/{model}/aliases/{alias}` with `{"version": "V"}` or `{"split": {...}}`: loads
/// every version it names if needed, then switches.
#[utoipa::path(put, path = "/v1/models/{model}/aliases/{alias}", tag = "management",
    params(doc::AliasPath), request_body = doc::AliasBody,
    responses((status = 200, description = "Where the alias points now", body = doc::AliasAnswer),
        doc::BadRequest, doc::Forbidden, doc::NotFound, doc::SlowBody, doc::Conflict, doc::TooLarge,
        doc::Failed, doc::Unavailable, doc::NoRoom))]
pub async fn set_alias(
    State(state): State<AppState>,
    Path((model, alias)): Path<(String, String)>,
    change: Change<act::SetAlias>,
    body: axum::body::Body,
) -> Result<Json<Value>, ApiError> {
    let body = json_document(&state, body).await?;
    let target = match serde_json::from_value::<AliasBody>(body) {
        Ok(AliasBody::Version { version }) => AliasTarget::Version(version),
        Ok(AliasBody::Split(split)) => AliasTarget::Split(split),
        Err(_) => {
            return Err(ApiError::bad_request(
                "an alias body is {\"version\": \"V\"} or {\"split\": {\"V1\": 90, \"V2\": 10}} (optionally with \"routing_key_field\": \"/features/rider_id\")",
            ))
        }
    };
    let (m, a, t) = (model.clone(), alias.clone(), target.clone());
    change
        .run(|record| async move {
            let previous = state.registry.set_alias(&m, &a, t.clone()).await?;
            let from = previous.map(|p| json!(p));
            Ok(((), record.alias(&a).from(from).to(json!(t.simplified()))))
        })
        .await?;
    Ok(alias_answer(&model, &alias, &target.simplified()))
}

/// `POST /v1/models/{model}/aliases/{alias}/rollback`: the alias goes back to its previous target.
#[utoipa::path(post, path = "/v1/models/{model}/aliases/{alias}/rollback", tag = "management",
    params(doc::AliasPath),
    responses((status = 200, description = "Where the alias points now", body = doc::AliasAnswer),
        doc::BadRequest, doc::Forbidden, doc::NotFound, doc::Conflict, doc::Failed, doc::Unavailable,
        doc::NoRoom))]
pub async fn rollback(
    State(state): State<AppState>,
    Path((model, alias)): Path<(String, String)>,
    change: Change<act::Rollback>,
) -> Result<Json<Value>, ApiError> {
    let (m, a) = (model.clone(), alias.clone());
    let to = change
        .run(|record| async move {
            let (from, to) = state.registry.rollback(&m, &a).await?;
            let record = record.alias(&a).from(from.map(|f| json!(f))).to(json!(to));
            Ok((to, record))
        })
        .await?;
    Ok(alias_answer(&model, &alias, &to))
}

/// `GET /v1/models/{model}/traffic`: the model's shadow and prediction-log shares.
#[utoipa::path(get, path = "/v1/models/{model}/traffic", tag = "management", params(doc::ManagedModelPath),
    responses((status = 200, description = "The model's traffic policy", body = doc::TrafficPolicy),
        doc::NotFound))]
pub async fn traffic(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let table = state.registry.table();
    let entry = table
        .models
        .get(&model)
        .ok_or_else(|| ApiError::not_found(format!("unknown model `{model}`")))?;
    Ok(Json(json!(*entry.traffic)))
}

/// `PUT /v1/models/{model}/traffic` with `{"shadow": {"version": "4", "percent": 10}, "log":
/// {"percent": 100}}`: replaces the model's traffic policy (a shadow candidate is loaded first).
#[utoipa::path(put, path = "/v1/models/{model}/traffic", tag = "management", params(doc::ManagedModelPath),
    request_body = doc::TrafficPolicy,
    responses((status = 200, description = "The policy now in force", body = doc::TrafficPolicy),
        doc::BadRequest, doc::Forbidden, doc::NotFound, doc::SlowBody, doc::Conflict, doc::TooLarge,
        doc::Failed, doc::Unavailable, doc::NoRoom))]
pub async fn set_traffic(
    State(state): State<AppState>,
    Path(model): Path<String>,
    change: Change<act::SetTraffic>,
    body: axum::body::Body,
) -> Result<Json<Value>, ApiError> {
    let body = json_document(&state, body).await?;
    let policy: TrafficPolicy = serde_json::from_value(body).map_err(|e| {
        ApiError::bad_request(format!(
            "a traffic policy is {{\"shadow\": {{\"version\": \"V\", \"percent\": 0-100}}, \"log\": {{\"percent\": 0-100}}}}: {e}"
        ))
    })?;
    let set = policy.clone();
    change
        .run(|record| async move {
            let previous = state.registry.set_traffic(&model, set.clone()).await?;
            Ok(((), record.from(Some(json!(previous))).to(json!(set))))
        })
        .await?;
    Ok(Json(json!(policy)))
}

/// `DELETE /v1/models/{model}/versions/{version}`: refused (409) while an alias points at it.
#[utoipa::path(delete, path = "/v1/models/{model}/versions/{version}", tag = "management",
    params(doc::ManagedVersionPath),
    responses((status = 204, description = "Deleted"),
        doc::BadRequest, doc::Forbidden, doc::NotFound, doc::Conflict, doc::Failed, doc::Unavailable,
        doc::NoRoom))]
pub async fn delete_version(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
    change: Change<act::DeleteVersion>,
) -> Result<StatusCode, ApiError> {
    change
        .run(|record| async move {
            state.registry.delete_version(&model, &version).await?;
            Ok(((), record.version(&version)))
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v2/repository/index`: every model version and its state.
#[utoipa::path(post, path = "/v2/repository/index", tag = "management",
    responses((status = 200, description = "Every version and its state", body = Vec<doc::RepositoryEntry>)))]
pub async fn repository_index(State(state): State<AppState>) -> Json<Value> {
    let table = state.registry.table();
    let entries: Vec<Value> = table
        .versions()
        .map(|v| {
            let mut e = json!({ "name": v.manifest.model, "version": v.manifest.version, "state": v.state.name().to_uppercase() });
            if let Some(r) = v.state.reason() {
                e["reason"] = json!(r);
            }
            e
        })
        .collect();
    Json(Value::Array(entries))
}

/// `POST /v2/repository/models/{model}/load`
#[utoipa::path(post, path = "/v2/repository/models/{model}/load", tag = "management",
    params(doc::ManagedModelPath),
    responses((status = 200, description = "The model is loaded and serves"),
        doc::BadRequest, doc::Forbidden, doc::NotFound, doc::Conflict, doc::Failed, doc::Unavailable,
        doc::NoRoom))]
pub async fn repository_load(
    State(state): State<AppState>,
    Path(model): Path<String>,
    change: Change<act::LoadModel>,
) -> Result<StatusCode, ApiError> {
    let (registry, m) = (state.registry.clone(), model.clone());
    change
        .run(|record| async move {
            registry.load_model(&m).await?;
            Ok(((), record))
        })
        .await?;
    // Loaded (and recorded) either way; whether anything serves is this answer's to say.
    if let Some(why) = state.registry.not_serving(&model) {
        return Err(why.into());
    }
    Ok(StatusCode::OK)
}

/// `POST /v2/repository/models/{model}/unload`
#[utoipa::path(post, path = "/v2/repository/models/{model}/unload", tag = "management",
    params(doc::ModelPath),
    responses((status = 200, description = "The model is unloaded"),
        doc::BadRequest, doc::Forbidden, doc::NotFound, doc::Conflict, doc::Failed, doc::Unavailable,
        doc::NoRoom))]
pub async fn repository_unload(
    State(state): State<AppState>,
    Path(model): Path<String>,
    change: Change<act::UnloadModel>,
) -> Result<StatusCode, ApiError> {
    change
        .run(|record| async move {
            state.registry.unload_model(&model).await?;
            Ok(((), record))
        })
        .await?;
    Ok(StatusCode::OK)
}

/// `GET /v1/fleet`: every host that shares this store, as each last published itself — heartbeat,
/// whether it reaches the store, and per version ready / failed with the reason.
#[utoipa::path(get, path = "/v1/fleet", tag = "management",
    responses((status = 200, description = "The hosts sharing the store", body = doc::Fleet),
        doc::Failed, doc::Unavailable, doc::NoRoom))]
pub async fn fleet(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let store = state.registry.store();
    let mut hosts = store.hosts().await?;
    hosts.sort_by(|a, b| a.host.cmp(&b.host));
    let now = unix_ms(std::time::SystemTime::now());
    let heartbeat = state.registry.config().store.heartbeat_interval_ms.max(1);
    let hosts: Vec<Value> = hosts
        .into_iter()
        .map(|h| {
            let age_ms = now.saturating_sub(h.heartbeat_unix_ms);
            json!({
                "host": h.host,
                "address": h.address,
                "heartbeat_age_seconds": age_ms as f64 / 1000.0,
                // Three missed heartbeats: the host is gone or cut off from the store.
                "alive": age_ms <= 3 * heartbeat + 2000,
                "store_reachable": h.store_reachable,
                "generation": h.generation,
                "versions": h.versions,
            })
        })
        .collect();
    Ok(Json(json!({ "store": store.describe(), "hosts": hosts })))
}
