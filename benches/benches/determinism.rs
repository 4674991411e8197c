//! The cost of deterministic execution (`[host] deterministic`, on by default): NaN canonicalisation
//! and deterministic relaxed SIMD, which let `ferry replay` reproduce a logged answer bit for bit.
//! Each sample model's example request runs through a warm instance on an engine with and without
//! them; the ratio per sample is printed at the end.
//!
//! Run: `cargo bench -p ferry-benches --bench determinism`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::Criterion;
use ferry::engine::EngineSettings;
use ferry::runtime::{ModelInstance, ModelRuntime, Tensor};
use ferry::tensor::{tensor_from_json, JsonTensor};
use ferry_benches::mean_ns;
use ferry_tests::workspace;

/// The in-Wasm samples (graph samples' host-side graphs are native code, untouched by the setting).
const SAMPLES: [&str; 5] = [
    "fraud-features",
    "diabetes-gbdt",
    "digits-onnx",
    "python-eta",
    "geo-embeddings",
];

/// An engine with or without determinism; its compiled code is cached beside the graphs bench's
/// (the deterministic engine is the same engine), so runs after the first do not compile again.
fn runtime(deterministic: bool) -> Arc<ModelRuntime> {
    ModelRuntime::new(
        EngineSettings {
            deterministic,
            total_instances: 16,
            cache_dir: Some(workspace().join("target/ferry-bench-cache")),
            ..Default::default()
        },
        false,
    )
    .expect("engine")
}

fn start(runtime: &ModelRuntime, name: &str) -> ModelInstance {
    let weights = std::fs::read(workspace().join(format!("target/models/{name}.weights"))).ok();
    ferry_tests::sample_instance(runtime, name, weights.as_deref(), None)
}

/// The sample's example request: JSON text, or tensors.
enum Call {
    Features(String),
    Tensors(Vec<Tensor>),
}

fn example(name: &str) -> Call {
    let path = workspace().join(format!("sample-models/{name}/example-request.json"));
    let body: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    match body.get("inputs") {
        None => Call::Features(body.to_string()),
        Some(inputs) => Call::Tensors(
            inputs
                .as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    let t: JsonTensor = serde_json::from_value(t.clone()).unwrap();
                    tensor_from_json(&t).unwrap()
                })
                .collect(),
        ),
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let engines = [
        ("deterministic", runtime(true)),
        ("default-wasm", runtime(false)),
    ];
    for name in SAMPLES {
        let call = example(name);
        let mut group = c.benchmark_group(format!("determinism-{name}"));
        for (label, runtime) in &engines {
            let mut instance = start(runtime, name);
            group.bench_function(*label, |b| match &call {
                Call::Features(text) => b.iter(|| black_box(instance.predict(text).unwrap())),
                Call::Tensors(inputs) => {
                    b.iter(|| black_box(instance.infer(inputs, "{}").unwrap()))
                }
            });
        }
        group.finish();
    }
    c.final_summary();
    println!("\ncost of deterministic execution (mean per call, this run):");
    for name in SAMPLES {
        let group = format!("determinism-{name}");
        if let (Some(on), Some(off)) = (
            mean_ns(&group, "deterministic"),
            mean_ns(&group, "default-wasm"),
        ) {
            println!(
                "  {name:<16} {:>9.2} µs deterministic, {:>9.2} µs without: {:.3}×",
                on / 1e3,
                off / 1e3,
                on / off
            );
        }
    }
}
