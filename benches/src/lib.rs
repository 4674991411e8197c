//! Benchmarks live in `benches/`; see `benches/runtime.rs`.
