"""Train the gbdt-graph classifier: LightGBM gradient-boosted trees on scikit-learn's bundled breast
cancer data, exported to ONNX for the host to run.

Data: `sklearn.datasets.load_breast_cancer()` — 569 tumours, 30 features computed from a digitised image
of a fine-needle aspirate (mean, standard error and worst value of radius, texture, perimeter, area,
smoothness, compactness, concavity, concave points, symmetry and fractal dimension); target 0 =
malignant, 1 = benign. Cast to float32 (what the graph takes) before anything else; seeded, stratified
75/25 split.

Model: LightGBM's LGBMClassifier (200 trees of at most 15 leaves), exported by onnxmltools without
ZipMap, so the graph takes `features` (FP32 [N, 30]) and gives `label` (INT64 [N]) and `probabilities`
(FP32 [N, 2]). The split thresholds are then moved to the float32 just below LightGBM's double
thresholds where rounding went up (see exact_float32_thresholds), so the graph's float32 comparisons
route every float32 row exactly as LightGBM does.

Writes ../model.onnx (the graph: the host runs it with ONNX Runtime through wasi:nn), ../tests.json:
20 held-out rows one at a time and the same 20 as one batch, with LightGBM's own predict_proba and
predicted label (the script checks that onnxruntime on the written graph agrees within 1e-5), and
../example-request.json (an Open Inference Protocol request for two rows), and ../profile.json: the
training rows' distribution per feature (`features[0]` … `features[29]`) and of the graph's answers on
them (`probabilities[0]`, `probabilities[1]`, `label`), which the host compares live traffic with
(`ferry_sdk.profile`).

Run: python train.py   (python train.py --profile-only: only ../profile.json, from the committed model.onnx)
"""
import json
import pathlib
import sys

import lightgbm
import numpy as np
import onnx
import onnxmltools
import onnxruntime as ort
from onnxmltools.convert.common.data_types import FloatTensorType
from sklearn.datasets import load_breast_cancer
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

HERE = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE.parent.parent / "guest-sdk" / "python"))
from ferry_sdk.profile import write_profile  # noqa: E402


def training_profile(X_train: np.ndarray) -> None:
    """../profile.json: each feature of the training rows, and the committed graph's answers on them."""
    session = ort.InferenceSession(str(HERE / "model.onnx"), providers=["CPUExecutionProvider"])
    labels, probabilities = session.run(["label", "probabilities"], {"features": X_train})
    outputs = {f"probabilities[{i}]": probabilities[:, i].tolist() for i in range(probabilities.shape[1])}
    outputs["label"] = [str(int(k)) for k in labels]
    doc = write_profile(HERE / "profile.json",
                        features={f"features[{i}]": X_train[:, i].tolist() for i in range(X_train.shape[1])},
                        outputs=outputs)
    print(f"profile.json: {len(doc['features'])} features, {len(doc['outputs'])} outputs, {doc['rows']} rows")
TOLERANCE = 1e-5
CASES = 20


def exact_float32_thresholds(onx: onnx.ModelProto, booster: lightgbm.Booster) -> int:
    """LightGBM sends a row left when double(x) <= t for its double threshold t; the graph compares the
    float32 x with a float32 threshold. onnxmltools rounds t to the nearest float32, which may lie above t,
    and then an x in between goes the wrong way (with plain rounding one of the 569 rows here lands in a
    different leaf: its raw score moves by 0.08). For float32 x, x <= t exactly when x <= the largest
    float32 not above t, so store that instead. Walks each graph tree beside LightGBM's own (true branch =
    left child), checking feature and rounded threshold node by node. Returns how many thresholds moved."""
    (ensemble,) = [n for n in onx.graph.node if n.op_type == "TreeEnsembleClassifier"]
    attrs = {a.name: a for a in ensemble.attribute}
    modes, values = attrs["nodes_modes"].strings, attrs["nodes_values"].floats
    trees, features = attrs["nodes_treeids"].ints, attrs["nodes_featureids"].ints
    at = {(t, n): i for i, (t, n) in enumerate(zip(trees, attrs["nodes_nodeids"].ints))}
    true_ids, false_ids = attrs["nodes_truenodeids"].ints, attrs["nodes_falsenodeids"].ints
    moved, visited = 0, 0

    def walk(tree_id: int, node_id: int, node: dict) -> None:
        nonlocal moved, visited
        i = at[(tree_id, node_id)]
        visited += 1
        if "split_index" not in node:
            assert modes[i] == b"LEAF", (tree_id, node_id)
            return
        t = node["threshold"]
        assert node["decision_type"] == "<=" and node["missing_type"] == "None", node
        assert modes[i] == b"BRANCH_LEQ" and features[i] == node["split_feature"], (tree_id, node_id)
        assert np.float32(values[i]) == np.float32(t), (tree_id, node_id, values[i], t)
        v = np.float32(t)
        if float(v) > t:
            v = np.nextafter(v, np.float32(-np.inf))
            moved += 1
        values[i] = float(v)
        walk(tree_id, true_ids[i], node["left_child"])
        walk(tree_id, false_ids[i], node["right_child"])

    for tree in booster.dump_model()["tree_info"]:
        tree_id = tree["tree_index"]
        children = {c for i, tid in enumerate(trees) if tid == tree_id and modes[i] != b"LEAF"
                    for c in (true_ids[i], false_ids[i])}
        (root,) = {n for (tid, n) in at if tid == tree_id} - children
        walk(tree_id, root, tree["tree_structure"])
    assert visited == len(modes), (visited, len(modes))
    return moved


def main() -> None:
    data = load_breast_cancer()
    X = data.data.astype(np.float32)
    y = data.target
    n_features = X.shape[1]
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=11, stratify=y)
    if "--profile-only" in sys.argv:
        training_profile(X_train)
        return
    model = lightgbm.LGBMClassifier(
        n_estimators=200, num_leaves=15, learning_rate=0.05, min_child_samples=10, subsample=0.8,
        subsample_freq=1, colsample_bytree=0.8, random_state=11, deterministic=True, n_jobs=1, verbose=-1,
    )
    model.fit(X_train, y_train)
    p_test = model.predict_proba(X_test)
    print(f"held-out accuracy {model.score(X_test, y_test):.4f}, AUC {roc_auc_score(y_test, p_test[:, 1]):.4f} "
          f"on {len(X_test)} tumours")

    onx = onnxmltools.convert_lightgbm(
        model,
        name="gbdt-graph",
        initial_types=[("features", FloatTensorType([None, n_features]))],
        zipmap=False,
        target_opset=15,
    )
    outputs = [o.name for o in onx.graph.output]
    assert outputs == ["label", "probabilities"], f"outputs are {outputs}"
    # onnxmltools declares `label` as [1]; it is one label per row.
    (label_dim,) = onx.graph.output[0].type.tensor_type.shape.dim
    label_dim.Clear()
    moved = exact_float32_thresholds(onx, model.booster_)
    print(f"thresholds: {moved} moved down to the float32 below LightGBM's double threshold")
    # The converter lists the opsets in set order (varies run to run); sort them so the file is reproducible.
    opsets = sorted(((o.domain, o.version) for o in onx.opset_import))
    del onx.opset_import[:]
    onx.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in opsets)
    onx.doc_string = "gbdt-graph: breast cancer, LightGBM LGBMClassifier (training/train.py)"
    onnx.checker.check_model(onx, full_check=True)
    path = HERE / "model.onnx"
    path.write_bytes(onx.SerializeToString())
    print("opsets:", {o.domain or "ai.onnx": o.version for o in onx.opset_import})
    print("ops:", sorted({f"{n.domain or 'ai.onnx'}:{n.op_type}" for n in onx.graph.node}))
    print(f"{path.name}: {path.stat().st_size} bytes")

    rows = X_test[:CASES]
    expected = model.predict_proba(rows)
    labels = model.predict(rows).astype(np.int64)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got_labels, got_probs = session.run(["label", "probabilities"], {"features": rows})
    delta = float(np.max(np.abs(got_probs.astype(np.float64) - expected)))
    print(f"onnxruntime vs LightGBM predict_proba on the {CASES} self-test rows: max |Δ| {delta:.2e}")
    assert delta <= TOLERANCE, f"onnxruntime disagrees with LightGBM: max |Δ| {delta:.2e}"
    assert (got_labels == labels).all(), "onnxruntime's labels disagree with LightGBM's"
    all_labels, all_probs = session.run(["label", "probabilities"], {"features": X})
    print(f"  (all {len(X)} rows: max |Δ| {float(np.max(np.abs(all_probs - model.predict_proba(X)))):.2e}, "
          f"{int((all_labels != model.predict(X)).sum())} labels differ)")

    def case(name, block, lab, prob):
        n = len(block)
        return {
            "name": name,
            "inputs": [{"name": "features", "datatype": "FP32", "shape": [n, n_features],
                        "data": block.flatten().tolist()}],
            "outputs": [
                {"name": "probabilities", "datatype": "FP32", "shape": [n, 2], "data": prob.flatten().tolist()},
                {"name": "label", "datatype": "INT64", "shape": [n], "data": lab.tolist()},
            ],
        }

    cases = [case(f"lightgbm-parity-{i}", rows[i : i + 1], labels[i : i + 1], expected[i : i + 1])
             for i in range(CASES)]
    cases.append(case(f"lightgbm-parity-batch-{CASES}", rows, labels, expected))
    tests = {"source": f"lightgbm {lightgbm.__version__} LGBMClassifier.predict_proba on float32 held-out rows "
                       "(training/train.py)",
             "tolerance": TOLERANCE, "cases": cases}
    (HERE / "tests.json").write_text(json.dumps(tests) + "\n")
    training_profile(X_train)
    example = {
        "id": "gbdt-graph-example",
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [2, n_features],
                    "data": X_test[CASES : CASES + 2].tolist()}],
        "outputs": [{"name": "probabilities"}, {"name": "label"}],
    }
    (HERE / "example-request.json").write_text(json.dumps(example, indent=2) + "\n")


if __name__ == "__main__":
    main()
