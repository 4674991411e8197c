//! Capabilities a guest may import beyond the contract's logging, one module each, granted per
//! version. Today: [`graph`], the ONNX graphs of a version run by the host through `wasi:nn`.

pub mod graph;
