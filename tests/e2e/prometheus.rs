//! The alerting rules in a real Prometheus (Debian's, installed by scripts/validate-deploy.sh) scraping
//! a real host: the rules load without error, a Ferry series is queried back through Prometheus's HTTP
//! API, and traffic with one feature scaled ×3 raises `FerryFeatureDrift` for that feature (pending:
//! the rule waits 15 minutes before it fires) and for no other.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferry_tests::server::{free_port, Seed, Server};
use ferry_tests::workspace;
use serde_json::{json, Value};

use crate::monitoring::{predict, requests_like_training, Draw, SHIFTED};

const CONFIG: &str = r#"
[monitoring]
sample_percent = 100
min_rows = 100
"#;

/// Prometheus, stopped when dropped.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Scrapes `target` (host:port) every second and evaluates `rules` every second.
    fn start(target: &str, rules: &Path) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
                 scrape_configs:\n  - job_name: ferry\n    static_configs:\n      - targets: ['{target}']\n",
                rules.display()
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian's `prometheus`; scripts/validate-deploy.sh installs it)");
        let prometheus = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        prometheus.until("ready", |p| {
            ureq::get(&format!("{}/-/ready", p.url))
                .call()
                .is_ok()
                .then_some(())
        });
        prometheus
    }

    fn api(&self, path: &str) -> Value {
        ureq::get(&format!("{}/api/v1/{path}", self.url))
            .call()
            .unwrap()
            .into_json()
            .unwrap()
    }

    fn query(&self, query: &str) -> Vec<Value> {
        let answer: Value = ureq::get(&format!("{}/api/v1/query", self.url))
            .query("query", query)
            .call()
            .unwrap()
            .into_json()
            .unwrap();
        assert_eq!(answer["status"], "success", "{answer}");
        answer["data"]["result"].as_array().unwrap().clone()
    }

    /// Polls `found` for up to a minute.
    fn until<T>(&self, what: &str, mut found: impl FnMut(&Prometheus) -> Option<T>) -> T {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(t) = found(self) {
                return t;
            }
            assert!(
                Instant::now() < until,
                "prometheus: no {what} within a minute"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

#[test]
fn a_real_prometheus_loads_the_rules_scrapes_a_host_and_raises_the_drift_alert() {
    let server = Server::start(
        &[Seed {
            model: "rides",
            ..Seed::sample("python-sklearn-graph", "1")
        }],
        CONFIG,
    );
    let rules = workspace().join("deploy/prometheus/ferry-rules.yml");
    let prometheus = Prometheus::start(server.base.trim_start_matches("http://"), &rules);

    // Every rule loaded, none in error.
    let groups = prometheus.api("rules");
    let loaded: Vec<&Value> = groups["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert_eq!(loaded.len(), 9, "{groups}");
    assert!(loaded.iter().all(|r| r["health"] != "err"), "{groups}");

    // A Ferry series, back through Prometheus.
    let ready = prometheus.until("ferry_model_ready for rides", |p| {
        let result = p.query(r#"ferry_model_ready{model="rides",version="1"}"#);
        (!result.is_empty()).then_some(result)
    });
    assert_eq!(ready[0]["value"][1], "1", "{ready:?}");

    // Traffic with one feature scaled ×3.
    let profile: Value = serde_json::from_str(
        &std::fs::read_to_string(
            workspace().join("sample-models/python-sklearn-graph/profile.json"),
        )
        .unwrap(),
    )
    .unwrap();
    for mut fields in requests_like_training(&profile, &mut Draw(7)) {
        let x = fields[SHIFTED].as_f64().unwrap();
        fields.insert(SHIFTED.into(), json!(x * 3.0));
        predict(&server, "rides", &fields);
    }
    let drift = prometheus.until("drift of wait_minutes", |p| {
        let result = p.query(&format!(
            r#"ferry_feature_drift{{model="rides",feature="{SHIFTED}"}}"#
        ));
        let value: f64 = result.first()?["value"][1].as_str()?.parse().ok()?;
        (value > 0.25).then_some(value)
    });
    let alerts = prometheus.until("FerryFeatureDrift pending", |p| {
        let alerts = p.api("alerts");
        let drifting: Vec<Value> = alerts["data"]["alerts"]
            .as_array()?
            .iter()
            .filter(|a| a["labels"]["alertname"] == "FerryFeatureDrift")
            .cloned()
            .collect();
        (!drifting.is_empty()).then_some(drifting)
    });
    assert_eq!(alerts.len(), 1, "only the shifted feature: {alerts:?}");
    assert_eq!(alerts[0]["labels"]["feature"], SHIFTED, "{alerts:?}");
    assert_eq!(alerts[0]["labels"]["model"], "rides");
    assert_eq!(
        alerts[0]["state"], "pending",
        "it fires after 15 minutes: {alerts:?}"
    );
    println!("prometheus: ferry_feature_drift{{feature=\"{SHIFTED}\"}} = {drift:.2}, FerryFeatureDrift pending");
}
