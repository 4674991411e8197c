"""The training profile: what the training data looked like, so the host can tell when live traffic
no longer does (drift). A training script writes it beside ``tests.json`` in one call::

    from ferry_sdk.profile import write_profile
    write_profile("profile.json",
                  features={"amount": amounts, "currency": currencies},
                  outputs={"fraud_probability": probabilities})

Each column is a sequence of training values, one per row:

- numbers (ints and floats, not booleans) are binned at the training data's quantiles (``bins``
  bins, fewer when values repeat);
- strings and booleans are counted per category (booleans as ``"true"``/``"false"``, as the host
  reads JSON booleans); at most 256 categories.

Names follow the request: a field of a feature-style request's ``features`` object (or of the
answer's top level, for outputs), a 1-D tensor by its name (``label``), or a column of a 2-D tensor
as ``name[column]`` (``input[3]``). Push it with the version: ``ferry push --profile profile.json``.
Plain Python, no third-party imports: numpy arrays and lists both work.
"""
from __future__ import annotations

import bisect
import json
import math
import pathlib
from typing import Any, Mapping, Sequence

FORMAT = 1
MAX_CATEGORIES = 256


def profile(
    features: Mapping[str, Sequence[Any]],
    outputs: Mapping[str, Sequence[Any]] | None = None,
    bins: int = 10,
) -> dict:
    """The profile document for these training columns."""
    if not 1 <= bins <= 256:
        raise ValueError(f"bins must be 1 to 256, not {bins}")
    columns = {"features": features, "outputs": outputs or {}}
    rows = max((len(values) for side in columns.values() for values in side.values()), default=0)
    doc: dict = {"ferry_profile": FORMAT, "rows": rows}
    for side, named in columns.items():
        doc[side] = [_column(str(name), list(values), bins) for name, values in named.items()]
    if not doc["features"] and not doc["outputs"]:
        raise ValueError("a profile needs at least one feature or output")
    return doc


def write_profile(
    path: str | pathlib.Path,
    features: Mapping[str, Sequence[Any]],
    outputs: Mapping[str, Sequence[Any]] | None = None,
    bins: int = 10,
) -> dict:
    """Writes the profile to ``path`` (JSON) and returns it."""
    doc = profile(features, outputs, bins)
    pathlib.Path(path).write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def _column(name: str, values: list, bins: int) -> dict:
    present = [_plain(v) for v in values if v is not None]
    # NaN and ±inf are no value (the host counts them as missing, never binned).
    present = [v for v in present if not (isinstance(v, float) and not math.isfinite(v))]
    if not present:
        raise ValueError(f"column `{name}` has no values")
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        numbers = sorted(float(v) for v in present)
        edges: list[float] = []
        for i in range(1, bins):
            edge = numbers[min(len(numbers) - 1, (i * len(numbers)) // bins)]
            # Strictly ascending, and below the largest value (the last bin is never empty).
            if (not edges or edge > edges[-1]) and edge < numbers[-1]:
                edges.append(edge)
        counts = [0] * (len(edges) + 1)
        for v in numbers:
            counts[bisect.bisect_left(edges, v)] += 1
        return {"name": name, "numeric": {"edges": edges, "counts": counts}}
    counts: dict[str, int] = {}
    for v in present:
        key = _category(v)
        counts[key] = counts.get(key, 0) + 1
    if len(counts) > MAX_CATEGORIES:
        raise ValueError(
            f"column `{name}` has {len(counts)} categories; at most {MAX_CATEGORIES} are watched "
            "(bin it, or leave it out of the profile)"
        )
    return {"name": name, "categorical": {"counts": dict(sorted(counts.items()))}}


def _category(value: Any) -> str:
    """A value's category as the host names a live one: booleans as "true"/"false", integral numbers
    as integers ("3", not "3.0"), other numbers in their shortest decimal form."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def _plain(value: Any) -> Any:
    """numpy scalars as Python numbers (without importing numpy)."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value
