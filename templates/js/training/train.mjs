/**
 * Training script stub for {{name}}: fit the model, then write ../weights.json and ../tests.json.
 *
 * The expected outputs in tests.json are computed here, by the training code, from the weights it
 * just wrote: retrained weights change the answers, so the tests travel with the weights (ferry.toml
 * names both, and `ferry push` sends them). The features come from the model's own features.js, so
 * training and serving cannot drift apart.
 *
 * Run: node training/train.mjs   (Node 18 or later; no npm packages)
 */
import { writeFileSync } from 'node:fs';

import { tripFeatures } from '../features.js';

const HERE = new URL('..', import.meta.url);

function fit() {
  // Stand-in for real training (or load what your training pipeline exported, e.g. a scikit-learn
  // LinearRegression's coef_ and intercept_ computed on these same features).
  return { coef: [6.5, -1.2, -2.0], intercept: 3.0 };
}

function predict(w, distanceKm, hour) {
  return tripFeatures(distanceKm, hour).reduce((sum, v, i) => sum + v * w.coef[i], 0) + w.intercept;
}

const w = fit();
writeFileSync(new URL('weights.json', HERE), `${JSON.stringify(w)}\n`);
const cases = [[0.5, 0], [3.2, 8], [12.0, 17], [25.0, 23]].map(([d, h], i) => ({
  name: `trip-${i}`,
  request: { features: { distance_km: d, hour: h } },
  response: { eta_minutes: predict(w, d, h) },
}));
const tests = { source: 'training/train.mjs', tolerance: 1e-9, cases };
writeFileSync(new URL('tests.json', HERE), `${JSON.stringify(tests, null, 1)}\n`);
