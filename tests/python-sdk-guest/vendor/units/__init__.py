"""A pure-Python package from a local folder, bundled into the probe by `[tool.ferry] bundle`."""

KM_PER_MILE = 1.609344


def miles(km: float) -> float:
    return km / KM_PER_MILE
