//! `ferry hash-token` (what a tokens file holds for a token) and `ferry audit` (who changed what).

use std::io::{IsTerminal, Read};

use anyhow::{bail, Context};
use serde_json::Value;

use super::client::{json as answer, ServerArgs};

#[derive(Debug, clap::Args)]
pub struct HashTokenArgs {}

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Only this model's records.
    #[arg(long)]
    model: Option<String>,
    /// How many records, newest first (at most 1000).
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Print each record as one JSON line, every field included.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

/// Checks a token read from stdin and returns it: one line of visible ASCII, the way it will travel
/// in an `Authorization` header (which drops surrounding whitespace, so a hash of it would never match).
fn token_from(input: &str) -> anyhow::Result<&str> {
    let token = input
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(input);
    if token.is_empty() {
        bail!("no token on stdin (e.g. `printf %s \"$TOKEN\" | ferry hash-token`)");
    }
    if token.contains(['\n', '\r']) {
        bail!("stdin holds more than one line: give one token");
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        bail!("the token has spaces or characters outside visible ASCII, which an Authorization header does not carry as they are");
    }
    Ok(token)
}

/// `ferry hash-token`: reads a token on stdin, prints its sha256 (hex) for the tokens file.
pub fn hash_token(_args: HashTokenArgs) -> anyhow::Result<i32> {
    let stdin = std::io::stdin();
    let mut input = String::new();
    if stdin.is_terminal() {
        eprintln!("token (one line):");
        stdin.read_line(&mut input).context("reading the token")?;
    } else {
        // A token is short; a megabyte on stdin is a wrong file, not a token.
        stdin
            .lock()
            .take(64 << 10)
            .read_to_string(&mut input)
            .context("reading the token from stdin (UTF-8 text)")?;
    }
    println!("{}", crate::teams::token_sha256(token_from(&input)?));
    Ok(0)
}

/// A time as `YYYY-MM-DD HH:MM:SS` in UTC.
fn utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// A target as a person reads it: `3`, or `1:90,2:10` for a split.
fn target(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Object(o) if o.contains_key("split") => o["split"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(v, w)| format!("{v}:{w}"))
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

/// What a record changed, in a few words.
fn what(record: &Value) -> String {
    let text = |k: &str| record[k].as_str().unwrap_or_default().to_owned();
    match record["action"].as_str().unwrap_or_default() {
        "denied" => format!("tried {}", text("attempted")),
        "set_alias" | "rollback" => {
            // No `from`: the alias is new.
            let from = record.get("from").map_or("(new)".to_owned(), target);
            let to = record.get("to").map_or("?".to_owned(), target);
            format!("{} {from} → {to}", text("alias"))
        }
        "set_traffic" => record.get("to").map(Value::to_string).unwrap_or_default(),
        _ if record["version"].is_string() => format!("version {}", text("version")),
        _ => String::new(),
    }
}

/// `ferry audit`: the newest records of the server's audit log.
pub fn audit(args: AuditArgs) -> anyhow::Result<i32> {
    let mut path = format!("/v1/audit?limit={}", args.limit);
    if let Some(model) = &args.model {
        crate::registry::check_name("model", model)?;
        path += &format!("&model={model}");
    }
    let log = answer(
        args.server.request("GET", &path).call(),
        "reading the audit log",
    )?;
    let records = log["records"].as_array().cloned().unwrap_or_default();
    if args.json {
        for r in &records {
            println!("{r}");
        }
        return Ok(0);
    }
    println!(
        "{:<19}  {:<20} {:<14} {:<24} WHAT",
        "TIME (UTC)", "ACTOR", "ACTION", "MODEL"
    );
    for r in &records {
        println!(
            "{:<19}  {:<20} {:<14} {:<24} {}",
            utc(r["at_unix_ms"].as_u64().unwrap_or_default()),
            r["actor"].as_str().unwrap_or_default(),
            r["action"].as_str().unwrap_or_default(),
            r["model"].as_str().unwrap_or_default(),
            what(r)
        );
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_token_is_one_line_of_visible_ascii() {
        assert_eq!(token_from("s3cret\n").unwrap(), "s3cret");
        assert_eq!(token_from("s3cret\r\n").unwrap(), "s3cret");
        assert_eq!(token_from("s3cret").unwrap(), "s3cret");
        for bad in [
            "",
            "\n",
            "a\nb\n",
            "s3cret\n\n",
            " s3cret",
            "s3 cret",
            "tökén",
        ] {
            assert!(token_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn times_print_in_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(utc(1_709_251_199_999), "2024-02-29 23:59:59");
    }

    #[test]
    fn records_read_as_what_they_changed() {
        let moved = json!({"action": "set_alias", "alias": "production", "from": "1",
            "to": {"split": {"1": 90, "2": 10}}});
        assert_eq!(what(&moved), "production 1 → 1:90,2:10");
        let new = json!({"action": "set_alias", "alias": "canary", "to": "1"});
        assert_eq!(what(&new), "canary (new) → 1");
        assert_eq!(
            what(&json!({"action": "denied", "attempted": "delete_version", "version": "3"})),
            "tried delete_version"
        );
        assert_eq!(
            what(&json!({"action": "put_version", "version": "3"})),
            "version 3"
        );
        assert_eq!(what(&json!({"action": "unload_model"})), "");
    }
}
