"""Train the fraud-features logistic regression and write its weights and self-tests.

Data set (synthetic, seeded, so anyone can regenerate it): 20,000 ride payments. Each payment has
  amount            fare in the payment currency, log-normal around 18
  currency          one of USD, EUR, GBP, CAD, BRL, MXN
  country           rider's country: US, CA, GB, FR, DE, BR, MX
  hour              local hour of day, 0-23
  account_age_days  days since sign-up, exponential with mean 400
  rides_last_24h    Poisson(1.5)
  card_country      country that issued the card (mismatch with `country` is a fraud signal)
The fraud label comes from a known logistic ground truth (large amounts, new accounts, night hours,
bursts of rides, card/country mismatch and some currencies raise the odds) plus noise.

The Rust model (src/lib.rs) implements the same feature transforms as `features()` below; the
self-tests compare the Rust model's output with scikit-learn's `predict_proba` on the same raw rows,
so they check the transforms and the model together.

The training profile (../profile.json: the distributions of the training rows' request fields and of
the model's answers on them, which the host compares live traffic with) comes from the SDK's
`ferry_sdk.profile.write_profile`.

Run: python train.py   (writes ../weights.json, ../tests.json and ../profile.json)
     python train.py --profile-only   (only ../profile.json, from the committed weights.json)
"""
import json
import math
import pathlib
import sys

import numpy as np
from sklearn.linear_model import LogisticRegression

CURRENCIES = ["USD", "EUR", "GBP", "CAD", "BRL", "MXN"]
COUNTRIES = ["US", "CA", "GB", "FR", "DE", "BR", "MX"]
HERE = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE.parent.parent / "guest-sdk" / "python"))
from ferry_sdk.profile import write_profile  # noqa: E402


def generate(n: int, rng: np.random.Generator) -> list[dict]:
    rows = []
    for _ in range(n):
        country = COUNTRIES[rng.integers(len(COUNTRIES))]
        mismatch = rng.random() < 0.08
        card_country = COUNTRIES[rng.integers(len(COUNTRIES))] if mismatch else country
        rows.append(
            {
                "amount": round(float(rng.lognormal(math.log(18.0), 0.8)), 2),
                "currency": CURRENCIES[rng.integers(len(CURRENCIES))],
                "country": country,
                "hour": int(rng.integers(24)),
                "account_age_days": int(rng.exponential(400.0)),
                "rides_last_24h": int(rng.poisson(1.5)),
                "card_country": card_country,
            }
        )
    return rows


def features(r: dict) -> list[float]:
    """The feature transforms; mirrored line by line in src/lib.rs."""
    hour = 2.0 * math.pi * r["hour"] / 24.0
    x = [
        math.log1p(r["amount"]),
        math.log1p(r["account_age_days"]),
        math.sin(hour),
        math.cos(hour),
        float(r["rides_last_24h"]),
        1.0 if r["card_country"] != r["country"] else 0.0,
    ]
    x += [1.0 if r["currency"] == c else 0.0 for c in CURRENCIES]
    x += [1.0 if r["country"] == c else 0.0 for c in COUNTRIES]
    return x


FEATURE_NAMES = (
    ["log_amount", "log_account_age", "hour_sin", "hour_cos", "rides_last_24h", "card_country_mismatch"]
    + [f"currency={c}" for c in CURRENCIES]
    + [f"country={c}" for c in COUNTRIES]
)


def ground_truth_logit(r: dict) -> float:
    night = 1.0 if r["hour"] < 5 else 0.0
    return (
        -4.8
        + 0.9 * math.log1p(r["amount"])
        - 0.45 * math.log1p(r["account_age_days"])
        + 1.1 * night
        + 0.35 * r["rides_last_24h"]
        + 2.2 * (r["card_country"] != r["country"])
        + 0.5 * (r["currency"] == "BRL")
    )


def training_profile(rows: list[dict], probabilities: np.ndarray, threshold: float) -> None:
    """../profile.json: each request field of the training rows, and the model's answers on them."""
    doc = write_profile(
        HERE / "profile.json",
        features={name: [r[name] for r in rows] for name in rows[0]},
        outputs={"fraud_probability": [float(p) for p in probabilities],
                 "is_fraud": [bool(p >= threshold) for p in probabilities]},
    )
    print(f"profile.json: {len(doc['features'])} features, {len(doc['outputs'])} outputs, {doc['rows']} rows")


def main() -> None:
    rng = np.random.default_rng(20261130)
    rows = generate(20_000, rng)
    X = np.array([features(r) for r in rows])
    p = 1.0 / (1.0 + np.exp(-np.array([ground_truth_logit(r) for r in rows])))
    y = (rng.random(len(rows)) < p).astype(int)

    train, held_out = slice(0, 18_000), slice(18_000, None)
    if "--profile-only" in sys.argv:
        weights = json.loads((HERE / "weights.json").read_text())
        logits = X[train] @ np.array(weights["coef"]) + weights["intercept"]
        training_profile(rows[train], 1.0 / (1.0 + np.exp(-logits)), weights["threshold"])
        return
    model = LogisticRegression(C=1.0, max_iter=2000)
    model.fit(X[train], y[train])
    print(f"fraud rate {y.mean():.3f}, held-out accuracy {model.score(X[held_out], y[held_out]):.4f}")

    weights = {
        "feature_names": FEATURE_NAMES,
        "currencies": CURRENCIES,
        "countries": COUNTRIES,
        "coef": model.coef_[0].tolist(),
        "intercept": float(model.intercept_[0]),
        "threshold": 0.5,
    }
    (HERE / "weights.json").write_text(json.dumps(weights, indent=2) + "\n")

    # Self-tests: held-out rows plus hand-picked edge cases (unknown currency, midnight, brand-new account).
    cases_rows = [rows[i] for i in range(18_000, 18_020)]
    cases_rows += [
        {"amount": 250.0, "currency": "XXX", "country": "US", "hour": 3, "account_age_days": 0,
         "rides_last_24h": 9, "card_country": "BR"},
        {"amount": 5.5, "currency": "EUR", "country": "FR", "hour": 0, "account_age_days": 3650,
         "rides_last_24h": 0, "card_country": "FR"},
    ]
    probs = model.predict_proba(np.array([features(r) for r in cases_rows]))[:, 1]
    cases = [
        {
            "name": f"sklearn-parity-{i}",
            "request": {"features": r},
            "response": {"fraud_probability": float(pr), "is_fraud": bool(pr >= 0.5)},
        }
        for i, (r, pr) in enumerate(zip(cases_rows, probs))
    ]
    tests = {"source": "scikit-learn LogisticRegression.predict_proba", "tolerance": 1e-9, "cases": cases}
    (HERE / "tests.json").write_text(json.dumps(tests, indent=1) + "\n")
    (HERE / "example-request.json").write_text(json.dumps({"features": cases_rows[0]}, indent=2) + "\n")
    training_profile(rows[train], model.predict_proba(X[train])[:, 1], weights["threshold"])


if __name__ == "__main__":
    main()
