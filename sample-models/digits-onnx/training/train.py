"""Train the digits-onnx network and export it to ONNX.

Data: `sklearn.datasets.load_digits()` — 1,797 handwritten digits, 8×8 pixels with intensities 0..16.
Seeded 75/25 split. Model: a multi-layer perceptron (64 → 64 ReLU → 10 softmax) trained by
scikit-learn, exported by skl2onnx (no ZipMap, so the probabilities are a plain [N, 10] tensor).

Writes ../digits.onnx (the version's weights blob: the guest runs it with tract-onnx) and
../tests.json: 30 held-out images with the probabilities onnxruntime computes from the same file
(|Δ| ≤ 1e-4), and the predicted label; and ../profile.json (also ../../digits-graph/profile.json, which
serves the same network): the training images' distribution per pixel (`input[0]` … `input[63]`) and of
the network's answers on them (`probabilities[0]` … `probabilities[9]`, `label`), which the host compares
live traffic with (`ferry_sdk.profile`).

Run: python train.py   (python train.py --profile-only: only the profiles, from the committed digits.onnx)
"""
import json
import pathlib
import sys

import numpy as np
import onnx
import onnx.utils
import onnxruntime as ort
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

HERE = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE.parent.parent / "guest-sdk" / "python"))
from ferry_sdk.profile import write_profile  # noqa: E402


def training_profile(X_train: np.ndarray, probabilities: np.ndarray) -> None:
    """The profile of the training images and the network's answers on them, for both samples that
    serve this network."""
    features = {f"input[{i}]": X_train[:, i].tolist() for i in range(X_train.shape[1])}
    outputs = {f"probabilities[{i}]": probabilities[:, i].tolist() for i in range(probabilities.shape[1])}
    outputs["label"] = [str(int(k)) for k in probabilities.argmax(axis=1)]
    for sample in (HERE, HERE.parent / "digits-graph"):
        doc = write_profile(sample / "profile.json", features=features, outputs=outputs)
    print(f"profile.json: {len(doc['features'])} features, {len(doc['outputs'])} outputs, {doc['rows']} images")


def main() -> None:
    digits = load_digits()
    X = digits.data.astype(np.float32)
    y = digits.target
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=3)
    if "--profile-only" in sys.argv:
        session = ort.InferenceSession(str(HERE / "digits.onnx"), providers=["CPUExecutionProvider"])
        training_profile(X_train, session.run(["probabilities"], {"input": X_train})[0])
        return
    model = MLPClassifier(hidden_layer_sizes=(64,), max_iter=600, random_state=3)
    model.fit(X_train, y_train)
    print(f"held-out accuracy {model.score(X_test, y_test):.4f}")

    onx = to_onnx(
        model,
        initial_types=[("input", FloatTensorType([None, 64]))],
        options={id(model): {"zipmap": False}},
        target_opset=13,
    )
    full = HERE / "training" / "digits-full.onnx"
    full.write_bytes(onx.SerializeToString())
    # The label branch uses ai.onnx.ml's ArrayFeatureExtractor, which tract does not run; the guest takes
    # the argmax itself. Ship only the subgraph input -> probabilities.
    path = HERE / "digits.onnx"
    onnx.utils.extract_model(str(full), str(path), ["input"], ["probabilities"])
    full.unlink()
    shipped = onnx.load(str(path))
    print("ops:", sorted({n.op_type for n in shipped.graph.node}))

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    full_session = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    rows = X_test[:30]
    (probs,) = session.run(["probabilities"], {"input": rows})
    (labels,) = full_session.run(["label"], {"input": rows})
    assert np.allclose(probs, model.predict_proba(rows), atol=1e-5), "onnxruntime disagrees with scikit-learn"

    def case(name, block, lab, prob):
        n = len(block)
        return {
            "name": name,
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [n, 64], "data": block.flatten().tolist()}],
            "outputs": [
                {"name": "probabilities", "datatype": "FP32", "shape": [n, 10], "data": prob.flatten().tolist()},
                {"name": "label", "datatype": "INT64", "shape": [n], "data": lab.tolist()},
            ],
        }

    cases = [case(f"onnxruntime-parity-{i}", rows[i : i + 1], labels[i : i + 1], probs[i : i + 1]) for i in range(30)]
    cases.append(case("onnxruntime-parity-batch-30", rows, labels, probs))
    tests = {"source": "onnxruntime 1.23 on digits.onnx", "tolerance": 1e-4, "cases": cases}
    (HERE / "tests.json").write_text(json.dumps(tests) + "\n")
    training_profile(X_train, session.run(["probabilities"], {"input": X_train})[0])

    # Held-out images (not among the self-test rows) with their true digits, for docs and end-to-end tests.
    held = {"images": X_test[30:40].tolist(), "digits": y_test[30:40].tolist()}
    (HERE / "held-out.json").write_text(json.dumps(held) + "\n")
    example = {
        "id": "digits-example",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": X_test[30].tolist()}],
        "outputs": [{"name": "probabilities"}, {"name": "label"}],
    }
    (HERE / "example-request.json").write_text(json.dumps(example, indent=2) + "\n")


if __name__ == "__main__":
    main()
