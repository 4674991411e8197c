//! The management commands' side of HTTP: the server's address and the caller's token (a team's,
//! or the admin token).

use anyhow::{anyhow, Context};
use serde_json::Value;

/// Where the server is and how to authenticate.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// The Ferry server.
    #[arg(long, env = "FERRY_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Bearer token: the team's (or the admin token) when the server requires one [default:
    /// $FERRY_TOKEN, else $FERRY_ADMIN_TOKEN].
    #[arg(long)]
    pub token: Option<String>,
    /// Send no token at all, not even one from the environment (`ferry dev`'s own host).
    #[arg(skip)]
    pub anonymous: bool,
}

/// Where a token comes from without `--token`, first found first: a team's token, then the admin
/// token's variable that scripts written before teams use. (clap reads one variable per argument.)
const TOKEN_VARIABLES: [&str; 2] = ["FERRY_TOKEN", "FERRY_ADMIN_TOKEN"];

impl ServerArgs {
    /// The token to send: `--token`, else the first of [`TOKEN_VARIABLES`] that is set.
    pub fn token(&self) -> Option<String> {
        if self.anonymous {
            return None;
        }
        self.token.clone().filter(|t| !t.is_empty()).or_else(|| {
            TOKEN_VARIABLES
                .iter()
                .find_map(|v| std::env::var(v).ok().filter(|t| !t.is_empty()))
        })
    }

    /// A request to `path` on the server, authenticated.
    pub fn request(&self, method: &str, path: &str) -> ureq::Request {
        let req = ureq::request(
            method,
            &format!("{}{path}", self.server.trim_end_matches('/')),
        );
        match self.token() {
            Some(t) => req.set("Authorization", &format!("Bearer {t}")),
            None => req,
        }
    }
}

/// Turns a response (or an error answer) into JSON, or an error with the server's message.
pub fn json(result: Result<ureq::Response, ureq::Error>, what: &str) -> anyhow::Result<Value> {
    match result {
        Ok(r) => {
            let text = r.into_string().context("reading the answer")?;
            Ok(if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).context("the answer is not JSON")?
            })
        }
        Err(ureq::Error::Status(code, r)) => {
            let text = r.into_string().unwrap_or_default();
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or(text);
            Err(anyhow!("{what}: HTTP {code}: {message}"))
        }
        Err(e) => Err(anyhow!("{what}: {e}")),
    }
}

/// The model's description, or `None` when the server does not know it.
pub fn describe(server: &ServerArgs, model: &str) -> anyhow::Result<Option<Value>> {
    match server.request("GET", &format!("/v1/models/{model}")).call() {
        Err(ureq::Error::Status(404, _)) => Ok(None),
        other => json(other, "describing the model").map(Some),
    }
}
