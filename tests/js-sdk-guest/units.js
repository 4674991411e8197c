// A module of the project's own, imported by probe.js: relative imports are in the component.

export const KM_PER_MILE = 1.609344;

export function miles(km) {
  return km / KM_PER_MILE;
}
