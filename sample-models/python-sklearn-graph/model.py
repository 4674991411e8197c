"""python-sklearn-graph: the probability that a rider cancels a booked ride before pickup, from the trip
(distance, hour, weekday, weather, pickup zone), its price surge, the quoted wait and the rider's history.

Pure-Python feature transforms in features.py (the module the training script imports too) feed a
scikit-learn GradientBoostingClassifier (150 trees of depth 3) trained by training/train.py and exported
to ONNX by skl2onnx. The host runs model.onnx, the version's graph `model`, with ONNX Runtime; tests.json
holds scikit-learn's own predict_proba answers for 30 held-out rides.
"""
from ferry_sdk import InvalidInput, Metadata, Model
from ferry_sdk.graph import Graph

from features import WEATHER, ZONES, ride_features


class CancellationModel(Model):
    def init(self, config, weights):
        self.trees = Graph("model")

    def metadata(self):
        return Metadata("scikit-learn-gradient-boosting", description="booked ride → P(rider cancels)")

    def predict(self, request):
        ride = request.fields("features", distance_km=float, hour=int, weekday=int, weather=str,
                              pickup_zone=str, surge=float, wait_minutes=float, rider_trips=int)
        if not 0 <= ride.hour <= 23 or not 0 <= ride.weekday <= 6:
            raise InvalidInput("features: hour is 0-23, weekday 0-6 (Monday = 0)")
        if ride.distance_km < 0 or ride.wait_minutes < 0 or ride.rider_trips < 0 or ride.surge < 1:
            raise InvalidInput("features: distance_km, wait_minutes and rider_trips are ≥ 0, surge ≥ 1")
        if ride.weather not in WEATHER or ride.pickup_zone not in ZONES:
            raise InvalidInput(f"features: weather is one of {', '.join(WEATHER)}; pickup_zone one of {', '.join(ZONES)}")
        x = ride_features(ride.distance_km, ride.hour, ride.weekday, ride.weather, ride.pickup_zone,
                          ride.surge, ride.wait_minutes, ride.rider_trips)
        out = self.trees.run(input=[x])
        return {"cancel_probability": out["probabilities"][0][1], "will_cancel": out["label"][0] == 1}
