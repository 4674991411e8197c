//! Capabilities a guest may import beyond the contract's logging, one module each, granted per
//! version: [`graph`], the ONNX graphs of a version run by the host through `wasi:nn`; and
//! [`wasi_io`], WASI's streams and polls made safe on any thread and bound by the call's deadline.

pub mod graph;
pub mod wasi_io;
