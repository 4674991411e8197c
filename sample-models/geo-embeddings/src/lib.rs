//! Trip ETA from a large embedding table: the pickup and drop-off cells of a city grid, looked up in one
//! shared table E[C, D], with the hour and the straight-line distance, through a small MLP.
//!
//! Trained by `training/train.py` (numpy). The version's weights blob is the whole model, and its table
//! can be gigabytes, so the model keeps the blob `init` hands it as its one copy and reads embedding rows
//! in place; only the small dense network is parsed into floats. Layout (little-endian):
//!
//! | bytes          | what                                                                |
//! |----------------|---------------------------------------------------------------------|
//! | 0..4           | magic `FGEO`                                                        |
//! | 4..20          | u32 format version (1), C cells, D embedding width, H hidden units  |
//! | 20..           | f32 W1[(2D+3) × H] row-major, b1[H], w2[H], b2, distance mean, std  |
//! | ..table_offset | zeros up to a 64-byte boundary                                      |
//! | table_offset.. | f32 E[C × D] row-major, to the end of the blob                      |

use ferry_sdk::prelude::*;

const MAGIC: &[u8; 4] = b"FGEO";
const FORMAT_VERSION: u32 = 1;
const HEADER_BYTES: usize = 20;
const TABLE_ALIGN: usize = 64;

/// A trip as callers send it under `"features"`.
struct Trip {
    pickup_cell: usize,
    dropoff_cell: usize,
    hour: u32,
    distance_km: f64,
}

struct GeoEmbeddings {
    cells: usize,
    dim: usize,
    hidden: usize,
    /// W1[(2D+3) × H], row-major.
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
    b2: f32,
    distance_mean: f32,
    distance_std: f32,
    /// The weights blob as `init` received it; the table is its tail, from `table_offset`.
    blob: Vec<u8>,
    table_offset: usize,
}

impl GeoEmbeddings {
    fn from_blob(blob: Vec<u8>) -> Result<Self> {
        let bad = |what: String| Error::internal(format!("geo-embeddings weights: {what}"));
        if blob.len() < HEADER_BYTES {
            return Err(bad(format!(
                "{} bytes, shorter than the {HEADER_BYTES}-byte header",
                blob.len()
            )));
        }
        if &blob[..4] != MAGIC {
            return Err(bad(format!(
                "magic {:?}, expected \"FGEO\": not a geo-embeddings weights file",
                String::from_utf8_lossy(&blob[..4])
            )));
        }
        let word = |i: usize| u32::from_le_bytes(blob[4 * i..4 * i + 4].try_into().unwrap());
        let (version, cells, dim, hidden) = (word(1), word(2), word(3), word(4));
        if version != FORMAT_VERSION {
            return Err(bad(format!(
                "format version {version}; this model reads version {FORMAT_VERSION}"
            )));
        }
        if cells == 0 || dim == 0 || hidden == 0 {
            return Err(bad(format!(
                "header says C = {cells} cells, D = {dim}, H = {hidden}; all must be ≥ 1"
            )));
        }
        // Sizes in u128: a corrupt header cannot overflow them, on wasm32 or anywhere.
        let (c, d, h) = (u128::from(cells), u128::from(dim), u128::from(hidden));
        let dense_floats = (2 * d + 3) * h + 2 * h + 3;
        let dense_end = HEADER_BYTES as u128 + 4 * dense_floats;
        let table_offset = dense_end.next_multiple_of(TABLE_ALIGN as u128);
        let expected = table_offset + 4 * c * d;
        if blob.len() as u128 != expected {
            return Err(bad(format!(
                "{} bytes, but its header (C = {cells} cells, D = {dim}, H = {hidden}) implies \
                 {expected}: {table_offset} of header, dense network and padding, then the \
                 {cells} × {dim} float32 table ({} bytes); the file is cut short or not this header's",
                blob.len(),
                4 * c * d
            )));
        }
        // Everything below lies inside the blob, so it fits in usize.
        let (dense_end, table_offset) = (dense_end as usize, table_offset as usize);
        if blob[dense_end..table_offset].iter().any(|&b| b != 0) {
            return Err(bad(format!(
                "bytes {dense_end}..{table_offset} (padding before the table) are not zeros"
            )));
        }
        let (dim, hidden) = (dim as usize, hidden as usize);
        let mut dense = f32s(&blob[HEADER_BYTES..dense_end]);
        let tail = dense.split_off((2 * dim + 3) * hidden);
        let (b1, w2) = (tail[..hidden].to_vec(), tail[hidden..2 * hidden].to_vec());
        let [b2, distance_mean, distance_std] = tail[2 * hidden..] else {
            unreachable!("the dense network's length was checked above")
        };
        if !(distance_std.is_finite() && distance_std > 0.0) {
            return Err(bad(format!(
                "distance std {distance_std}; the scaling needs a positive number"
            )));
        }
        Ok(GeoEmbeddings {
            cells: cells as usize,
            dim,
            hidden,
            w1: dense,
            b1,
            w2,
            b2,
            distance_mean,
            distance_std,
            blob,
            table_offset,
        })
    }

    /// Row `cell` of the table, read in place.
    fn embedding(&self, cell: usize) -> impl Iterator<Item = f64> + '_ {
        let start = self.table_offset + cell * self.dim * 4;
        self.blob[start..start + self.dim * 4]
            .chunks_exact(4)
            .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
    }

    /// The input vector of `train.py::features`, in the same order.
    fn features(&self, trip: &Trip) -> Vec<f64> {
        let hour = 2.0 * std::f64::consts::PI * f64::from(trip.hour) / 24.0;
        let distance =
            (trip.distance_km - f64::from(self.distance_mean)) / f64::from(self.distance_std);
        let mut x = Vec::with_capacity(2 * self.dim + 3);
        x.extend(self.embedding(trip.pickup_cell));
        x.extend(self.embedding(trip.dropoff_cell));
        x.extend([distance, hour.sin(), hour.cos()]);
        x
    }

    /// Dense layer with ReLU, then the linear output: minutes.
    fn eta_minutes(&self, x: &[f64]) -> f64 {
        let mut z: Vec<f64> = self.b1.iter().map(|&b| f64::from(b)).collect();
        for (xi, row) in x.iter().zip(self.w1.chunks_exact(self.hidden)) {
            for (zj, &w) in z.iter_mut().zip(row) {
                *zj += xi * f64::from(w);
            }
        }
        z.iter()
            .zip(&self.w2)
            .map(|(zj, &w)| zj.max(0.0) * f64::from(w))
            .sum::<f64>()
            + f64::from(self.b2)
    }

    /// `{"features": {"pickup_cell", "dropoff_cell", "hour", "distance_km"}}`, each checked.
    fn trip(&self, request: &Value) -> Result<Trip> {
        let features = request
            .get("features")
            .filter(|f| f.is_object())
            .ok_or_else(|| {
                Error::invalid_input(
                "expected {\"features\": {\"pickup_cell\": …, \"dropoff_cell\": …, \"hour\": …, \
                 \"distance_km\": …}}",
            )
            })?;
        let field = |name: &str, valid: &str| {
            let got = features
                .get(name)
                .map_or("nothing".into(), Value::to_string);
            Error::invalid_input(format!("`features.{name}` must be {valid}, got {got}"))
        };
        let cell = |name: &str| {
            features[name]
                .as_u64()
                .filter(|&c| c < self.cells as u64)
                .map(|c| c as usize)
                .ok_or_else(|| {
                    let last = self.cells - 1;
                    field(name, &format!("a cell index, an integer 0-{last}"))
                })
        };
        Ok(Trip {
            pickup_cell: cell("pickup_cell")?,
            dropoff_cell: cell("dropoff_cell")?,
            hour: features["hour"]
                .as_u64()
                .filter(|&h| h <= 23)
                .map(|h| h as u32)
                .ok_or_else(|| field("hour", "an integer 0-23"))?,
            distance_km: features["distance_km"]
                .as_f64()
                .filter(|d| d.is_finite() && *d >= 0.0)
                .ok_or_else(|| field("distance_km", "a number ≥ 0"))?,
        })
    }
}

impl Model for GeoEmbeddings {
    fn load(init: Init) -> Result<Self> {
        // `init` is ours: moving the blob out keeps it the one copy of the weights.
        let blob = init.weights.ok_or_else(|| {
            Error::internal(
                "geo-embeddings has no compiled-in weights: push geo-embeddings.weights \
                 (written by training/train.py) with the version",
            )
        })?;
        GeoEmbeddings::from_blob(blob)
    }

    fn metadata(&self) -> Metadata {
        Metadata::new("numpy-trained-embedding-mlp")
            .description(format!(
                "trip ETA in minutes from pickup and drop-off cell embeddings ({} cells × {}, one \
                 shared table), hour and distance, through a {}-unit ReLU layer",
                self.cells, self.dim, self.hidden
            ))
            .predicts_json()
    }

    fn predict(&self, request: Value) -> Result<Value> {
        let trip = self.trip(&request)?;
        Ok(json!({ "eta_minutes": self.eta_minutes(&self.features(&trip)) }))
    }
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

export_model!(GeoEmbeddings);
