/**
 * Request → feature vector for the surge model. Imported by model.js (served); training/train.py
 * computes the same features in Python, line for line (see `surge_features` there), and its self-tests
 * (tests.json) check that the two agree on 30 held-out requests.
 */

export const ZONES = ['downtown', 'airport', 'suburb', 'stadium', 'university'];
export const WEATHER = ['clear', 'rain', 'snow'];

export const NAMES = [
  'log_ratio', 'pressure', 'pressure_sq', 'log_open_requests', 'hour_sin', 'hour_cos', 'weekend',
  'rush_hour', 'weekend_night', 'weather_rain', 'weather_snow', 'pressure_x_bad_weather',
  'zone_airport', 'zone_suburb', 'zone_stadium', 'zone_university',
];

/** Weekday mornings 7-9 and evenings 16-19. */
export function isRushHour(hour, weekday) {
  return weekday < 5 && ((hour >= 7 && hour <= 9) || (hour >= 16 && hour <= 19));
}

/**
 * The model's inputs, in the order of NAMES. Demand over supply enters as a log ratio (each side
 * plus one, so an empty zone is not a division by zero) and as "pressure", the part of it above
 * balance: only excess demand raises the price. Categories are one-hot against a baseline (clear
 * weather, downtown).
 */
export function surgeFeatures({ zone, hour, weekday, open_requests, available_drivers, weather }) {
  const angle = (2 * Math.PI * (hour % 24)) / 24;
  const logRatio = Math.log((open_requests + 1) / (available_drivers + 1));
  const pressure = Math.max(0, logRatio);
  const weekend = weekday >= 5 ? 1 : 0;
  const night = hour >= 22 || hour <= 3 ? 1 : 0;
  const badWeather = weather === 'clear' ? 0 : 1;
  return [
    logRatio,
    pressure,
    pressure * pressure,
    Math.log1p(open_requests),
    Math.sin(angle),
    Math.cos(angle),
    weekend,
    isRushHour(hour, weekday) ? 1 : 0,
    weekend * night,
    weather === 'rain' ? 1 : 0,
    weather === 'snow' ? 1 : 0,
    pressure * badWeather,
    zone === 'airport' ? 1 : 0,
    zone === 'suburb' ? 1 : 0,
    zone === 'stadium' ? 1 : 0,
    zone === 'university' ? 1 : 0,
  ];
}
