//! A version's training profile (`profile.json`, written by the training script beside
//! `tests.json`): per input feature and per output, the distribution of the training data as a
//! histogram. Numeric columns are binned at fixed edges (the SDK helpers cut at the training
//! data's quantiles); categorical columns count each category. Only what it lists is watched, so
//! its size bounds what monitoring costs, whatever the requests hold.
//!
//! ```json
//! {"ferry_profile": 1, "rows": 20000,
//!  "features": [{"name": "amount", "numeric": {"edges": [9.5, 14.2, 21.0], "counts": [5000, 5000, 5000, 5000]}},
//!               {"name": "currency", "categorical": {"counts": {"USD": 3400, "EUR": 3300}}}],
//!  "outputs": [{"name": "fraud_probability", "numeric": {"edges": [0.1], "counts": [18000, 2000]}}]}
//! ```
//!
//! A numeric column's bins are `(-inf, e1]`, `(e1, e2]`, …, `(ek, +inf)`; a value that is not a
//! number (or absent) is counted as missing, never binned. A category the training data never had
//! falls in an extra bin, "other", whose baseline is empty.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

/// The format this host reads.
pub const FORMAT: u32 = 1;
/// Columns a profile may list (features and outputs together).
pub const MAX_COLUMNS: usize = 1024;
/// Bins a numeric column may have, and categories a categorical one.
pub const MAX_BINS: usize = 256;
/// Bins of every column together: what a version's live counts, a scrape of its drift and the
/// monitoring route cost is proportional to this.
pub const MAX_TOTAL_BINS: usize = 16_384;
/// Longest column or category name.
const MAX_NAME: usize = 128;
/// Largest training count a column may total (an f64 holds every integer up to it exactly).
const MAX_TOTAL_COUNT: u64 = 1 << 53;

/// A profile as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Profile {
    /// The format's version (1).
    pub ferry_profile: u32,
    /// Training rows it was made from.
    #[serde(default)]
    pub rows: u64,
    /// The model's input features.
    #[serde(default)]
    pub features: Vec<Column>,
    /// The model's outputs.
    #[serde(default)]
    pub outputs: Vec<Column>,
}

/// One feature or output and its training distribution.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Column {
    /// A field of a feature-style request or answer (`amount`), a 1-D tensor (`label`) or a column
    /// of a 2-D tensor (`input[3]`).
    pub name: String,
    /// Its training histogram.
    #[serde(flatten)]
    pub baseline: Baseline,
}

/// A column's training histogram.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Baseline {
    /// Counts between ascending edges (one more count than edges).
    Numeric { edges: Vec<f64>, counts: Vec<u64> },
    /// Counts per category.
    Categorical { counts: BTreeMap<String, u64> },
}

impl Profile {
    /// Reads and checks a profile; the error says what is wrong and where.
    pub fn parse(bytes: &[u8]) -> Result<Profile, String> {
        let profile: Profile = serde_json::from_slice(bytes)
            .map_err(|e| format!("the profile is not a training profile: {e}"))?;
        profile.check()?;
        Ok(profile)
    }

    fn check(&self) -> Result<(), String> {
        if self.ferry_profile != FORMAT {
            return Err(format!(
                "the profile is format {}; this host reads format {FORMAT}",
                self.ferry_profile
            ));
        }
        let columns = self.features.len() + self.outputs.len();
        if columns == 0 {
            return Err("the profile lists no feature and no output".into());
        }
        if columns > MAX_COLUMNS {
            return Err(format!(
                "the profile lists {columns} columns; at most {MAX_COLUMNS} are watched"
            ));
        }
        let bins: usize = self
            .features
            .iter()
            .chain(&self.outputs)
            .map(|c| c.baseline.bins())
            .sum();
        if bins > MAX_TOTAL_BINS {
            return Err(format!(
                "the profile has {bins} bins in all; at most {MAX_TOTAL_BINS} are watched"
            ));
        }
        for (side, list) in [("feature", &self.features), ("output", &self.outputs)] {
            let mut seen = HashSet::new();
            for column in list {
                let at = |what: String| format!("{side} `{}`: {what}", column.name);
                if column.name.is_empty() || column.name.len() > MAX_NAME {
                    return Err(format!(
                        "a {side} name must have 1 to {MAX_NAME} bytes (`{}`)",
                        column.name.chars().take(40).collect::<String>()
                    ));
                }
                if !seen.insert(column.name.as_str()) {
                    return Err(at("listed twice".into()));
                }
                column.baseline.check().map_err(at)?;
            }
        }
        Ok(())
    }
}

/// The sum of a column's training counts, refused past [`MAX_TOTAL_COUNT`].
fn total<'a>(mut counts: impl Iterator<Item = &'a u64>) -> Result<u64, String> {
    counts
        .try_fold(0u64, |sum, c| sum.checked_add(*c))
        .filter(|sum| *sum <= MAX_TOTAL_COUNT)
        .ok_or_else(|| "its training counts add up to more than 2^53".to_owned())
}

impl Baseline {
    fn check(&self) -> Result<(), String> {
        let total: u64 = match self {
            Baseline::Numeric { edges, counts } => {
                if counts.len() != edges.len() + 1 {
                    return Err(format!(
                        "{} edges need {} counts, not {}",
                        edges.len(),
                        edges.len() + 1,
                        counts.len()
                    ));
                }
                if counts.len() > MAX_BINS {
                    return Err(format!("{} bins; at most {MAX_BINS}", counts.len()));
                }
                if edges.iter().any(|e| !e.is_finite()) {
                    return Err("an edge is not a finite number".into());
                }
                if edges.windows(2).any(|w| w[0] >= w[1]) {
                    return Err("edges must be strictly ascending".into());
                }
                total(counts.iter())?
            }
            Baseline::Categorical { counts } => {
                if counts.is_empty() || counts.len() > MAX_BINS {
                    return Err(format!(
                        "{} categories; 1 to {MAX_BINS} are watched",
                        counts.len()
                    ));
                }
                if let Some(long) = counts.keys().find(|k| k.len() > MAX_NAME) {
                    return Err(format!(
                        "category `{}…` is longer than {MAX_NAME} bytes",
                        long.chars().take(40).collect::<String>()
                    ));
                }
                total(counts.values())?
            }
        };
        if total == 0 {
            return Err("its training counts are all zero".into());
        }
        Ok(())
    }

    /// Bins a live value falls into: the numeric bins, or the categories and then "other".
    pub fn bins(&self) -> usize {
        match self {
            Baseline::Numeric { counts, .. } => counts.len(),
            Baseline::Categorical { counts } => counts.len() + 1,
        }
    }

    /// The training counts, bin by bin (a categorical column's "other" bin is 0).
    pub fn expected(&self) -> Vec<u64> {
        match self {
            Baseline::Numeric { counts, .. } => counts.clone(),
            Baseline::Categorical { counts } => {
                counts.values().copied().chain(std::iter::once(0)).collect()
            }
        }
    }

    /// The bins' names, for the monitoring route: `≤ e1`, `(e1, e2]`, …, `> ek`; or the categories
    /// and `(other)`.
    pub fn labels(&self) -> Vec<String> {
        match self {
            Baseline::Numeric { edges, .. } => {
                if edges.is_empty() {
                    return vec!["all".into()];
                }
                let mut labels = vec![format!("≤ {}", edges[0])];
                labels.extend(edges.windows(2).map(|w| format!("({}, {}]", w[0], w[1])));
                labels.push(format!("> {}", edges[edges.len() - 1]));
                labels
            }
            Baseline::Categorical { counts } => counts
                .keys()
                .cloned()
                .chain(std::iter::once("(other)".into()))
                .collect(),
        }
    }

    /// A lookup from live values to bins.
    pub fn binner(&self) -> Binner {
        match self {
            Baseline::Numeric { edges, .. } => Binner::Numeric(edges.clone()),
            Baseline::Categorical { counts } => Binner::Categorical(
                counts
                    .keys()
                    .enumerate()
                    .map(|(i, k)| (k.clone(), i))
                    .collect(),
                counts.len(),
            ),
        }
    }

    /// True for a numeric column (its bins are ordered).
    pub fn is_numeric(&self) -> bool {
        matches!(self, Baseline::Numeric { .. })
    }
}

/// Puts live values in a column's bins.
#[derive(Debug, Clone)]
pub enum Binner {
    /// Ascending edges.
    Numeric(Vec<f64>),
    /// Category → bin, and the "other" bin.
    Categorical(HashMap<String, usize>, usize),
}

/// One live value of a column.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Seen<'a> {
    /// A number.
    Number(f64),
    /// A category (a string, or a boolean as `true`/`false`).
    Category(&'a str),
}

impl Binner {
    /// The bin of `value`, or `None` when it is missing for this column (a string where a number
    /// is binned, a NaN, a number where categories are counted).
    pub fn bin(&self, value: Seen<'_>) -> Option<usize> {
        match (self, value) {
            (Binner::Numeric(edges), Seen::Number(x)) if !x.is_nan() => {
                Some(edges.partition_point(|e| *e < x))
            }
            (Binner::Categorical(index, other), Seen::Category(c)) => {
                Some(index.get(c).copied().unwrap_or(*other))
            }
            // Numbers as categories (an `hour` column trained as "0".."23"): an integral one as
            // the integer, another as its shortest decimal text, as the SDK helpers write them.
            (Binner::Categorical(index, other), Seen::Number(x)) if x.is_finite() => {
                let text = if x.fract() == 0.0 && x.abs() < 1e15 {
                    format!("{}", x as i64)
                } else {
                    format!("{x}")
                };
                Some(index.get(&text).copied().unwrap_or(*other))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Profile, String> {
        Profile::parse(text.as_bytes())
    }

    #[test]
    fn a_profile_is_read_and_its_bins_take_values_by_their_edges() {
        let p = parse(
            r#"{"ferry_profile": 1, "rows": 10,
                "features": [{"name": "x", "numeric": {"edges": [1.0, 2.0], "counts": [3, 3, 4]}},
                             {"name": "c", "categorical": {"counts": {"a": 6, "b": 4}}}],
                "outputs": [{"name": "p", "numeric": {"edges": [], "counts": [10]}}]}"#,
        )
        .unwrap();
        let x = p.features[0].baseline.binner();
        assert_eq!(x.bin(Seen::Number(0.5)), Some(0));
        assert_eq!(x.bin(Seen::Number(1.0)), Some(0), "an edge closes its bin");
        assert_eq!(x.bin(Seen::Number(1.5)), Some(1));
        assert_eq!(x.bin(Seen::Number(9.0)), Some(2));
        assert_eq!(x.bin(Seen::Number(f64::NAN)), None);
        assert_eq!(x.bin(Seen::Category("a")), None);
        let c = p.features[1].baseline.binner();
        assert_eq!(c.bin(Seen::Category("b")), Some(1));
        assert_eq!(
            c.bin(Seen::Category("zzz")),
            Some(2),
            "unseen goes to other"
        );
        assert_eq!(p.features[1].baseline.expected(), vec![6, 4, 0]);
        assert_eq!(
            p.features[0].baseline.labels(),
            vec!["≤ 1", "(1, 2]", "> 2"]
        );
    }

    #[test]
    fn a_wrong_profile_is_refused_saying_what_is_wrong() {
        for (text, says) in [
            (r#"{"ferry_profile": 2, "features": []}"#, "format 2"),
            (r#"{"ferry_profile": 1}"#, "no feature and no output"),
            (
                r#"{"ferry_profile": 1, "features": [{"name": "x", "numeric": {"edges": [2, 1], "counts": [1, 1, 1]}}]}"#,
                "strictly ascending",
            ),
            (
                r#"{"ferry_profile": 1, "features": [{"name": "x", "numeric": {"edges": [1], "counts": [1]}}]}"#,
                "need 2 counts",
            ),
            (
                r#"{"ferry_profile": 1, "features": [{"name": "x", "categorical": {"counts": {"a": 0}}}]}"#,
                "all zero",
            ),
            (
                r#"{"ferry_profile": 1, "features": [{"name": "x", "categorical": {"counts": {"a": 1}}}, {"name": "x", "categorical": {"counts": {"a": 1}}}]}"#,
                "listed twice",
            ),
            (
                r#"{"ferry_profile": 1, "features": 3}"#,
                "not a training profile",
            ),
            (
                r#"{"ferry_profile": 1, "features": [{"name": "x", "numeric": {"edges": [1], "counts": [18446744073709551615, 2]}}]}"#,
                "more than 2^53",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
