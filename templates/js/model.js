/**
 * {{name}}: trip features → transforms → a linear model that predicts an ETA in minutes.
 *
 * Replace the transforms (features.js) and the model with yours; training/train.mjs writes
 * weights.json and tests.json (the self-tests the host runs on every load).
 */
import { InvalidInput, Metadata, Model, jsonWeights } from 'ferry-sdk';

import { tripFeatures } from './features.js';

export default class EtaModel extends Model {
  init(config, weights) {
    const w = jsonWeights(weights);
    this.coef = w.coef;
    this.intercept = w.intercept;
  }

  metadata() {
    return new Metadata('linear-regression', { description: 'trip → ETA in minutes' });
  }

  predict(request) {
    const trip = request.fields('features', { distance_km: Number, hour: 'int' });
    if (trip.distance_km < 0) {
      throw new InvalidInput('features.distance_km: must be ≥ 0');
    }
    const x = tripFeatures(trip.distance_km, trip.hour);
    return { eta_minutes: x.reduce((sum, v, i) => sum + v * this.coef[i], 0) + this.intercept };
  }
}
