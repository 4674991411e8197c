//! The OIP JSON tensor parser: `POST /v2/models/{m}/infer` bodies with every datatype (and names that
//! are none), shapes huge, negative, empty and wrapping, data flat, nested, ragged, too deep, of the
//! wrong kinds, out of range for its datatype, strings where numbers go. The model does not exist, so
//! a request the parser accepts is answered 404 and one it refuses 400: the oracle says which.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use ferry::tensor::{tensor_from_json, JsonTensor};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Map, Value};

use crate::alloc::{measure, Usage};
use crate::app::{Answer, App};
use crate::oracle::{self, NAMES};

/// Text spliced into the body where a string `"@@RAW:<text>@@"` stands: numbers JSON can write but
/// a `serde_json::Value` cannot hold, and nesting deeper than a `Value` should be built. The text is
/// only digits, signs, `.`, `e`, `E` and brackets, which a JSON string carries unescaped.
pub fn splice(body: String) -> String {
    const OPEN: &str = "\"@@RAW:";
    const CLOSE: &str = "@@\"";
    let mut out = String::with_capacity(body.len());
    let mut rest = body.as_str();
    while let Some(at) = rest.find(OPEN) {
        out.push_str(&rest[..at]);
        let inner = &rest[at + OPEN.len()..];
        let end = inner.find(CLOSE).expect("a raw marker is closed");
        out.push_str(&inner[..end]);
        rest = &inner[end + CLOSE.len()..];
    }
    out.push_str(rest);
    out
}

/// A raw text as the string that stands for it until [`splice`].
pub fn raw(text: &str) -> Value {
    json!(format!("@@RAW:{text}@@"))
}

/// Raw JSON texts a leaf may be.
const RAW_NUMBERS: [&str; 12] = [
    "18446744073709551616",
    "-9223372036854775809",
    "1e400",
    "-0",
    "1E2",
    "0.0",
    "3.4028235e38",
    "3.4028236e38",
    "1e39",
    "-1e39",
    "1.0e-50",
    "340282356779733661637539395458142568448",
];

pub fn num(x: i128) -> Value {
    if x >= 0 {
        json!(x as u64)
    } else {
        json!(x as i64)
    }
}

/// Integers on and past each integer datatype's bounds.
fn edge_ints() -> Vec<i128> {
    let mut out = vec![0, 1, -1];
    for name in NAMES {
        if let Some((lo, hi)) = oracle::datatype(name).and_then(oracle::int_range) {
            out.extend([lo - 1, lo, hi, hi + 1]);
        }
    }
    out.retain(|x| *x >= i64::MIN as i128 && *x <= u64::MAX as i128);
    out
}

/// A leaf of any kind, often not the datatype's.
pub fn hostile_leaf() -> BoxedStrategy<Value> {
    prop_oneof![
        any::<bool>().prop_map(|b| json!(b)),
        prop::sample::select(edge_ints()).prop_map(num),
        any::<i64>().prop_map(|x| json!(x)),
        any::<u64>().prop_map(|x| json!(x)),
        any::<f64>()
            .prop_filter("finite", |x| x.is_finite())
            .prop_map(|x| json!(x)),
        prop::sample::select(RAW_NUMBERS.to_vec()).prop_map(raw),
        prop::sample::select(vec!["NaN", "inf", "-inf", "Infinity", "1", "", "ç", "true"])
            .prop_map(|s| json!(s)),
        prop::sample::select(vec![json!(null), json!({}), json!({"a": 1}), json!([])]),
    ]
    .boxed()
}

/// A leaf of datatype `dt` (an index into [`NAMES`]), in range.
pub fn typed_leaf(dt: usize) -> BoxedStrategy<Value> {
    match NAMES[dt] {
        "BOOL" => any::<bool>().prop_map(|b| json!(b)).boxed(),
        "FP32" => prop_oneof![
            any::<f32>()
                .prop_filter("finite", |x| x.is_finite())
                .prop_map(|x| json!(x as f64)),
            any::<i16>().prop_map(|x| json!(x)),
        ]
        .boxed(),
        "FP64" => prop_oneof![
            any::<f64>()
                .prop_filter("finite", |x| x.is_finite())
                .prop_map(|x| json!(x)),
            any::<i64>().prop_map(|x| json!(x)),
        ]
        .boxed(),
        "BYTES" => prop::collection::vec(any::<char>(), 0..6)
            .prop_map(|c| json!(String::from_iter(c)))
            .boxed(),
        name => {
            let (lo, hi) = oracle::datatype(name).and_then(oracle::int_range).unwrap();
            (lo..=hi).prop_map(num).boxed()
        }
    }
}

/// A leaf on or just past the limits of datatype `dt`.
pub fn boundary_leaf(dt: usize) -> BoxedStrategy<Value> {
    let values = match NAMES[dt] {
        "BOOL" => vec![json!(0), json!(1), json!("true")],
        "BYTES" => vec![json!(""), json!("\u{0}"), json!(1)],
        "FP32" => vec![
            json!(f32::MAX as f64),
            json!(-(f32::MAX as f64)),
            json!(f32::MIN_POSITIVE as f64),
            json!(1e-46),
            // Half an ulp past FP32's largest: rounds to infinity.
            json!(3.402_823_567_797_336_6e38),
            json!(3.402_823_567_797_336e38),
            json!(-3.5e38),
            json!(1e39),
            json!(f64::MAX),
        ],
        "FP64" => vec![
            json!(f64::MAX),
            json!(f64::MIN),
            json!(5e-324),
            json!(u64::MAX),
        ],
        name => {
            let (lo, hi) = oracle::datatype(name).and_then(oracle::int_range).unwrap();
            [lo - 1, lo, hi, hi + 1]
                .into_iter()
                .filter(|x| *x >= i64::MIN as i128 && *x <= u64::MAX as i128)
                .map(num)
                .chain([json!(lo as f64), json!(0.5)])
                .collect()
        }
    };
    prop::sample::select(values).boxed()
}

/// How `data` is laid out.
#[derive(Debug, Clone)]
pub enum Layout {
    Flat,
    Nested,
    /// Nested, with an element moved from the first row to the second.
    Ragged,
    /// Wrapped in `n` more arrays.
    Wrapped(usize),
    /// Not an array: the first leaf, or an object holding the leaves.
    Scalar,
    Object,
    /// The leaves nested `n` deep around one leaf, as raw text (past serde's recursion limit too).
    Deep(usize),
}

fn layout(clean: bool) -> BoxedStrategy<Layout> {
    if clean {
        return prop_oneof![
            Just(Layout::Flat),
            Just(Layout::Nested),
            (1..3usize).prop_map(Layout::Wrapped)
        ]
        .boxed();
    }
    prop_oneof![
        4 => Just(Layout::Flat),
        4 => Just(Layout::Nested),
        1 => Just(Layout::Ragged),
        1 => (1..4usize).prop_map(Layout::Wrapped),
        1 => Just(Layout::Scalar),
        1 => Just(Layout::Object),
        1 => prop_oneof![1..120usize, 120..140usize, 1000..20_000usize].prop_map(Layout::Deep),
    ]
    .boxed()
}

/// `leaves` nested by `dims` (row-major), as far as they go.
fn nest(leaves: Vec<Value>, dims: &[usize]) -> Value {
    if dims.len() <= 1 {
        return Value::Array(leaves);
    }
    let row: usize = dims[1..].iter().product::<usize>().max(1);
    let mut rows = Vec::new();
    let mut it = leaves.into_iter().peekable();
    while it.peek().is_some() {
        rows.push(nest(it.by_ref().take(row).collect(), &dims[1..]));
    }
    Value::Array(rows)
}

/// Lays out `leaves` as `data`.
pub fn lay_out(mut values: Vec<Value>, dims: &[usize], layout: &Layout) -> Value {
    match layout {
        Layout::Flat => Value::Array(values),
        Layout::Nested => nest(values, dims),
        Layout::Ragged => {
            let mut v = nest(values, dims);
            if let Some(rows) = v.as_array_mut() {
                if rows.len() >= 2 {
                    let moved = rows[0].as_array_mut().and_then(|r| r.pop());
                    if let (Some(m), Some(second)) = (moved, rows[1].as_array_mut()) {
                        second.push(m);
                    }
                }
            }
            v
        }
        Layout::Wrapped(n) => (0..*n).fold(Value::Array(values), |v, _| json!([v])),
        Layout::Scalar => values.pop().unwrap_or(json!(1)),
        Layout::Object => json!({ "data": values }),
        Layout::Deep(depth) => raw(&format!("{}1{}", "[".repeat(*depth), "]".repeat(*depth))),
    }
}

/// Declared shapes that are not the data's.
pub fn hostile_shape() -> impl Strategy<Value = Vec<i64>> {
    prop_oneof![
        Just(vec![4294967296, 4294967296]),
        Just(vec![0, 4294967296, 4294967296]),
        Just(vec![4294967296, 4294967296, 0]),
        Just(vec![i64::MAX, 2]),
        Just(vec![i64::MAX]),
        Just(vec![1 << 40]),
        Just(vec![1 << 62, 4]),
        Just(vec![-1]),
        Just(vec![i64::MIN]),
        Just(vec![2, -3]),
        Just(vec![1; 300]),
        Just(vec![]),
        prop::collection::vec(any::<i64>(), 0..5),
        prop::collection::vec(0..5i64, 0..5),
    ]
}

/// One generated input.
#[derive(Debug, Clone)]
pub struct GenInput {
    pub name: Value,
    /// Index into [`NAMES`], or a name that is none.
    pub datatype: Value,
    pub shape: Value,
    pub data: Option<Value>,
    pub parameters: Option<Value>,
}

fn datatype_value(clean: bool) -> BoxedStrategy<(Option<usize>, Value)> {
    let valid = (0..12usize).prop_map(|i| (Some(i), json!(NAMES[i])));
    if clean {
        return valid.boxed();
    }
    prop_oneof![
        8 => valid,
        1 => prop::sample::select(vec!["FP16", "BF16", "fp32", "INT128", "", "BYTES ", "STRING", "TYPE_FP32"])
            .prop_map(|s| (None, json!(s))),
        1 => prop::sample::select(vec![json!(5), json!(null), json!(["FP32"])]).prop_map(|v| (None, v)),
    ]
    .boxed()
}

fn name_value(clean: bool) -> BoxedStrategy<Value> {
    let valid = prop::sample::select(vec!["x", "input", "ç", "", "a b"]).prop_map(|s| json!(s));
    if clean {
        return valid.boxed();
    }
    prop_oneof![
        8 => valid,
        1 => prop::sample::select(vec![json!(null), json!(7)]),
    ]
    .boxed()
}

/// An input with JSON data; a `clean` one is valid (its data may still be laid out nested).
pub fn json_input(clean: bool) -> impl Strategy<Value = GenInput> {
    (
        name_value(clean),
        datatype_value(clean),
        prop::collection::vec(0..4usize, 0..4),
        layout(clean),
        if clean {
            Just(9u8).boxed()
        } else {
            (0..10u8).boxed()
        },
    )
        .prop_flat_map(move |(name, (dt, dt_value), dims, layout, mode)| {
            let n: usize = dims.iter().product();
            let leaf = if clean {
                typed_leaf(dt.unwrap_or(9))
            } else {
                let dt = dt.unwrap_or(9);
                prop_oneof![16 => typed_leaf(dt), 2 => boundary_leaf(dt), 1 => hostile_leaf()]
                    .boxed()
            };
            // Mostly the shape's count of elements, sometimes one more or one less.
            let len = match mode {
                0 => n + 1,
                1 => n.saturating_sub(1),
                _ => n,
            };
            let shape = if clean {
                Just(None).boxed()
            } else {
                prop_oneof![8 => Just(None), 2 => hostile_shape().prop_map(Some)].boxed()
            };
            let (shape_override, parameters, drop_data) = if clean {
                (Just(None).boxed(), Just(None).boxed(), Just(9u8).boxed())
            } else {
                (
                    shape_value_override().boxed(),
                    parameters_value().boxed(),
                    (0..20u8).boxed(),
                )
            };
            (
                Just(name),
                Just(dt_value),
                Just(dims),
                prop::collection::vec(leaf, len..=len),
                Just(layout),
                shape,
                shape_override,
                parameters,
                drop_data,
            )
        })
        .prop_map(
            |(
                name,
                datatype,
                dims,
                leaves,
                layout,
                shape,
                shape_override,
                parameters,
                drop_data,
            )| {
                let shape = shape_override.unwrap_or_else(|| {
                    json!(shape.unwrap_or_else(|| dims.iter().map(|d| *d as i64).collect()))
                });
                GenInput {
                    name,
                    datatype,
                    shape,
                    data: match drop_data {
                        0 => None,
                        1 => Some(json!(null)),
                        _ => Some(lay_out(leaves, &dims, &layout)),
                    },
                    parameters,
                }
            },
        )
}

/// A `shape` that is not a list of integers.
fn hostile_shape_value() -> impl Strategy<Value = Value> {
    prop::sample::select(vec![
        json!([1.5]),
        json!(["2"]),
        json!([18446744073709551615u64]),
        json!(null),
        json!(4),
        json!({"0": 1}),
        json!([[2]]),
    ])
}

fn shape_value_override() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![19 => Just(None), 1 => hostile_shape_value().prop_map(Some)]
}

fn parameters_value() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        12 => Just(None),
        1 => Just(Some(json!({}))),
        1 => Just(Some(json!(null))),
        1 => Just(Some(json!([1]))),
        1 => prop::sample::select(vec![json!(0), json!(5), json!(-1), json!("5"), json!(1.5), json!(null)])
            .prop_map(|s| Some(json!({ "binary_data_size": s }))),
    ]
}

/// The request's envelope around its inputs.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub id: Option<Value>,
    pub parameters: Option<Value>,
    pub outputs: Option<Value>,
    /// `inputs` replaced by something that is not a list of inputs (or left out).
    pub inputs_override: Option<Option<Value>>,
    pub extra: bool,
}

pub fn envelope(clean: bool) -> BoxedStrategy<Envelope> {
    let id =
        prop_oneof![4 => Just(None), 2 => Just(Some(json!("req-1"))), 1 => Just(Some(json!(null)))];
    let parameters = prop_oneof![4 => Just(None), 2 => Just(Some(json!({"binary_data_output": true}))), 1 => Just(Some(json!(null)))];
    let outputs = prop_oneof![
        4 => Just(None),
        1 => Just(Some(json!([]))),
        1 => Just(Some(json!([{"name": "x"}]))),
        1 => Just(Some(json!([{"name": "x", "parameters": {"binary_data": true}}]))),
    ];
    if clean {
        return (id, parameters, outputs, any::<bool>())
            .prop_map(|(id, parameters, outputs, extra)| Envelope {
                id,
                parameters,
                outputs,
                inputs_override: None,
                extra,
            })
            .boxed();
    }
    (
        prop_oneof![4 => id, 1 => Just(Some(json!(12)))],
        prop_oneof![4 => parameters, 1 => Just(Some(json!([])))],
        prop_oneof![
            4 => outputs,
            1 => Just(Some(json!([{"name": 5}]))),
            1 => Just(Some(json!("x"))),
        ],
        prop_oneof![
            16 => Just(None),
            1 => Just(Some(None)),
            1 => Just(Some(Some(json!({})))),
            1 => Just(Some(Some(json!(null)))),
            1 => Just(Some(Some(json!([1, 2])))),
        ],
        any::<bool>(),
    )
        .prop_map(
            |(id, parameters, outputs, inputs_override, extra)| Envelope {
                id,
                parameters,
                outputs,
                inputs_override,
                extra,
            },
        )
        .boxed()
}

/// The input as a JSON object.
pub fn input_object(i: &GenInput) -> Value {
    let mut m = Map::new();
    if !i.name.is_null() {
        m.insert("name".into(), i.name.clone());
    }
    m.insert("datatype".into(), i.datatype.clone());
    m.insert("shape".into(), i.shape.clone());
    if let Some(d) = &i.data {
        m.insert("data".into(), d.clone());
    }
    if let Some(p) = &i.parameters {
        m.insert("parameters".into(), p.clone());
    }
    Value::Object(m)
}

/// The request's JSON text.
pub fn request_text(envelope: &Envelope, inputs: &[GenInput]) -> String {
    let mut m = Map::new();
    if let Some(id) = &envelope.id {
        m.insert("id".into(), id.clone());
    }
    if let Some(p) = &envelope.parameters {
        m.insert("parameters".into(), p.clone());
    }
    match &envelope.inputs_override {
        None => {
            m.insert(
                "inputs".into(),
                Value::Array(inputs.iter().map(input_object).collect()),
            );
        }
        Some(Some(v)) => {
            m.insert("inputs".into(), v.clone());
        }
        Some(None) => {}
    }
    if let Some(o) = &envelope.outputs {
        m.insert("outputs".into(), o.clone());
    }
    if envelope.extra {
        m.insert("model_name".into(), json!("ignored"));
    }
    splice(Value::Object(m).to_string())
}

/// A byte-level change to a body.
#[derive(Debug, Clone)]
pub enum Mutation {
    Truncate(prop::sample::Index),
    Flip(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    Repeat(prop::sample::Index, prop::sample::Index),
}

pub fn mutation() -> impl Strategy<Value = Option<Mutation>> {
    prop_oneof![
        8 => Just(None),
        1 => any::<prop::sample::Index>().prop_map(|i| Some(Mutation::Truncate(i))),
        1 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Some(Mutation::Flip(i, b))),
        1 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Some(Mutation::Insert(i, b))),
        1 => (any::<prop::sample::Index>(), any::<prop::sample::Index>()).prop_map(|(i, j)| Some(Mutation::Repeat(i, j))),
    ]
}

pub fn mutate(mut body: Vec<u8>, m: &Option<Mutation>) -> Vec<u8> {
    let Some(m) = m else { return body };
    if body.is_empty() {
        return body;
    }
    match m {
        Mutation::Truncate(i) => body.truncate(i.index(body.len())),
        Mutation::Flip(i, b) => {
            let at = i.index(body.len());
            body[at] ^= b | 1;
        }
        Mutation::Insert(i, b) => body.insert(i.index(body.len() + 1), *b),
        Mutation::Repeat(i, j) => {
            let (a, b) = (i.index(body.len()), j.index(body.len()));
            let (a, b) = (a.min(b), a.max(b));
            let slice = body[a..b].to_vec();
            body.splice(b..b, slice);
        }
    }
    body
}

/// What a body may make the host allocate: the largest single allocation within a small multiple
/// of the body (a `Vec<Value>` holds 32 bytes per element of at least 2 bytes of text, doubled
/// while it grows), and in all at most a larger multiple. Never anything in proportion to a
/// declared shape.
pub fn check_usage(body_len: usize, usage: Usage) -> Result<(), TestCaseError> {
    let largest = 64 * body_len + (256 << 10);
    let peak = 512 * body_len + (8 << 20);
    prop_assert!(
        usage.largest <= largest,
        "a {body_len}-byte body made one allocation of {} bytes (bound {largest})",
        usage.largest
    );
    prop_assert!(
        usage.peak <= peak,
        "a {body_len}-byte body held {} bytes at once (bound {peak})",
        usage.peak
    );
    Ok(())
}

pub fn infer_request(body: Vec<u8>) -> Request<Body> {
    Request::post("/v2/models/fuzz-no-such-model/infer")
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap()
}

/// The answer is the one the oracle expects: 404 (no such model) for a request the parser must
/// accept, 400 (or 413 for a shape past any input limit) with a message for one it must refuse.
pub fn check_answer(expected: bool, answer: &Answer) -> Result<(), TestCaseError> {
    let error = answer.error();
    prop_assert!(
        error.as_deref().is_some_and(|e| !e.is_empty()),
        "status {} without an error message: {:?}",
        answer.status,
        String::from_utf8_lossy(&answer.body)
    );
    if expected {
        prop_assert_eq!(
            answer.status,
            StatusCode::NOT_FOUND,
            "a valid request must reach routing, got {:?}",
            error
        );
    } else {
        // Malformed (400), or a shape whose bytes no model takes (413: past even a limit of 2^64 − 1
        // bytes here), which the decoder refuses before it reads the data.
        let too_large = answer.status == StatusCode::PAYLOAD_TOO_LARGE
            && error
                .as_deref()
                .is_some_and(|e| e.starts_with("input too large"));
        prop_assert!(
            answer.status == StatusCode::BAD_REQUEST || too_large,
            "an invalid request must be refused as malformed, got {} {:?}",
            answer.status,
            error
        );
    }
    Ok(())
}

/// Half the cases are clean requests (which must be accepted), half hostile ones.
fn strategy() -> impl Strategy<Value = (Envelope, Vec<GenInput>, Option<Mutation>)> {
    any::<bool>().prop_flat_map(|clean| {
        (
            envelope(clean),
            prop::collection::vec(json_input(clean), 0..4),
            if clean {
                Just(None).boxed()
            } else {
                mutation().boxed()
            },
        )
    })
}

/// True when `v` holds a raw marker (the HTTP path's, not a value the parser can be handed).
fn has_raw(v: &Value) -> bool {
    match v {
        Value::String(s) => s.starts_with("@@RAW:"),
        Value::Array(items) => items.iter().any(has_raw),
        Value::Object(m) => m.values().any(has_raw),
        _ => false,
    }
}

#[test]
fn oip_json() {
    let app = App::new();
    let tally = crate::Tally::default();
    crate::run("oip_json", 15_000, strategy(), |(envelope, inputs, m)| {
        // The parser on its own, for each input it can be handed: the tensor it makes is the
        // oracle's.
        for input in inputs
            .iter()
            .filter(|i| !i.data.as_ref().is_some_and(has_raw))
        {
            tally.note(direct(input)?);
        }
        let body = mutate(request_text(&envelope, &inputs).into_bytes(), &m);
        let expected = oracle::request(None, &body);
        tally.note(match &expected {
            Some(t) if t.is_empty() => "requests accepted (no inputs)",
            Some(_) => "requests accepted",
            None => "requests refused",
        });
        let len = body.len();
        let request = infer_request(body);
        let (answer, usage) = measure(|| app.decode_infer(request));
        check_answer(expected.is_some(), &answer)?;
        check_usage(len, usage)
    });
    tally.report("oip_json");
}

/// `tensor_from_json` agrees with the oracle on one input.
fn direct(input: &GenInput) -> Result<&'static str, TestCaseError> {
    let (Some(name), Some(datatype), Ok(shape), Some(data)) = (
        input.name.as_str(),
        input.datatype.as_str(),
        serde_json::from_value::<Vec<i64>>(input.shape.clone()),
        input.data.clone().filter(|d| !d.is_null()),
    ) else {
        return Ok("inputs not for the parser alone");
    };
    let expected = oracle::json_tensor(name, datatype, &shape, &data);
    let got = tensor_from_json(&JsonTensor {
        name: name.to_owned(),
        datatype: datatype.to_owned(),
        shape: shape.clone(),
        data,
        parameters: None,
    });
    match (&expected, &got) {
        (Some(e), Ok(g)) => prop_assert!(oracle::same_tensor(e, g), "{e:?} != {g:?}"),
        (None, Err(message)) => prop_assert!(
            message.contains(&format!("input `{name}`")),
            "the message does not name the input: {message}"
        ),
        _ => prop_assert!(false, "oracle {expected:?}, parser {got:?}"),
    }
    Ok(if expected.is_some() {
        "tensors parsed"
    } else {
        "tensors refused"
    })
}

/// The minimal inputs of what fuzzing found, and what was fixed by hand before.
mod regressions {
    use super::*;

    fn infer(app: &App, body: &str) -> Answer {
        app.decode_infer(infer_request(body.as_bytes().to_vec()))
    }

    #[test]
    fn any_body_to_an_unknown_model_is_404_through_the_router() {
        // Routed before a byte is read: malformed, valid or oversized, it is the model that is not there.
        let app = App::new();
        for body in [
            &b"{not json"[..],
            br#"{"inputs": []}"#,
            &vec![b'x'; crate::app::MAX_BODY + 1],
        ] {
            let answer = app.send(infer_request(body.to_vec()));
            assert_eq!(answer.status, StatusCode::NOT_FOUND, "{:?}", answer.error());
        }
    }

    #[test]
    fn a_shape_whose_element_count_wraps_is_refused() {
        let app = App::new();
        let a = infer(
            &app,
            r#"{"inputs":[{"name":"x","datatype":"FP32","shape":[4294967296,4294967296],"data":[1.0]}]}"#,
        );
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert!(
            a.error().unwrap().contains("at least 2^64"),
            "{:?}",
            a.error()
        );
        // With no elements at all, and the zero first: still refused (the order does not matter).
        for shape in ["[0,4294967296,4294967296]", "[4294967296,4294967296,0]"] {
            let a = infer(
                &app,
                &format!(
                    r#"{{"inputs":[{{"name":"x","datatype":"FP32","shape":{shape},"data":[]}}]}}"#
                ),
            );
            assert_eq!(
                a.status,
                StatusCode::BAD_REQUEST,
                "{shape}: {:?}",
                a.error()
            );
        }
        // A zero dimension beside small ones is an empty tensor, which is fine.
        let a = infer(
            &app,
            r#"{"inputs":[{"name":"x","datatype":"FP32","shape":[0,3],"data":[]}]}"#,
        );
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{:?}", a.error());
    }

    #[test]
    fn a_number_past_fp32_is_refused_not_made_infinite() {
        let app = App::new();
        let a = infer(
            &app,
            r#"{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":[1e39]}]}"#,
        );
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert!(
            a.error().unwrap().contains("out of the range of FP32"),
            "{:?}",
            a.error()
        );
        let a = infer(
            &app,
            r#"{"inputs":[{"name":"x","datatype":"FP64","shape":[1],"data":[1e39]}]}"#,
        );
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{:?}", a.error());
    }

    #[test]
    fn floats_are_read_correctly_rounded() {
        // Caught by `guest_http` (tests/e2e/fuzz_guest.rs): serde_json's default best-effort float
        // parsing turned these shortest forms into neighbouring floats; `float_roundtrip` is on.
        for x in [
            -1.2855144814445807e28,
            -1.2385321105092405e-166,
            5e-324,
            f64::MAX,
        ] {
            let t = serde_json::from_str::<JsonTensor>(&format!(
                r#"{{"name": "x", "datatype": "FP64", "shape": [1], "data": [{x:?}]}}"#
            ))
            .unwrap();
            let got = tensor_from_json(&t).unwrap().data;
            assert_eq!(got, ferry::runtime::TensorData::Fp64(vec![x]), "{x:?}");
        }
    }

    #[test]
    fn data_nested_past_the_recursion_limit_is_refused_without_overflowing_the_stack() {
        let app = App::new();
        let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
        let a = infer(
            &app,
            &format!(
                r#"{{"inputs":[{{"name":"x","datatype":"FP32","shape":[1],"data":{deep}}}]}}"#
            ),
        );
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert!(
            a.error().unwrap().contains("recursion limit"),
            "{:?}",
            a.error()
        );
    }
}
