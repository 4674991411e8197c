//! How far live counts are from training counts in the same bins.
//!
//! - The population stability index, `Σ (aᵢ − eᵢ) · ln(aᵢ / eᵢ)` over the bins' shares, each share
//!   floored at [`SHARE_FLOOR`] so that an empty bin stays finite. Conventionally under 0.1 is stable,
//!   0.1–0.25 a moderate shift, over 0.25 a significant one.
//! - A two-sample distance in [0, 1]: for numeric (ordered) bins the Kolmogorov–Smirnov statistic of
//!   the binned distributions (the largest gap between the cumulative shares, so a lower bound of
//!   the unbinned statistic); for categories the total variation distance (half the sum of the
//!   gaps between shares).

/// A share below this counts as this much in the index, on both sides: an empty bin stays finite,
/// and a bin rare in training and absent from a live window (which a faithful sample often misses)
/// adds next to nothing.
pub const SHARE_FLOOR: f64 = 1e-4;

/// The population stability index of `actual` against `expected` (counts in the same bins). Zero
/// when either side is empty.
pub fn psi(expected: &[u64], actual: &[u64]) -> f64 {
    let (e_total, a_total) = (total(expected), total(actual));
    if e_total == 0.0 || a_total == 0.0 {
        return 0.0;
    }
    expected
        .iter()
        .zip(actual)
        .map(|(e, a)| {
            let e = (*e as f64 / e_total).max(SHARE_FLOOR);
            let a = (*a as f64 / a_total).max(SHARE_FLOOR);
            (a - e) * (a / e).ln()
        })
        .sum()
}

/// The two-sample distance of `actual` from `expected`: Kolmogorov–Smirnov over `ordered` bins,
/// total variation over categories. Zero when either side is empty.
pub fn distance(expected: &[u64], actual: &[u64], ordered: bool) -> f64 {
    let (e_total, a_total) = (total(expected), total(actual));
    if e_total == 0.0 || a_total == 0.0 {
        return 0.0;
    }
    let gaps = expected
        .iter()
        .zip(actual)
        .map(|(e, a)| *a as f64 / a_total - *e as f64 / e_total);
    if ordered {
        let mut cumulative = 0.0_f64;
        gaps.map(|gap| {
            cumulative += gap;
            cumulative.abs()
        })
        .fold(0.0, f64::max)
    } else {
        gaps.map(f64::abs).sum::<f64>() / 2.0
    }
}

fn total(counts: &[u64]) -> f64 {
    counts.iter().sum::<u64>() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_distribution_is_no_drift_and_a_moved_one_is() {
        let training = [100, 200, 400, 200, 100];
        assert!(psi(&training, &[10, 20, 40, 20, 10]) < 0.01);
        assert!(distance(&training, &[10, 20, 40, 20, 10], true) < 1e-12);
        // Everything moved two bins up.
        let moved = [0, 0, 10, 20, 70];
        assert!(psi(&training, &moved) > 1.0, "{}", psi(&training, &moved));
        let ks = distance(&training, &moved, true);
        assert!((ks - 0.6).abs() < 1e-9, "{ks}");
        // Categories: half the mass moved from the first to the last.
        let tv = distance(&[50, 50, 0], &[25, 50, 25], false);
        assert!((tv - 0.25).abs() < 1e-9, "{tv}");
    }

    #[test]
    fn rare_training_categories_missing_from_a_faithful_sample_are_no_drift() {
        // One common category and 255 seen once in a million training rows; 200 live rows, all the
        // common one.
        let mut training = vec![1_000_000];
        training.extend(std::iter::repeat_n(1, 255));
        let mut live = vec![200];
        live.extend(std::iter::repeat_n(0, 255));
        assert!(psi(&training, &live) < 0.01, "{}", psi(&training, &live));
    }

    #[test]
    fn empty_bins_and_empty_sides_stay_finite() {
        assert!(psi(&[10, 0], &[0, 10]).is_finite());
        assert_eq!(distance(&[10, 0], &[0, 0], true), 0.0);
    }
}
