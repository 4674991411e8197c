"""Train python-eta's ridge regression and write its weights and self-tests.

Data set (synthetic, seeded, so anyone can regenerate it): 20,000 rides. Each ride has
  distance_km   route length, log-normal around 3.3 km, clipped to 0.3-60
  hour          local hour of the pickup, 0-23
  weekday       0 = Monday … 6 = Sunday
  weather       clear (70%), rain (20%), snow (10%)
  pickup_zone   downtown (40%), airport (15%), suburb (35%), stadium (10%)
The true ETA in minutes is 3 + 2.2·distance^0.85 scaled by traffic (weekday rush hours ×1.35 ×(1 + log
distance / 10), weekend nights ×0.85), weather (rain ×1.15, snow ×1.4) and zone (airport +4 minutes of
terminal traffic, downtown ×1.1, stadium ×1.2), plus Gaussian noise (σ = 1.5 minutes).

The model is scikit-learn's Ridge on the features computed by ../features.py — the same module the
served model imports — and the self-tests are scikit-learn's own predictions for 30 held-out rides,
so `ferry test` checks the transforms and the model together.

The training profile (../profile.json: the distributions of the training rides' request fields and of
the model's answers on them, which the host compares live traffic with) comes from `ferry_sdk.profile`.

Run: python train.py   (writes ../weights.json, ../tests.json and ../profile.json)
     python train.py --profile-only   (only ../profile.json, from the committed weights.json)
"""
import json
import pathlib
import sys

import numpy as np
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_absolute_error

HERE = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent.parent / "guest-sdk" / "python"))
from features import NAMES, WEATHER, ZONES, is_rush_hour, trip_features  # noqa: E402
from ferry_sdk.profile import write_profile  # noqa: E402


def rides(n: int, rng: np.random.Generator) -> tuple[list[dict], np.ndarray]:
    distance = np.clip(rng.lognormal(1.2, 0.6, n), 0.3, 60.0).round(2)
    hour = rng.integers(0, 24, n)
    weekday = rng.integers(0, 7, n)
    weather = rng.choice(WEATHER, n, p=[0.7, 0.2, 0.1])
    zone = rng.choice(ZONES, n, p=[0.4, 0.15, 0.35, 0.1])
    trips, eta = [], np.empty(n)
    for i in range(n):
        t = {"distance_km": float(distance[i]), "hour": int(hour[i]), "weekday": int(weekday[i]),
             "weather": str(weather[i]), "pickup_zone": str(zone[i])}
        minutes = 3 + 2.2 * t["distance_km"] ** 0.85
        if is_rush_hour(t["hour"], t["weekday"]):
            minutes *= 1.35 * (1 + np.log1p(t["distance_km"]) / 10)
        elif t["weekday"] >= 5 and (t["hour"] >= 22 or t["hour"] <= 4):
            minutes *= 0.85
        minutes *= {"clear": 1.0, "rain": 1.15, "snow": 1.4}[t["weather"]]
        minutes = minutes + 4 if t["pickup_zone"] == "airport" else minutes * {"downtown": 1.1, "suburb": 1.0, "stadium": 1.2}[t["pickup_zone"]]
        trips.append(t)
        eta[i] = minutes + rng.normal(0, 1.5)
    return trips, eta


def matrix(trips: list[dict]) -> np.ndarray:
    return np.array([trip_features(**t) for t in trips])


def training_profile(trips: list[dict], predicted: np.ndarray) -> None:
    """../profile.json: each request field of the training rides, and the model's answers on them."""
    doc = write_profile(HERE / "profile.json",
                        features={name: [t[name] for t in trips] for name in trips[0]},
                        outputs={"eta_minutes": [float(p) for p in predicted]})
    print(f"profile.json: {len(doc['features'])} features, {len(doc['outputs'])} outputs, {doc['rows']} rides")


def main() -> None:
    rng = np.random.default_rng(20261130)
    trips, eta = rides(20_000, rng)
    train, test = slice(0, 16_000), slice(16_000, None)
    if "--profile-only" in sys.argv:
        weights = json.loads((HERE / "weights.json").read_text())
        training_profile(trips[train], matrix(trips[train]) @ np.array(weights["coef"]) + weights["intercept"])
        return
    model = Ridge(alpha=1.0).fit(matrix(trips[train]), eta[train])
    held_out = trips[test]
    predicted = model.predict(matrix(held_out))
    print(f"held-out MAE {mean_absolute_error(eta[test], predicted):.2f} min on {len(held_out)} rides")

    weights = {"features": NAMES, "coef": model.coef_.tolist(), "intercept": float(model.intercept_)}
    (HERE / "weights.json").write_text(json.dumps(weights, indent=1) + "\n")
    cases = [{"name": f"ride-{i}", "request": {"features": t}, "response": {"eta_minutes": float(p)}}
             for i, (t, p) in enumerate(zip(held_out[:30], predicted[:30]))]
    tests = {"source": "scikit-learn 1.7.2 Ridge.predict on held-out rides (training/train.py)",
             "tolerance": 1e-9, "cases": cases}
    (HERE / "tests.json").write_text(json.dumps(tests, indent=1) + "\n")
    training_profile(trips[train], model.predict(matrix(trips[train])))


if __name__ == "__main__":
    main()
