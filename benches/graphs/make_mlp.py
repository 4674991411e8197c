"""Write a few-MB ONNX graph for benchmarks: a multi-layer perceptron with random (seeded) weights.

The graph (opset 13, float32) takes `input` FP32 [N, 64] and gives `probabilities` FP32 [N, 10]:
  64 → 1024 ReLU → 1024 ReLU → 10 softmax
(64 inputs and 10 classes, as the digits network, so that the digits samples run it unchanged: digits-onnx
with tract inside the component, digits-graph through wasi:nn)
built from MatMul, Add, Relu and Softmax only, with the weights as initializers, so tract runs it as well
as ONNX Runtime. Weights are He-normal (σ = √(2 / fan-in)), biases N(0, 0.01²); with the defaults the file
is about 4.5 MB (1.13 M parameters). Nothing is trained: the answers mean nothing, only the work does.
The output is generated, not committed: write it under target/.

After writing, the script checks the graph with onnx.checker and, when onnxruntime is installed, runs a
seeded batch through it and compares with the same network in numpy (max |Δ| printed, must be ≤ 1e-5).

Run: python benches/graphs/make_mlp.py --out target/graphs/mlp.onnx [--inputs 64] [--hidden 1024] [--layers 2]
     [--seed 20261201]
"""
import argparse
import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CLASSES = 10


def build(inputs: int, hidden: int, layers: int, seed: int) -> tuple[onnx.ModelProto, list[tuple[np.ndarray, np.ndarray]]]:
    rng = np.random.default_rng(seed)
    widths = [inputs] + [hidden] * layers + [CLASSES]
    params, nodes, initializers = [], [], []
    x = "input"
    for k, (fan_in, fan_out) in enumerate(zip(widths, widths[1:])):
        w = rng.normal(0.0, np.sqrt(2.0 / fan_in), (fan_in, fan_out)).astype(np.float32)
        b = rng.normal(0.0, 0.01, fan_out).astype(np.float32)
        params.append((w, b))
        initializers += [numpy_helper.from_array(w, f"w{k}"), numpy_helper.from_array(b, f"b{k}")]
        nodes.append(helper.make_node("MatMul", [x, f"w{k}"], [f"matmul{k}"], name=f"matmul{k}"))
        last = k == len(widths) - 2
        nodes.append(helper.make_node("Add", [f"matmul{k}", f"b{k}"], ["logits" if last else f"add{k}"], name=f"add{k}"))
        if not last:
            nodes.append(helper.make_node("Relu", [f"add{k}"], [f"relu{k}"], name=f"relu{k}"))
            x = f"relu{k}"
    nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=-1))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", inputs])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", CLASSES])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="ferry-benches",
                              doc_string=f"benchmark MLP {' → '.join(map(str, widths))}, random weights (seed {seed})")
    model.ir_version = 8
    return model, params


def reference(params: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray) -> np.ndarray:
    for k, (w, b) in enumerate(params):
        x = x @ w + b
        if k < len(params) - 1:
            x = np.maximum(x, 0.0)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=pathlib.Path, help="where to write the .onnx file")
    parser.add_argument("--inputs", type=int, default=64, help="width of the input (default 64, as digits)")
    parser.add_argument("--hidden", type=int, default=1024, help="width of each hidden layer (default 1024)")
    parser.add_argument("--layers", type=int, default=2, help="number of hidden layers (default 2)")
    parser.add_argument("--seed", type=int, default=20261201)
    args = parser.parse_args()

    model, params = build(args.inputs, args.hidden, args.layers, args.seed)
    onnx.checker.check_model(model, full_check=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(model.SerializeToString())
    n_params = sum(w.size + b.size for w, b in params)
    print(f"{args.out}: {args.out.stat().st_size} bytes, {n_params} parameters, "
          f"ops {sorted({n.op_type for n in model.graph.node})}")

    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime not installed: not run")
        return
    x = np.random.default_rng(args.seed + 1).normal(0.0, 1.0, (8, args.inputs)).astype(np.float32)
    session = ort.InferenceSession(str(args.out), providers=["CPUExecutionProvider"])
    (got,) = session.run(["probabilities"], {"input": x})
    delta = float(np.max(np.abs(got - reference(params, x))))
    print(f"onnxruntime {ort.__version__} vs numpy on a batch of {len(x)}: max |Δ| {delta:.2e}; "
          f"argmax {got.argmax(axis=1).tolist()}")
    assert got.shape == (len(x), CLASSES) and delta <= 1e-5, delta


if __name__ == "__main__":
    main()
