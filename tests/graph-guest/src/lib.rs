//! A model over the digits network as its graph `model`, whose requests say what to do with it:
//! `{"rows": N}` runs N generated images through it (a large N makes one long native run),
//! `{"load_bytes": true}` hands the host graph bytes itself, `{"graph": "NAME"}` opens another name,
//! `{"pixels": K}` sends rows of K pixels where the graph takes 64.

use ferry_sdk::__private::bindings::wasi::nn::graph::{load, ExecutionTarget, GraphEncoding};
use ferry_sdk::prelude::*;

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct Request {
    rows: u64,
    pixels: Option<u64>,
    load_bytes: bool,
    graph: Option<String>,
}

struct GraphGuest {
    model: Graph,
}

impl Model for GraphGuest {
    fn load(_init: Init) -> Result<Self> {
        Ok(GraphGuest {
            model: Graph::named("model"),
        })
    }

    fn metadata(&self) -> Metadata {
        Metadata::new("graph-guest").predicts_json()
    }

    fn predict(&self, request: Value) -> Result<Value> {
        let request: Request =
            serde_json::from_value(request).map_err(|e| Error::invalid_input(e.to_string()))?;
        if request.load_bytes {
            let bytes = vec![0u8; 1024];
            return match load(&[bytes], GraphEncoding::Onnx, ExecutionTarget::Cpu) {
                Ok(_) => Ok(json!({"loaded": true})),
                Err(e) => Err(Error::internal(format!("load: {}", e.data()))),
            };
        }
        let graph = match &request.graph {
            Some(name) => Graph::named(name),
            None => Graph::named("model"),
        };
        let graph = if request.graph.is_some() {
            &graph
        } else {
            &self.model
        };
        let pixels = request.pixels.unwrap_or(64);
        let rows = request.rows.max(1);
        let image: Vec<f32> = (0..rows * pixels).map(|i| (i % 17) as f32).collect();
        let out = graph.run(&[Tensor::fp32("input", [rows, pixels], image)])?;
        let TensorData::Fp32(p) = &out.get("probabilities")?.data else {
            return Err(Error::internal("probabilities are not FP32"));
        };
        Ok(json!({"rows": rows, "first": &p[..10]}))
    }
}

export_model!(GraphGuest);
