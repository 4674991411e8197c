//! The JavaScript SDK from inside a real component (jco with its QuickJS backend, built by `ferry
//! build`): tensors of every datatype cross the boundary intact, compiled-in self-tests run, and each
//! kind of author mistake comes back as the right error with a message that says what to fix.

use ferry::runtime::{CallError, Datatype, ModelInstance, Tensor, TensorData};
use ferry::selftest::{collect_cases, run_cases};
use ferry_tests::{predict_err, sdk_probe, workspace};

fn probe(config: &str) -> Result<ModelInstance, CallError> {
    sdk_probe("js-sdk-guest", config)
}

/// The line of tests/js-sdk-guest/probe.js marked `// probe: MARK`, as `probe.js:LINE:` (where an
/// error thrown there says it was).
fn probe_line(mark: &str) -> String {
    let source = std::fs::read_to_string(workspace().join("tests/js-sdk-guest/probe.js")).unwrap();
    let line = source
        .lines()
        .position(|l| l.ends_with(&format!("// probe: {mark}")))
        .unwrap_or_else(|| panic!("probe.js has no line marked {mark:?}"));
    format!("probe.js:{}:", line + 1)
}

fn one(name: &str) -> Tensor {
    Tensor {
        name: name.into(),
        shape: vec![1],
        data: TensorData::Int32(vec![0]),
    }
}

#[test]
fn compiled_in_self_tests_and_metadata_come_through_the_sdk() {
    let mut instance = probe("{}").unwrap();
    let metadata = instance.metadata().unwrap();
    assert_eq!(metadata.platform, "probe");
    assert_eq!(metadata.description, "exercises ferry-sdk");
    assert!(
        metadata.predicts_json,
        "defining predict declares the JSON entry point"
    );
    assert_eq!(metadata.inputs[0].name, "x");
    assert!(matches!(metadata.inputs[0].datatype, Datatype::Fp32));
    assert_eq!(metadata.inputs[0].shape, vec![-1, 2]);
    assert_eq!(metadata.outputs[0].name, "y");

    let cases = collect_cases(instance.self_tests().unwrap(), None).unwrap();
    assert_eq!(cases.len(), 2, "one predict case and one infer case");
    let report = run_cases(&mut instance, &cases);
    assert!(report.all_passed(), "{:#?}", report.outcomes);
}

#[test]
fn tensors_of_every_datatype_cross_the_boundary_intact() {
    let mut instance = probe("{}").unwrap();
    // 64-bit integers are JavaScript numbers in the component: these are the extremes a number holds
    // exactly (2^53 - 1, the largest doubles below 2^64 and 2^63, and -2^63).
    let tensors = vec![
        ("b", TensorData::Bool(vec![true, false])),
        ("u8", TensorData::Uint8(vec![0, 255])),
        ("u16", TensorData::Uint16(vec![0, u16::MAX])),
        ("u32", TensorData::Uint32(vec![1 << 31, u32::MAX])),
        (
            "u64",
            TensorData::Uint64(vec![(1 << 53) - 1, u64::MAX - 2047]),
        ),
        ("i8", TensorData::Int8(vec![i8::MIN, -1])),
        ("i16", TensorData::Int16(vec![i16::MIN, i16::MAX])),
        ("i32", TensorData::Int32(vec![i32::MIN, i32::MAX])),
        ("i64", TensorData::Int64(vec![i64::MIN, i64::MAX - 1023])),
        ("f32", TensorData::Fp32(vec![f32::MAX, -0.0])),
        ("f64", TensorData::Fp64(vec![f64::MIN_POSITIVE, 1e300])),
        (
            "s",
            TensorData::Bytes(vec![b"ferry".to_vec(), vec![0, 159, 255]]),
        ),
    ]
    .into_iter()
    .map(|(name, data)| Tensor {
        name: name.into(),
        shape: vec![1, 2],
        data,
    })
    .collect::<Vec<_>>();
    let echoed = instance.infer(&tensors, "{}").unwrap();
    assert_eq!(format!("{tensors:?}"), format!("{echoed:?}"));
}

#[test]
fn sixty_four_bit_integers_a_number_cannot_hold_are_refused_not_sent_wrong() {
    let mut instance = probe("{}").unwrap();
    // u64::MAX arrives as the nearest double, 2^64, which UINT64 cannot carry back.
    let max = Tensor {
        name: "u".into(),
        shape: vec![1],
        data: TensorData::Uint64(vec![u64::MAX]),
    };
    let err = instance.infer(&[max], "{}").unwrap_err();
    assert!(
        matches!(&err, CallError::ModelFailed(m)
            if m == "infer returned tensor \"u\": 18446744073709552000 does not fit UINT64"),
        "{err:?}"
    );

    let exact = instance.infer(&[one("bigints")], "{}").unwrap();
    assert!(
        matches!(&exact[0].data, TensorData::Int64(v) if v == &[-5, 1 << 53]),
        "a BigInt element that a number holds exactly is taken: {exact:?}"
    );
    let err = instance.infer(&[one("inexact")], "{}").unwrap_err();
    assert!(
        matches!(&err, CallError::ModelFailed(m)
            if m == "infer returned tensor \"b\": 9007199254740993n has no exact JavaScript number (past 2^53)"),
        "{err:?}"
    );
    assert!(!instance.is_poisoned());
}

#[test]
fn tensor_and_field_mistakes_are_the_callers_errors_with_names() {
    let mut instance = probe(r#"{"scale": 3.0}"#).unwrap();
    let x = |cols: usize| Tensor {
        name: "x".into(),
        shape: vec![1, cols as u64],
        data: TensorData::Fp32(vec![1.0; cols]),
    };
    let y = instance.infer(&[x(2)], "{}").unwrap();
    assert!(
        matches!(&y[0].data, TensorData::Fp32(v) if v == &[3.0, 3.0]),
        "{y:?}"
    );
    let err = instance.infer(&[x(3)], "{}").unwrap_err();
    assert!(
        matches!(&err, CallError::InvalidInput(m) if m == "input \"x\": shape [1, 3], expected [N, 2]"),
        "{err:?}"
    );
    let err = instance.infer(&[one("want-x")], "{}").unwrap_err();
    assert!(
        matches!(&err, CallError::InvalidInput(m) if m == "missing input \"x\" (got \"want-x\")"),
        "{err:?}"
    );

    let err = predict_err(&mut instance, r#"{"do": "fields", "features": {"a": 1}}"#);
    assert!(
        matches!(&err, CallError::InvalidInput(m) if m == "features.n: missing"),
        "{err:?}"
    );
    let err = predict_err(
        &mut instance,
        r#"{"do": "fields", "features": {"a": "x", "n": 1}}"#,
    );
    assert!(
        matches!(&err, CallError::InvalidInput(m) if m == "features.a: expected a number, got \"x\""),
        "{err:?}"
    );
    let err = predict_err(
        &mut instance,
        r#"{"do": "fields", "features": {"a": true, "n": 1}}"#,
    );
    assert!(
        matches!(&err, CallError::InvalidInput(m) if m == "features.a: expected a number, got true"),
        "{err:?}"
    );
    let err = predict_err(
        &mut instance,
        r#"{"do": "fields", "features": {"a": 1, "n": 2.5}}"#,
    );
    assert!(
        matches!(&err, CallError::InvalidInput(m) if m == "features.n: expected an integer, got 2.5"),
        "{err:?}"
    );
    let answer = instance
        .predict(r#"{"do": "fields", "features": {"a": 0.5, "n": 2}}"#)
        .unwrap();
    assert_eq!(answer, r#"{"sum":2.5}"#);

    let err = predict_err(&mut instance, r#"{"do": "invalid"}"#);
    assert!(
        matches!(&err, CallError::InvalidInput(m) if m == "temperature: -300 is below absolute zero"),
        "{err:?}"
    );
    let err = predict_err(&mut instance, r#"{"do": "unsupported"}"#);
    assert!(
        matches!(&err, CallError::Unsupported(m) if m == "this probe does not forecast"),
        "{err:?}"
    );
}

#[test]
fn a_bug_in_the_model_is_an_internal_error_that_says_where() {
    let mut instance = probe("{}").unwrap();
    let err = predict_err(&mut instance, r#"{"do": "throw"}"#);
    let at = probe_line("TypeError");
    assert!(
        matches!(&err, CallError::ModelFailed(m)
            if m.starts_with(&format!("predict threw TypeError: cannot read property 'deeper' of undefined (at {at}"))),
        "{err:?}"
    );
    let err = predict_err(&mut instance, r#"{"do": "throw-string"}"#);
    assert!(
        matches!(&err, CallError::ModelFailed(m) if m == "predict threw \"just a string\" (not an Error)"),
        "{err:?}"
    );

    let err = instance.infer(&[one("overflow")], "{}").unwrap_err();
    assert!(
        matches!(&err, CallError::ModelFailed(m)
            if m == "infer returned tensor \"o\": 300 does not fit UINT8"),
        "{err:?}"
    );
    let err = instance.infer(&[one("negative")], "{}").unwrap_err();
    assert!(
        matches!(&err, CallError::ModelFailed(m)
            if m == "infer returned tensor \"n\": -1 does not fit UINT64"),
        "{err:?}"
    );
    let err = instance.infer(&[one("fraction")], "{}").unwrap_err();
    assert!(
        matches!(&err, CallError::ModelFailed(m)
            if m == "infer returned tensor \"i\": 1.5 is not an integer (the SDK does not round)"),
        "{err:?}"
    );
    let strings = instance.infer(&[one("strings")], "{}").unwrap();
    assert!(
        matches!(&strings[0].data, TensorData::Bytes(v) if v == &vec!["héllo".as_bytes().to_vec(), vec![0xff]]),
        "string elements of a BYTES output are UTF-8: {strings:?}"
    );

    // A huge exception message must not spend the call's log allowance and turn into a trap.
    let err = predict_err(&mut instance, r#"{"do": "throw-long"}"#);
    assert!(
        matches!(&err, CallError::ModelFailed(m) if m.starts_with("predict threw Error: xxx") && m.len() <= 4200),
        "{:?}",
        err.to_string().chars().take(200).collect::<String>()
    );

    let err = predict_err(&mut instance, r#"{"do": "nan"}"#);
    assert!(
        matches!(&err, CallError::ModelFailed(m)
            if m == "predict returned NaN at $.x[1].y, which JSON cannot carry"),
        "{err:?}"
    );
    let err = predict_err(&mut instance, r#"{"do": "bigint"}"#);
    assert!(
        matches!(&err, CallError::ModelFailed(m)
            if m == "predict returned a BigInt at $.n, which JSON cannot carry"),
        "{err:?}"
    );
    let err = predict_err(&mut instance, r#"{"do": "async"}"#);
    assert!(
        matches!(&err, CallError::ModelFailed(m)
            if m.starts_with("predict returned a Promise: a model's methods are synchronous in a component")
                && m.contains("drop `async`")),
        "{err:?}"
    );

    assert_eq!(
        instance.predict(r#"{"do": "log"}"#).unwrap(),
        r#"{"logged":true}"#,
        "log.info and console.log write to the host's log"
    );
    assert_eq!(
        instance
            .predict(r#"{"do": "imported", "distance_km": 1.609344}"#)
            .unwrap(),
        r#"{"miles":1}"#,
        "a module the entry imports from the project is in the component"
    );
    assert_eq!(
        instance.predict(r#"{"hello": [1, 2]}"#).unwrap(),
        r#"{"echo":{"hello":[1,2]}}"#
    );
}

#[test]
fn a_failing_init_names_the_exception_and_where() {
    let err = probe(r#"{"fail": true}"#).err().expect("init fails");
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "init threw Error: init asked to fail (at {}",
            probe_line("init")
        )),
        "{text}"
    );
}
