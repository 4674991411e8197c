"""{{name}}: trip features → transforms → a linear model that predicts an ETA in minutes.

Replace the transforms (features.py) and the model with yours; training/train.py writes weights.json
and tests.json (the self-tests the host runs on every load).
"""
from ferry_sdk import InvalidInput, Metadata, Model, json_weights

from features import trip_features


class EtaModel(Model):
    def init(self, config, weights):
        w = json_weights(weights)
        self.coef, self.intercept = w["coef"], w["intercept"]

    def metadata(self):
        return Metadata("linear-regression", description="trip → ETA in minutes")

    def predict(self, request):
        trip = request.fields("features", distance_km=float, hour=int)
        if trip.distance_km < 0:
            raise InvalidInput("features.distance_km: must be ≥ 0")
        x = trip_features(trip.distance_km, trip.hour)
        return {"eta_minutes": sum(a * b for a, b in zip(x, self.coef)) + self.intercept}
