"""Training script stub for {{name}}: fit the model, then write ../weights.json and ../tests.json.

The tests are computed here, by the training code, from the weights it just wrote: retrained weights
change expected outputs, so the tests travel with the weights (`ferry push --weights --tests`).
Replace `fit` with your training; keep `features` identical to the transforms in src/lib.rs.
"""
import json
import math
import pathlib

HERE = pathlib.Path(__file__).resolve().parent.parent


def features(distance_km: float, hour: int) -> list[float]:
    a = 2 * math.pi * (hour % 24) / 24
    return [math.log1p(distance_km), math.sin(a), math.cos(a)]


def fit() -> dict:
    # Stand-in for real training (e.g. scikit-learn's LinearRegression on your trips).
    return {"coef": [6.5, -1.2, -2.0], "intercept": 3.0}


def main() -> None:
    w = fit()
    (HERE / "weights.json").write_text(json.dumps(w) + "\n")
    cases = []
    for i, (d, h) in enumerate([(0.5, 0), (3.2, 8), (12.0, 17), (25.0, 23)]):
        eta = sum(p * q for p, q in zip(features(d, h), w["coef"])) + w["intercept"]
        cases.append({"name": f"trip-{i}", "request": {"features": {"distance_km": d, "hour": h}},
                      "response": {"eta_minutes": eta}})
    (HERE / "tests.json").write_text(json.dumps({"source": "training/train.py", "tolerance": 1e-9, "cases": cases}, indent=1) + "\n")


if __name__ == "__main__":
    main()
