//! Teams on one host: credentials scoped to model-name patterns with roles, read from a tokens file
//! that is reloaded while serving; 403 outside a credential's scope; the audit log that records
//! every management action — and every refused attempt — with its actor; the CLI with a team's token.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ferry::teams::token_sha256;
use ferry_tests::http::status_of;
use ferry_tests::server::{ferry_bin, Seed, Server};
use ferry_tests::workspace;
use serde_json::{json, Value};

const FRAUD: &str = "fraud-team-token-5b1c";
const PRICING: &str = "pricing-team-token-77e0";
const OPS: &str = "ops-token-0d9a";
const ADMIN: &str = "root-admin-token-c3f2";
/// A scraper's token (`--metrics-token`): /metrics follows the read rules once tokens are on.
const SCRAPE: &str = "scrape-token-41aa";

/// A tokens file as an operator writes it: hashes, never tokens.
fn tokens_file(entries: &[(&str, &str, &[&str], &[&str])]) -> String {
    let list = |xs: &[&str]| {
        xs.iter()
            .map(|x| format!("{x:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    entries
        .iter()
        .map(|(name, token, models, roles)| {
            format!(
                "[[credential]]\nname = {name:?}\ntoken_sha256 = {:?}\nmodels = [{}]\nroles = [{}]\n\n",
                token_sha256(token),
                list(models),
                list(roles)
            )
        })
        .collect()
}

fn teams() -> String {
    tokens_file(&[
        ("fraud-team", FRAUD, &["fraud-*"], &["deploy", "promote"]),
        (
            "pricing-team",
            PRICING,
            &["pricing-*"],
            &["deploy", "promote"],
        ),
        ("ops", OPS, &["*"], &["admin"]),
    ])
}

/// Two teams' models: `fraud-features`, and diabetes-gbdt served as `pricing-eta`.
fn seeds() -> Vec<Seed<'static>> {
    vec![
        Seed::sample("fraud-features", "1"),
        Seed {
            model: "pricing-eta",
            ..Seed::sample("diabetes-gbdt", "1")
        },
    ]
}

/// A server reading `tokens` from a file in `dir` (returned so a test can rewrite it).
fn start(dir: &Path, tokens: &str, extra: &[&str]) -> (Server, PathBuf) {
    let file = dir.join("tokens.toml");
    std::fs::write(&file, tokens).unwrap();
    let mut args = vec!["--tokens", file.to_str().unwrap()];
    args.extend_from_slice(extra);
    (Server::start_with(&seeds(), "[host]\n", &args), file)
}

fn call(server: &Server, method: &str, path: &str, token: Option<&str>) -> ureq::Request {
    let req = ureq::request(method, &server.url(path));
    match token {
        Some(t) => req.set("Authorization", &format!("Bearer {t}")),
        None => req,
    }
}

fn upload(server: &Server, token: &str, model: &str, version: &str) -> (u16, String) {
    let wasm = std::fs::read(workspace().join("target/models/fraud-features.wasm")).unwrap();
    status_of(
        call(
            server,
            "PUT",
            &format!("/v1/models/{model}/versions/{version}"),
            Some(token),
        )
        .set("Content-Type", "application/wasm")
        .send_bytes(&wasm),
    )
}

fn promote(server: &Server, token: &str, model: &str, version: &str) -> (u16, String) {
    let path = format!("/v1/models/{model}/aliases/production");
    status_of(call(server, "PUT", &path, Some(token)).send_json(json!({ "version": version })))
}

fn audit(server: &Server, token: &str, query: &str) -> Vec<Value> {
    let (status, body) =
        status_of(call(server, "GET", &format!("/v1/audit{query}"), Some(token)).call());
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["records"]
        .as_array()
        .unwrap()
        .clone()
}

/// The records' (actor, action, model) triples, oldest first, and for refused ones what was tried.
fn summary(records: &[Value]) -> Vec<(String, String, String)> {
    records
        .iter()
        .rev()
        .map(|r| {
            let action = match r["attempted"].as_str() {
                Some(tried) => format!("denied {tried}"),
                None => r["action"].as_str().unwrap().to_owned(),
            };
            (
                r["actor"].as_str().unwrap().to_owned(),
                action,
                r["model"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn versions(server: &Server, model: &str) -> Vec<String> {
    let d: Value = call(server, "GET", &format!("/v1/models/{model}"), Some(OPS))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    d["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap().to_owned())
        .collect()
}

fn triple(actor: &str, action: &str, model: &str) -> (String, String, String) {
    (actor.to_owned(), action.to_owned(), model.to_owned())
}

#[test]
fn a_team_token_gets_403_on_another_teams_model_and_the_audit_log_records_each_action_with_its_actor(
) {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = start(dir.path(), &teams(), &["--admin-token", ADMIN]);

    // The fraud team ships and promotes its own model.
    let (s, body) = upload(&server, FRAUD, "fraud-features", "2");
    assert_eq!(s, 201, "{body}");
    let (s, body) = promote(&server, FRAUD, "fraud-features", "2");
    assert_eq!(s, 200, "{body}");
    let (s, body) = promote(&server, FRAUD, "fraud-features", "1");
    assert_eq!(s, 200, "{body}");
    let (s, body) = status_of(
        call(
            &server,
            "POST",
            "/v1/models/fraud-features/aliases/production/rollback",
            Some(FRAUD),
        )
        .call(),
    );
    assert!(s == 200 && body.contains("\"2\""), "{s} {body}");

    // Not the pricing team's: every change is 403, saying whose credential, what and its patterns.
    let (s, body) = upload(&server, FRAUD, "pricing-eta", "2");
    assert_eq!(s, 403, "{body}");
    let message = serde_json::from_str::<Value>(&body).unwrap()["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        message,
        "credential `fraud-team` may not upload a version of model `pricing-eta`: its models are fraud-* (roles deploy, promote)"
    );
    let (s, body) = promote(&server, FRAUD, "pricing-eta", "1");
    assert!(
        s == 403 && body.contains("move an alias of model `pricing-eta`"),
        "{s} {body}"
    );
    for (method, path) in [
        ("POST", "/v1/models/pricing-eta/aliases/production/rollback"),
        ("DELETE", "/v1/models/pricing-eta/versions/1"),
        ("POST", "/v2/repository/models/pricing-eta/unload"),
        ("POST", "/v2/repository/models/pricing-eta/load"),
    ] {
        let (s, body) = status_of(call(&server, method, path, Some(FRAUD)).call());
        assert!(
            s == 403 && body.contains("fraud-team") && body.contains("fraud-*"),
            "{method} {path}: {s} {body}"
        );
    }
    // Shadowing and logging another team's model are changes too.
    let (s, body) = status_of(
        call(
            &server,
            "PUT",
            "/v1/models/pricing-eta/traffic",
            Some(FRAUD),
        )
        .send_json(serde_json::json!({"log": {"percent": 100}})),
    );
    assert!(
        s == 403 && body.contains("fraud-team"),
        "traffic: {s} {body}"
    );
    // And the other way round.
    let (s, body) = promote(&server, PRICING, "fraud-features", "2");
    assert!(
        s == 403 && body.contains("credential `pricing-team`") && body.contains("pricing-*"),
        "{s} {body}"
    );
    // Its own model, but deleting needs the admin role.
    let (s, body) = status_of(
        call(
            &server,
            "DELETE",
            "/v1/models/fraud-features/versions/1",
            Some(FRAUD),
        )
        .call(),
    );
    assert!(
        s == 403
            && body.contains("delete_version needs the admin role, and it has deploy, promote"),
        "{s} {body}"
    );
    // The refused uploads left nothing behind.
    assert_eq!(versions(&server, "pricing-eta"), ["1"]);

    // Reading needs a valid credential, whatever its scope.
    for path in [
        "/v1/models",
        "/v1/models/pricing-eta",
        "/v1/fleet",
        "/v1/audit",
    ] {
        assert_eq!(
            status_of(call(&server, "GET", path, Some(FRAUD)).call()).0,
            200,
            "{path}"
        );
    }
    assert_eq!(
        status_of(call(&server, "POST", "/v2/repository/index", Some(PRICING)).call()).0,
        200
    );
    for token in [
        None,
        Some("nobody-knows-this"),
        Some(token_sha256(FRAUD).as_str()),
    ] {
        let (s, body) = status_of(call(&server, "GET", "/v1/models", token).call());
        assert!(
            s == 401 && body.contains("bearer token"),
            "{token:?}: {s} {body}"
        );
        let (s, _) = promote(&server, token.unwrap_or(""), "fraud-features", "1");
        assert_eq!(s, 401);
    }

    // The ops admin and the --admin-token may do everything, everywhere.
    let (s, body) = status_of(
        call(
            &server,
            "POST",
            "/v2/repository/models/pricing-eta/unload",
            Some(OPS),
        )
        .call(),
    );
    assert_eq!(s, 200, "{body}");
    let (s, body) = status_of(
        call(
            &server,
            "POST",
            "/v2/repository/models/pricing-eta/load",
            Some(ADMIN),
        )
        .call(),
    );
    assert_eq!(s, 200, "{body}");
    let (s, body) = upload(&server, PRICING, "pricing-eta", "2");
    assert_eq!(s, 201, "{body}");
    let (s, body) = status_of(
        call(
            &server,
            "DELETE",
            "/v1/models/pricing-eta/versions/2",
            Some(ADMIN),
        )
        .call(),
    );
    assert_eq!(s, 204, "{body}");

    // Every action, refused ones included, with its actor; 401s are not (they have no actor).
    let records = audit(&server, PRICING, "");
    assert_eq!(
        summary(&records),
        [
            triple("fraud-team", "put_version", "fraud-features"),
            triple("fraud-team", "set_alias", "fraud-features"),
            triple("fraud-team", "set_alias", "fraud-features"),
            triple("fraud-team", "rollback", "fraud-features"),
            triple("fraud-team", "denied put_version", "pricing-eta"),
            triple("fraud-team", "denied set_alias", "pricing-eta"),
            triple("fraud-team", "denied rollback", "pricing-eta"),
            triple("fraud-team", "denied delete_version", "pricing-eta"),
            triple("fraud-team", "denied unload_model", "pricing-eta"),
            triple("fraud-team", "denied load_model", "pricing-eta"),
            triple("fraud-team", "denied set_traffic", "pricing-eta"),
            triple("pricing-team", "denied set_alias", "fraud-features"),
            triple("fraud-team", "denied delete_version", "fraud-features"),
            triple("ops", "unload_model", "pricing-eta"),
            triple("admin", "load_model", "pricing-eta"),
            triple("pricing-team", "put_version", "pricing-eta"),
            triple("admin", "delete_version", "pricing-eta"),
        ]
    );
    // Newest first, each with when, where and which request.
    let times: Vec<u64> = records
        .iter()
        .map(|r| r["at_unix_ms"].as_u64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    assert!(records
        .iter()
        .all(|r| r["host"].as_str().is_some_and(|h| !h.is_empty())));
    assert!(records
        .iter()
        .all(|r| r["request_id"].as_str().is_some_and(|id| id.len() >= 16)));
    let by_action = |action: &str| {
        records
            .iter()
            .rev()
            .filter(|r| r["action"] == action)
            .collect::<Vec<_>>()
    };
    let upload = by_action("put_version")[0];
    assert_eq!(upload["version"], "2");
    assert_eq!(
        upload["to"]["component_sha256"],
        ferry::runtime::sha256_hex(
            &std::fs::read(workspace().join("target/models/fraud-features.wasm")).unwrap()
        )
    );
    // Aliases: from which target to which.
    let moves = by_action("set_alias");
    assert_eq!(
        (&moves[0]["alias"], &moves[0]["to"]),
        (&json!("production"), &json!("2"))
    );
    assert!(
        moves[0].get("from").is_none(),
        "a new alias came from nowhere: {}",
        moves[0]
    );
    assert_eq!(
        (&moves[1]["from"], &moves[1]["to"]),
        (&json!("2"), &json!("1"))
    );
    let rollback = by_action("rollback")[0];
    assert_eq!(
        (&rollback["from"], &rollback["to"]),
        (&json!("1"), &json!("2"))
    );
    let refused = by_action("denied")[0];
    assert_eq!(refused["reason"], message.as_str());
    assert_eq!(by_action("delete_version")[0]["version"], "2");

    // By model, and bounded.
    let pricing = audit(&server, FRAUD, "?model=pricing-eta&limit=3");
    assert_eq!(
        summary(&pricing),
        [
            triple("admin", "load_model", "pricing-eta"),
            triple("pricing-team", "put_version", "pricing-eta"),
            triple("admin", "delete_version", "pricing-eta"),
        ]
    );
    for bad in ["?limit=0", "?limit=many", "?model=../models", "?modle=x"] {
        let (s, body) =
            status_of(call(&server, "GET", &format!("/v1/audit{bad}"), Some(FRAUD)).call());
        assert_eq!(s, 400, "{bad}: {body}");
    }

    // One immutable object per record in its model's folder, and one in the timeline (`@all`),
    // beside (not among) the models.
    let count = |folder: &std::path::Path| std::fs::read_dir(folder).unwrap().count();
    let (mut in_models, mut in_timeline) = (0, 0);
    for folder in std::fs::read_dir(server.store().join("audit")).unwrap() {
        let folder = folder.unwrap();
        if folder.file_name() == "@all" {
            in_timeline += count(&folder.path());
        } else {
            in_models += count(&folder.path());
        }
    }
    assert_eq!((in_models, in_timeline), (records.len(), records.len()));

    let log = server.log();
    for token in [FRAUD, PRICING, OPS, ADMIN] {
        assert!(!log.contains(token), "a token never appears in the log");
    }
    assert!(
        log.contains("management change refused"),
        "refusals are logged"
    );
    let metrics = call(&server, "GET", "/metrics", Some(ADMIN))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        metrics.contains(
            r#"ferry_management_denied_total{actor="fraud-team",action="delete_version"} 2"#
        ),
        "{metrics}"
    );
    // Three teams and the admin token, from a file in force.
    assert!(
        metrics.lines().any(|l| l == "ferry_credentials 4")
            && metrics.lines().any(|l| l == "ferry_tokens_file_valid 1"),
        "{metrics}"
    );
}

/// Waits until `check` holds (the tokens file is polled every 2 s).
fn eventually(what: &str, check: impl Fn() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{what}: not within 20 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn metric(server: &Server, line_start: &str) -> Option<String> {
    let text = call(server, "GET", "/metrics", Some(SCRAPE))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .map(str::to_owned)
}

#[test]
fn the_tokens_file_is_reloaded_without_a_restart_and_a_broken_one_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (server, file) = start(dir.path(), &teams(), &["--metrics-token", SCRAPE]);
    assert_eq!(promote(&server, FRAUD, "pricing-eta", "1").0, 403);

    // The fraud team is given pricing-eta too: at once, with no restart.
    let widened = tokens_file(&[
        (
            "fraud-team",
            FRAUD,
            &["fraud-*", "pricing-eta"],
            &["promote"],
        ),
        (
            "pricing-team",
            PRICING,
            &["pricing-*"],
            &["deploy", "promote"],
        ),
    ]);
    std::fs::write(&file, widened).unwrap();
    eventually("the widened scope applies", || {
        promote(&server, FRAUD, "pricing-eta", "1").0 == 200
    });
    assert_eq!(
        upload(&server, FRAUD, "fraud-x", "1").0,
        403,
        "and it lost deploy"
    );
    assert_eq!(
        status_of(call(&server, "GET", "/v1/models", Some(OPS)).call()).0,
        401,
        "ops is gone"
    );

    // A broken file: logged, counted, and what was in force stays in force.
    std::fs::write(
        &file,
        "[[credential]]\nname = \"fraud-team\"\nroles = [\"admin\"]\n",
    )
    .unwrap();
    eventually("the broken file is refused", || {
        metric(&server, "ferry_tokens_file_valid").is_some_and(|l| l.ends_with(" 0"))
    });
    assert_eq!(
        metric(&server, r#"ferry_tokens_reloads_total{outcome="refused"}"#).as_deref(),
        Some(r#"ferry_tokens_reloads_total{outcome="refused"} 1"#)
    );
    assert!(
        server.log().contains("the changed tokens file is refused"),
        "{}",
        server.log()
    );
    assert_eq!(
        promote(&server, FRAUD, "pricing-eta", "1").0,
        200,
        "still in force"
    );

    // Revoked: the token stops working.
    std::fs::write(
        &file,
        tokens_file(&[("pricing-team", PRICING, &["pricing-*"], &["promote"])]),
    )
    .unwrap();
    eventually("the revocation applies", || {
        promote(&server, FRAUD, "pricing-eta", "1").0 == 401
    });
    assert!(metric(&server, "ferry_tokens_file_valid").is_some_and(|l| l.ends_with(" 1")));
    let actors: Vec<String> = audit(&server, PRICING, "?model=pricing-eta")
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["actor"].as_str().unwrap(),
                r["action"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        actors.contains(&"fraud-team set_alias".to_owned()),
        "{actors:?}"
    );
    assert_eq!(
        actors.last().map(String::as_str),
        Some("fraud-team denied"),
        "{actors:?}"
    );
}

fn ferry(server: &Server, token_env: &[(&str, &str)], args: &[&str]) -> (i32, String) {
    let mut cmd = Command::new(ferry_bin());
    cmd.args(args)
        .current_dir(workspace().join("target/models"))
        .env("FERRY_SERVER", &server.base)
        .env_remove("FERRY_TOKEN")
        .env_remove("FERRY_ADMIN_TOKEN");
    for (k, v) in token_env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_cli_takes_a_teams_token() {
    let dir = tempfile::tempdir().unwrap();
    // The operator writes the file with `ferry hash-token`.
    let mut hashing = Command::new(ferry_bin())
        .arg("hash-token")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    writeln!(hashing.stdin.take().unwrap(), "{FRAUD}").unwrap();
    let hashed = hashing.wait_with_output().unwrap();
    assert!(hashed.status.success());
    assert_eq!(
        String::from_utf8(hashed.stdout).unwrap().trim(),
        token_sha256(FRAUD)
    );
    let (server, _) = start(dir.path(), &teams(), &[]);

    let fraud = [("FERRY_TOKEN", FRAUD)];
    let (code, out) = ferry(
        &server,
        &fraud,
        &[
            "push",
            "fraud-features.wasm",
            "--model",
            "fraud-scores",
            "--version",
            "1",
            "--alias",
            "production",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("production → 1"), "{out}");
    let (code, out) = ferry(&server, &fraud, &["models"]);
    assert!(
        code == 0 && out.contains("fraud-scores") && out.contains("pricing-eta"),
        "{out}"
    );
    let (code, out) = ferry(&server, &fraud, &["promote", "pricing-eta", "1"]);
    assert_ne!(code, 0);
    assert!(
        out.contains("HTTP 403") && out.contains("credential `fraud-team`"),
        "{out}"
    );
    // --token wins over the variables; FERRY_ADMIN_TOKEN still works for scripts that use it.
    let (code, out) = ferry(
        &server,
        &fraud,
        &["promote", "pricing-eta", "1", "--token", PRICING],
    );
    assert_eq!(code, 0, "{out}");
    let (code, out) = ferry(
        &server,
        &[("FERRY_ADMIN_TOKEN", OPS)],
        &["rollback", "fraud-scores"],
    );
    assert!(code != 0 && out.contains("no earlier version"), "{out}");
    let (code, out) = ferry(&server, &[], &["models"]);
    assert!(code != 0 && out.contains("HTTP 401"), "{out}");

    let (code, out) = ferry(&server, &fraud, &["audit"]);
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("TIME (UTC)"), "{out}");
    let row = |actor: &str, action: &str, model: &str| {
        lines.iter().any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.get(2..5) == Some(&[actor, action, model][..])
        })
    };
    assert!(row("fraud-team", "put_version", "fraud-scores"), "{out}");
    assert!(row("fraud-team", "set_alias", "fraud-scores"), "{out}");
    assert!(row("fraud-team", "denied", "pricing-eta"), "{out}");
    assert!(row("pricing-team", "set_alias", "pricing-eta"), "{out}");
    let (code, out) = ferry(
        &server,
        &fraud,
        &["audit", "--model", "fraud-scores", "--json"],
    );
    assert_eq!(code, 0, "{out}");
    let records: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 2, "{out}");
    assert!(records
        .iter()
        .all(|r| r["actor"] == "fraud-team" && r["model"] == "fraud-scores"));
}

#[test]
fn without_credentials_management_is_open_to_anonymous_and_a_bad_file_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("tokens.toml");
    std::fs::write(
        &bad,
        "[[credential]]\nname = \"fraud-team\"\ntoken = \"s3cret-raw-token\"\n",
    )
    .unwrap();
    let out = Command::new(ferry_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--tokens"])
        .arg(&bad)
        .arg("--store")
        .arg(dir.path().join("store"))
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("tokens.toml is not valid") && stderr.contains("only hashes"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret-raw-token"), "{stderr}");

    let server = Server::start(&[Seed::sample("fraud-features", "1")], "[host]\n");
    assert_eq!(promote(&server, "", "fraud-features", "1").0, 200);
    let records = audit(&server, "", "");
    assert_eq!(
        summary(&records),
        [triple("anonymous", "set_alias", "fraud-features")]
    );
}
