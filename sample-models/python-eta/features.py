"""Trip → feature vector for the ETA model. Imported by model.py (served) and training/train.py (fit),
so the served transforms are the trained ones by construction."""
import math

WEATHER = ("clear", "rain", "snow")
ZONES = ("downtown", "airport", "suburb", "stadium")

NAMES = [
    "log_distance", "distance_km", "hour_sin", "hour_cos", "weekend", "rush_hour",
    "rush_x_log_distance", "weather_rain", "weather_snow", "zone_airport", "zone_suburb",
    "zone_stadium",
]


def is_rush_hour(hour: int, weekday: int) -> bool:
    """Weekday mornings 7-9 and evenings 16-19."""
    return weekday < 5 and (7 <= hour <= 9 or 16 <= hour <= 19)


def trip_features(distance_km: float, hour: int, weekday: int, weather: str, pickup_zone: str) -> list[float]:
    """The model's inputs, in the order of NAMES. Categories are one-hot against a baseline
    (clear weather, downtown pickup)."""
    angle = 2 * math.pi * (hour % 24) / 24
    log_distance = math.log1p(distance_km)
    rush = 1.0 if is_rush_hour(hour, weekday) else 0.0
    return [
        log_distance,
        distance_km,
        math.sin(angle),
        math.cos(angle),
        1.0 if weekday >= 5 else 0.0,
        rush,
        rush * log_distance,
        1.0 if weather == "rain" else 0.0,
        1.0 if weather == "snow" else 0.0,
        1.0 if pickup_zone == "airport" else 0.0,
        1.0 if pickup_zone == "suburb" else 0.0,
        1.0 if pickup_zone == "stadium" else 0.0,
    ]
