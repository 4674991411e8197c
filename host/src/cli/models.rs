//! `ferry models`, `ferry promote`, `ferry rollback`: read and move what the server routes.

use serde_json::{json, Value};

use super::client::{json as answer, ServerArgs};

#[derive(Debug, clap::Args)]
pub struct ModelsArgs {
    /// Show every host of the fleet sharing the server's store: which serves which version, and
    /// which failed one and why.
    #[arg(long)]
    fleet: bool,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, clap::Args)]
pub struct PromoteArgs {
    /// The model.
    model: String,
    /// The version the alias should point at (or `--split`).
    #[arg(required_unless_present = "split", conflicts_with = "split")]
    version: Option<String>,
    /// A weighted alias instead: `3=90,4=10` (sticky per `ferry-routing-key`).
    #[arg(long, value_name = "V=WEIGHT,…")]
    split: Option<String>,
    /// With `--split`: where a feature-style body carries the routing key (a JSON pointer, e.g.
    /// `/features/rider_id`).
    #[arg(long, requires = "split")]
    routing_key_field: Option<String>,
    /// The alias to move.
    #[arg(long, default_value = crate::registry::DEFAULT_ALIAS)]
    alias: String,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, clap::Args)]
pub struct TrafficArgs {
    /// The model.
    model: String,
    /// Copy a share of the model's requests to this version, off the request path.
    #[arg(long, conflicts_with = "no_shadow")]
    shadow: Option<String>,
    /// The share copied to the shadow, 0–100 (default 100 with --shadow).
    #[arg(long)]
    shadow_percent: Option<f64>,
    /// Stop shadowing.
    #[arg(long)]
    no_shadow: bool,
    /// The share of requests the prediction log keeps, 0–100.
    #[arg(long)]
    log_percent: Option<f64>,
    #[command(flatten)]
    server: ServerArgs,
}

/// `3=90,4=10` → `{"3": 90, "4": 10}`.
fn parse_split(text: &str) -> anyhow::Result<serde_json::Map<String, Value>> {
    let mut split = serde_json::Map::new();
    for part in text.split(',').filter(|p| !p.trim().is_empty()) {
        let (version, weight) = part
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("`{part}` is not VERSION=WEIGHT (e.g. 3=90,4=10)"))?;
        let weight: u32 = weight.trim().parse().map_err(|_| {
            anyhow::anyhow!("the weight of `{}` is not a whole number", version.trim())
        })?;
        split.insert(version.trim().to_owned(), json!(weight));
    }
    Ok(split)
}

#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The model.
    model: String,
    /// The alias to move back.
    #[arg(long, default_value = crate::registry::DEFAULT_ALIAS)]
    alias: String,
    #[command(flatten)]
    server: ServerArgs,
}

pub fn list(args: ModelsArgs) -> anyhow::Result<i32> {
    if args.fleet {
        return fleet(&args.server);
    }
    let all = answer(
        args.server.request("GET", "/v1/models").call(),
        "listing models",
    )?;
    println!(
        "{:<24} {:<12} {:<9} {:<20} {}",
        "MODEL", "VERSION", "STATE", "ALIASES", "SELF-TESTS / REASON"
    );
    for m in all["models"].as_array().into_iter().flatten() {
        let name = m["name"].as_str().unwrap_or_default();
        for v in m["versions"].as_array().into_iter().flatten() {
            let version = v["version"].as_str().unwrap_or_default();
            // A plain alias names its version; a weighted one shows the version's weight.
            let mut aliases: Vec<String> = m["aliases"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(a, t)| match &t["split"] {
                    Value::Object(split) => split.get(version).map(|w| format!("{a}({w})")),
                    _ => (*t == version).then(|| a.clone()),
                })
                .collect();
            if m["default_version"] == version {
                aliases.push("(default)".into());
            }
            let detail = match (v["reason"].as_str(), v["self_tests"].is_object()) {
                (Some(reason), _) => reason.to_owned(),
                (None, true) => format!(
                    "{} passed, {} failed",
                    v["self_tests"]["passed"], v["self_tests"]["failed"]
                ),
                _ => String::new(),
            };
            println!(
                "{name:<24} {version:<12} {:<9} {:<20} {detail}",
                v["state"].as_str().unwrap_or_default(),
                aliases.join(",")
            );
        }
    }
    Ok(0)
}

pub fn promote(args: PromoteArgs) -> anyhow::Result<i32> {
    let path = format!("/v1/models/{}/aliases/{}", args.model, args.alias);
    let (body, shown) = match (&args.version, &args.split) {
        (Some(version), _) => (json!({ "version": version }), version.clone()),
        (None, Some(split)) => {
            let mut body = json!({ "split": parse_split(split)? });
            if let Some(field) = &args.routing_key_field {
                body["routing_key_field"] = json!(field);
            }
            (body, format!("split {split}"))
        }
        (None, None) => unreachable!("clap requires a version or --split"),
    };
    answer(
        args.server.request("PUT", &path).send_json(body),
        "promoting",
    )?;
    println!("{} {} → {shown}", args.model, args.alias);
    Ok(0)
}

pub fn traffic(args: TrafficArgs) -> anyhow::Result<i32> {
    let path = format!("/v1/models/{}/traffic", args.model);
    // What is not given stays as it is.
    let mut policy = answer(
        args.server.request("GET", &path).call(),
        "reading the traffic policy",
    )?;
    if args.no_shadow {
        policy.as_object_mut().map(|p| p.remove("shadow"));
    }
    if let Some(version) = &args.shadow {
        policy["shadow"] =
            json!({ "version": version, "percent": args.shadow_percent.unwrap_or(100.0) });
    } else if let Some(percent) = args.shadow_percent {
        if policy["shadow"].is_null() {
            anyhow::bail!(
                "{} has no shadow: name one with --shadow VERSION",
                args.model
            );
        }
        policy["shadow"]["percent"] = json!(percent);
    }
    if let Some(percent) = args.log_percent {
        policy["log"] = json!({ "percent": percent });
    }
    let policy = answer(
        args.server.request("PUT", &path).send_json(policy),
        "setting the traffic policy",
    )?;
    println!("{} traffic: {policy}", args.model);
    Ok(0)
}

pub fn rollback(args: RollbackArgs) -> anyhow::Result<i32> {
    let path = format!("/v1/models/{}/aliases/{}/rollback", args.model, args.alias);
    let moved = answer(args.server.request("POST", &path).call(), "rolling back")?;
    let target = match (moved["version"].as_str(), &moved["split"]) {
        (Some(v), _) => v.to_owned(),
        (None, Value::Object(split)) => format!("split {}", Value::Object(split.clone())),
        _ => "?".to_owned(),
    };
    println!("{} {} → {target}", args.model, args.alias);
    Ok(0)
}

/// `ferry models --fleet`: one line per host and version.
fn fleet(server: &ServerArgs) -> anyhow::Result<i32> {
    let fleet = answer(
        server.request("GET", "/v1/fleet").call(),
        "reading the fleet's status",
    )?;
    println!("store {}", fleet["store"].as_str().unwrap_or_default());
    println!(
        "{:<28} {:<7} {:<10} {:<24} {:<12} {:<9} {:<14} {}",
        "HOST", "ALIVE", "HEARTBEAT", "MODEL", "VERSION", "STATE", "ALIASES", "REASON"
    );
    for h in fleet["hosts"].as_array().into_iter().flatten() {
        let host = h["host"].as_str().unwrap_or_default();
        let alive = if h["alive"] == true { "yes" } else { "NO" };
        let age = format!(
            "{:.1}s ago",
            h["heartbeat_age_seconds"].as_f64().unwrap_or_default()
        );
        let versions = h["versions"].as_array().cloned().unwrap_or_default();
        if versions.is_empty() {
            println!("{host:<28} {alive:<7} {age:<10} (no versions)");
        }
        for v in versions {
            let aliases: Vec<&str> = v["aliases"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str())
                .collect();
            println!(
                "{host:<28} {alive:<7} {age:<10} {:<24} {:<12} {:<9} {:<14} {}",
                v["model"].as_str().unwrap_or_default(),
                v["version"].as_str().unwrap_or_default(),
                v["state"].as_str().unwrap_or_default(),
                aliases.join(","),
                v["reason"].as_str().unwrap_or_default(),
            );
        }
    }
    Ok(0)
}
