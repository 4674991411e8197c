"""Feature transforms, shared by the model and its training script so both compute the same numbers."""
import math


def trip_features(distance_km: float, hour: int) -> list[float]:
    """log distance, and the hour of day as a point on a circle (23:00 is next to 00:00)."""
    a = 2 * math.pi * (hour % 24) / 24
    return [math.log1p(distance_km), math.sin(a), math.cos(a)]
