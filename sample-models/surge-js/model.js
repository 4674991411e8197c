/**
 * surge-js: pricing's surge multiplier for a ride request, from its zone, time, weather and the
 * zone's open requests and available drivers.
 *
 * Feature transforms in features.js; a ridge regression on the log multiplier, trained by
 * training/train.py with scikit-learn (weights.json holds its coefficients, tests.json its answers on
 * held-out requests). The multiplier is held between the floor and the cap that weights.json names.
 */
import { InvalidInput, Metadata, Model, jsonWeights } from 'ferry-sdk';

import { NAMES, WEATHER, ZONES, surgeFeatures } from './features.js';

export default class SurgeModel extends Model {
  init(config, weights) {
    const w = jsonWeights(weights);
    if (JSON.stringify(w.features) !== JSON.stringify(NAMES)) {
      throw new Error(
        `weights were trained on features ${JSON.stringify(w.features)}, this model computes ${JSON.stringify(NAMES)}`,
      );
    }
    this.coef = w.coef;
    this.intercept = w.intercept;
    this.floor = w.floor;
    this.cap = w.cap;
  }

  metadata() {
    return new Metadata('scikit-learn-ridge', { description: 'ride request → surge multiplier (JavaScript)' });
  }

  predict(request) {
    const r = request.fields('features', {
      zone: String,
      hour: 'int',
      weekday: 'int',
      open_requests: 'int',
      available_drivers: 'int',
      weather: String,
    });
    if (!ZONES.includes(r.zone)) {
      throw new InvalidInput(`features.zone: ${JSON.stringify(r.zone)} is not a zone; one of ${ZONES.join(', ')}`);
    }
    if (!WEATHER.includes(r.weather)) {
      throw new InvalidInput(`features.weather: ${JSON.stringify(r.weather)} is not one of ${WEATHER.join(', ')}`);
    }
    if (r.hour < 0 || r.hour > 23 || r.weekday < 0 || r.weekday > 6) {
      throw new InvalidInput('features: hour is 0-23, weekday 0-6 (Monday = 0)');
    }
    if (r.open_requests < 0 || r.available_drivers < 0) {
      throw new InvalidInput('features: open_requests and available_drivers are counts, ≥ 0');
    }
    const x = surgeFeatures(r);
    const logMultiplier = x.reduce((sum, v, i) => sum + v * this.coef[i], 0) + this.intercept;
    return { surge_multiplier: Math.min(this.cap, Math.max(this.floor, Math.exp(logMultiplier))) };
  }
}
