//! `ferry models`, `ferry promote`, `ferry rollback`: read and move what the server routes.

use serde_json::json;

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
    /// The version the alias should point at.
    version: String,
    /// The alias to move.
    #[arg(long, default_value = crate::registry::DEFAULT_ALIAS)]
    alias: String,
    #[command(flatten)]
    server: ServerArgs,
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
            let mut aliases: Vec<String> = m["aliases"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(_, t)| *t == version)
                .map(|(a, _)| a.clone())
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
    answer(
        args.server
            .request("PUT", &path)
            .send_json(json!({ "version": args.version })),
        "promoting",
    )?;
    println!("{} {} → {}", args.model, args.alias, args.version);
    Ok(0)
}

pub fn rollback(args: RollbackArgs) -> anyhow::Result<i32> {
    let path = format!("/v1/models/{}/aliases/{}/rollback", args.model, args.alias);
    let moved = answer(args.server.request("POST", &path).call(), "rolling back")?;
    println!(
        "{} {} → {}",
        args.model,
        args.alias,
        moved["version"].as_str().unwrap_or("?")
    );
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
