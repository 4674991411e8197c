//! Benchmarks live in `benches/` (see `benches/runtime.rs`, `benches/graphs.rs`); this crate holds
//! what they share.

/// Mean time, in nanoseconds, of a finished criterion benchmark `group/id`, from the estimates
/// criterion saved; `None` until it has run.
pub fn mean_ns(group: &str, id: &str) -> Option<f64> {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = dir
        .join("criterion")
        .join(group)
        .join(id)
        .join("new/estimates.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    v["mean"]["point_estimate"].as_f64()
}
