//! The binary tensor data extension: a JSON header of `Inference-Header-Content-Length` bytes (which
//! may lie, overflow or not be a number), inputs whose `binary_data_size` may lie or not be a count,
//! raw tensors too short or too long, BYTES elements whose 4-byte lengths lie, beside JSON inputs; and
//! `tensor::binary::decode` on its own, with any count.

use axum::body::Body;
use axum::http::{HeaderValue, Request};
use ferry::runtime::Datatype;
use ferry::tensor::binary;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Map, Value};

use crate::alloc::measure;
use crate::app::App;
use crate::oip_json::{
    check_answer, check_usage, envelope, hostile_shape, json_input, typed_leaf, Envelope, GenInput,
};
use crate::oracle::{self, NAMES};

/// How a raw tensor lies about itself.
#[derive(Debug, Clone)]
enum Lie {
    None,
    Truncate(prop::sample::Index),
    Extend(Vec<u8>),
    Random(Vec<u8>),
    /// A BYTES element's length prefix replaced.
    Prefix(prop::sample::Index, u32),
}

/// An input whose data travels as binary.
#[derive(Debug, Clone)]
struct BinInput {
    json: GenInput,
    payload: Vec<u8>,
}

fn lie() -> impl Strategy<Value = Lie> {
    prop_oneof![
        12 => Just(Lie::None),
        1 => any::<prop::sample::Index>().prop_map(Lie::Truncate),
        1 => prop::collection::vec(any::<u8>(), 1..9).prop_map(Lie::Extend),
        1 => prop::collection::vec(any::<u8>(), 0..40).prop_map(Lie::Random),
        2 => (any::<prop::sample::Index>(), prop_oneof![
            Just(u32::MAX), Just(0x8000_0000), Just(0), Just(1), Just(5), any::<u32>()
        ]).prop_map(|(i, n)| Lie::Prefix(i, n)),
    ]
}

/// `binary_data_size` for `len` bytes: usually the truth.
fn size_param(len: usize) -> impl Strategy<Value = Value> {
    prop_oneof![
        12 => Just(json!(len)),
        1 => Just(json!(len + 1)),
        1 => Just(json!(len.saturating_sub(1))),
        1 => prop::sample::select(vec![
            json!(u64::MAX), json!(1u64 << 63), json!(-1), json!(format!("{len}")), json!(len as f64 + 0.5), json!(null), json!([len])
        ]),
    ]
}

fn encode_bytes(elements: &[Vec<u8>]) -> Vec<u8> {
    binary::encode(&ferry::runtime::TensorData::Bytes(elements.to_vec()))
}

/// A binary input; a `clean` one tells the truth about itself.
fn bin_input(clean: bool) -> impl Strategy<Value = BinInput> {
    let (shape, bad_dt, lie) = if clean {
        (
            Just(None).boxed(),
            Just(None).boxed(),
            Just(Lie::None).boxed(),
        )
    } else {
        (
            prop_oneof![8 => Just(None), 2 => hostile_shape().prop_map(Some)].boxed(),
            prop_oneof![12 => Just(None), 1 => prop::sample::select(vec!["FP16", "fp32", "BYTES ", ""]).prop_map(Some)].boxed(),
            lie().boxed(),
        )
    };
    (
        0..12usize,
        prop::collection::vec(0..4usize, 0..4),
        shape,
        bad_dt,
        lie,
        any::<bool>(),
    )
        .prop_flat_map(|(dt, dims, shape, bad_dt, lie, extra_params)| {
            let n: usize = dims.iter().product();
            let payload = if NAMES[dt] == "BYTES" {
                prop::collection::vec(prop::collection::vec(any::<u8>(), 0..6), n..=n)
                    .prop_map(|e| encode_bytes(&e))
                    .boxed()
            } else {
                prop::collection::vec(typed_leaf(dt), n..=n)
                    .prop_map(move |leaves| {
                        let t = oracle::json_tensor(
                            "x",
                            NAMES[dt],
                            &vec![leaves.len() as i64],
                            &Value::Array(leaves),
                        )
                        .expect("typed leaves make a tensor");
                        binary::encode(&t.data)
                    })
                    .boxed()
            };
            (
                Just(dt),
                Just(dims),
                Just(shape),
                Just(bad_dt),
                Just(lie),
                Just(extra_params),
                payload,
            )
        })
        .prop_flat_map(
            move |(dt, dims, shape, bad_dt, lie, extra_params, payload)| {
                let payload = apply(payload, &lie, NAMES[dt] == "BYTES");
                let size = if clean {
                    Just(json!(payload.len())).boxed()
                } else {
                    size_param(payload.len()).boxed()
                };
                (
                    Just(dt),
                    Just(dims),
                    Just(shape),
                    Just(bad_dt),
                    Just(extra_params),
                    Just(payload),
                    size,
                )
            },
        )
        .prop_map(|(dt, dims, shape, bad_dt, extra_params, payload, size)| {
            let mut parameters = Map::new();
            parameters.insert("binary_data_size".into(), size);
            if extra_params {
                parameters.insert("binary_data".into(), json!(true));
            }
            BinInput {
                json: GenInput {
                    name: json!("b"),
                    datatype: json!(bad_dt.unwrap_or(NAMES[dt])),
                    shape: json!(shape.unwrap_or_else(|| dims.iter().map(|d| *d as i64).collect())),
                    data: None,
                    parameters: Some(Value::Object(parameters)),
                },
                payload,
            }
        })
}

fn apply(mut payload: Vec<u8>, lie: &Lie, bytes: bool) -> Vec<u8> {
    match lie {
        Lie::None => {}
        Lie::Truncate(i) => payload.truncate(i.index(payload.len() + 1)),
        Lie::Extend(more) => payload.extend_from_slice(more),
        Lie::Random(r) => payload = r.clone(),
        Lie::Prefix(i, n) => {
            // Only BYTES has prefixes; find the element boundaries and pick one.
            if bytes {
                let mut starts = Vec::new();
                let mut at = 0;
                while at + 4 <= payload.len() {
                    starts.push(at);
                    let len = u32::from_le_bytes(payload[at..at + 4].try_into().unwrap()) as usize;
                    at += 4 + len;
                }
                if !starts.is_empty() {
                    let s = starts[i.index(starts.len())];
                    payload[s..s + 4].copy_from_slice(&n.to_le_bytes());
                }
            }
        }
    }
    payload
}

/// What `Inference-Header-Content-Length` says.
#[derive(Debug, Clone)]
enum HeaderLength {
    Absent,
    Exact,
    Off(i64),
    Text(&'static str),
    Spaced,
    Opaque,
}

fn header_length(clean: bool) -> BoxedStrategy<HeaderLength> {
    if clean {
        return Just(HeaderLength::Exact).boxed();
    }
    prop_oneof![
        2 => Just(HeaderLength::Absent),
        12 => Just(HeaderLength::Exact),
        2 => prop_oneof![-3..=3i64, Just(i64::MAX / 2), Just(1 << 40)].prop_map(HeaderLength::Off),
        1 => prop::sample::select(vec!["99999999999999999999999", "-1", "abc", "", "1e3", "0x10", "18446744073709551615"]).prop_map(HeaderLength::Text),
        1 => Just(HeaderLength::Spaced),
        1 => Just(HeaderLength::Opaque),
    ]
    .boxed()
}

#[derive(Debug, Clone)]
enum AnyInput {
    Json(GenInput),
    Binary(BinInput),
}

fn any_input(clean: bool) -> impl Strategy<Value = AnyInput> {
    prop_oneof![
        1 => json_input(clean).prop_map(AnyInput::Json),
        3 => bin_input(clean).prop_map(AnyInput::Binary),
    ]
}

/// Bytes after the last input's (nobody's).
fn trailing(clean: bool) -> BoxedStrategy<Vec<u8>> {
    if clean {
        return Just(vec![]).boxed();
    }
    prop_oneof![8 => Just(vec![]), 1 => prop::collection::vec(any::<u8>(), 1..6), 1 => Just(b" \n".to_vec())].boxed()
}

fn body_of(
    envelope: &Envelope,
    inputs: &[AnyInput],
    trailing: &[u8],
    header: &HeaderLength,
) -> (Vec<u8>, Option<HeaderValue>) {
    let gen: Vec<GenInput> = inputs
        .iter()
        .map(|i| match i {
            AnyInput::Json(j) => j.clone(),
            AnyInput::Binary(b) => b.json.clone(),
        })
        .collect();
    let json = crate::oip_json::request_text(envelope, &gen).into_bytes();
    let mut body = json.clone();
    for i in inputs {
        if let AnyInput::Binary(b) = i {
            body.extend_from_slice(&b.payload);
        }
    }
    body.extend_from_slice(trailing);
    let header = match header {
        HeaderLength::Absent => None,
        HeaderLength::Exact => Some(HeaderValue::from(json.len())),
        HeaderLength::Off(k) => Some(HeaderValue::from(
            (json.len() as i128 + *k as i128).max(0) as u64
        )),
        HeaderLength::Text(t) => Some(HeaderValue::from_static(t)),
        HeaderLength::Spaced => Some(HeaderValue::from_str(&format!(" {} ", json.len())).unwrap()),
        HeaderLength::Opaque => Some(HeaderValue::from_bytes(b"\xff12").unwrap()),
    };
    (body, header)
}

#[test]
fn oip_binary() {
    let app = App::new();
    // Half the cases are clean requests (which must be accepted), half hostile ones.
    let strategy = any::<bool>().prop_flat_map(|clean| {
        (
            envelope(clean),
            prop::collection::vec(any_input(clean), 0..4),
            trailing(clean),
            header_length(clean),
        )
    });
    let tally = crate::Tally::default();
    crate::run(
        "oip_binary",
        15_000,
        strategy,
        |(envelope, inputs, trailing, header)| {
            let (body, header) = body_of(&envelope, &inputs, &trailing, &header);
            let decoded = oracle::request(header.as_ref(), &body);
            let binary = inputs
                .iter()
                .filter(|i| matches!(i, AnyInput::Binary(_)))
                .count();
            tally.note(match (&decoded, binary) {
                (Some(_), 0) => "accepted without binary inputs",
                (Some(_), _) => "accepted with binary inputs",
                (None, _) => "refused",
            });
            let expected = decoded.is_some();
            let len = body.len();
            let mut request = Request::post("/v2/models/fuzz-no-such-model/infer")
                .header("content-type", "application/octet-stream");
            if let Some(h) = header {
                request = request.header(binary::HEADER, h);
            }
            let request = request.body(Body::from(body)).unwrap();
            let (answer, usage) = measure(|| app.decode_infer(request));
            check_answer(expected, &answer)?;
            check_usage(len, usage)
        },
    );
    tally.report("oip_binary");
}

fn datatype_at(i: usize) -> Datatype {
    oracle::datatype(NAMES[i]).unwrap()
}

/// Counts `decode` may be asked for: small ones and ones no memory holds.
fn count() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => 0..64usize,
        1 => Just(usize::MAX),
        1 => Just(usize::MAX / 8 + 2),
        1 => Just((1usize << 61) + 1),
        1 => Just(1 << 40),
        1 => any::<usize>(),
    ]
}

#[test]
fn binary_decode() {
    // Bytes at random, or exactly `count` elements' worth (then sometimes cut or extended).
    let strategy =
        (0..12usize, count(), any::<bool>(), lie()).prop_flat_map(|(dt, count, exact, lie)| {
            let n = count.min(64);
            let bytes = match (exact, oracle::width(datatype_at(dt))) {
                (false, _) => prop::collection::vec(any::<u8>(), 0..80).boxed(),
                (true, Some(w)) => prop::collection::vec(any::<u8>(), n * w..=n * w).boxed(),
                (true, None) => {
                    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..5), n..=n)
                        .prop_map(|e| encode_bytes(&e))
                        .boxed()
                }
            };
            let bytes_dt = NAMES[dt] == "BYTES";
            (
                Just(dt),
                Just(count),
                bytes.prop_map(move |b| apply(b, &lie, bytes_dt)),
            )
        });
    let tally = crate::Tally::default();
    crate::run("binary_decode", 200_000, strategy, |(dt, count, bytes)| {
        let d = datatype_at(dt);
        let expected = oracle::binary_data(d, &bytes, count as u64);
        tally.note(if expected.is_some() {
            "decoded"
        } else {
            "refused"
        });
        let (got, usage) = measure(|| binary::decode(d, &bytes, count));
        match (&expected, &got) {
            (Some(e), Ok(g)) => prop_assert!(oracle::same_data(e, g), "{e:?} != {g:?}"),
            (None, Err(m)) => prop_assert!(!m.is_empty()),
            _ => prop_assert!(false, "oracle {expected:?}, decode {got:?}"),
        }
        // BYTES holds 24 bytes per element of at least 4; nothing is reserved for a count the bytes
        // cannot hold.
        let bound = 8 * bytes.len() + 4096;
        prop_assert!(
            usage.largest <= bound,
            "{} bytes for a count of {count} made one allocation of {} bytes",
            bytes.len(),
            usage.largest
        );
        Ok::<(), TestCaseError>(())
    });
    tally.report("binary_decode");
}

mod regressions {
    use super::*;

    #[test]
    fn a_bytes_count_the_data_cannot_hold_reserves_nothing() {
        // Caught by `binary_decode`: a count of 2^20 or more once reserved 24 MB before looking at
        // the 4 bytes given.
        let (got, usage) = measure(|| binary::decode(Datatype::Bytes, &[0, 0, 0, 0], usize::MAX));
        assert!(got.unwrap_err().contains("missing its 4-byte length"));
        assert!(usage.largest < 4096, "{usage:?}");
    }

    #[test]
    fn a_count_whose_byte_size_wraps_is_refused() {
        // Caught by `binary_decode`: 8 × (2^61 + 1) wraps to 8, so 8 bytes passed for 2^61 + 1 FP64
        // elements (a debug build panicked on the multiplication instead).
        let got = binary::decode(Datatype::Fp64, &[0; 8], (1usize << 61) + 1);
        assert!(got.is_err(), "{got:?}");
    }

    #[test]
    fn a_header_length_past_the_body_or_not_a_number_is_refused() {
        let app = App::new();
        let json = br#"{"inputs":[{"name":"b","datatype":"UINT8","shape":[2],"parameters":{"binary_data_size":2}}]}"#;
        let mut body = json.to_vec();
        body.extend_from_slice(&[1, 2]);
        for (length, ok) in [
            (json.len().to_string(), true),
            ((body.len() + 1).to_string(), false),
            ("18446744073709551616".to_owned(), false),
            ("-1".to_owned(), false),
        ] {
            let request = Request::post("/v2/models/fuzz-no-such-model/infer")
                .header(binary::HEADER, length.as_str())
                .body(Body::from(body.clone()))
                .unwrap();
            let answer = app.decode_infer(request);
            check_answer(ok, &answer).unwrap_or_else(|e| panic!("length {length}: {e}"));
        }
    }
}
