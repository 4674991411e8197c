//! A line of the prediction log, written straight from a request's [`Entry`]: keys as literal bytes,
//! strings copied whole when nothing in them needs escaping, and a feature-style JSON text as itself
//! (`verbatim`). At 100 % sampling the log cost fraud-features 11.8 k instructions a request
//! (callgrind), most of it serde_json escaping each key and each quote of the request's text, and
//! checking texts already checked. [`LogRecord`](super::LogRecord)'s derived `Deserialize` reads
//! what this writes; the tests hold the two in step, field by field.
//!
//! A JSON text is written
//! - `{"verbatim":VALUE}` when it is JSON. The value's line breaks (which can only be whitespace
//!   between tokens: JSON strings hold none) are written as spaces, and their byte offsets in the
//!   value as `"lf_at":[…]` and `"cr_at":[…]`; whitespace around the value (a request's trailing
//!   newline) as the strings `"before"` and `"after"`. So the line stays one line, and the text
//!   comes back byte for byte;
//! - `{"json":"…"}`, the text as an escaped string, when it is not JSON (a guest's broken answer).

use std::sync::{Arc, Weak};

use serde_json::value::RawValue;

use super::super::super::{Output, Payload};
use super::{Entry, LoggedTensor};
use crate::registry::ModelVersion;
use crate::stamps::unix_ms;

/// The fields a version's lines share (host, model, version, digests), written once per batch
/// and copied into each of its lines: they were most of a line's strings.
#[derive(Default)]
pub(super) struct VersionFields {
    /// Held weakly, so a batch keeps no version alive; the weak reference keeps its address from
    /// being taken by another version meanwhile, so the address names it.
    written: Vec<(Weak<ModelVersion>, String, Vec<u8>)>,
    /// Index in `written` by address (a batch may hold lines of thousands of versions).
    by_address: std::collections::HashMap<usize, usize>,
    /// The last one asked for: a run of one version's lines looks nothing up.
    last: usize,
}

impl VersionFields {
    /// The index of `version`'s fields, written when first asked for.
    fn index(&mut self, version: &Arc<ModelVersion>, host: &str) -> usize {
        let at = Arc::as_ptr(version);
        if self
            .written
            .get(self.last)
            .is_some_and(|(v, ..)| v.as_ptr() == at)
        {
            return self.last;
        }
        let next = self.written.len();
        let i = *self.by_address.entry(at as usize).or_insert(next);
        if i == next {
            self.written.push((
                Arc::downgrade(version),
                version.manifest.model.clone(),
                fields(version, host),
            ));
        }
        self.last = i;
        i
    }

    /// The model of the version at `index`.
    pub(super) fn model(&self, index: usize) -> &str {
        &self.written[index].1
    }
}

fn fields(version: &ModelVersion, host: &str) -> Vec<u8> {
    let m = &version.manifest;
    let mut out = Vec::new();
    out.extend_from_slice(b",\"host\":");
    string(&mut out, host);
    out.extend_from_slice(b",\"model\":");
    string(&mut out, &m.model);
    out.extend_from_slice(b",\"version\":");
    string(&mut out, &m.version);
    out.extend_from_slice(b",\"component_sha256\":");
    string(&mut out, &m.component_sha256);
    if let Some(weights) = &m.weights_sha256 {
        out.extend_from_slice(b",\"weights_sha256\":");
        string(&mut out, weights);
    }
    if let Some(config) = &m.config_sha256 {
        out.extend_from_slice(b",\"config_sha256\":");
        string(&mut out, config);
    }
    if !m.graphs.is_empty() {
        out.extend_from_slice(b",\"graphs\":");
        serialized(&mut out, &m.graphs);
    }
    out
}

/// Appends `entry`'s line (with its newline) to `out`; answers the index of its version in
/// `versions`, the batch's version fields.
pub(super) fn write(
    out: &mut Vec<u8>,
    entry: &Entry,
    host: &str,
    versions: &mut VersionFields,
) -> usize {
    out.extend_from_slice(b"{\"id\":");
    match &entry.request_id {
        Some(id) => string(out, id),
        None => string(out, &uuid::Uuid::new_v4().to_string()),
    }
    out.extend_from_slice(b",\"time_unix_ms\":");
    number(out, unix_ms(entry.at));
    let version = versions.index(&entry.version, host);
    out.extend_from_slice(&versions.written[version].2);
    out.extend_from_slice(b",\"route\":");
    string(out, entry.payload.route());
    out.extend_from_slice(b",\"input\":");
    match &entry.payload {
        // The front end checked the request is JSON before the guest got it.
        Payload::Features(text) => json_text(out, text, Checked::Already),
        Payload::Tensors(t) => {
            out.extend_from_slice(b"{\"tensors\":");
            tensors(out, &t.inputs);
            out.extend_from_slice(b",\"parameters\":");
            string(out, &t.parameters);
            if !t.outputs.is_empty() {
                out.extend_from_slice(b",\"outputs\":");
                serialized(out, &t.outputs);
            }
            out.push(b'}');
        }
    }
    match &entry.outcome {
        Ok(output) => {
            out.extend_from_slice(b",\"output\":");
            match output {
                // A guest's answer is whatever it wrote: checked here before it goes in verbatim.
                Output::Features(text) => json_text(out, text, Checked::Not),
                Output::Tensors(t) => {
                    out.extend_from_slice(b"{\"tensors\":");
                    tensors(out, t);
                    out.push(b'}');
                }
            }
        }
        Err(_) => {}
    }
    out.extend_from_slice(b",\"status\":");
    number(out, u64::from(entry.status));
    if let Err(e) = &entry.outcome {
        out.extend_from_slice(b",\"error\":");
        string(out, &e.to_string());
    }
    out.extend_from_slice(b",\"latency_us\":");
    number(out, entry.latency.as_micros() as u64);
    out.extend_from_slice(b"}\n");
    version
}

/// Whether a text is known to be JSON.
#[derive(Clone, Copy, PartialEq)]
enum Checked {
    Already,
    Not,
}

fn json_text(out: &mut Vec<u8>, text: &str, checked: Checked) {
    debug_assert!(
        checked == Checked::Not || serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok(),
        "a request's text reached the log unchecked: {text:?}"
    );
    let is_space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let bytes = text.as_bytes();
    // The value's place in the text, without the whitespace around it.
    let value = match checked {
        Checked::Already => {
            let start = bytes.iter().position(|b| !is_space(b));
            let end = bytes.iter().rposition(|b| !is_space(b));
            start.zip(end).map(|(start, end)| start..end + 1)
        }
        Checked::Not => serde_json::from_str::<&RawValue>(text).ok().map(|raw| {
            let start = start_of(text, raw.get());
            start..start + raw.get().len()
        }),
    };
    let Some(value) = value else {
        out.extend_from_slice(b"{\"json\":");
        serialized(out, text);
        out.push(b'}');
        return;
    };
    out.extend_from_slice(b"{\"verbatim\":");
    let value = &text[value];
    let start = out.len();
    out.extend_from_slice(value.as_bytes());
    // Line breaks become spaces in the copy, their offsets listed after it (no allocation: a
    // pretty-printed request has a break every 15 bytes or so).
    for (open, byte) in [(&b",\"lf_at\":["[..], b'\n'), (&b",\"cr_at\":["[..], b'\r')] {
        let mut separator = open;
        for at in memchr::memchr_iter(byte, value.as_bytes()) {
            out[start + at] = b' ';
            out.extend_from_slice(separator);
            separator = b",";
            number(out, at as u64);
        }
        if separator != open {
            out.push(b']');
        }
    }
    let value_at = start_of(text, value);
    for (key, around) in [
        (&b",\"before\":"[..], &text[..value_at]),
        (&b",\"after\":"[..], &text[value_at + value.len()..]),
    ] {
        if !around.is_empty() {
            out.extend_from_slice(key);
            serialized(out, around);
        }
    }
    out.push(b'}');
}

/// Where `part` (a slice of `text`) begins in it.
fn start_of(text: &str, part: &str) -> usize {
    part.as_ptr() as usize - text.as_ptr() as usize
}

/// A JSON text read back from either form [`json_text`] writes: `Ok(None)` when `raw` is neither.
pub(super) fn read_json_text(raw: &RawValue) -> Result<Option<String>, String> {
    #[derive(serde::Deserialize)]
    struct Verbatim<'a> {
        #[serde(borrow)]
        verbatim: &'a RawValue,
        #[serde(default)]
        lf_at: Vec<u64>,
        #[serde(default)]
        cr_at: Vec<u64>,
        #[serde(default)]
        before: String,
        #[serde(default)]
        after: String,
    }
    #[derive(serde::Deserialize)]
    struct Escaped {
        json: String,
    }
    if let Ok(v) = serde_json::from_str::<Verbatim>(raw.get()) {
        let mut bytes = v.verbatim.get().as_bytes().to_vec();
        for (key, offsets, byte) in [("lf_at", v.lf_at, b'\n'), ("cr_at", v.cr_at, b'\r')] {
            for at in offsets {
                match usize::try_from(at).ok().and_then(|at| bytes.get_mut(at)) {
                    Some(b) if *b == b' ' => *b = byte,
                    _ => return Err(format!("`{key}` names byte {at}, not a space of the text")),
                }
            }
        }
        // Only spaces became line breaks: still UTF-8.
        let value = String::from_utf8(bytes).expect("ASCII for ASCII");
        return Ok(Some(v.before + &value + &v.after));
    }
    Ok(serde_json::from_str::<Escaped>(raw.get())
        .ok()
        .map(|e| e.json))
}

/// A JSON string: copied whole when nothing in it needs escaping (ids, names, digests), else
/// escaped by serde_json.
fn string(out: &mut Vec<u8>, s: &str) {
    if needs_escape(s.as_bytes()) {
        serialized(out, s);
    } else {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

/// Whether `bytes` holds a quote, a backslash or a control character, eight bytes at a time
/// (a byte-by-byte check cost a line more than the rest of its strings' copying).
pub(super) fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // A byte of `x` is zero, or below 0x20: the classic tests, exact for the first such byte
    // (a borrow can only mark bytes after a true one, which does not change the answer).
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let below_space = |x: u64| x.wrapping_sub(ONES * 0x20) & !x & HIGHS;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let x = u64::from_ne_bytes(chunk.try_into().expect("eight bytes"));
        if below_space(x) | zero(x ^ (ONES * u64::from(b'"'))) | zero(x ^ (ONES * u64::from(b'\\')))
            != 0
        {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

fn number(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn tensors(out: &mut Vec<u8>, tensors: &[crate::runtime::Tensor]) {
    let logged: Vec<LoggedTensor> = tensors.iter().map(LoggedTensor::of).collect();
    serialized(out, &logged);
}

fn serialized(out: &mut Vec<u8>, value: &(impl serde::Serialize + ?Sized)) {
    serde_json::to_writer(&mut *out, value).expect("serialising to memory cannot fail");
}
