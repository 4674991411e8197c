//! The tokens file: TOML, one `[[credential]]` table per team, holding the sha256 of each bearer
//! token rather than the token, so the file (a Kubernetes Secret, a config repository) never holds
//! anything a reader could present.
//!
//! ```toml
//! [[credential]]
//! name = "fraud-team"          # the actor the audit log records
//! token_sha256 = "9f86d0…"     # `ferry hash-token` prints it; a list during a rotation
//! models = ["fraud-*"]         # patterns: `*` matches any run of characters
//! roles = ["deploy", "promote"] # read | deploy | promote | admin | metrics
//! ```
//!
//! A credential whose only role is `metrics` is scrape-only: it reads `/metrics` and nothing else,
//! and needs no `models`.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context};
use serde::Deserialize;

use super::{Credential, Pattern, Role, ANONYMOUS, METRICS};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    credential: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: Option<String>,
    token_sha256: Option<OneOrMany>,
    /// Known only to refuse it with a clear message: the file holds hashes, never tokens.
    token: Option<toml::Value>,
    models: Option<Vec<String>>,
    roles: Option<Vec<String>>,
}

/// A hash, or several while a token is being rotated (the old and the new both admitted).
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// Parses a 64-digit hex sha256.
pub(super) fn parse_sha256(text: &str) -> anyhow::Result<[u8; 32]> {
    let text = text.trim();
    let bytes = hex::decode(text).ok().filter(|b| b.len() == 32).ok_or_else(|| {
        anyhow!(
            "token_sha256 must be the sha256 of the token, 64 hex digits (`ferry hash-token` prints it), not {} characters of something else",
            text.len()
        )
    })?;
    Ok(bytes.try_into().expect("32 bytes"))
}

/// Checks a credential's name: what audit records and logs show as the actor.
fn check_actor_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if !ok {
        bail!("invalid credential name {name:?}: use 1-128 letters, digits, '-', '_', '.' or '@'");
    }
    if name == ANONYMOUS {
        bail!("credential name `{ANONYMOUS}` is reserved for management without authentication");
    }
    Ok(())
}

/// Parses a tokens file. `admin` is the `--admin-token` credential when there is one: its name and
/// its token must not be taken by the file's credentials, so every actor means one credential.
#[cfg(test)]
pub(super) fn parse(text: &str, admin: Option<&Credential>) -> anyhow::Result<Vec<Credential>> {
    parse_beside(text, &admin.into_iter().collect::<Vec<_>>())
}

/// The flag a credential from flags comes from.
fn flag_of(credential: &Credential) -> &'static str {
    if credential.name == METRICS {
        "--metrics-token"
    } else {
        "--admin-token"
    }
}

/// Parses a tokens file beside the credentials from flags (`--admin-token`, `--metrics-token`):
/// their names and tokens must not be taken by the file's credentials, so every actor means one
/// credential.
pub(super) fn parse_beside(text: &str, fixed: &[&Credential]) -> anyhow::Result<Vec<Credential>> {
    // The message and the line only: toml's rendering quotes the file, and a file that mistakenly
    // holds a token must not put it in a log.
    let file: TokensFile = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| text[..s.start].matches('\n').count() + 1);
        match line {
            Some(line) => anyhow!("line {line}: {}", e.message().trim()),
            None => anyhow!("{}", e.message().trim()),
        }
    })?;
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    let mut hashes: BTreeMap<[u8; 32], String> = BTreeMap::new();
    for flagged in fixed {
        names.insert(flagged.name.clone(), 0);
        for h in &flagged.hashes {
            hashes.insert(*h, format!("the {} ({})", flag_of(flagged), flagged.name));
        }
    }
    let mut credentials = Vec::with_capacity(file.credential.len());
    for (i, entry) in file.credential.into_iter().enumerate() {
        let at = i + 1;
        let label = match &entry.name {
            Some(n) => format!("credential #{at} ({n:?})"),
            None => format!("credential #{at}"),
        };
        let credential = parse_entry(entry).with_context(|| label.clone())?;
        if names.insert(credential.name.clone(), at).is_some() {
            let reason = if let Some(flagged) = fixed.iter().find(|a| a.name == credential.name) {
                format!("`{}` is the {}'s name", flagged.name, flag_of(flagged))
            } else {
                "another credential has that name".to_owned()
            };
            bail!(
                "{label}: {reason}; names must be unique, they are the actors audit records name"
            );
        }
        for h in &credential.hashes {
            if let Some(other) = hashes.insert(*h, credential.name.clone()) {
                bail!("{label}: its token is also {other}'s; each token must name one credential");
            }
        }
        credentials.push(credential);
    }
    Ok(credentials)
}

fn parse_entry(entry: Entry) -> anyhow::Result<Credential> {
    if entry.token.is_some() {
        bail!("has a `token`: the file holds only hashes, as `token_sha256` (`ferry hash-token` prints it)");
    }
    let name = entry
        .name
        .context("has no `name` (the actor audit records name)")?;
    check_actor_name(&name)?;
    let hashes = match entry.token_sha256.context("has no `token_sha256`")? {
        OneOrMany::One(h) => vec![h],
        OneOrMany::Many(hs) => hs,
    };
    if hashes.is_empty() {
        bail!("`token_sha256` is an empty list");
    }
    let hashes = hashes
        .iter()
        .map(|h| parse_sha256(h))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let roles = entry
        .roles
        .context("has no `roles` (read, deploy, promote, admin, metrics)")?;
    if roles.is_empty() {
        bail!("`roles` is empty: give it read, deploy, promote, admin or metrics");
    }
    let mut parsed = Vec::new();
    for r in &roles {
        let role = Role::parse(r).ok_or_else(|| {
            anyhow!("unknown role {r:?}: the roles are read, deploy, promote, admin and metrics")
        })?;
        if !parsed.contains(&role) {
            parsed.push(role);
        }
    }
    parsed.sort();
    // A scrape-only credential acts on no model.
    let scrape_only = parsed.iter().all(|r| *r == Role::Metrics);
    let models = match entry.models {
        None if scrape_only => Vec::new(),
        models => {
            models.context("has no `models` (model-name patterns such as \"fraud-*\", or \"*\")")?
        }
    };
    if models.is_empty() && !scrape_only {
        bail!("`models` is empty: a credential acts on at least one pattern");
    }
    let models = models
        .iter()
        .map(|m| Pattern::parse(m))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Credential {
        name,
        hashes,
        models,
        roles: parsed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH_A: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    const HASH_B: &str = "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752";

    fn err(text: &str) -> String {
        format!("{:#}", parse(text, None).unwrap_err())
    }

    #[test]
    fn a_good_file_parses_into_credentials() {
        let creds = parse(
            &format!(
                r#"
                [[credential]]
                name = "fraud-team"
                token_sha256 = "{HASH_A}"
                models = ["fraud-*", "chargeback"]
                roles = ["promote", "deploy", "deploy"]

                [[credential]]
                name = "platform@example.com"
                token_sha256 = ["{}"]
                models = ["*"]
                roles = ["admin"]
                "#,
                HASH_B.to_uppercase()
            ),
            None,
        )
        .unwrap();
        assert_eq!(creds.len(), 2);
        assert_eq!(creds[0].name, "fraud-team");
        assert_eq!(
            creds[0].roles,
            [Role::Deploy, Role::Promote],
            "deduplicated, ordered"
        );
        assert_eq!(
            creds[0]
                .models
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>(),
            ["fraud-*", "chargeback"]
        );
        assert_eq!(
            hex::encode(creds[1].hashes[0]),
            HASH_B,
            "upper-case hex is read too"
        );
        assert!(
            parse("", None).unwrap().is_empty(),
            "an empty file admits nobody"
        );
    }

    #[test]
    fn mistakes_are_refused_with_the_credential_and_the_reason() {
        let entry = |body: &str| format!("[[credential]]\n{body}\n");
        let full = |name: &str, hash: &str, models: &str, roles: &str| {
            entry(&format!(
                "name = \"{name}\"\ntoken_sha256 = \"{hash}\"\nmodels = {models}\nroles = {roles}"
            ))
        };
        let cases = [
            (entry("name = \"x\"\ntoken = \"s3cret\"\nmodels = [\"*\"]\nroles = [\"admin\"]"), "only hashes"),
            (entry(&format!("token_sha256 = \"{HASH_A}\"\nmodels = [\"*\"]\nroles = [\"admin\"]")), "no `name`"),
            (entry("name = \"x\"\nmodels = [\"*\"]\nroles = [\"admin\"]"), "no `token_sha256`"),
            (full("x", "s3cret", "[\"*\"]", "[\"admin\"]"), "64 hex digits"),
            (full("x", HASH_A, "[]", "[\"admin\"]"), "`models` is empty"),
            (full("x", HASH_A, "[\"fraud/*\"]", "[\"admin\"]"), "model pattern"),
            (full("x", HASH_A, "[\"*\"]", "[\"owner\"]"), "unknown role \"owner\""),
            (full("x", HASH_A, "[\"*\"]", "[]"), "`roles` is empty"),
            (full("a team", HASH_A, "[\"*\"]", "[\"admin\"]"), "invalid credential name"),
            (full("anonymous", HASH_A, "[\"*\"]", "[\"admin\"]"), "reserved"),
            (entry(&format!("name = \"x\"\ntoken_sha256 = \"{HASH_A}\"\nmodels = [\"*\"]\nroles = [\"admin\"]\nrole = \"deploy\"")), "unknown field `role`"),
            (format!("{}{}", full("x", HASH_A, "[\"*\"]", "[\"admin\"]"), full("x", HASH_B, "[\"*\"]", "[\"admin\"]")), "another credential has that name"),
            (format!("{}{}", full("x", HASH_A, "[\"*\"]", "[\"admin\"]"), full("y", HASH_A, "[\"*\"]", "[\"admin\"]")), "also x's"),
            (full("x", &format!("{HASH_A}0"), "[\"*\"]", "[\"admin\"]"), "64 hex digits"),
            (entry(&format!("name = \"x\"\ntoken_sha256 = [\"{HASH_A}\", \"beef\"]\nmodels = [\"*\"]\nroles = [\"admin\"]")), "64 hex digits"),
            (entry("name = \"x\"\ntoken_sha256 = []\nmodels = [\"*\"]\nroles = [\"admin\"]"), "empty list"),
            ("\n\n[[credential]\n".to_owned(), "line 3"),
        ];
        for (text, want) in cases {
            let e = err(&text);
            assert!(e.contains(want), "{text}\n→ {e}");
        }
    }

    #[test]
    fn the_admin_tokens_name_and_token_stay_its_own() {
        let admin = Credential::admin("s3cret");
        let same_name = format!(
            "[[credential]]\nname = \"admin\"\ntoken_sha256 = \"{HASH_A}\"\nmodels = [\"*\"]\nroles = [\"admin\"]\n"
        );
        assert!(
            format!("{:#}", parse(&same_name, Some(&admin)).unwrap_err())
                .contains("--admin-token's name")
        );
        assert!(
            parse(&same_name, None).is_ok(),
            "without --admin-token the name is free"
        );
        let same_token = format!(
            "[[credential]]\nname = \"ops\"\ntoken_sha256 = \"{}\"\nmodels = [\"*\"]\nroles = [\"admin\"]\n",
            super::super::token_sha256("s3cret")
        );
        assert!(
            format!("{:#}", parse(&same_token, Some(&admin)).unwrap_err())
                .contains("--admin-token")
        );
    }
}
