"""Train the diabetes-gbdt model: XGBoost gradient-boosted trees on scikit-learn's bundled diabetes data.

Data: `sklearn.datasets.load_diabetes()` — 442 patients, 10 standardised features (age, sex, bmi, bp,
s1..s6), target = disease progression one year later. Seeded 80/20 split.

Writes ../model.json (XGBoost's own JSON model format: the guest reads it as the version's weights blob
and walks the trees itself) and ../tests.json: 25 held-out rows with the prediction XGBoost itself
computed, for the host to check on every load (|Δ| ≤ 1e-4), and ../profile.json: the training rows'
distributions per feature (`features[0]` … `features[9]`, columns of the input tensor) and of the model's
predictions on them, which the host compares live traffic with (`ferry_sdk.profile`).

Run: python train.py   (python train.py --profile-only: only ../profile.json, from the committed model.json)
"""
import json
import pathlib
import sys

import numpy as np
import xgboost as xgb
from sklearn.datasets import load_diabetes
from sklearn.model_selection import train_test_split

HERE = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE.parent.parent / "guest-sdk" / "python"))
from ferry_sdk.profile import write_profile  # noqa: E402


def training_profile(X_train: np.ndarray, predictions: np.ndarray) -> None:
    """../profile.json: each column of the training rows, and the model's predictions on them."""
    doc = write_profile(
        HERE / "profile.json",
        features={f"features[{i}]": X_train[:, i].tolist() for i in range(X_train.shape[1])},
        outputs={"progression": predictions.tolist()},
    )
    print(f"profile.json: {len(doc['features'])} features, {len(doc['outputs'])} outputs, {doc['rows']} rows")


def main() -> None:
    data = load_diabetes()
    X = data.data.astype(np.float32)
    y = data.target.astype(np.float32)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=7)
    if "--profile-only" in sys.argv:
        booster = xgb.Booster()
        booster.load_model(str(HERE / "model.json"))
        training_profile(X_train, booster.inplace_predict(X_train))
        return
    model = xgb.XGBRegressor(
        n_estimators=200, max_depth=4, learning_rate=0.05, subsample=0.9, random_state=7,
        objective="reg:squarederror",
    )
    model.fit(X_train, y_train)
    pred = model.predict(X_test)
    rmse = float(np.sqrt(np.mean((pred - y_test) ** 2)))
    print(f"held-out RMSE {rmse:.2f} (target std {y_test.std():.2f})")

    booster = model.get_booster()
    booster.feature_names = list(data.feature_names)
    booster.save_model(str(HERE / "model.json"))

    rows = X_test[:25]
    expected = booster.inplace_predict(rows)
    cases = [
        {
            "name": f"xgboost-parity-{i}",
            "inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 10], "data": row.tolist()}],
            "outputs": [{"name": "progression", "datatype": "FP32", "shape": [1], "data": [float(e)]}],
        }
        for i, (row, e) in enumerate(zip(rows, expected))
    ]
    # One batched case too: the whole block at once must agree row for row.
    cases.append(
        {
            "name": "xgboost-parity-batch-25",
            "inputs": [{"name": "features", "datatype": "FP32", "shape": [25, 10], "data": rows.flatten().tolist()}],
            "outputs": [{"name": "progression", "datatype": "FP32", "shape": [25],
                         "data": [float(e) for e in expected]}],
        }
    )
    tests = {"source": "xgboost Booster.inplace_predict", "tolerance": 1e-4, "cases": cases}
    (HERE / "tests.json").write_text(json.dumps(tests) + "\n")
    training_profile(X_train, booster.inplace_predict(X_train))
    example = {
        "id": "diabetes-example",
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [2, 10], "data": X_test[:2].tolist()}],
    }
    (HERE / "example-request.json").write_text(json.dumps(example, indent=2) + "\n")


if __name__ == "__main__":
    main()
