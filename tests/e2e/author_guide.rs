//! The author guide cannot rot: every `sh` block of `docs/author-guide.md` runs, in order, in one shell
//! with `ferry` on the PATH, in an empty directory. The guide's port is swapped for a free one so runs
//! do not collide; a command that fails fails the test, and the answers the guide promises are checked.

use std::io::Write;
use std::process::Command;

use ferry_tests::server::ferry_bin;
use ferry_tests::{author_env, workspace};

/// The guide's shell blocks, in order.
fn shell_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "an unterminated sh block");
    blocks
}

#[test]
fn every_command_in_the_author_guide_runs() {
    let guide = std::fs::read_to_string(workspace().join("docs/author-guide.md")).unwrap();
    let blocks = shell_blocks(&guide);
    assert!(blocks.len() >= 6, "found {} sh blocks", blocks.len());

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut script = String::from(
        "set -euxo pipefail\n\
         # Stop any server the guide left running, whatever happens.\n\
         trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n",
    );
    for block in &blocks {
        script.push_str(&block.replace(":8080", &format!(":{port}")));
    }

    let dir = tempfile::tempdir().unwrap();
    let mut file = std::fs::File::create(dir.path().join("guide.sh")).unwrap();
    file.write_all(script.as_bytes()).unwrap();
    let bin_dir = ferry_bin().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = author_env(Command::new("bash").arg("guide.sh"))
        .current_dir(dir.path())
        .env("PATH", path)
        .env_remove("FERRY_SERVER")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the guide's commands failed:\n--- stdout\n{stdout}\n--- stderr\n{}",
        tail(&stderr, 6000)
    );

    // What the guide's comments promise, as often as the guide does it (the three languages build,
    // test and answer the same trip; Rust and JavaScript sum in the training script's order, Python's
    // answer may differ in the last digit).
    for (promise, times) in [
        ("matches ferry:model@0.1.0", 3),
        ("\n4 passed, 0 failed\n", 3),
        ("{\"eta_minutes\":12.288818929839271}", 2),
        ("{\"eta_minutes\":", 3),
        ("features.hour: missing", 1),
        ("eta-model production → 1", 1),
        ("eta-js production → 2", 1),
        ("eta-js production → 1", 1),
        ("eta-py production → 2", 1),
        ("eta-py production → 1", 1),
        // Every push of retrained weights reuses the stored component: nothing is uploaded or
        // compiled again.
        ("component unchanged", 3),
    ] {
        assert_eq!(
            stdout.matches(promise).count(),
            times,
            "{promise:?} should appear {times}× in:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("eta-model version 2")
            && stdout.matches("state             ready").count() >= 5,
        "{stdout}"
    );
}

fn tail(text: &str, bytes: usize) -> &str {
    let start = text.len().saturating_sub(bytes);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    &text[start..]
}
