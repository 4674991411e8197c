/** Feature transforms, shared by the model and its training script so both compute the same numbers. */

/** log distance, and the hour of day as a point on a circle (23:00 is next to 00:00). */
export function tripFeatures(distanceKm, hour) {
  const a = (2 * Math.PI * (hour % 24)) / 24;
  return [Math.log1p(distanceKm), Math.sin(a), Math.cos(a)];
}
