"""Train python-sklearn-graph's gradient-boosted trees and export them to ONNX, with self-tests.

Data set (synthetic, seeded, so anyone can regenerate it): 20,000 booked rides. Each ride has
  distance_km   route length, log-normal around 3.3 km, clipped to 0.3-60
  hour          local hour of the booking, 0-23
  weekday       0 = Monday … 6 = Sunday
  weather       clear (70%), rain (20%), snow (10%)
  pickup_zone   downtown (40%), airport (15%), suburb (35%), stadium (10%)
  surge         price multiplier 1.0-3.0 (higher at rush hour, in bad weather, at stadiums late at night)
  wait_minutes  quoted wait for the driver, log-normal around 5 minutes, clipped to 1-30
                (longer in the suburbs, in snow and at rush hour)
  rider_trips   rides the rider completed before, 0-700; about 15% are new riders (fewer than 3)
The label is whether the rider cancels before pickup, drawn from a known logistic ground truth: long
waits raise the odds, sharply past 12 minutes and in the snow past 10, as do surge pricing (more so for
new riders), new riders and short trips with long waits; experienced riders, airport pickups and rain
lower them. About a fifth of the rides are cancelled.

The model is scikit-learn's GradientBoostingClassifier (150 trees of depth 3) on the features computed
by ../features.py — the same module the served model imports — exported to ONNX by skl2onnx without
ZipMap, so the graph's outputs are `label` (INT64 [N]) and `probabilities` (FP32 [N, 2]) for input
`input` (FP32 [N, 18]). The host runs the graph with ONNX Runtime. The self-tests are scikit-learn's own
predict_proba for 30 held-out rides, computed on the float32 feature rows the served model sends; the
script checks that onnxruntime on the written graph agrees within 1e-5 on every one.

The training profile (../profile.json: the distributions of the training rides' request fields and of
the model's answers on them, which the host compares live traffic with) comes from the SDK's
`ferry_sdk.profile.write_profile`.

Run: python train.py   (writes ../model.onnx, ../tests.json, ../profile.json and ../example-request.json)
     python train.py --profile-only   (only ../profile.json, from the committed model.onnx)
"""
import json
import pathlib
import sys

import numpy as np
import onnx
import onnxruntime as ort
import skl2onnx.common.tree_ensemble
import sklearn
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.metrics import roc_auc_score

HERE = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent.parent / "guest-sdk" / "python"))
from features import NAMES, WEATHER, ZONES, is_late_night, is_rush_hour, ride_features  # noqa: E402
from ferry_sdk.profile import write_profile  # noqa: E402

TOLERANCE = 1e-5

# skl2onnx 1.19.1 fills TreeEnsembleClassifier's nodes_missing_value_tracks_true (an INTS attribute) with
# Python bools, which protobuf 7 refuses ("Expected an int, got a boolean"). Hand it ints instead; the
# graph is the same.
_add_node = skl2onnx.common.tree_ensemble.add_node


def _add_node_with_int_flags(*args, nodes_missing_value_tracks_true=False, **kwargs):
    return _add_node(*args, nodes_missing_value_tracks_true=int(nodes_missing_value_tracks_true), **kwargs)


skl2onnx.common.tree_ensemble.add_node = _add_node_with_int_flags


def rides(n: int, rng: np.random.Generator) -> tuple[list[dict], np.ndarray]:
    distance = np.clip(rng.lognormal(1.2, 0.6, n), 0.3, 60.0).round(2)
    hour = rng.integers(0, 24, n)
    weekday = rng.integers(0, 7, n)
    weather = rng.choice(WEATHER, n, p=[0.7, 0.2, 0.1])
    zone = rng.choice(ZONES, n, p=[0.4, 0.15, 0.35, 0.1])
    surge_noise = rng.exponential(0.15, n)
    wait_noise = rng.lognormal(np.log(5.0), 0.5, n)
    trips = np.where(rng.random(n) < 0.15, rng.integers(0, 3, n), rng.poisson(rng.exponential(60.0, n)) + 3)
    coin = rng.random(n)
    out, cancelled = [], np.empty(n, dtype=np.int64)
    for i in range(n):
        h, d, w, z = int(hour[i]), int(weekday[i]), str(weather[i]), str(zone[i])
        rush, night = is_rush_hour(h, d), is_late_night(h)
        surge = 1.0 + surge_noise[i] + 0.4 * rush + 0.3 * (w != "clear") + 0.5 * (z == "stadium" and night)
        wait = wait_noise[i] * (1.4 if z == "suburb" else 1.0) * (1.5 if w == "snow" else 1.0) * (1.2 if rush else 1.0)
        ride = {"distance_km": float(distance[i]), "hour": h, "weekday": d, "weather": w, "pickup_zone": z,
                "surge": round(float(min(surge, 3.0)), 1), "wait_minutes": round(float(np.clip(wait, 1.0, 30.0)), 1),
                "rider_trips": int(trips[i])}
        new = ride["rider_trips"] < 3
        wait = ride["wait_minutes"]
        logit = (
            -1.7
            + 0.09 * (wait - 5.0)
            + 0.9 * (wait > 12.0)
            + 0.8 * (w == "snow" and wait > 10.0)
            + 1.6 * (ride["surge"] - 1.0) * (1.3 if new else 0.7)
            + 0.6 * new
            - 0.2 * np.log1p(ride["rider_trips"])
            - 0.5 * (z == "airport")
            - 0.4 * (w == "rain")
            + 0.7 * (wait / (1.0 + ride["distance_km"]) > 3.0)
            + 0.4 * (z == "stadium" and night)
        )
        out.append(ride)
        cancelled[i] = coin[i] < 1.0 / (1.0 + np.exp(-logit))
    return out, cancelled


def matrix(trips: list[dict]) -> np.ndarray:
    """The rows the served model sends: features computed in Python floats, then FP32."""
    return np.array([ride_features(**t) for t in trips], dtype=np.float32)


def training_profile(trips: list[dict], probabilities: np.ndarray, labels: np.ndarray) -> None:
    """../profile.json: each request field of the training rides, and the model's answers on them."""
    doc = write_profile(
        HERE / "profile.json",
        features={name: [t[name] for t in trips] for name in trips[0]},
        outputs={"cancel_probability": [float(p) for p in probabilities],
                 "will_cancel": [bool(label == 1) for label in labels]},
    )
    print(f"profile.json: {len(doc['features'])} features, {len(doc['outputs'])} outputs, {doc['rows']} rides")


def main() -> None:
    rng = np.random.default_rng(20261201)
    trips, cancelled = rides(20_000, rng)
    train, test = slice(0, 16_000), slice(16_000, None)
    X_train, X_test = matrix(trips[train]), matrix(trips[test])
    if "--profile-only" in sys.argv:
        session = ort.InferenceSession(str(HERE / "model.onnx"), providers=["CPUExecutionProvider"])
        labels, probabilities = session.run(["label", "probabilities"], {"input": X_train})
        training_profile(trips[train], probabilities[:, 1], labels)
        return
    model = GradientBoostingClassifier(n_estimators=150, max_depth=3, learning_rate=0.1, subsample=0.8,
                                       random_state=7)
    model.fit(X_train, cancelled[train])
    p_test = model.predict_proba(X_test)[:, 1]
    print(f"cancellation rate {cancelled.mean():.3f}; held-out accuracy {model.score(X_test, cancelled[test]):.4f}, "
          f"AUC {roc_auc_score(cancelled[test], p_test):.4f} on {len(X_test)} rides")

    onx = to_onnx(
        model,
        initial_types=[("input", FloatTensorType([None, len(NAMES)]))],
        options={id(model): {"zipmap": False}},
        target_opset={"": 15, "ai.onnx.ml": 3},
    )
    outputs = [o.name for o in onx.graph.output]
    assert outputs == ["label", "probabilities"], f"skl2onnx named the outputs {outputs}"
    # The converter lists the opsets in set order (varies run to run); sort them so the file is reproducible.
    opsets = sorted(((o.domain, o.version) for o in onx.opset_import))
    del onx.opset_import[:]
    onx.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in opsets)
    onx.doc_string = "python-sklearn-graph: rider cancellation, GradientBoostingClassifier (training/train.py)"
    onnx.checker.check_model(onx, full_check=True)
    path = HERE / "model.onnx"
    path.write_bytes(onx.SerializeToString())
    print("opsets:", {o.domain or "ai.onnx": o.version for o in onx.opset_import})
    print("ops:", sorted({f"{n.domain or 'ai.onnx'}:{n.op_type}" for n in onx.graph.node}))
    print(f"{path.name}: {path.stat().st_size} bytes")

    # Self-tests: 30 held-out rides in order, the first 15 predicted to cancel and the first 15 predicted
    # not to, skipping any within 1e-3 of the 0.5 decision boundary (so `will_cancel` cannot flip on
    # float32 rounding).
    held_out, quota = [], {True: 15, False: 15}
    for t, p in zip(trips[test], p_test):
        if abs(p - 0.5) > 1e-3 and quota[bool(p > 0.5)] > 0:
            quota[bool(p > 0.5)] -= 1
            held_out.append(t)
    rows = matrix(held_out)
    expected = model.predict_proba(rows)
    labels = model.predict(rows)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got_labels, got_probs = session.run(["label", "probabilities"], {"input": rows})
    delta = float(np.max(np.abs(got_probs.astype(np.float64) - expected)))
    print(f"onnxruntime vs scikit-learn predict_proba on the {len(rows)} self-test rides: max |Δ| {delta:.2e}")
    assert delta <= TOLERANCE, f"onnxruntime disagrees with scikit-learn: max |Δ| {delta:.2e}"
    assert (got_labels == labels).all(), "onnxruntime's labels disagree with scikit-learn's"
    all_labels, all_probs = session.run(["label", "probabilities"], {"input": X_test})
    print(f"  (all {len(X_test)} held-out rides: max |Δ| "
          f"{float(np.max(np.abs(all_probs - model.predict_proba(X_test)))):.2e}, "
          f"{int((all_labels != model.predict(X_test)).sum())} labels differ)")

    cases = [
        {"name": f"ride-{i}", "request": {"features": t},
         "response": {"cancel_probability": float(p[1]), "will_cancel": bool(lab == 1)}}
        for i, (t, p, lab) in enumerate(zip(held_out, expected, labels))
    ]
    print(f"self-tests: {len(cases)} rides, {int(labels.sum())} predicted to cancel")
    tests = {"source": f"scikit-learn {sklearn.__version__} GradientBoostingClassifier.predict_proba on held-out "
                       "rides, float32 features (training/train.py)",
             "tolerance": TOLERANCE, "cases": cases}
    (HERE / "tests.json").write_text(json.dumps(tests, indent=1) + "\n")
    training_profile(trips[train], model.predict_proba(X_train)[:, 1], model.predict(X_train))
    example = {"features": {"distance_km": 2.1, "hour": 18, "weekday": 4, "weather": "rain",
                            "pickup_zone": "suburb", "surge": 1.8, "wait_minutes": 14.5, "rider_trips": 1}}
    (HERE / "example-request.json").write_text(json.dumps(example, indent=2) + "\n")
    print("example-request.json → cancel probability", float(model.predict_proba(matrix([example["features"]]))[0, 1]))


if __name__ == "__main__":
    main()
