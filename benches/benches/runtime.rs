//! Runtime benchmarks on the sample models (built by scripts/build-models.sh):
//! - `instantiate+init/<model>`: a new instance from the pre-linked component (pooling allocator,
//!   copy-on-write image) plus the model's `init` — what a pool pays to grow by one instance;
//! - `instantiate-from-snapshot/<model>`: a new instance from the version's snapshot of its initialised
//!   instance (no `init`) — what a pool pays with snapshots (goal ≤ 50 µs for every sample);
//! - `infer/<model>`: one request through a warm instance, across the component boundary;
//! - `digits-native-vs-wasm`: the same tract network on the same image natively and in the guest;
//!   the ratio is printed at the end (goal ≤ 1.3×);
//! - `new-project/<lang>/…`: instantiate+init and one predict for the projects `ferry new` writes; run
//!   (alone) by `benches/author.sh`, which builds them.
//!
//! Run: `cargo bench -p ferry-benches` (the README's bench command builds the models first).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::Criterion;
use ferry::runtime::{
    ModelInstance, ModelLimits, StartMode, Startup, Tensor, TensorData, VersionCode,
};
use ferry_benches::mean_ns;
use ferry_tests::{engine, model_file, workspace};
use tract_onnx::prelude::*;

struct Sample {
    name: &'static str,
    weights: Option<Vec<u8>>,
}

fn samples() -> Vec<Sample> {
    vec![
        Sample {
            name: "fraud-features",
            weights: None,
        },
        Sample {
            name: "diabetes-gbdt",
            weights: Some(model_file("diabetes-gbdt.weights")),
        },
        Sample {
            name: "digits-onnx",
            weights: Some(model_file("digits-onnx.weights")),
        },
        Sample {
            name: "python-eta",
            weights: Some(model_file("python-eta.weights")),
        },
        Sample {
            name: "geo-embeddings",
            weights: Some(model_file("geo-embeddings.weights")),
        },
    ]
}

fn start(name: &str, weights: Option<&[u8]>) -> ModelInstance {
    let component = engine()
        .load_component(&model_file(&format!("{name}.wasm")))
        .expect("component");
    ModelInstance::start(
        &component,
        &ModelLimits::default(),
        Arc::from(name),
        Startup::Init {
            config: "{}",
            weights,
        },
        None,
    )
    .expect("init")
}

fn example_request(name: &str) -> serde_json::Value {
    let path = workspace().join(format!("sample-models/{name}/example-request.json"));
    serde_json::from_str(&std::fs::read_to_string(path).expect("example request")).expect("json")
}

/// One digits image from the example request, as pixels.
fn digit_pixels() -> Vec<f32> {
    let req = example_request("digits-onnx");
    req["inputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().cloned().unwrap_or_else(|| vec![row.clone()]))
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

fn bench_instantiate(c: &mut Criterion) {
    let mut group = c.benchmark_group("instantiate+init");
    for s in samples() {
        let component = engine()
            .load_component(&model_file(&format!("{}.wasm", s.name)))
            .unwrap();
        let label: Arc<str> = Arc::from(s.name);
        group.bench_function(s.name, |b| {
            b.iter(|| {
                black_box(
                    ModelInstance::start(
                        &component,
                        &ModelLimits::default(),
                        label.clone(),
                        Startup::Init {
                            config: "{}",
                            weights: s.weights.as_deref(),
                        },
                        None,
                    )
                    .unwrap(),
                )
            })
        });
    }
    group.finish();
}

/// A new instance from the version's snapshot: no `init`, the initialised memory mapped
/// copy-on-write. Against `instantiate+init`, what snapshots save every time a pool grows.
fn bench_instantiate_from_snapshot(c: &mut Criterion) {
    let mut group = c.benchmark_group("instantiate-from-snapshot");
    for s in samples() {
        let bytes = model_file(&format!("{}.wasm", s.name));
        let weights_sha = s.weights.as_deref().map(ferry::runtime::sha256_hex);
        let label: Arc<str> = Arc::from(s.name);
        let limits = ModelLimits::default();
        let prepared = engine()
            .prepare(
                &VersionCode {
                    component: &bytes,
                    component_sha256: &ferry::runtime::sha256_hex(&bytes),
                    config: "{}",
                    weights: s.weights.as_deref().zip(weights_sha.as_deref()),
                    graphs: None,
                },
                &limits,
                &label,
            )
            .expect("prepare");
        assert_eq!(prepared.mode, StartMode::Snapshot, "{}", s.name);
        group.bench_function(s.name, |b| {
            b.iter(|| {
                black_box(
                    ModelInstance::start(
                        &prepared.component,
                        &limits,
                        label.clone(),
                        Startup::Snapshot,
                        None,
                    )
                    .unwrap(),
                )
            })
        });
    }
    group.finish();
}

fn bench_infer(c: &mut Criterion) {
    let mut group = c.benchmark_group("infer");
    let mut fraud = start("fraud-features", None);
    let request = example_request("fraud-features").to_string();
    group.bench_function("fraud-features", |b| {
        b.iter(|| black_box(fraud.predict(&request).unwrap()))
    });

    let mut diabetes = start("diabetes-gbdt", Some(&model_file("diabetes-gbdt.weights")));
    let req = example_request("diabetes-gbdt");
    let row: Vec<f32> = req["inputs"][0]["data"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let input = [Tensor {
        name: "features".into(),
        shape: vec![1, 10],
        data: TensorData::Fp32(row),
    }];
    group.bench_function("diabetes-gbdt", |b| {
        b.iter(|| black_box(diabetes.infer(&input, "{}").unwrap()))
    });

    let mut digits = start("digits-onnx", Some(&model_file("digits-onnx.weights")));
    let input = [Tensor {
        name: "input".into(),
        shape: vec![1, 64],
        data: TensorData::Fp32(digit_pixels()),
    }];
    group.bench_function("digits-onnx", |b| {
        b.iter(|| black_box(digits.infer(&input, "{}").unwrap()))
    });

    let mut eta = start("python-eta", Some(&model_file("python-eta.weights")));
    let request = example_request("python-eta").to_string();
    group.bench_function("python-eta", |b| {
        b.iter(|| black_box(eta.predict(&request).unwrap()))
    });
    group.finish();
}

/// The projects `ferry new` writes, built by `benches/author.sh`, which names their directory in
/// `FERRY_BENCH_PROJECTS` (`<dir>/eta-rust`, `<dir>/eta-python`); skipped without it.
fn bench_new_projects(c: &mut Criterion) {
    let Some(dir) = std::env::var_os("FERRY_BENCH_PROJECTS").map(std::path::PathBuf::from) else {
        return;
    };
    let request = r#"{"features": {"distance_km": 3.2, "hour": 8}}"#;
    let mut group = c.benchmark_group("new-project");
    for name in ["eta-rust", "eta-python"] {
        let project = dir.join(name);
        let read = |file: &str| {
            std::fs::read(project.join(file))
                .unwrap_or_else(|e| panic!("{}: {e}", project.join(file).display()))
        };
        let component = engine()
            .load_component(&read(&format!("target/ferry/{name}.wasm")))
            .expect("component");
        let weights = read("weights.json");
        let label: Arc<str> = Arc::from(name);
        let init = || {
            ModelInstance::start(
                &component,
                &ModelLimits::default(),
                label.clone(),
                Startup::Init {
                    config: "{}",
                    weights: Some(&weights),
                },
                None,
            )
            .unwrap()
        };
        group.bench_function(format!("{name}/instantiate+init"), |b| {
            b.iter(|| black_box(init()))
        });
        let mut instance = init();
        group.bench_function(format!("{name}/predict"), |b| {
            b.iter(|| black_box(instance.predict(request).unwrap()))
        });
    }
    group.finish();
}

fn bench_native_vs_wasm(c: &mut Criterion) {
    let weights = model_file("digits-onnx.weights");
    let pixels = digit_pixels();
    // The same tract calls the guest makes (sample-models/digits-onnx/src/lib.rs), compiled natively.
    let native = tract_onnx::onnx()
        .model_for_read(&mut weights.as_slice())
        .and_then(|m| {
            let batch = m.sym("N");
            m.with_input_fact(0, f32::fact([TDim::Sym(batch), 64.into()]).into())
        })
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .expect("native tract");
    let mut wasm = start("digits-onnx", Some(&weights));
    let input = [Tensor {
        name: "input".into(),
        shape: vec![1, 64],
        data: TensorData::Fp32(pixels.clone()),
    }];

    // Same answer first: the comparison is only fair if both compute the same thing.
    let native_out = native
        .run(tvec!(tract_ndarray::Array2::from_shape_vec(
            (1, 64),
            pixels.clone()
        )
        .unwrap()
        .into_tensor()
        .into()))
        .unwrap();
    let native_probs: Vec<f32> = native_out[0]
        .to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect();
    let wasm_out = wasm.infer(&input, "{}").unwrap();
    let TensorData::Fp32(wasm_probs) = &wasm_out[0].data else {
        panic!("probabilities are FP32")
    };
    let worst = native_probs
        .iter()
        .zip(wasm_probs)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(worst < 1e-5, "native and wasm disagree by {worst}");

    let mut group = c.benchmark_group("digits-native-vs-wasm");
    group.bench_function("native", |b| {
        b.iter(|| {
            let x = tract_ndarray::Array2::from_shape_vec((1, 64), pixels.clone()).unwrap();
            black_box(native.run(tvec!(x.into_tensor().into())).unwrap())
        })
    });
    group.bench_function("wasm", |b| {
        b.iter(|| black_box(wasm.infer(&input, "{}").unwrap()))
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    if std::env::var_os("FERRY_BENCH_PROJECTS").is_some() {
        // benches/author.sh: only the new projects (the samples need not be built).
        bench_new_projects(&mut c);
        c.final_summary();
        return;
    }
    bench_instantiate(&mut c);
    bench_instantiate_from_snapshot(&mut c);
    bench_infer(&mut c);
    bench_native_vs_wasm(&mut c);
    c.final_summary();

    if let (Some(native), Some(wasm)) = (
        mean_ns("digits-native-vs-wasm", "native"),
        mean_ns("digits-native-vs-wasm", "wasm"),
    ) {
        println!(
            "digits-onnx: native {:.2} µs, wasm {:.2} µs (including the component boundary) → wasm/native = {:.2}× (goal ≤ 1.3×)",
            native / 1e3,
            wasm / 1e3,
            wasm / native
        );
    }
}
