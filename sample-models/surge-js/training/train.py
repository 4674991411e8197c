"""Train surge-js's model and write its weights, self-tests and training profile.

Data set (synthetic, seeded, so anyone can regenerate it): 20,000 ride requests. Each has
  zone               downtown (35%), airport (15%), suburb (30%), stadium (8%), university (12%)
  hour               local hour of the request, 0-23
  weekday            0 = Monday … 6 = Sunday
  weather            clear (70%), rain (20%), snow (10%)
  available_drivers  idle drivers in the zone: Poisson, more by day and in busy zones
  open_requests      unserved requests in the zone: Poisson, up in rush hours (×1.8), on weekend
                     nights (×1.6), in rain (×1.3) and snow (×1.6), at the stadium on weekends (×2)
The true surge multiplier is exp(0.30·p + 0.06·p² + 0.05·p·(bad weather) + zone and weather terms)
with p = max(0, log((open + 1) / (drivers + 1))), times log-normal noise (σ = 0.03).

The model is scikit-learn's Ridge on the log multiplier (TransformedTargetRegressor with log/exp), on
the features below. The served features are computed by ../features.js, in JavaScript: `surge_features`
here is the same function written in Python, line for line, so the two are easy to compare, and the
self-tests (scikit-learn's own predictions for 30 held-out requests, held between the floor and the
cap the model applies) fail `ferry test` if they ever disagree.

The training profile (../profile.json: the distributions of the training requests' fields and of the
model's answers on them, which the host compares live traffic with) comes from `ferry_sdk.profile`.

Run: python train.py   (writes ../weights.json, ../tests.json and ../profile.json)
"""
import json
import math
import pathlib
import sys

import numpy as np
import sklearn
from sklearn.compose import TransformedTargetRegressor
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_absolute_error

HERE = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE.parent.parent / "guest-sdk" / "python"))
from ferry_sdk.profile import write_profile  # noqa: E402

# ------------------------------------------------- the transforms of ../features.js, in Python

ZONES = ["downtown", "airport", "suburb", "stadium", "university"]
WEATHER = ["clear", "rain", "snow"]

NAMES = [
    "log_ratio", "pressure", "pressure_sq", "log_open_requests", "hour_sin", "hour_cos", "weekend",
    "rush_hour", "weekend_night", "weather_rain", "weather_snow", "pressure_x_bad_weather",
    "zone_airport", "zone_suburb", "zone_stadium", "zone_university",
]

# What the model does with its prediction (weights.json carries them, so model.js reads them there).
FLOOR, CAP = 1.0, 3.0


def is_rush_hour(hour: int, weekday: int) -> bool:
    return weekday < 5 and (7 <= hour <= 9 or 16 <= hour <= 19)


def surge_features(zone: str, hour: int, weekday: int, open_requests: int, available_drivers: int,
                   weather: str) -> list[float]:
    angle = (2 * math.pi * (hour % 24)) / 24
    log_ratio = math.log((open_requests + 1) / (available_drivers + 1))
    pressure = max(0.0, log_ratio)
    weekend = 1 if weekday >= 5 else 0
    night = 1 if hour >= 22 or hour <= 3 else 0
    bad_weather = 0 if weather == "clear" else 1
    return [
        log_ratio,
        pressure,
        pressure * pressure,
        math.log1p(open_requests),
        math.sin(angle),
        math.cos(angle),
        weekend,
        1 if is_rush_hour(hour, weekday) else 0,
        weekend * night,
        1 if weather == "rain" else 0,
        1 if weather == "snow" else 0,
        pressure * bad_weather,
        1 if zone == "airport" else 0,
        1 if zone == "suburb" else 0,
        1 if zone == "stadium" else 0,
        1 if zone == "university" else 0,
    ]


# ---------------------------------------------------------------------------------------- data

SUPPLY = {"downtown": 30, "airport": 18, "suburb": 12, "stadium": 8, "university": 10}
DEMAND = {"downtown": 26, "airport": 16, "suburb": 9, "stadium": 7, "university": 9}
ZONE_TERM = {"downtown": 0.04, "airport": 0.10, "suburb": -0.03, "stadium": 0.06, "university": 0.0}
WEATHER_TERM = {"clear": 0.0, "rain": 0.05, "snow": 0.12}


def requests(n: int, rng: np.random.Generator) -> tuple[list[dict], np.ndarray]:
    zone = rng.choice(ZONES, n, p=[0.35, 0.15, 0.3, 0.08, 0.12])
    hour = rng.integers(0, 24, n)
    weekday = rng.integers(0, 7, n)
    weather = rng.choice(WEATHER, n, p=[0.7, 0.2, 0.1])
    rows, surge = [], np.empty(n)
    for i in range(n):
        z, h, d, w = str(zone[i]), int(hour[i]), int(weekday[i]), str(weather[i])
        daytime = 1.0 if 7 <= h <= 21 else 0.5
        drivers = int(rng.poisson(SUPPLY[z] * daytime))
        demand = DEMAND[z] * daytime
        if is_rush_hour(h, d):
            demand *= 1.8
        if d >= 5 and (h >= 22 or h <= 3):
            demand *= 1.6
        if z == "stadium" and d >= 5:
            demand *= 2.0
        demand *= {"clear": 1.0, "rain": 1.3, "snow": 1.6}[w]
        open_requests = int(rng.poisson(demand))
        p = max(0.0, math.log((open_requests + 1) / (drivers + 1)))
        log_surge = (0.30 * p + 0.06 * p * p + 0.05 * p * (w != "clear")
                     + ZONE_TERM[z] + WEATHER_TERM[w] + rng.normal(0, 0.03))
        rows.append({"zone": z, "hour": h, "weekday": d, "open_requests": open_requests,
                     "available_drivers": drivers, "weather": w})
        surge[i] = math.exp(log_surge)
    return rows, surge


def matrix(rows: list[dict]) -> np.ndarray:
    return np.array([surge_features(**r) for r in rows])


def served(model: TransformedTargetRegressor, rows: list[dict]) -> np.ndarray:
    """What the served model answers: scikit-learn's prediction, held between the floor and the cap."""
    return np.clip(model.predict(matrix(rows)), FLOOR, CAP)


def main() -> None:
    rng = np.random.default_rng(20261207)
    rows, surge = requests(20_000, rng)
    train, test = slice(0, 16_000), slice(16_000, None)
    model = TransformedTargetRegressor(regressor=Ridge(alpha=1.0), func=np.log, inverse_func=np.exp)
    model.fit(matrix(rows[train]), surge[train])
    held_out = rows[test]
    predicted = served(model, held_out)
    print(f"held-out MAE {mean_absolute_error(surge[test], predicted):.4f} (multiplier) on {len(held_out)} requests")

    ridge = model.regressor_
    weights = {"features": NAMES, "coef": ridge.coef_.tolist(), "intercept": float(ridge.intercept_),
               "target": "log surge multiplier", "floor": FLOOR, "cap": CAP}
    (HERE / "weights.json").write_text(json.dumps(weights, indent=1) + "\n")
    cases = [{"name": f"request-{i}", "request": {"features": r}, "response": {"surge_multiplier": float(p)}}
             for i, (r, p) in enumerate(zip(held_out[:30], predicted[:30]))]
    tests = {"source": f"scikit-learn {sklearn.__version__} TransformedTargetRegressor(Ridge, log/exp).predict "
                       "on held-out requests, clipped to [floor, cap] (training/train.py)",
             "tolerance": 1e-9, "cases": cases}
    (HERE / "tests.json").write_text(json.dumps(tests, indent=1) + "\n")

    doc = write_profile(HERE / "profile.json",
                        features={name: [r[name] for r in rows[train]] for name in rows[0]},
                        outputs={"surge_multiplier": [float(p) for p in served(model, rows[train])]})
    print(f"profile.json: {len(doc['features'])} features, {len(doc['outputs'])} outputs, {doc['rows']} requests")
    clipped = int(np.sum((predicted <= FLOOR) | (predicted >= CAP)))
    print(f"held-out answers at the floor or the cap: {clipped} of {len(predicted)}")


if __name__ == "__main__":
    main()
