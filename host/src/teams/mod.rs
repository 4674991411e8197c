//! Who may change which models. A credential names a team — the actor the audit log records — and
//! holds the sha256 of its bearer token, the model-name patterns it acts on (`fraud-*`) and its
//! roles. Credentials come from a tokens file ([`file`], reloaded while serving: [`reload`]) and from
//! `--admin-token` (an admin on every model, named `admin`). Without either, management is open and
//! every caller is `anonymous`.
//!
//! Reading — listings, the fleet, the audit log, models' statistics and configs, `/metrics` — needs
//! a valid credential whatever its scope, except a *scrape-only* one: a credential whose only role
//! is `metrics` (in the tokens file, or `--metrics-token`, named `metrics`) may read `/metrics` and
//! nothing else. A `--metrics-token` alone guards `/metrics` and leaves management open.
//!
//! Nothing here knows HTTP: a front end turns a bearer token into a [`Caller`] with
//! [`Teams::authenticate`] and asks [`Caller::may`] before each change; it decides how a refusal
//! looks (a 401 or a 403).

mod file;
mod pattern;
mod reload;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use pattern::Pattern;
pub use reload::{Reload, Watcher, RELOAD_INTERVAL};

/// The actor name of the `--admin-token` credential.
pub const ADMIN: &str = "admin";
/// The actor name when management needs no token.
pub const ANONYMOUS: &str = "anonymous";
/// The actor name of the `--metrics-token` credential.
pub const METRICS: &str = "metrics";

/// What a credential may do on the models its patterns match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Read `/metrics` (a credential with this role only may read nothing else).
    Metrics,
    /// Read everything a credential may read (listings, statistics, monitoring, the fleet, the
    /// audit log, the console) and change nothing: an operator's or an on-call's view.
    Read,
    /// Upload versions.
    Deploy,
    /// Move aliases and traffic: promote, roll back, split.
    Promote,
    /// Everything, deleting versions and unloading models included.
    Admin,
}

impl Role {
    /// The role as the tokens file spells it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Metrics => "metrics",
            Role::Read => "read",
            Role::Deploy => "deploy",
            Role::Promote => "promote",
            Role::Admin => "admin",
        }
    }

    fn parse(text: &str) -> Option<Role> {
        [
            Role::Metrics,
            Role::Read,
            Role::Deploy,
            Role::Promote,
            Role::Admin,
        ]
        .into_iter()
        .find(|r| r.name() == text)
    }
}

/// A change to a model that needs a role. Reading (listings, the fleet, the audit log) needs only a
/// valid credential, whatever its scope, and is not an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Upload a version.
    PutVersion,
    /// Point an alias at a version or a split.
    SetAlias,
    /// Move an alias back to where it pointed before.
    Rollback,
    /// Change a model's traffic policy (shadowing, the prediction log's share).
    SetTraffic,
    /// Delete a version.
    DeleteVersion,
    /// Load a model again (OIP repository extension).
    LoadModel,
    /// Unload a model (OIP repository extension).
    UnloadModel,
}

impl Action {
    /// Every action, for listings and tests.
    pub const ALL: [Action; 7] = [
        Action::PutVersion,
        Action::SetAlias,
        Action::Rollback,
        Action::SetTraffic,
        Action::DeleteVersion,
        Action::LoadModel,
        Action::UnloadModel,
    ];

    /// The action's name in audit records and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Action::PutVersion => "put_version",
            Action::SetAlias => "set_alias",
            Action::Rollback => "rollback",
            Action::SetTraffic => "set_traffic",
            Action::DeleteVersion => "delete_version",
            Action::LoadModel => "load_model",
            Action::UnloadModel => "unload_model",
        }
    }

    /// What it does, for messages ("may not {verb} model `m`").
    fn verb(self) -> &'static str {
        match self {
            Action::PutVersion => "upload a version of",
            Action::SetAlias => "move an alias of",
            Action::Rollback => "roll back an alias of",
            Action::SetTraffic => "change the traffic of",
            Action::DeleteVersion => "delete a version of",
            Action::LoadModel => "load",
            Action::UnloadModel => "unload",
        }
    }

    /// The roles that grant it, admin last (admin grants every action).
    pub fn granted_by(self) -> &'static [Role] {
        match self {
            Action::PutVersion => &[Role::Deploy, Role::Admin],
            Action::SetAlias | Action::Rollback | Action::SetTraffic => {
                &[Role::Promote, Role::Admin]
            }
            Action::DeleteVersion | Action::LoadModel | Action::UnloadModel => &[Role::Admin],
        }
    }
}

/// The sha256 of a bearer token, as the tokens file holds it (lower-case hex).
pub fn token_sha256(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// One team's credential.
pub struct Credential {
    /// The actor audit records name.
    pub name: String,
    /// The sha256 of each token that authenticates it (more than one during a rotation).
    hashes: Vec<[u8; 32]>,
    /// The models it acts on.
    models: Vec<Pattern>,
    /// What it may do there, ordered.
    roles: Vec<Role>,
}

impl Credential {
    /// The `--admin-token` credential: admin on every model.
    pub fn admin(token: &str) -> Credential {
        Credential {
            name: ADMIN.to_owned(),
            hashes: vec![Sha256::digest(token.as_bytes()).into()],
            models: vec![Pattern::parse("*").expect("a valid pattern")],
            roles: vec![Role::Admin],
        }
    }

    /// The `--metrics-token` credential: reads `/metrics`, nothing else.
    pub fn scraper(token: &str) -> Credential {
        Credential {
            name: METRICS.to_owned(),
            hashes: vec![Sha256::digest(token.as_bytes()).into()],
            models: Vec::new(),
            roles: vec![Role::Metrics],
        }
    }

    /// True when it may read `/metrics` and nothing else.
    pub fn scrape_only(&self) -> bool {
        self.roles.iter().all(|r| *r == Role::Metrics)
    }

    /// The patterns of the models it acts on.
    pub fn models(&self) -> &[Pattern] {
        &self.models
    }

    /// Its roles.
    pub fn roles(&self) -> &[Role] {
        &self.roles
    }

    fn admits(&self, digest: &[u8; 32]) -> bool {
        // Every hash is compared, whichever matches, in constant time in the content.
        self.hashes
            .iter()
            .fold(subtle::Choice::from(0), |found, h| found | h.ct_eq(digest))
            .into()
    }
}

impl std::fmt::Debug for Credential {
    // The hashes stay out of logs: they are not tokens, but they are what guessing would aim at.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("name", &self.name)
            .field("models", &self.models)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

/// Who is calling: a credential, or anonymous when management needs no token. Cheap to clone; it
/// keeps the credential as it was when the request came, whatever a reload does meanwhile.
#[derive(Debug, Clone)]
pub struct Caller(Option<Arc<Credential>>);

impl Caller {
    /// The caller when management needs no token: may do everything.
    pub fn anonymous() -> Caller {
        Caller(None)
    }

    /// The actor name audit records carry.
    pub fn actor(&self) -> &str {
        self.0.as_ref().map_or(ANONYMOUS, |c| &c.name)
    }

    /// True for a scrape-only credential: it may read `/metrics` and nothing else.
    pub fn scrape_only(&self) -> bool {
        self.0.as_ref().is_some_and(|c| c.scrape_only())
    }

    /// Its credential; `None` when management needs no token.
    pub fn credential(&self) -> Option<&Credential> {
        self.0.as_deref()
    }

    /// Whether the caller may read what `what` names (listings, statistics, configs: anything but
    /// `/metrics`); the refusal says why.
    pub fn may_read(&self, what: &str) -> Result<(), String> {
        match &self.0 {
            Some(credential) if credential.scrape_only() => Err(format!(
                "credential `{}` may only read /metrics (its roles are {}), not {what}",
                credential.name,
                credential
                    .roles
                    .iter()
                    .map(|r| r.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            _ => Ok(()),
        }
    }

    /// The actions the caller may take on `model`, without saying why not (no allocation per
    /// refusal: a listing asks this for every model).
    pub fn permits(&self, model: &str) -> impl Iterator<Item = Action> + '_ {
        let allowed = match &self.0 {
            None => true,
            Some(c) => c.models.iter().any(|p| p.matches(model)),
        };
        Action::ALL.into_iter().filter(move |action| {
            allowed
                && self
                    .0
                    .as_ref()
                    .is_none_or(|c| action.granted_by().iter().any(|r| c.roles.contains(r)))
        })
    }

    /// Whether the caller may do `action` on `model`; the refusal says why.
    pub fn may(&self, action: Action, model: &str) -> Result<(), Denied> {
        let Some(credential) = &self.0 else {
            return Ok(());
        };
        let denied = |missing_role| Denied {
            actor: credential.name.clone(),
            action,
            model: model.to_owned(),
            patterns: credential.models.iter().map(|p| p.to_string()).collect(),
            roles: credential.roles.clone(),
            missing_role,
        };
        if !credential.models.iter().any(|p| p.matches(model)) {
            return Err(denied(false));
        }
        if !action
            .granted_by()
            .iter()
            .any(|r| credential.roles.contains(r))
        {
            return Err(denied(true));
        }
        Ok(())
    }
}

/// Why a caller may not do an action on a model (a 403 over HTTP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// The credential's name.
    pub actor: String,
    /// What it tried.
    pub action: Action,
    /// On which model.
    pub model: String,
    /// The patterns of the models it acts on.
    pub patterns: Vec<String>,
    /// Its roles.
    pub roles: Vec<Role>,
    /// True when the model is in its scope and the role is what it lacks.
    pub missing_role: bool,
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Denied {
            actor,
            action,
            model,
            patterns,
            roles,
            ..
        } = self;
        let roles: Vec<&str> = roles.iter().map(|r| r.name()).collect();
        write!(
            f,
            "credential `{actor}` may not {} model `{model}`: ",
            action.verb()
        )?;
        if self.missing_role {
            let needed: Vec<&str> = action.granted_by().iter().map(|r| r.name()).collect();
            write!(
                f,
                "{} needs the {} role, and it has {} (on {})",
                action.name(),
                needed.join(" or "),
                roles.join(", "),
                patterns.join(", ")
            )
        } else {
            write!(
                f,
                "its models are {} (roles {})",
                patterns.join(", "),
                roles.join(", ")
            )
        }
    }
}

impl std::error::Error for Denied {}

/// Why a request carries no usable credential (a 401 over HTTP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unauthenticated {
    /// No bearer token.
    #[error("missing bearer token")]
    Missing,
    /// A token no credential has.
    #[error("wrong bearer token")]
    Unknown,
}

/// Where credentials come from and which are in force: the admin token's, and the tokens file's
/// as last read successfully.
pub struct Teams {
    /// False when management is open (neither an admin token nor a tokens file).
    required: bool,
    /// The `--admin-token` credential.
    admin: Option<Arc<Credential>>,
    /// The `--metrics-token` credential.
    scraper: Option<Arc<Credential>>,
    /// The tokens file, watched for changes.
    file: Option<PathBuf>,
    /// Every credential in force: the admin's first, then the file's.
    current: ArcSwap<Vec<Arc<Credential>>>,
    /// What the watcher last saw of the file, so each change is applied (or refused) once.
    seen: Mutex<reload::Seen>,
    /// False while the file's last change is refused.
    file_valid: AtomicBool,
}

impl Teams {
    /// Management without authentication: every caller is anonymous and may do everything.
    pub fn open() -> Teams {
        Teams {
            required: false,
            admin: None,
            scraper: None,
            file: None,
            current: ArcSwap::from_pointee(Vec::new()),
            seen: Mutex::new(reload::Seen::Nothing),
            file_valid: AtomicBool::new(true),
        }
    }

    /// Credentials from `--admin-token` and a tokens file; open when there is neither. A tokens
    /// file that cannot be read or parsed is an error here: a host must not start with credentials
    /// other than the ones its operator wrote.
    pub fn load(admin_token: Option<&str>, tokens_file: Option<&Path>) -> anyhow::Result<Teams> {
        Teams::load_with(admin_token, None, tokens_file)
    }

    /// Like [`Teams::load`], with the `--metrics-token` (a scrape-only credential named
    /// `metrics`): alone, it guards `/metrics` and leaves management open.
    pub fn load_with(
        admin_token: Option<&str>,
        metrics_token: Option<&str>,
        tokens_file: Option<&Path>,
    ) -> anyhow::Result<Teams> {
        let admin = admin_token
            .filter(|t| !t.is_empty())
            .map(|t| Arc::new(Credential::admin(t)));
        let scraper = metrics_token
            .filter(|t| !t.is_empty())
            .map(|t| Arc::new(Credential::scraper(t)));
        if admin.is_none() && scraper.is_none() && tokens_file.is_none() {
            return Ok(Teams::open());
        }
        if admin.is_some() && admin_token == metrics_token {
            anyhow::bail!("the --metrics-token must not be the --admin-token: each token names one credential");
        }
        let fixed: Vec<&Credential> = admin.iter().chain(scraper.iter()).map(|c| &**c).collect();
        let mut seen = reload::Seen::Nothing;
        let mut from_file = Vec::new();
        if let Some(path) = tokens_file {
            let bytes = std::fs::read(path)
                .with_context(|| format!("reading the tokens file {}", path.display()))?;
            from_file = parse_file(&bytes, &fixed)
                .with_context(|| format!("the tokens file {} is not valid", path.display()))?;
            seen = reload::Seen::Content(Sha256::digest(&bytes).into());
        }
        let teams = Teams {
            required: admin.is_some() || tokens_file.is_some(),
            admin,
            scraper,
            file: tokens_file.map(Path::to_path_buf),
            current: ArcSwap::from_pointee(Vec::new()),
            seen: Mutex::new(seen),
            file_valid: AtomicBool::new(true),
        };
        teams.install(from_file);
        if !teams.required {
            tracing::info!("/metrics needs the metrics token; management needs no credential");
            return Ok(teams);
        }
        tracing::info!(credentials = ?teams.names(), file = ?teams.file, "management needs a credential");
        if teams.current.load().iter().all(|c| c.scrape_only()) {
            tracing::warn!("the tokens file holds no credential and there is no admin token: every management request is refused until one is added");
        }
        Ok(teams)
    }

    /// The credentials from flags (`--admin-token`, `--metrics-token`) that the file's must not
    /// clash with.
    fn fixed(&self) -> Vec<&Credential> {
        self.admin
            .iter()
            .chain(self.scraper.iter())
            .map(|c| &**c)
            .collect()
    }

    /// Puts the file's credentials in force, beside the flags' ones.
    fn install(&self, from_file: Vec<Credential>) {
        let all: Vec<Arc<Credential>> = self
            .admin
            .iter()
            .cloned()
            .chain(self.scraper.iter().cloned())
            .chain(from_file.into_iter().map(Arc::new))
            .collect();
        self.current.store(Arc::new(all));
        self.file_valid.store(true, Ordering::Relaxed);
        self.publish_metrics();
    }

    /// Records that the file's last change was refused.
    fn refused(&self) {
        self.file_valid.store(false, Ordering::Relaxed);
        self.publish_metrics();
    }

    /// Sets the gauges (`ferry_credentials`, and `ferry_tokens_file_valid` with a file) to what is
    /// in force. Credentials are loaded before the metrics recorder exists, so the front end calls
    /// this once it does.
    pub fn publish_metrics(&self) {
        metrics::gauge!("ferry_credentials").set(self.current.load().len() as f64);
        if self.file.is_some() {
            let valid = self.file_valid.load(Ordering::Relaxed);
            metrics::gauge!("ferry_tokens_file_valid").set(if valid { 1.0 } else { 0.0 });
        }
    }

    /// Whether management needs a token.
    pub fn required(&self) -> bool {
        self.required
    }

    /// Whether `/metrics` needs a credential: management does, or there is a `--metrics-token`.
    pub fn guards_metrics(&self) -> bool {
        self.required || self.scraper.is_some()
    }

    /// The tokens file, when there is one.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The names of the credentials in force, admin's first.
    pub fn names(&self) -> Vec<String> {
        self.current.load().iter().map(|c| c.name.clone()).collect()
    }

    /// The caller a bearer token (`None`: the request had none) stands for.
    pub fn authenticate(&self, token: Option<&str>) -> Result<Caller, Unauthenticated> {
        if !self.required {
            return Ok(Caller::anonymous());
        }
        self.find(token)
    }

    /// The credential a bearer token belongs to, whether or not management needs one.
    pub fn find(&self, token: Option<&str>) -> Result<Caller, Unauthenticated> {
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or(Unauthenticated::Missing)?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Every credential is looked at, so the time taken does not say which one matched.
        let mut found = None;
        for credential in self.current.load().iter() {
            if credential.admits(&digest) && found.is_none() {
                found = Some(credential.clone());
            }
        }
        found
            .map(|c| Caller(Some(c)))
            .ok_or(Unauthenticated::Unknown)
    }
}

impl std::fmt::Debug for Teams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Teams")
            .field("required", &self.required)
            .field("file", &self.file)
            .field("credentials", &self.names())
            .finish_non_exhaustive()
    }
}

/// Parses a tokens file's bytes; `fixed` are the credentials from flags.
fn parse_file(bytes: &[u8], fixed: &[&Credential]) -> anyhow::Result<Vec<Credential>> {
    let text = std::str::from_utf8(bytes).map_err(|_| anyhow::anyhow!("it is not UTF-8 text"))?;
    file::parse_beside(text, fixed)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn tokens_file(entries: &[(&str, &str, &[&str], &[&str])]) -> String {
        let mut text = String::new();
        for (name, token, models, roles) in entries {
            let list = |xs: &[&str]| {
                xs.iter()
                    .map(|x| format!("{x:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            text += &format!(
                "[[credential]]\nname = {name:?}\ntoken_sha256 = {:?}\nmodels = [{}]\nroles = [{}]\n\n",
                token_sha256(token),
                list(models),
                list(roles)
            );
        }
        text
    }

    fn teams(text: &str, admin: Option<&str>) -> (tempfile::TempDir, Teams) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        std::fs::write(&path, text).unwrap();
        let teams = Teams::load(admin, Some(&path)).unwrap();
        (dir, teams)
    }

    #[test]
    fn roles_grant_their_actions_on_matching_models_only() {
        let (_dir, teams) = teams(
            &tokens_file(&[
                (
                    "fraud-team",
                    "fraud-token",
                    &["fraud-*"],
                    &["deploy", "promote"],
                ),
                (
                    "pricing-deployer",
                    "pricing-token",
                    &["pricing-*"],
                    &["deploy"],
                ),
                ("platform", "platform-token", &["*"], &["admin"]),
            ]),
            None,
        );
        let fraud = teams.authenticate(Some("fraud-token")).unwrap();
        assert_eq!(fraud.actor(), "fraud-team");
        for action in [
            Action::PutVersion,
            Action::SetAlias,
            Action::Rollback,
            Action::SetTraffic,
        ] {
            assert_eq!(fraud.may(action, "fraud-features"), Ok(()), "{action:?}");
            let denied = fraud.may(action, "pricing-eta").unwrap_err();
            assert!(!denied.missing_role);
            assert_eq!(
                denied.to_string(),
                format!(
                    "credential `fraud-team` may not {} model `pricing-eta`: its models are fraud-* (roles deploy, promote)",
                    action.verb()
                )
            );
        }
        for action in [
            Action::DeleteVersion,
            Action::LoadModel,
            Action::UnloadModel,
        ] {
            let denied = fraud.may(action, "fraud-features").unwrap_err();
            assert!(denied.missing_role, "{action:?}");
            assert!(
                denied
                    .to_string()
                    .contains("needs the admin role, and it has deploy, promote (on fraud-*)"),
                "{denied}"
            );
        }
        let deployer = teams.authenticate(Some("pricing-token")).unwrap();
        assert_eq!(deployer.may(Action::PutVersion, "pricing-eta"), Ok(()));
        let denied = deployer.may(Action::SetAlias, "pricing-eta").unwrap_err();
        assert!(
            denied
                .to_string()
                .contains("set_alias needs the promote or admin role"),
            "{denied}"
        );
        let platform = teams.authenticate(Some("platform-token")).unwrap();
        for action in Action::ALL {
            assert_eq!(
                platform.may(action, "anything"),
                Ok(()),
                "admin may {action:?}"
            );
        }
    }

    #[test]
    fn permits_lists_exactly_what_may_allows() {
        let (_dir, teams) = teams(
            &tokens_file(&[
                (
                    "fraud-team",
                    "fraud-token",
                    &["fraud-*"],
                    &["deploy", "promote"],
                ),
                ("pricing", "pricing-token", &["pricing-*"], &["deploy"]),
                ("platform", "platform-token", &["*"], &["admin"]),
                ("on-call", "read-token", &["*"], &["read"]),
            ]),
            None,
        );
        let mut callers: Vec<Caller> = [
            "fraud-token",
            "pricing-token",
            "platform-token",
            "read-token",
        ]
        .iter()
        .map(|t| teams.authenticate(Some(t)).unwrap())
        .collect();
        callers.push(Caller::anonymous());
        for caller in &callers {
            for model in ["fraud-features", "pricing-eta", "other"] {
                let may: Vec<Action> = Action::ALL
                    .into_iter()
                    .filter(|a| caller.may(*a, model).is_ok())
                    .collect();
                assert_eq!(
                    caller.permits(model).collect::<Vec<_>>(),
                    may,
                    "{} on {model}",
                    caller.actor()
                );
            }
        }
    }

    #[test]
    fn a_read_credential_reads_everything_and_may_change_nothing() {
        let (_dir, teams) = teams(
            &tokens_file(&[("on-call", "read-token", &["*"], &["read"])]),
            None,
        );
        let reader = teams.authenticate(Some("read-token")).unwrap();
        assert!(!reader.scrape_only());
        assert_eq!(reader.may_read("GET /v1/models"), Ok(()));
        for action in Action::ALL {
            let denied = reader.may(action, "fraud-features").unwrap_err();
            assert!(denied.missing_role, "{action:?}");
        }
        assert_eq!(reader.credential().unwrap().roles(), &[Role::Read]);
        assert_eq!(reader.permits("fraud-features").count(), 0);
    }

    #[test]
    fn only_a_known_token_authenticates() {
        let (_dir, teams) = teams(
            &tokens_file(&[("fraud-team", "fraud-token", &["fraud-*"], &["deploy"])]),
            Some("admin-token"),
        );
        assert_eq!(
            teams.authenticate(None).unwrap_err(),
            Unauthenticated::Missing
        );
        assert_eq!(
            teams.authenticate(Some("")).unwrap_err(),
            Unauthenticated::Missing
        );
        for wrong in [
            "fraud-toke",
            "fraud-token ",
            "FRAUD-TOKEN",
            &token_sha256("fraud-token"),
        ] {
            assert_eq!(
                teams.authenticate(Some(wrong)).unwrap_err(),
                Unauthenticated::Unknown,
                "{wrong:?}: the hash itself is no token"
            );
        }
        let admin = teams.authenticate(Some("admin-token")).unwrap();
        assert_eq!(admin.actor(), ADMIN);
        assert_eq!(admin.may(Action::DeleteVersion, "fraud-x"), Ok(()));
        assert_eq!(teams.names(), ["admin", "fraud-team"]);
        assert!(!format!("{teams:?}").contains(&token_sha256("fraud-token")));
    }

    #[test]
    fn without_credentials_management_is_open_and_with_an_empty_file_it_is_closed() {
        let open = Teams::load(None, None).unwrap();
        assert!(!open.required());
        let anyone = open.authenticate(None).unwrap();
        assert_eq!(anyone.actor(), ANONYMOUS);
        assert_eq!(anyone.may(Action::DeleteVersion, "m"), Ok(()));
        let admin_only = Teams::load(Some("t"), None).unwrap();
        assert!(admin_only.required());
        assert_eq!(admin_only.authenticate(Some("t")).unwrap().actor(), ADMIN);
        assert!(admin_only.authenticate(Some("u")).is_err());
        let (_dir, empty) = teams("", None);
        assert!(
            empty.required(),
            "a tokens file turns authentication on, even an empty one"
        );
        assert!(empty.authenticate(None).is_err());
    }

    #[test]
    fn a_scrape_only_credential_reads_metrics_and_nothing_else() {
        let file = format!(
            "{}[[credential]]\nname = \"prometheus\"\ntoken_sha256 = {:?}\nroles = [\"metrics\"]\n",
            tokens_file(&[("fraud-team", "fraud-token", &["fraud-*"], &["deploy"])]),
            token_sha256("scrape-token")
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        std::fs::write(&path, file).unwrap();
        let teams = Teams::load_with(Some("root"), Some("flag-scrape"), Some(&path)).unwrap();
        assert!(teams.required() && teams.guards_metrics());
        assert_eq!(
            teams.names(),
            ["admin", "metrics", "fraud-team", "prometheus"]
        );
        for token in ["scrape-token", "flag-scrape"] {
            let scraper = teams.authenticate(Some(token)).unwrap();
            assert!(scraper.scrape_only(), "{token}");
            let refused = scraper.may_read("/v1/models").unwrap_err();
            assert!(refused.contains("may only read /metrics"), "{refused}");
            for action in Action::ALL {
                assert!(scraper.may(action, "fraud-x").is_err(), "{action:?}");
            }
        }
        let fraud = teams.authenticate(Some("fraud-token")).unwrap();
        assert!(!fraud.scrape_only() && fraud.may_read("/v1/models").is_ok());
        assert!(Caller::anonymous().may_read("/v1/models").is_ok());

        // A --metrics-token alone guards /metrics and leaves management open.
        let alone = Teams::load_with(None, Some("flag-scrape"), None).unwrap();
        assert!(!alone.required() && alone.guards_metrics());
        assert_eq!(alone.authenticate(None).unwrap().actor(), ANONYMOUS);
        assert!(alone.find(Some("flag-scrape")).unwrap().scrape_only());
        assert_eq!(alone.find(None).unwrap_err(), Unauthenticated::Missing);
        assert_eq!(alone.find(Some("x")).unwrap_err(), Unauthenticated::Unknown);
        assert!(!Teams::load_with(None, None, None).unwrap().guards_metrics());
        // One token, one credential.
        assert!(Teams::load_with(Some("same"), Some("same"), None).is_err());
        std::fs::write(
            &path,
            tokens_file(&[("ops", "flag-scrape", &["*"], &["admin"])]),
        )
        .unwrap();
        let err = format!(
            "{:#}",
            Teams::load_with(None, Some("flag-scrape"), Some(&path)).unwrap_err()
        );
        assert!(err.contains("--metrics-token"), "{err}");
    }

    #[test]
    fn a_tokens_file_that_is_missing_or_wrong_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.toml");
        let err = format!("{:#}", Teams::load(None, Some(&missing)).unwrap_err());
        assert!(
            err.contains("reading the tokens file") && err.contains("nope.toml"),
            "{err}"
        );
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "[[credential]]\nname = \"x\"\ntoken = \"s3cret\"\n").unwrap();
        let err = format!("{:#}", Teams::load(None, Some(&bad)).unwrap_err());
        assert!(
            err.contains("is not valid") && err.contains("only hashes"),
            "{err}"
        );
        assert!(
            !err.contains("s3cret"),
            "the message never quotes a token: {err}"
        );
    }
}
