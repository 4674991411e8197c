"""Booked ride → feature vector for the rider-cancellation model. Pure Python (math only, no numpy: the
served model runs it inside WebAssembly CPython). Imported by model.py (served) and training/train.py
(fit), so the served transforms are the trained ones by construction.

The vector is sent to the ONNX graph as FP32; scikit-learn's trees cast their input to float32 too, so
the training script's expectations are computed on the same float32 rows."""
import math

WEATHER = ("clear", "rain", "snow")
ZONES = ("downtown", "airport", "suburb", "stadium")

NAMES = [
    "distance_km", "log_distance", "hour", "weekday", "weekend", "rush_hour", "late_night",
    "weather_rain", "weather_snow", "zone_airport", "zone_suburb", "zone_stadium",
    "surge", "wait_minutes", "wait_per_km", "log_fare_estimate", "log_rider_trips", "new_rider",
]


def is_rush_hour(hour: int, weekday: int) -> bool:
    """Weekday mornings 7-9 and evenings 16-19."""
    return weekday < 5 and (7 <= hour <= 9 or 16 <= hour <= 19)


def is_late_night(hour: int) -> bool:
    """22:00 to 04:59."""
    return hour >= 22 or hour <= 4


def fare_estimate(distance_km: float, surge: float) -> float:
    """The quoted fare: base 2.50 plus 1.20 per km, times the surge multiplier."""
    return (2.5 + 1.2 * distance_km) * surge


def ride_features(distance_km: float, hour: int, weekday: int, weather: str, pickup_zone: str,
                  surge: float, wait_minutes: float, rider_trips: int) -> list[float]:
    """The model's inputs, in the order of NAMES. Categories are one-hot against a baseline
    (clear weather, downtown pickup)."""
    return [
        distance_km,
        math.log1p(distance_km),
        float(hour),
        float(weekday),
        1.0 if weekday >= 5 else 0.0,
        1.0 if is_rush_hour(hour, weekday) else 0.0,
        1.0 if is_late_night(hour) else 0.0,
        1.0 if weather == "rain" else 0.0,
        1.0 if weather == "snow" else 0.0,
        1.0 if pickup_zone == "airport" else 0.0,
        1.0 if pickup_zone == "suburb" else 0.0,
        1.0 if pickup_zone == "stadium" else 0.0,
        surge,
        wait_minutes,
        wait_minutes / (1.0 + distance_km),
        math.log(fare_estimate(distance_km, surge)),
        math.log1p(rider_trips),
        1.0 if rider_trips < 3 else 0.0,
    ]
