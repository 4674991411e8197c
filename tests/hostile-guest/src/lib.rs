//! A hostile model. Its config picks the attack (`{"attack": "infinite-loop"}`); `predict` carries it
//! out. With no attack it echoes the request, which shows a replacement instance is healthy.

use ferry_sdk::prelude::*;
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(default)]
struct Config {
    attack: String,
    /// Bytes of output for `huge-output`.
    output_bytes: usize,
}

struct Hostile {
    config: Config,
}

impl Model for Hostile {
    fn load(init: Init) -> Result<Self> {
        let config: Config = init.config_as()?;
        if config.attack == "fail-init" {
            return Err(Error::internal("refusing to start: fail-init"));
        }
        if config.attack == "print-at-init" {
            // Writing to stdout opens a WASI stream the guest's libc keeps: state a snapshot of the
            // initialised instance cannot carry, so the host must start this one with init per instance.
            println!("hostile guest: hello from init");
        }
        Ok(Hostile { config })
    }

    fn metadata(&self) -> Metadata {
        let mut m = Metadata::new("hostile")
            .description(format!("attack: {}", self.config.attack))
            .predicts_json();
        if self.config.attack.is_empty() {
            // The echo model takes one input per datatype and answers each unchanged.
            for (name, datatype) in ECHO_INPUTS {
                m = m
                    .input(TensorSpec::new(name, datatype, [-1]))
                    .output(TensorSpec::new(name, datatype, [-1]));
            }
        }
        m
    }

    fn infer(&self, inputs: Inputs) -> Result<Vec<Tensor>> {
        if !self.config.attack.is_empty() {
            return self.predict(json!({})).map(|_| vec![]);
        }
        Ok(inputs.tensors().to_vec())
    }

    fn predict(&self, request: Value) -> Result<Value> {
        match self.config.attack.as_str() {
            "" | "print-at-init" => Ok(json!({ "echo": request })),
            "infinite-loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "memory-bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 16 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "stack-overflow" => Ok(json!({ "depth": recurse(std::hint::black_box(1)) })),
            "trap" => {
                #[cfg(target_arch = "wasm32")]
                core::arch::wasm32::unreachable();
                #[cfg(not(target_arch = "wasm32"))]
                unreachable!()
            }
            "panic" => panic!("hostile guest panicked on purpose"),
            "log-flood" => loop {
                println!("flooding the host's logs with a line that never ends ...........................");
            },
            "sandbox-escape" => {
                let file = std::fs::read_to_string("/etc/passwd").map(|s| s.len());
                let socket = std::net::TcpStream::connect("127.0.0.1:22").map(|_| ());
                let env = std::env::vars().count();
                Ok(json!({
                    "file": file.map_err(|e| e.to_string()).err(),
                    "socket": socket.map_err(|e| e.to_string()).err(),
                    "env_vars": env,
                }))
            }
            // Busy for `ms` milliseconds of the request, then answers: a slow but honest model.
            "spin" => {
                let ms = request["ms"].as_u64().unwrap_or(100) as u128;
                let started = std::time::Instant::now();
                while started.elapsed().as_millis() < ms {
                    std::hint::spin_loop();
                }
                Ok(json!({ "spun_ms": ms as u64 }))
            }
            // A fixed amount of arithmetic per call (`iterations` of the request): slow by the CPU it
            // needs, not by the clock, so it takes longer when it gets less of a core.
            "work" => {
                let n = request["iterations"].as_u64().unwrap_or(1_000_000);
                let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
                for _ in 0..n {
                    x = std::hint::black_box(
                        x.wrapping_mul(6_364_136_223_846_793_005)
                            .wrapping_add(1_442_695_040_888_963_407),
                    );
                }
                Ok(json!({ "iterations": n, "x": x }))
            }
            "huge-output" => Ok(json!({ "blob": "x".repeat(self.config.output_bytes) })),
            // A fast model as authors write them: it answers in microseconds, and now and then
            // prints a line (`"debug": true`) or waits on a WASI clock (`"sleep_ms": N`).
            "chatty" => {
                if request["debug"].as_bool() == Some(true) {
                    println!("chatty: debug request {request}");
                    eprintln!("chatty: and a line on stderr");
                }
                if let Some(ms) = request["sleep_ms"].as_u64() {
                    std::thread::sleep(std::time::Duration::from_millis(ms));
                }
                Ok(json!({ "echo": request }))
            }
            other => Err(Error::invalid_input(format!("unknown attack {other:?}"))),
        }
    }
}

const ECHO_INPUTS: [(&str, Datatype); 12] = [
    ("bool", Datatype::Bool),
    ("uint8", Datatype::Uint8),
    ("uint16", Datatype::Uint16),
    ("uint32", Datatype::Uint32),
    ("uint64", Datatype::Uint64),
    ("int8", Datatype::Int8),
    ("int16", Datatype::Int16),
    ("int32", Datatype::Int32),
    ("int64", Datatype::Int64),
    ("fp32", Datatype::Fp32),
    ("fp64", Datatype::Fp64),
    ("bytes", Datatype::Bytes),
];

#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    // A frame that cannot be optimised into a loop.
    let frame = std::hint::black_box([depth; 16]);
    recurse(frame[3] + 1) + frame[7]
}

export_model!(Hostile);
