//! # Ferry
//!
//! A host that serves machine-learning models compiled into sandboxed WebAssembly components.
//!
//! - [`engine`] owns the wasmtime `Engine` (and one that counts fuel, when a version has a fuel limit):
//!   pooling allocator, epoch ticker, compiled-component cache.
//! - [`host_api`] holds what a guest may import beyond logging: host-side graphs through `wasi:nn`.
//! - [`runtime`] owns a version's instances: limits, the instance pool, and every call into a guest.
//! - [`storage`] is where a store's objects live: one interface, a local-directory and an S3 backend.
//! - [`registry`] owns versions' lives on this host, syncs them with the store, and publishes the one
//!   routing table.
//! - [`serving`] is the protocol-neutral call: routing (weighted aliases), admission, the guest call,
//!   metering, shadow traffic and the prediction log.
//! - [`server`] is the HTTP front door: Open Inference Protocol v2, feature-style predict, management;
//!   it translates HTTP to [`serving`] and back.
//! - [`teams`] says who may change which models: credentials scoped to model-name patterns, with roles.
//! - [`config`] reads the host's TOML configuration.
//! - [`selftest`] runs the self-tests a model ships and compares answers with a tolerance.
//! - [`tensor`] converts Open Inference Protocol JSON tensors to and from the contract's tensors.
//! - [`stamps`] is what the host stamps on what it keeps: sha256 content addresses, Unix times.
//! - [`tools`] installs the pinned PyPI tools Ferry uses (componentize-py, ONNX Runtime) on first use.
//! - [`cli`] is the `ferry` command line.

pub mod cli;
pub mod config;
pub mod drift;
pub mod engine;
pub mod files;
pub mod host_api;
pub mod log_budget;
pub mod panics;
pub mod registry;
pub mod runtime;
pub mod selftest;
pub mod server;
pub mod serving;
pub mod stamps;
pub mod storage;
pub mod teams;
pub mod tensor;
pub mod timing;
pub mod tools;

/// The contract version this host serves (the `wit/` package).
pub const CONTRACT: &str = "ferry:model@0.1.0";
