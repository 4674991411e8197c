//! Drift of a version's live traffic from its training data: the version's training profile
//! ([`profile`]), live counts in the profile's bins over a sliding window, and how far apart they
//! are ([`stats`]). This module only counts and compares; `serving/monitoring` decides which
//! requests are sampled and feeds them here off the request path, and `/metrics` and
//! `GET /v1/models/{m}/monitoring` read [`VersionDrift::report`].

pub mod profile;
pub mod stats;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::runtime::{Tensor, TensorData};
use profile::{Binner, Column, Profile, Seen};

/// Per feature and per output: its name and, once the window holds enough of it, its index and
/// distance (what `/metrics` reads).
pub type Summary<'a> = (
    Vec<(&'a str, Option<(f64, f64)>)>,
    Vec<(&'a str, Option<(f64, f64)>)>,
);

/// Rows of one sampled request that are counted (a large batch is counted by its first rows).
pub const MAX_ROWS_PER_SAMPLE: usize = 64;

/// The sliding window live counts are kept over.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// How far back it reaches.
    pub span: Duration,
    /// Parts it moves by (the oldest part leaves as a new one starts).
    pub parts: u32,
    /// Rows the window must hold before drift is reported.
    pub min_rows: u64,
}

impl Default for Window {
    fn default() -> Window {
        Window {
            span: Duration::from_secs(3600),
            parts: 12,
            min_rows: 200,
        }
    }
}

/// A version's training profile and the live counts beside it.
#[derive(Debug)]
pub struct VersionDrift {
    features: Vec<Watched>,
    outputs: Vec<Watched>,
    window: Window,
    live: Mutex<Live>,
    /// Requests sampled and counted.
    pub samples: AtomicU64,
}

/// One watched column.
#[derive(Debug)]
struct Watched {
    column: Column,
    binner: Binner,
    expected: Vec<u64>,
    /// The bins' names (made once: a profile may have thousands).
    labels: Vec<String>,
    /// Where it is in a tensor request: the tensor and, for a 2-D one, the column (`input[3]`).
    tensor: (String, Option<usize>),
}

/// Live counts: parts of the window, newest last.
#[derive(Debug)]
struct Live {
    origin: Instant,
    parts: VecDeque<Part>,
}

#[derive(Debug)]
struct Part {
    /// Which part of time since `origin` (time ÷ the part's length).
    index: u64,
    /// Per watched column (features, then outputs): counts per bin, and values missing.
    counts: Vec<Vec<u64>>,
    missing: Vec<u64>,
}

/// A column's drift over the window, for the monitoring route and `/metrics`.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnDrift {
    /// The column.
    pub name: String,
    /// "numeric" or "categorical".
    pub kind: &'static str,
    /// Population stability index (none until the window holds `min_rows` of it).
    pub psi: Option<f64>,
    /// Kolmogorov–Smirnov (numeric) or total variation (categorical) distance, likewise.
    pub distance: Option<f64>,
    /// Rows counted in the window.
    pub rows: u64,
    /// Rows where it was absent or of the wrong kind.
    pub missing: u64,
    /// The bins' names.
    pub bins: Vec<String>,
    /// The training counts per bin.
    pub baseline: Vec<u64>,
    /// The live counts per bin.
    pub live: Vec<u64>,
}

/// A version's drift over the window.
#[derive(Debug, Clone, Serialize)]
pub struct DriftReport {
    /// The window's span in seconds.
    pub window_s: u64,
    /// Rows a column needs in the window before its drift is reported (and at least ten a bin).
    pub min_rows: u64,
    /// Per feature.
    pub features: Vec<ColumnDrift>,
    /// Per output.
    pub outputs: Vec<ColumnDrift>,
}

impl VersionDrift {
    /// Watches `profile`'s columns over `window`.
    pub fn new(profile: Profile, window: Window) -> VersionDrift {
        let watch = |columns: Vec<Column>| -> Vec<Watched> {
            columns
                .into_iter()
                .map(|column| Watched {
                    binner: column.baseline.binner(),
                    expected: column.baseline.expected(),
                    labels: column.baseline.labels(),
                    tensor: tensor_column(&column.name),
                    column,
                })
                .collect()
        };
        let features = watch(profile.features);
        let outputs = watch(profile.outputs);
        VersionDrift {
            features,
            outputs,
            window: Window {
                parts: window.parts.max(1),
                span: window.span.max(Duration::from_secs(1)),
                ..window
            },
            live: Mutex::new(Live {
                origin: Instant::now(),
                parts: VecDeque::new(),
            }),
            samples: AtomicU64::new(0),
        }
    }

    /// Counts a sampled feature-style request (its JSON text) and, when it answered, the answer.
    /// The request's fields are read from its `features` object when it has one, else from the
    /// top level; the answer's from its top level.
    pub fn observe_json(&self, request: &str, answer: Option<&str>) {
        let request: Option<Value> = serde_json::from_str(request).ok();
        let fields = request.as_ref().and_then(|r| {
            r.get("features")
                .and_then(Value::as_object)
                .or_else(|| r.as_object())
        });
        let answer: Option<Value> = answer.and_then(|a| serde_json::from_str(a).ok());
        let answer_fields = answer.as_ref().and_then(Value::as_object);
        let bins = |watched: &[Watched], fields: Option<&serde_json::Map<String, Value>>| {
            watched
                .iter()
                .map(|w| {
                    let value = fields.and_then(|f| f.get(&w.column.name));
                    value.and_then(json_value).and_then(|v| w.binner.bin(v))
                })
                .collect::<Vec<_>>()
        };
        let mut row = bins(&self.features, fields);
        if answer_fields.is_some() {
            row.extend(bins(&self.outputs, answer_fields));
        } else {
            // No answer (the call failed): outputs are not counted, not even as missing.
            row.extend(std::iter::repeat_n(Some(usize::MAX), self.outputs.len()));
        }
        self.count(std::iter::once(row));
    }

    /// Counts a sampled tensor request and, when it answered, its outputs: row by row, up to
    /// [`MAX_ROWS_PER_SAMPLE`] rows.
    pub fn observe_tensors(&self, inputs: &[Tensor], outputs: Option<&[Tensor]>) {
        let rows = inputs
            .first()
            .and_then(|t| t.shape.first())
            .map_or(1, |n| *n as usize)
            .min(MAX_ROWS_PER_SAMPLE);
        let rows = (0..rows).map(|r| {
            let mut row: Vec<Option<usize>> = self
                .features
                .iter()
                .map(|w| tensor_value(inputs, &w.tensor, r).and_then(|v| w.binner.bin(v.seen())))
                .collect();
            row.extend(self.outputs.iter().map(|w| match outputs {
                Some(outputs) => {
                    tensor_value(outputs, &w.tensor, r).and_then(|v| w.binner.bin(v.seen()))
                }
                None => Some(usize::MAX),
            }));
            row
        });
        self.count(rows);
    }

    /// Adds rows of bins (`None`: missing; `usize::MAX`: not counted) to the current part.
    fn count(&self, rows: impl Iterator<Item = Vec<Option<usize>>>) {
        let columns: Vec<usize> = self
            .features
            .iter()
            .chain(&self.outputs)
            .map(|w| w.expected.len())
            .collect();
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let part = live.current(self.part_length(), self.window.parts, &columns);
        for row in rows {
            for (i, bin) in row.into_iter().enumerate() {
                match bin {
                    Some(usize::MAX) => {}
                    Some(bin) => part.counts[i][bin] += 1,
                    None => part.missing[i] += 1,
                }
            }
        }
        drop(live);
        self.samples.fetch_add(1, Relaxed);
    }

    fn part_length(&self) -> Duration {
        self.window.span / self.window.parts
    }

    /// The live counts per column over the window, and the values missing.
    fn window_counts(&self) -> (Vec<Vec<u64>>, Vec<u64>) {
        let watched = || self.features.iter().chain(&self.outputs);
        let mut counts: Vec<Vec<u64>> = watched().map(|w| vec![0; w.expected.len()]).collect();
        let mut missing = vec![0u64; counts.len()];
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let now = live.index(self.part_length());
        for part in live
            .parts
            .iter()
            .filter(|p| p.index + u64::from(self.window.parts) > now)
        {
            for (i, bins) in part.counts.iter().enumerate() {
                for (total, n) in counts[i].iter_mut().zip(bins) {
                    *total += n;
                }
                missing[i] += part.missing[i];
            }
        }
        (counts, missing)
    }

    /// True when `rows` in the window are enough to judge a column of `bins` bins: the window's
    /// `min_rows`, and ten rows a bin (below that, sampling alone moves the index past 0.1).
    fn enough(&self, rows: u64, bins: usize) -> bool {
        rows >= self.window.min_rows.max(10 * bins as u64).max(1)
    }

    /// Per feature and per output: its name, index and distance (none until the window holds
    /// enough of it), without the histograms (what `/metrics` reads).
    pub fn summary(&self) -> Summary<'_> {
        let (counts, _) = self.window_counts();
        let mut columns = self
            .features
            .iter()
            .chain(&self.outputs)
            .zip(counts)
            .map(|(w, live)| {
                let rows: u64 = live.iter().sum();
                let ordered = w.column.baseline.is_numeric();
                let drift = self.enough(rows, w.expected.len()).then(|| {
                    (
                        stats::psi(&w.expected, &live),
                        stats::distance(&w.expected, &live, ordered),
                    )
                });
                (w.column.name.as_str(), drift)
            });
        let features = columns.by_ref().take(self.features.len()).collect();
        (features, columns.collect())
    }

    /// Drift per column over the window, with both histograms.
    pub fn report(&self) -> DriftReport {
        let (counts, missing) = self.window_counts();
        let mut columns = self
            .features
            .iter()
            .chain(&self.outputs)
            .zip(counts)
            .zip(missing)
            .map(|((w, live), missing)| {
                let rows: u64 = live.iter().sum();
                let enough = self.enough(rows, w.expected.len());
                let ordered = w.column.baseline.is_numeric();
                ColumnDrift {
                    name: w.column.name.clone(),
                    kind: if ordered { "numeric" } else { "categorical" },
                    psi: enough.then(|| stats::psi(&w.expected, &live)),
                    distance: enough.then(|| stats::distance(&w.expected, &live, ordered)),
                    rows,
                    missing,
                    bins: w.labels.clone(),
                    baseline: w.expected.clone(),
                    live,
                }
            });
        let features = columns.by_ref().take(self.features.len()).collect();
        let outputs = columns.collect();
        DriftReport {
            window_s: self.window.span.as_secs(),
            min_rows: self.window.min_rows,
            features,
            outputs,
        }
    }
}

impl Live {
    fn index(&self, part: Duration) -> u64 {
        (self.origin.elapsed().as_nanos() / part.as_nanos().max(1)) as u64
    }

    /// The part counts go to now, started (and the ones past the window dropped) if need be.
    fn current(&mut self, part: Duration, parts: u32, columns: &[usize]) -> &mut Part {
        let now = self.index(part);
        while self
            .parts
            .front()
            .is_some_and(|p| p.index + u64::from(parts) <= now)
        {
            self.parts.pop_front();
        }
        if self.parts.back().is_none_or(|p| p.index != now) {
            self.parts.push_back(Part {
                index: now,
                counts: columns.iter().map(|bins| vec![0; *bins]).collect(),
                missing: vec![0; columns.len()],
            });
        }
        self.parts.back_mut().expect("pushed above")
    }
}

/// `input[3]` → (`input`, column 3); `label` → (`label`, none).
fn tensor_column(name: &str) -> (String, Option<usize>) {
    if let Some(open) = name.rfind('[') {
        if let Some(index) = name[open + 1..]
            .strip_suffix(']')
            .and_then(|i| i.parse().ok())
        {
            return (name[..open].to_owned(), Some(index));
        }
    }
    (name.to_owned(), None)
}

/// A JSON field as a live value: a number, a string, or a boolean as a category.
fn json_value(value: &Value) -> Option<Seen<'_>> {
    match value {
        Value::Number(n) => n.as_f64().map(Seen::Number),
        Value::String(s) => Some(Seen::Category(s)),
        Value::Bool(true) => Some(Seen::Category("true")),
        Value::Bool(false) => Some(Seen::Category("false")),
        _ => None,
    }
}

/// One element of a tensor.
enum Element<'a> {
    Number(f64),
    Text(std::borrow::Cow<'a, str>),
}

impl Element<'_> {
    fn seen(&self) -> Seen<'_> {
        match self {
            Element::Number(x) => Seen::Number(*x),
            Element::Text(t) => Seen::Category(t),
        }
    }
}

/// Row `row` of the tensor and column `at` names in `tensors`, if it is there.
fn tensor_value<'a>(
    tensors: &'a [Tensor],
    (name, column): &(String, Option<usize>),
    row: usize,
) -> Option<Element<'a>> {
    let tensor = tensors.iter().find(|t| &t.name == name)?;
    // The guest's shape, unchecked against its data: an overflowing product is no element.
    let width = tensor
        .shape
        .iter()
        .skip(1)
        .try_fold(1u64, |n, d| n.checked_mul(*d))?;
    let width = usize::try_from(width).ok()?;
    let at = match column {
        Some(c) if *c < width => row.checked_mul(width)?.checked_add(*c)?,
        None if width == 1 => row,
        _ => return None,
    };
    let number = |x: f64| Some(Element::Number(x));
    match &tensor.data {
        TensorData::Bool(v) => v
            .get(at)
            .map(|b| Element::Text(if *b { "true" } else { "false" }.into())),
        TensorData::Uint8(v) => v.get(at).and_then(|x| number(f64::from(*x))),
        TensorData::Uint16(v) => v.get(at).and_then(|x| number(f64::from(*x))),
        TensorData::Uint32(v) => v.get(at).and_then(|x| number(f64::from(*x))),
        TensorData::Uint64(v) => v.get(at).and_then(|x| number(*x as f64)),
        TensorData::Int8(v) => v.get(at).and_then(|x| number(f64::from(*x))),
        TensorData::Int16(v) => v.get(at).and_then(|x| number(f64::from(*x))),
        TensorData::Int32(v) => v.get(at).and_then(|x| number(f64::from(*x))),
        TensorData::Int64(v) => v.get(at).and_then(|x| number(*x as f64)),
        TensorData::Fp32(v) => v.get(at).and_then(|x| number(f64::from(*x))),
        TensorData::Fp64(v) => v.get(at).and_then(|x| number(*x)),
        TensorData::Bytes(v) => v.get(at).map(|b| Element::Text(String::from_utf8_lossy(b))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drift(min_rows: u64) -> VersionDrift {
        let profile = Profile::parse(
            br#"{"ferry_profile": 1,
                 "features": [{"name": "x", "numeric": {"edges": [1.0, 2.0, 3.0], "counts": [25, 25, 25, 25]}},
                              {"name": "c", "categorical": {"counts": {"a": 50, "b": 50}}},
                              {"name": "input[1]", "numeric": {"edges": [0.5], "counts": [50, 50]}}],
                 "outputs": [{"name": "p", "numeric": {"edges": [0.5], "counts": [50, 50]}}]}"#,
        )
        .unwrap();
        VersionDrift::new(
            profile,
            Window {
                min_rows,
                ..Window::default()
            },
        )
    }

    #[test]
    fn requests_like_the_training_data_show_no_drift_and_shifted_ones_do() {
        let like = drift(40);
        let shifted = drift(40);
        for i in 0..80 {
            let x = 0.5 + f64::from(i % 4);
            let c = if i % 2 == 0 { "a" } else { "b" };
            like.observe_json(
                &format!(r#"{{"features": {{"x": {x}, "c": "{c}"}}}}"#),
                Some(r#"{"p": 0.7}"#),
            );
            shifted.observe_json(
                &format!(r#"{{"features": {{"x": {}, "c": "{c}"}}}}"#, x * 3.0),
                Some(r#"{"p": 0.7}"#),
            );
        }
        let (like, shifted) = (like.report(), shifted.report());
        assert!(like.features[0].psi.unwrap() < 0.1, "{like:?}");
        assert!(shifted.features[0].psi.unwrap() > 0.25, "{shifted:?}");
        // The unshifted feature stays where it was.
        assert!(shifted.features[1].psi.unwrap() < 0.1, "{shifted:?}");
        // Every answer was 0.7: the output moved from the training split.
        assert!(like.outputs[0].distance.unwrap() > 0.4, "{like:?}");
        // A column the requests never carry is missing, never drifting.
        assert_eq!(like.features[2].rows, 0);
        assert_eq!(like.features[2].missing, 80);
        assert_eq!(like.features[2].psi, None);
    }

    #[test]
    fn tensor_rows_are_counted_by_column_and_a_failed_call_counts_no_outputs() {
        let d = drift(1);
        let input = Tensor {
            name: "input".into(),
            shape: vec![3, 2],
            data: TensorData::Fp32(vec![0.0, 0.1, 0.0, 0.9, 0.0, 0.7]),
        };
        d.observe_tensors(std::slice::from_ref(&input), None);
        let r = d.report();
        assert_eq!(r.features[2].live, vec![1, 2]);
        assert_eq!(r.features[0].missing, 3, "no tensor named x");
        assert_eq!((r.outputs[0].rows, r.outputs[0].missing), (0, 0));
        assert_eq!(tensor_column("input[12]"), ("input".into(), Some(12)));
        assert_eq!(tensor_column("weird[x]"), ("weird[x]".into(), None));
    }

    #[test]
    fn counts_leave_the_window_as_it_moves() {
        let profile = Profile::parse(
            br#"{"ferry_profile": 1, "features": [{"name": "x", "numeric": {"edges": [], "counts": [1]}}]}"#,
        )
        .unwrap();
        let d = VersionDrift::new(
            profile,
            Window {
                span: Duration::from_secs(1),
                parts: 4,
                min_rows: 1,
            },
        );
        d.observe_json(r#"{"x": 1}"#, None);
        assert_eq!(d.report().features[0].rows, 1);
        std::thread::sleep(Duration::from_millis(1300));
        assert_eq!(d.report().features[0].rows, 0);
    }
}
