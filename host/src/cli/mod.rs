//! The `ferry` command line: a thin layer over the library.

mod add;
mod build;
mod client;
mod dev;
mod models;
mod new;
mod project;
mod push;
mod replay;
mod serve;
mod teams;
mod test;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Serve machine-learning models compiled to sandboxed WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve every version in the store over HTTP (Open Inference Protocol v2 and /v1 predict).
    Serve(serve::ServeArgs),
    /// Upload a version to a server (inside a project, the project's, built first when a source is
    /// newer) and wait until it is ready.
    Push(push::PushArgs),
    /// List models, versions, states and aliases on a server.
    Models(models::ModelsArgs),
    /// Point an alias (default: production) at a version, or split it across versions by weight.
    Promote(models::PromoteArgs),
    /// Set a model's shadow version and the share of requests it copies and the prediction log keeps.
    Traffic(models::TrafficArgs),
    /// Move an alias (default: production) back to its previous version.
    Rollback(models::RollbackArgs),
    /// Add a version to a store directory directly (no server needed).
    Add(add::AddArgs),
    /// Create a model project that builds and passes `ferry test` unchanged.
    New(new::NewArgs),
    /// Build a model project into a component and check it against the contract.
    Build(build::BuildArgs),
    /// Serve a project on a local host and reload it on every change: build, self-test, hot-swap.
    Dev(dev::DevArgs),
    /// Run a model's self-tests locally: compile, initialise, check every shipped case (inside a
    /// project, its component with the files ferry.toml names).
    Test(test::TestArgs),
    /// Run logged predictions again on their exact version (or another) and report differences.
    Replay(replay::ReplayArgs),
    /// Print the sha256 of a token read on stdin, as a tokens file holds it.
    HashToken(teams::HashTokenArgs),
    /// Show the server's audit log: who changed which model, when, from what to what.
    Audit(teams::AuditArgs),
}

/// The files that make a version besides its component.
#[derive(Debug, Clone, clap::Args)]
pub struct VersionFiles {
    /// The version's weights blob.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// The version's config (JSON).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The version's tests file (JSON), written by the training script.
    #[arg(long)]
    pub tests: Option<PathBuf>,
    /// The version's training profile (JSON: the training data's distributions, which its live
    /// traffic is compared with), written by the training script.
    #[arg(long)]
    pub profile: Option<PathBuf>,
    /// A named ONNX graph of the version, run by the host and opened by the model through wasi:nn
    /// (`load-by-name`); repeatable.
    #[arg(long = "graph", value_name = "NAME=FILE.onnx", value_parser = parse_graph)]
    pub graphs: Vec<(String, PathBuf)>,
}

/// `NAME=FILE.onnx`.
fn parse_graph(arg: &str) -> Result<(String, PathBuf), String> {
    let (name, file) = arg
        .split_once('=')
        .ok_or_else(|| format!("`{arg}` is not NAME=FILE.onnx (e.g. model=target/model.onnx)"))?;
    crate::registry::check_graph_name(name).map_err(|e| e.to_string())?;
    if file.is_empty() {
        return Err(format!("`{arg}` names no file"));
    }
    Ok((name.to_owned(), PathBuf::from(file)))
}

/// Where the compiled-component cache lives unless `--cache-dir` says otherwise.
#[derive(Debug, Clone, clap::Args)]
pub struct CacheArgs {
    /// Directory for compiled components (default: $FERRY_CACHE_DIR or ~/.cache/ferry).
    #[arg(long, env = "FERRY_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile every time; do not read or write the cache.
    #[arg(long)]
    no_cache: bool,
}

impl CacheArgs {
    fn dir(&self) -> Option<PathBuf> {
        if self.no_cache {
            None
        } else {
            self.cache_dir
                .clone()
                .or_else(crate::engine::default_cache_dir)
        }
    }
}

impl Cli {
    /// Runs the command; the returned code is the process's exit code.
    pub fn run(self) -> anyhow::Result<i32> {
        match self.command {
            Command::Serve(args) => serve::run(args),
            Command::Push(args) => push::run(args),
            Command::Models(args) => models::list(args),
            Command::Promote(args) => models::promote(args),
            Command::Rollback(args) => models::rollback(args),
            Command::Add(args) => add::run(args),
            Command::New(args) => new::run(args),
            Command::Build(args) => build::run(args),
            Command::Dev(args) => dev::run(args),
            Command::Test(args) => test::run(args),
            Command::Replay(args) => replay::run(args),
            Command::Traffic(args) => models::traffic(args),
            Command::HashToken(args) => teams::hash_token(args),
            Command::Audit(args) => teams::audit(args),
        }
    }
}
