//! The end-to-end tests, one binary: real servers, real components, real stores. One binary rather
//! than one per file, so the suite links the host once (minutes of CI) and the files' tests run side by
//! side. Each file is a module; `cargo test -p ferry-tests --test e2e traffic::` runs one of them.
//! `graphs.rs` is its own binary (`--test graphs`): its deadline tests must not share the cores.

mod author_guide;
mod author_workflow;
mod batching;
mod cli_push;
mod console;
mod credentials;
mod dev;
mod fleet;
mod grpc;
mod hostile_callers;
mod hostile_guests;
mod http_api;
mod http_lifecycle;
mod js_sdk;
mod long_run;
mod memory;
mod monitoring;
mod namespaces;
mod neighbours;
mod prometheus;
mod python_sdk;
mod registry;
mod sample_models;
mod snapshots;
mod teams;
mod traces;
mod traffic;
