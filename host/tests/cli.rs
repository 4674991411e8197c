//! `ferry test` as an author runs it, on the built sample models and on components that must fail.
//! The components come from `scripts/build-models.sh`.

use std::path::PathBuf;
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn built(path: &str) -> PathBuf {
    let p = root().join(path);
    assert!(
        p.exists(),
        "{} is missing: run scripts/build-models.sh first",
        p.display()
    );
    p
}

fn ferry_test(args: &[&std::ffi::OsStr]) -> (i32, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("test")
        .args(args)
        .env("FERRY_CACHE_DIR", root().join("target/ferry-test-cache"))
        .output()
        .expect("run ferry");
    (
        status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
    )
}

fn sample(name: &str) -> (i32, String) {
    let wasm = built(&format!("target/models/{name}.wasm"));
    let mut args: Vec<std::ffi::OsString> = vec![wasm.into()];
    for (flag, ext) in [
        ("--weights", "weights"),
        ("--config", "config.json"),
        ("--tests", "tests.json"),
    ] {
        let p = root().join(format!("target/models/{name}.{ext}"));
        if p.exists() {
            args.push(flag.into());
            args.push(p.into());
        }
    }
    ferry_test(&args.iter().map(|a| a.as_os_str()).collect::<Vec<_>>())
}

#[test]
fn each_sample_model_passes_its_parity_tests() {
    for name in ["fraud-features", "diabetes-gbdt", "digits-onnx"] {
        let (code, out) = sample(name);
        assert_eq!(code, 0, "{name}:\n{out}");
        assert!(out.contains(" 0 failed"), "{name}:\n{out}");
        assert!(!out.contains("FAIL"), "{name}:\n{out}");
    }
}

#[test]
fn a_component_built_against_another_contract_version_is_named() {
    let (code, out) =
        ferry_test(&[built("target/test-guests/wrong-contract-guest.wasm").as_os_str()]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("built against ferry:model@0.2.0") && out.contains("ferry:model@0.1.0"),
        "{out}"
    );
}

#[test]
fn a_wrong_expectation_fails_with_the_case_and_the_delta() {
    let tests = std::fs::read_to_string(built("target/models/diabetes-gbdt.tests.json")).unwrap();
    let mut doc: serde_json::Value = serde_json::from_str(&tests).unwrap();
    let expected = &mut doc["cases"][0]["outputs"][0]["data"][0];
    *expected = serde_json::json!(expected.as_f64().unwrap() + 1.0);
    let dir = tempfile::tempdir().unwrap();
    let tampered = dir.path().join("tests.json");
    std::fs::write(&tampered, doc.to_string()).unwrap();
    let (code, out) = ferry_test(&[
        built("target/models/diabetes-gbdt.wasm").as_os_str(),
        "--weights".as_ref(),
        built("target/models/diabetes-gbdt.weights").as_os_str(),
        "--tests".as_ref(),
        tampered.as_os_str(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL  xgboost-parity-0") && out.contains("progression[0]: expected"),
        "{out}"
    );
    assert!(out.contains("1 failed"), "{out}");
}

#[test]
fn a_corrupt_file_and_a_missing_weights_file_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.wasm");
    let mut bytes = std::fs::read(built("target/models/fraud-features.wasm")).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&corrupt, bytes).unwrap();
    let (code, out) = ferry_test(&[corrupt.as_os_str()]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("is not a usable Ferry model"), "{out}");

    let (code, out) = ferry_test(&[built("target/models/digits-onnx.wasm").as_os_str()]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("init failed") && out.contains("needs a weights file"),
        "{out}"
    );
}
