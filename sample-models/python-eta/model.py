"""python-eta: a ride's ETA in minutes, from its distance, time, weather and pickup zone.

Feature transforms in features.py; a ridge regression trained by training/train.py with scikit-learn
(weights.json holds its coefficients, tests.json its answers on held-out trips).
"""
from ferry_sdk import InvalidInput, Metadata, Model, json_weights

from features import NAMES, WEATHER, ZONES, trip_features


class EtaModel(Model):
    def init(self, config, weights):
        w = json_weights(weights)
        if w["features"] != NAMES:
            raise ValueError(f"weights were trained on features {w['features']}, this model computes {NAMES}")
        self.coef, self.intercept = w["coef"], w["intercept"]

    def metadata(self):
        return Metadata("scikit-learn-ridge", description="ride → ETA in minutes (pure Python)")

    def predict(self, request):
        trip = request.fields("features", distance_km=float, hour=int, weekday=int, weather=str, pickup_zone=str)
        if not 0 <= trip.hour <= 23 or not 0 <= trip.weekday <= 6 or trip.distance_km < 0:
            raise InvalidInput("features: hour is 0-23, weekday 0-6 (Monday = 0), distance_km ≥ 0")
        if trip.weather not in WEATHER or trip.pickup_zone not in ZONES:
            raise InvalidInput(f"features: weather is one of {', '.join(WEATHER)}; pickup_zone one of {', '.join(ZONES)}")
        x = trip_features(trip.distance_km, trip.hour, trip.weekday, trip.weather, trip.pickup_zone)
        eta = self.intercept + sum(a * b for a, b in zip(x, self.coef))
        return {"eta_minutes": eta}
