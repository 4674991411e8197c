//! What one credential can see and cost: `/metrics` and the OIP statistics and configs follow the
//! read rules once any credential is configured (and stay open when none is); a scrape-only token
//! reads `/metrics` and gets 403 everywhere else; a loop of refused attempts is counted in full but
//! leaves a bounded number of audit records; `GET /v1/audit` pages with a cursor.

use std::time::{Duration, Instant};

use ferry::teams::token_sha256;
use ferry_tests::http::status_of;
use ferry_tests::server::{Seed, Server};
use serde_json::{json, Value};

const FRAUD: &str = "fraud-team-token-91ab";
const ADMIN: &str = "root-admin-token-77c1";
/// `--metrics-token`.
const SCRAPE: &str = "scrape-token-0f3e";
/// A scrape-only credential of the tokens file (role `metrics`).
const PROMETHEUS: &str = "prometheus-token-5d20";

/// Most audit records a credential's refusals on one route leave in a minute (twice that when a
/// test straddles a minute of the clock).
const SAMPLED: usize = 10;

fn tokens_file() -> String {
    format!(
        "[[credential]]\nname = \"fraud-team\"\ntoken_sha256 = {:?}\nmodels = [\"fraud-*\"]\nroles = [\"deploy\", \"promote\"]\n\n\
         [[credential]]\nname = \"prometheus\"\ntoken_sha256 = {:?}\nroles = [\"metrics\"]\n",
        token_sha256(FRAUD),
        token_sha256(PROMETHEUS)
    )
}

/// A server with teams, an admin token and a metrics token, serving `fraud-features` and
/// diabetes-gbdt as `pricing-eta`.
fn start(dir: &std::path::Path) -> Server {
    let file = dir.join("tokens.toml");
    std::fs::write(&file, tokens_file()).unwrap();
    let seeds = [
        Seed::sample("fraud-features", "1"),
        Seed {
            model: "pricing-eta",
            ..Seed::sample("diabetes-gbdt", "1")
        },
    ];
    Server::start_with(
        &seeds,
        "[host]\n",
        &[
            "--tokens",
            file.to_str().unwrap(),
            "--admin-token",
            ADMIN,
            "--metrics-token",
            SCRAPE,
        ],
    )
}

fn call(server: &Server, method: &str, path: &str, token: Option<&str>) -> ureq::Request {
    let req = ureq::request(method, &server.url(path));
    match token {
        Some(t) => req.set("Authorization", &format!("Bearer {t}")),
        None => req,
    }
}

fn get(server: &Server, path: &str, token: Option<&str>) -> (u16, String) {
    status_of(call(server, "GET", path, token).call())
}

/// The value of the metric line that starts with `line_start`.
fn metric(server: &Server, line_start: &str) -> Option<f64> {
    let (status, text) = get(server, "/metrics", Some(SCRAPE));
    assert_eq!(status, 200, "{text}");
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

const READS: [&str; 5] = [
    "/v2/models/stats",
    "/v2/models/fraud-features/stats",
    "/v2/models/fraud-features/config",
    "/v2/models/fraud-features/versions/1/stats",
    "/v2/models/fraud-features/versions/1/config",
];

#[test]
fn with_no_credential_configured_metrics_statistics_and_configs_stay_open() {
    let server = Server::start(&[Seed::sample("fraud-features", "1")], "[host]\n");
    for path in READS.iter().chain(&["/metrics", "/v1/models"]) {
        let (status, body) = get(&server, path, None);
        assert_eq!(status, 200, "{path}: {body}");
    }
}

#[test]
fn reads_need_a_credential_and_a_scrape_token_reads_metrics_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());

    // No token, or one nobody has: 401 on every read, /metrics included.
    for token in [
        None,
        Some("nobody-has-this"),
        Some(token_sha256(FRAUD).as_str()),
    ] {
        for path in READS.iter().chain(&["/metrics"]) {
            let (status, body) = get(&server, path, token);
            assert_eq!(status, 401, "{path} {token:?}: {body}");
        }
    }
    // Health stays open: probes carry no token.
    assert_eq!(get(&server, "/v2/health/live", None).0, 200);

    // Any team's credential reads, whatever its scope (pricing-eta is not the fraud team's).
    for token in [FRAUD, ADMIN] {
        for path in READS
            .iter()
            .chain(&["/metrics", "/v2/models/pricing-eta/stats", "/v1/models"])
        {
            let (status, body) = get(&server, path, Some(token));
            assert_eq!(status, 200, "{path} {token}: {body}");
        }
    }
    let config: Value =
        serde_json::from_str(&get(&server, "/v2/models/fraud-features/config", Some(FRAUD)).1)
            .unwrap();
    assert_eq!(config["name"], "fraud-features", "{config}");

    // Scrape-only credentials, the flag's and the file's: /metrics, and 403 everywhere else.
    for scraper in [SCRAPE, PROMETHEUS] {
        let (status, text) = get(&server, "/metrics", Some(scraper));
        assert!(
            status == 200 && text.contains("ferry_"),
            "{scraper}: {status}"
        );
        for path in READS.iter().chain(&[
            "/v1/models",
            "/v1/models/fraud-features",
            "/v1/fleet",
            "/v1/audit",
        ]) {
            let (status, body) = get(&server, path, Some(scraper));
            assert!(
                status == 403 && body.contains("may only read /metrics"),
                "{path} {scraper}: {status} {body}"
            );
        }
        let (status, body) = status_of(
            call(
                &server,
                "PUT",
                "/v1/models/fraud-features/aliases/production",
                Some(scraper),
            )
            .send_json(json!({"version": "1"})),
        );
        assert_eq!(status, 403, "{scraper}: {body}");
        let (status, body) =
            status_of(call(&server, "POST", "/v2/repository/index", Some(scraper)).call());
        assert_eq!(status, 403, "{scraper}: {body}");
    }

    // Refusals are counted by status and route pattern.
    assert_eq!(
        metric(
            &server,
            r#"ferry_http_refused_total{status="401",route="/metrics"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        metric(
            &server,
            r#"ferry_http_refused_total{status="403",route="/v2/models/{model}/stats"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &server,
            r#"ferry_http_refused_total{status="403",route="/v1/fleet"}"#
        ),
        Some(2.0)
    );
    // And the 403s are in the audit log (written on their own tasks), the scraper as the actor:
    // 2 scrapers × 11 routes, each well under the sampling's allowance.
    let started = Instant::now();
    loop {
        let audit: Value =
            serde_json::from_str(&get(&server, "/v1/audit?limit=1000", Some(ADMIN)).1).unwrap();
        let denied_reads: Vec<&Value> = audit["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == "denied" && r["attempted"] == "read")
            .collect();
        if denied_reads.len() == 22 {
            assert!(denied_reads
                .iter()
                .all(|r| ["metrics", "prometheus"].contains(&r["actor"].as_str().unwrap())));
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{} refused reads recorded: {audit}",
            denied_reads.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!server.log().contains(SCRAPE) && !server.log().contains(PROMETHEUS));
}

#[test]
fn a_loop_of_forbidden_attempts_is_counted_in_full_and_sampled_into_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    for _ in 0..200 {
        let (status, body) = status_of(
            call(
                &server,
                "PUT",
                "/v1/models/pricing-eta/aliases/production",
                Some(FRAUD),
            )
            .send_json(json!({"version": "1"})),
        );
        assert_eq!(status, 403, "{body}");
    }
    for _ in 0..200 {
        assert_eq!(get(&server, "/v1/fleet", Some(SCRAPE)).0, 403);
    }
    assert_eq!(
        metric(
            &server,
            r#"ferry_http_refused_total{status="403",route="/v1/models/{model}/aliases/{alias}"}"#
        ),
        Some(200.0)
    );
    assert_eq!(
        metric(
            &server,
            r#"ferry_management_denied_total{actor="fraud-team",action="set_alias"}"#
        ),
        Some(200.0)
    );
    assert_eq!(
        metric(
            &server,
            r#"ferry_http_refused_total{status="403",route="/v1/fleet"}"#
        ),
        Some(200.0)
    );
    // The read refusals are written on their own tasks: give them a moment.
    let started = Instant::now();
    let skipped = loop {
        let skipped = metric(&server, "ferry_audit_refusals_skipped_total").unwrap_or(0.0);
        if skipped >= (400 - 4 * SAMPLED) as f64 || started.elapsed() > Duration::from_secs(10) {
            break skipped;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(skipped >= (400 - 4 * SAMPLED) as f64, "{skipped}");

    // A bounded trail in the store: the model's folder, and the timeline (which also holds the
    // refused reads that name no model).
    let files = |folder: &str| {
        std::fs::read_dir(server.store().join("audit").join(folder))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let in_model = files("pricing-eta");
    assert!(
        (1..=2 * SAMPLED).contains(&in_model),
        "{in_model} records of 200 refusals"
    );
    assert!(
        files("@all") <= 4 * SAMPLED,
        "{} records in the timeline",
        files("@all")
    );
    let records: Value = serde_json::from_str(
        &get(
            &server,
            "/v1/audit?model=pricing-eta&limit=1000",
            Some(ADMIN),
        )
        .1,
    )
    .unwrap();
    let records = records["records"].as_array().unwrap();
    assert_eq!(records.len(), in_model);
    assert!(records
        .iter()
        .all(|r| r["actor"] == "fraud-team" && r["attempted"] == "set_alias"));
}

#[test]
fn the_audit_log_pages_newest_first_with_a_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    for i in 0..25 {
        let (status, body) = status_of(
            call(
                &server,
                "PUT",
                &format!("/v1/models/fraud-features/aliases/a{i}"),
                Some(FRAUD),
            )
            .send_json(json!({"version": "1"})),
        );
        assert_eq!(status, 200, "{body}");
    }
    let page = |query: &str| -> Value {
        let (status, body) = get(&server, &format!("/v1/audit{query}"), Some(FRAUD));
        assert_eq!(status, 200, "{query}: {body}");
        serde_json::from_str(&body).unwrap()
    };
    let aliases = |page: &Value| -> Vec<String> {
        page["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["alias"].as_str().unwrap_or("-").to_owned())
            .collect()
    };
    for scope in ["", "model=fraud-features&"] {
        let mut seen = Vec::new();
        let mut query = format!("?{scope}limit=10");
        let mut pages = 0;
        loop {
            let p = page(&query);
            let got = aliases(&p);
            assert!(got.len() <= 10, "{p}");
            seen.extend(got);
            pages += 1;
            match p["next"].as_str() {
                Some(next) => query = format!("?{scope}limit=10&after={next}"),
                None => break,
            }
        }
        let want: Vec<String> = (0..25).rev().map(|i| format!("a{i}")).collect();
        assert_eq!(seen, want, "{scope}: newest first, each once");
        assert_eq!(pages, 3, "{scope}");
    }
    // The whole log in one page says so: no next.
    assert!(page("?limit=1000").get("next").is_none());
    for bad in ["?after=../models", "?after=", "?limit=10&after=a/b"] {
        let (status, body) = get(&server, &format!("/v1/audit{bad}"), Some(FRAUD));
        assert_eq!(status, 400, "{bad}: {body}");
    }
}
