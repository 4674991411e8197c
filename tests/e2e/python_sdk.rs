//! The Python SDK from inside a real component (componentize-py, built by `ferry build`): tensors of
//! every datatype cross the boundary intact, compiled-in self-tests run, and each kind of author
//! mistake comes back as the right error with a message that says what to fix.

use ferry::runtime::{CallError, Datatype, ModelInstance, Tensor, TensorData};
use ferry::selftest::{collect_cases, run_cases};
use ferry_tests::{predict_err, sdk_probe};

fn probe(config: &str) -> Result<ModelInstance, CallError> {
    sdk_probe("python-sdk-guest", config)
}

#[test]
fn compiled_in_self_tests_and_metadata_come_through_the_sdk() {
    let mut instance = probe("{}").unwrap();
    let metadata = instance.metadata().unwrap();
    assert_eq!(metadata.platform, "probe");
    assert!(
        metadata.predicts_json,
        "defining predict declares the JSON entry point"
    );
    assert_eq!(metadata.inputs[0].name, "x");
    assert!(matches!(metadata.inputs[0].datatype, Datatype::Fp32));
    assert_eq!(metadata.inputs[0].shape, vec![-1, 2]);

    let cases = collect_cases(instance.self_tests().unwrap(), None).unwrap();
    assert_eq!(cases.len(), 2, "one predict case and one infer case");
    let report = run_cases(&mut instance, &cases);
    assert!(report.all_passed(), "{:#?}", report.outcomes);
}

#[test]
fn tensors_of_every_datatype_cross_the_boundary_intact() {
    let mut instance = probe("{}").unwrap();
    let tensors = vec![
        ("b", TensorData::Bool(vec![true, false])),
        ("u8", TensorData::Uint8(vec![0, 255])),
        ("u16", TensorData::Uint16(vec![0, u16::MAX])),
        ("u32", TensorData::Uint32(vec![0, u32::MAX])),
        ("u64", TensorData::Uint64(vec![0, u64::MAX])),
        ("i8", TensorData::Int8(vec![i8::MIN, -1])),
        ("i16", TensorData::Int16(vec![i16::MIN, i16::MAX])),
        ("i32", TensorData::Int32(vec![i32::MIN, i32::MAX])),
        ("i64", TensorData::Int64(vec![i64::MIN, i64::MAX])),
        ("f32", TensorData::Fp32(vec![1.5, -0.0])),
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
        matches!(&err, CallError::InvalidInput(m) if m == "input 'x': shape [1, 3], expected [N, 2]"),
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
    assert!(matches!(&err, CallError::InvalidInput(_)), "{err:?}");
    let answer = instance
        .predict(r#"{"do": "fields", "features": {"a": 0.5, "n": 2}}"#)
        .unwrap();
    assert_eq!(answer, r#"{"sum": 2.5}"#);
}

#[test]
fn a_bug_in_the_model_is_an_internal_error_that_says_where() {
    let mut instance = probe("{}").unwrap();
    let err = predict_err(&mut instance, r#"{"do": "raise"}"#);
    assert!(
        matches!(&err, CallError::ModelFailed(m)
            if m.starts_with("predict raised KeyError: 'missing' (at ") && m.contains("probe.py:")),
        "{err:?}"
    );

    let one = |name: &str| Tensor {
        name: name.into(),
        shape: vec![1],
        data: TensorData::Int32(vec![0]),
    };
    let err = instance.infer(&[one("overflow")], "{}").unwrap_err();
    assert!(
        matches!(&err, CallError::ModelFailed(m)
            if m.starts_with("infer raised ValueError: output 'o': 300 does not fit UINT8")),
        "{err:?}"
    );

    let err = instance.infer(&[one("fraction")], "{}").unwrap_err();
    assert!(
        matches!(&err, CallError::ModelFailed(m)
            if m.starts_with("infer raised ValueError: output 'i': an element is not a valid INT32 value")),
        "{err:?}"
    );
    let strings = instance.infer(&[one("strings")], "{}").unwrap();
    assert!(
        matches!(&strings[0].data, TensorData::Bytes(v) if v == &vec!["héllo".as_bytes().to_vec(), vec![0xff]]),
        "str elements of a BYTES output are UTF-8: {strings:?}"
    );

    // A huge exception message must not spend the call's log allowance and turn into a trap.
    let err = predict_err(&mut instance, r#"{"do": "raise-long"}"#);
    assert!(
        matches!(&err, CallError::ModelFailed(m) if m.starts_with("predict raised ValueError: xxx") && m.len() <= 4200),
        "{:?}",
        err.to_string().chars().take(200).collect::<String>()
    );

    let err = predict_err(&mut instance, r#"{"do": "late-import"}"#);
    assert!(
        matches!(&err, CallError::ModelFailed(m)
            if m.contains("No module named 'decimal'") && m.contains("import every module at the top")),
        "{err:?}"
    );

    let err = predict_err(&mut instance, r#"{"do": "nan"}"#);
    assert!(
        matches!(&err, CallError::ModelFailed(m) if m.contains("NaN or infinity")),
        "{err:?}"
    );

    assert_eq!(
        instance.predict(r#"{"do": "log"}"#).unwrap(),
        r#"{"logged": true}"#
    );
    assert_eq!(
        instance
            .predict(r#"{"do": "bundled", "distance_km": 1.609344}"#)
            .unwrap(),
        r#"{"miles": 1.0}"#,
        "a package from the project's bundle folder is in the component"
    );
    assert_eq!(
        instance.predict(r#"{"hello": [1, 2]}"#).unwrap(),
        r#"{"echo": {"hello": [1, 2]}}"#
    );
}

#[test]
fn a_failing_init_names_the_exception() {
    let err = probe(r#"{"fail_init": true}"#).err().expect("init fails");
    let text = err.to_string();
    assert!(
        text.contains("init raised RuntimeError: init asked to fail"),
        "{text}"
    );
}
