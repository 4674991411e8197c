"""Training script stub for {{name}}: fit the model, then write ../weights.json and ../tests.json.

The expected outputs in tests.json are computed here, by the training code, from the weights it just
wrote: retrained weights change the answers, so the tests travel with the weights
(`ferry push --model {{name}} --weights weights.json --tests tests.json`). The features come from the
model's own features.py, so training and serving cannot drift apart.
"""
import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))
from features import trip_features  # noqa: E402


def fit() -> dict:
    # Stand-in for real training (e.g. scikit-learn's LinearRegression on your trips' features).
    return {"coef": [6.5, -1.2, -2.0], "intercept": 3.0}


def predict(w: dict, distance_km: float, hour: int) -> float:
    return sum(a * b for a, b in zip(trip_features(distance_km, hour), w["coef"])) + w["intercept"]


def main() -> None:
    w = fit()
    (HERE / "weights.json").write_text(json.dumps(w) + "\n")
    cases = [
        {"name": f"trip-{i}", "request": {"features": {"distance_km": d, "hour": h}},
         "response": {"eta_minutes": predict(w, d, h)}}
        for i, (d, h) in enumerate([(0.5, 0), (3.2, 8), (12.0, 17), (25.0, 23)])
    ]
    tests = {"source": "training/train.py", "tolerance": 1e-9, "cases": cases}
    (HERE / "tests.json").write_text(json.dumps(tests, indent=1) + "\n")


if __name__ == "__main__":
    main()
