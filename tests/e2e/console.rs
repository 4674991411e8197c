//! The operator console (`/ui`) in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`) driven over WebDriver by tests/python/console_check.py. Every page loads with no
//! console error and shows the host's own data (a shadow's agreement included); a feature scaled ×3
//! shows drifting there as in the API; a promote and a rollback made in the console change what an inference gets and are audited;
//! a read-only credential (role `read`) sees every page and no edit control. Screenshots of each page
//! land in target/console-screenshots (the closing note's copies are in docs/console/).

use ferry::teams::token_sha256;
use ferry_tests::http::status_of;
use ferry_tests::server::{Seed, Server};
use ferry_tests::workspace;
use serde_json::Value;

use crate::monitoring::{like_and_shifted, REQUESTS};

const ADMIN: &str = "console-admin-token-7c1";
const READ: &str = "console-read-token-93e";

const CONFIG: &str = r#"
[monitoring]
sample_percent = 100
min_rows = 150

[console]
history_interval_ms = 1000   # the charts' intervals, short enough for a test to see them fill

[models.digits-graph]
min_instances = 2            # version 2 serves a canary share and shadows 1: a shadow copy needs a
                             # second idle instance (serving::traffic::shadow)
"#;

#[test]
fn the_console_shows_the_hosts_data_and_changes_it_through_the_same_routes() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        format!(
            "[[credential]]\nname = \"ops-admin\"\ntoken_sha256 = {:?}\nmodels = [\"*\"]\nroles = [\"admin\"]\n\n\
             [[credential]]\nname = \"on-call\"\ntoken_sha256 = {:?}\nmodels = [\"*\"]\nroles = [\"read\"]\n",
            token_sha256(ADMIN),
            token_sha256(READ)
        ),
    )
    .unwrap();
    let server = Server::start_with(
        &[
            Seed::sample("digits-graph", "1"),
            Seed::sample("digits-graph", "2"),
            Seed {
                model: "rides",
                ..Seed::sample("python-sklearn-graph", "1")
            },
            Seed {
                model: "rides-shifted",
                ..Seed::sample("python-sklearn-graph", "1")
            },
        ],
        CONFIG,
        &["--tokens", tokens.to_str().unwrap()],
    );
    let admin = format!("Bearer {ADMIN}");
    let r = ureq::put(&server.url("/v1/models/digits-graph/aliases/production"))
        .set("authorization", &admin)
        .send_json(serde_json::json!({"version": "1"}));
    assert!(r.is_ok(), "{r:?}");
    let r = ureq::put(&server.url("/v1/models/digits-graph/aliases/canary"))
        .set("authorization", &admin)
        .send_json(serde_json::json!({"split": {"1": 80, "2": 20}}));
    assert!(r.is_ok(), "{r:?}");

    // Version 2 shadows version 1: its agreement shows on the model's page.
    let r = ureq::put(&server.url("/v1/models/digits-graph/traffic"))
        .set("authorization", &admin)
        .send_json(serde_json::json!({"shadow": {"version": "2", "percent": 100}}));
    assert!(r.is_ok(), "{r:?}");
    let infer = serde_json::json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": vec![0.5f32; 64]}]});
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        // Paced: a copy runs only on an idle instance, in the idle scheduling class.
        let r = ureq::post(&server.url("/v2/models/digits-graph/infer")).send_json(&infer);
        assert!(r.is_ok(), "{r:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
        let model: Value = ureq::get(&server.url("/v1/models/digits-graph"))
            .set("authorization", &admin)
            .call()
            .unwrap()
            .into_json()
            .unwrap();
        if model["shadow_agreement"][0]["compared"].as_u64() > Some(0) {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "no shadow compared: {model}"
        );
    }

    // The page and its files are built in, and load nothing from elsewhere.
    let page = ureq::get(&server.url("/ui")).call().unwrap();
    let policy = page
        .header("content-security-policy")
        .unwrap_or_default()
        .to_owned();
    assert!(
        policy.contains("default-src 'none'") && policy.contains("script-src 'self'"),
        "{policy}"
    );
    let html = page.into_string().unwrap();
    assert!(
        html.contains(r#"content="true""#),
        "the page knows a token is needed: {html}"
    );
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no other origin: {html}"
    );
    let (status, _) = status_of(ureq::get(&server.url("/ui/nothing.js")).call());
    assert_eq!(status, 404);

    // Traffic like training to `rides`, and the same with one feature ×3 to `rides-shifted`.
    like_and_shifted(&server, 20261207);
    // The worker counts off the request path: wait until it has counted them all.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let report: Value = ureq::get(&server.url("/v1/models/rides-shifted/monitoring"))
            .set("authorization", &admin)
            .call()
            .unwrap()
            .into_json()
            .unwrap();
        if report["versions"][0]["samples"].as_u64() == Some(REQUESTS as u64) {
            break;
        }
        assert!(std::time::Instant::now() < until, "never counted: {report}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    let shots = workspace().join("target/console-screenshots");
    let (ok, text) = ferry_tests::python_check(
        "console_check.py",
        &[
            server.base.as_ref(),
            ADMIN.as_ref(),
            READ.as_ref(),
            shots.as_os_str(),
        ],
    );
    assert!(ok, "{text}\nserver log:\n{}", server.log());
    for line in [
        "console overview:",
        "console drift: wait_minutes drifting",
        "console shadows: version 2 against 1",
        "console promote: production -> 2, and an inference without a version is answered by 2",
        "console rollback: production -> 1, and an inference without a version is answered by 1",
        "console audit: the promote and the rollback recorded under ops-admin",
        "console read-only: every page loads, no edit controls",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
}
