//! Host-side graphs against their native baselines, one single-row call each, for two networks: the
//! digits MLP (`sample-models/digits-onnx/digits.onnx`, 5 k parameters) and a larger one
//! (`benches/graphs/make_mlp.py`: 64 → 1024 → 1024 → 10, 1.1 M parameters, 4.5 MB):
//! - `<graph>/native-onnxruntime`, `<graph>/native-tract`: the library alone, no Ferry;
//! - `<graph>/wasi-nn-onnxruntime`, `<graph>/wasi-nn-tract`: digits-graph's `infer` through a warm
//!   instance, the network run by the host through wasi:nn (component boundary, tensor copies and
//!   all);
//! - `<graph>/tract-in-guest`: digits-onnx's `infer`, tract compiled into the component.
//!
//! The ratios wasi:nn ÷ native (goal ≤ 1.3×) and in-guest ÷ native are printed at the end.
//! Run: `cargo bench -p ferry-benches --bench graphs` (after scripts/build-models.sh).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::Criterion;
use ferry::engine::EngineSettings;
use ferry::host_api::graph::{GraphBackend, VersionGraphs};
use ferry::runtime::{ModelInstance, ModelRuntime, Tensor, TensorData};
use ferry_benches::mean_ns;
use ferry_tests::{generated_graph, workspace};
use tract_onnx::prelude::*;

struct Network {
    name: &'static str,
    onnx: Vec<u8>,
}

fn networks() -> Vec<Network> {
    let digits = std::fs::read(workspace().join("sample-models/digits-onnx/digits.onnx")).unwrap();
    let mlp = std::fs::read(generated_graph("mlp-1024x2", &[])).unwrap();
    vec![
        Network {
            name: "digits",
            onnx: digits,
        },
        Network {
            name: "mlp-1024x2",
            onnx: mlp,
        },
    ]
}

fn image() -> Vec<f32> {
    (0..64).map(|i| ((i * 7) % 17) as f32).collect()
}

/// The engine as `ferry serve` configures it by default (no fuel counting): what a served call costs.
fn serving_engine() -> Arc<ModelRuntime> {
    static RUNTIME: std::sync::OnceLock<Arc<ModelRuntime>> = std::sync::OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            ModelRuntime::new(
                EngineSettings {
                    cache_dir: Some(workspace().join("target/ferry-bench-cache")),
                    total_instances: 16,
                    ..Default::default()
                },
                true,
            )
            .expect("runtime")
        })
        .clone()
}

fn instance(
    component: &str,
    weights: Option<&[u8]>,
    graphs: Option<&Arc<VersionGraphs>>,
) -> ModelInstance {
    ferry_tests::sample_instance(&serving_engine(), component, weights, graphs)
}

fn probabilities(outputs: &[Tensor]) -> Vec<f32> {
    let TensorData::Fp32(p) = &outputs[0].data else {
        panic!("probabilities are FP32")
    };
    p.clone()
}

fn bench_network(c: &mut Criterion, net: &Network) {
    let pixels = image();
    let input = [Tensor {
        name: "input".into(),
        shape: vec![1, 64],
        data: TensorData::Fp32(pixels.clone()),
    }];

    let tract = tract_onnx::onnx()
        .model_for_read(&mut net.onnx.as_slice())
        .and_then(|m| {
            let batch = m.sym("N");
            m.with_input_fact(0, f32::fact([TDim::Sym(batch), 64.into()]).into())
        })
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .expect("native tract");
    let mut session = ort::session::Session::builder()
        .and_then(|b| b.with_intra_threads(1))
        .and_then(|b| b.commit_from_memory(&net.onnx))
        .expect("native onnxruntime");

    let mut on_ort = instance(
        "digits-graph",
        None,
        Some(&ferry_tests::model_graph(
            &net.onnx,
            GraphBackend::OnnxRuntime,
        )),
    );
    let mut on_tract = instance(
        "digits-graph",
        None,
        Some(&ferry_tests::model_graph(&net.onnx, GraphBackend::Tract)),
    );
    let mut in_guest = instance("digits-onnx", Some(&net.onnx), None);

    // Same answers first: the comparison is only fair if all compute the same thing.
    let reference = probabilities(&in_guest.infer(&input, "{}").unwrap());
    for (how, got) in [
        (
            "wasi-nn-onnxruntime",
            probabilities(&on_ort.infer(&input, "{}").unwrap()),
        ),
        (
            "wasi-nn-tract",
            probabilities(&on_tract.infer(&input, "{}").unwrap()),
        ),
    ] {
        let worst = reference
            .iter()
            .zip(&got)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(
            worst < 1e-4,
            "{}: {how} differs from tract in the guest by {worst}",
            net.name
        );
    }

    let mut group = c.benchmark_group(net.name);
    group.bench_function("native-onnxruntime", |b| {
        b.iter(|| {
            let x = ort::value::Tensor::from_array(([1usize, 64], pixels.clone())).unwrap();
            let out = session.run(ort::inputs!["input" => x]).unwrap();
            black_box(out[0].try_extract_tensor::<f32>().unwrap().1.to_vec())
        })
    });
    group.bench_function("native-tract", |b| {
        b.iter(|| {
            let x = tract_ndarray::Array2::from_shape_vec((1, 64), pixels.clone()).unwrap();
            black_box(tract.run(tvec!(x.into_tensor().into())).unwrap())
        })
    });
    group.bench_function("wasi-nn-onnxruntime", |b| {
        b.iter(|| black_box(on_ort.infer(&input, "{}").unwrap()))
    });
    group.bench_function("wasi-nn-tract", |b| {
        b.iter(|| black_box(on_tract.infer(&input, "{}").unwrap()))
    });
    group.bench_function("tract-in-guest", |b| {
        b.iter(|| black_box(in_guest.infer(&input, "{}").unwrap()))
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    // The same ONNX Runtime library the host loads, for the native baseline.
    ort::init_from(
        ferry::host_api::graph::onnxruntime_library()
            .unwrap()
            .display()
            .to_string(),
    )
    .commit()
    .unwrap();
    let networks = networks();
    for net in &networks {
        bench_network(&mut c, net);
    }
    c.final_summary();

    for net in &networks {
        let t = |id: &str| mean_ns(net.name, id);
        let (Some(ort), Some(tract), Some(nn_ort), Some(nn_tract), Some(guest)) = (
            t("native-onnxruntime"),
            t("native-tract"),
            t("wasi-nn-onnxruntime"),
            t("wasi-nn-tract"),
            t("tract-in-guest"),
        ) else {
            continue;
        };
        println!(
            "{}: native onnxruntime {:.2} µs, tract {:.2} µs | wasi:nn onnxruntime {:.2} µs ({:.2}× native), \
             wasi:nn tract {:.2} µs ({:.2}× native) | tract in the guest {:.2} µs ({:.2}× native tract) — goal (issue 21): wasi:nn and tract in the guest each ≤ 1.5× native",
            net.name,
            ort / 1e3,
            tract / 1e3,
            nn_ort / 1e3,
            nn_ort / ort,
            nn_tract / 1e3,
            nn_tract / tract,
            guest / 1e3,
            guest / tract,
        );
    }
}
