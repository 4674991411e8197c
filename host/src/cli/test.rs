//! `ferry test [FILE.wasm]`: what the host will do when the version loads, done locally and reported
//! case by case. Inside a project, with no component named, the project's component (built first when
//! a source is newer) with the files and limits its `ferry.toml` names.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

use super::CacheArgs;
use crate::engine::EngineSettings;
use crate::host_api::graph::{GraphFile, GraphOptions, VersionGraphs};
use crate::registry::VersionLimits;
use crate::runtime::{
    ModelInstance, ModelLimits, ModelMetadata, ModelRuntime, StartMode, Startup, TensorSpec,
    VersionCode,
};
use crate::selftest::{collect_cases, run_cases};
use crate::tensor::datatype_name;

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// The model component (`.wasm`) [default: the project's, built when a source is newer].
    component: Option<PathBuf>,
    #[command(flatten)]
    files: super::VersionFiles,
    /// Limits to run under (JSON, the fields of a model's limits); defaults otherwise.
    #[arg(long)]
    limits: Option<PathBuf>,
    #[command(flatten)]
    cache: CacheArgs,
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))
}

pub fn run(args: TestArgs) -> anyhow::Result<i32> {
    let project = super::project::Project::find(Path::new("."))?;
    let (component, files, project_limits) = match (args.component.clone(), &project) {
        (Some(component), project) => (
            component,
            match project {
                // A component named by hand still takes the project's files where no flag names one.
                Some(p) => p.files_with(&args.files),
                None => args.files.clone(),
            },
            project.as_ref().and_then(|p| p.limits.clone()),
        ),
        (None, Some(p)) => (
            super::build::up_to_date(p, &args.cache)?,
            p.files_with(&args.files),
            p.limits.clone(),
        ),
        (None, None) => anyhow::bail!(
            "name the component to test (`ferry test FILE.wasm`), or run `ferry test` inside a model \
             project (made by `ferry new`)"
        ),
    };
    test(
        &component,
        &files,
        args.limits.as_deref(),
        project_limits,
        &args.cache,
    )
}

/// Tests `component` with `files` under the limits in the `limits_file` (else the defaults lowered to
/// `project_limits`); the exit code is 0 when every case passes.
pub fn test(
    component: &Path,
    files: &super::VersionFiles,
    limits_file: Option<&Path>,
    project_limits: Option<VersionLimits>,
    cache: &CacheArgs,
) -> anyhow::Result<i32> {
    let bytes = read(component, "component")?;
    let weights = files
        .weights
        .as_ref()
        .map(|p| read(p, "weights"))
        .transpose()?;
    let config = match &files.config {
        Some(p) => {
            let text = String::from_utf8(read(p, "config")?).context("the config is not UTF-8")?;
            serde_json::from_str::<serde_json::Value>(&text)
                .with_context(|| format!("the config {} is not JSON", p.display()))?;
            text
        }
        None => "{}".to_owned(),
    };
    let tests_file = match &files.tests {
        Some(p) => {
            Some(String::from_utf8(read(p, "tests file")?).context("the tests file is not UTF-8")?)
        }
        None => None,
    };
    if let Some(p) = &files.profile {
        let profile = crate::drift::profile::Profile::parse(&read(p, "profile")?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
        println!(
            "training profile: {} features, {} outputs, from {} rows",
            profile.features.len(),
            profile.outputs.len(),
            profile.rows
        );
    }
    let limits: ModelLimits = match limits_file {
        Some(p) => serde_json::from_slice(&read(p, "limits")?)
            .with_context(|| format!("limits in {}", p.display()))?,
        // As a host with the default configuration runs the version: its limits, lowered where the
        // project asks for less.
        None => crate::registry::version_limits::clamp(
            &ModelLimits::default(),
            crate::config::HostConfig::default().host.cpu_share,
            project_limits.as_ref(),
        ),
    };
    let limits = ModelLimits {
        memory_bytes: limits
            .memory_bytes
            .max(weights.as_ref().map_or(0, |w| 4 * w.len() as u64)),
        ..limits
    };

    let graphs = if files.graphs.is_empty() {
        None
    } else {
        let mut graph_files = Vec::new();
        for (name, path) in &files.graphs {
            let bytes = read(path, &format!("graph `{name}`"))?;
            graph_files.push(GraphFile {
                name: name.clone(),
                sha256: crate::stamps::sha256_hex(&bytes),
                bytes: bytes.into(),
            });
        }
        let options = GraphOptions::from_config(&config)?;
        let started = Instant::now();
        let graphs = VersionGraphs::load(graph_files, &options, limits.graph_threads)?;
        println!(
            "  graphs     {} by {} ({:.1} MB in memory; loaded in {:.1?})",
            files
                .graphs
                .iter()
                .map(|(n, _)| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", "),
            graphs.backend().name(),
            graphs.memory_bytes() as f64 / 1e6,
            started.elapsed()
        );
        Some(graphs)
    };
    let runtime = ModelRuntime::new(
        EngineSettings {
            cache_dir: cache.dir(),
            total_instances: 8,
            ..Default::default()
        },
        true,
    )?;
    println!("ferry test {}", component.display());

    let component_sha = crate::stamps::sha256_hex(&bytes);
    // As the host does: `init` once, then a snapshot of the initialised instance that the self-tests
    // run on (or `init` per instance, when the guest's state cannot be captured).
    let started = Instant::now();
    let weights_sha = weights.as_deref().map(crate::stamps::sha256_hex);
    let label: Arc<str> = Arc::from("ferry-test");
    let runtime = runtime.for_limits(&limits)?;
    let prepared = runtime
        .prepare(
            &VersionCode {
                component: &bytes,
                component_sha256: &component_sha,
                config: &config,
                weights: weights.as_deref().zip(weights_sha.as_deref()),
                graphs: graphs.as_ref(),
            },
            &limits,
            &label,
        )
        .map_err(|e| {
            let cause = format!("{e:#}");
            match cause.strip_prefix("compiling: ") {
                Some(why) => anyhow::anyhow!(
                    "{} is not a usable Ferry model: {why}",
                    component.display()
                ),
                None => anyhow::anyhow!(
                    "init failed: {}\n  init runs with the version's --config and --weights: check \
                     they are the files the model expects (the model's log, above, has any traceback)",
                    cause.strip_prefix("initialising: ").unwrap_or(&cause)
                ),
            }
        })?;
    let startup = match &prepared.mode {
        StartMode::Snapshot => Startup::Snapshot,
        StartMode::InitPerInstance(_) => Startup::Init {
            config: &config,
            weights: weights.as_deref(),
        },
    };
    let prepare_time = started.elapsed();
    let started = Instant::now();
    let mut instance = ModelInstance::start(
        &prepared.component,
        &limits,
        label,
        startup,
        graphs.as_ref(),
    )
    .map_err(|e| anyhow::anyhow!("init failed: {e}"))?;
    let instance_time = started.elapsed();
    let compiled = runtime.engine().incremental_stats();
    println!(
        "  component  sha256 {component_sha}  ({:.1} MB; compiled, initialised and captured in {:.1?}; \
         {} functions compiled, {} reused)",
        bytes.len() as f64 / 1e6,
        prepare_time,
        compiled.misses,
        compiled.hits
    );
    match &prepared.mode {
        StartMode::Snapshot => println!(
            "  snapshot   {:.1} MB of initialised memory shared by every instance",
            prepared.image_bytes as f64 / 1e6
        ),
        StartMode::InitPerInstance(reason) => {
            println!("  snapshot   none, every instance runs init: {reason}")
        }
    }
    println!("  instance   started in {instance_time:.2?}");
    let metadata = instance
        .metadata()
        .map_err(|e| anyhow::anyhow!("metadata failed: {e}"))?;
    print_metadata(&metadata);

    let suite = instance
        .self_tests()
        .map_err(|e| anyhow::anyhow!("self-tests failed to list: {e}"))?;
    let cases = collect_cases(suite, tests_file.as_deref())?;
    if cases.is_empty() {
        println!(
            "  no self-tests: ship cases in the component (Model::self_tests) or pass --tests FILE"
        );
        println!("0 passed, 0 failed");
        return Ok(1);
    }
    let report = run_cases(&mut instance, &cases);
    let width = report
        .outcomes
        .iter()
        .map(|o| o.name.len())
        .max()
        .unwrap_or(0);
    for o in &report.outcomes {
        let verdict = if o.passed { "PASS" } else { "FAIL" };
        print!(
            "  {verdict}  {:width$}  max|Δ| {:.2e} (tolerance {:.0e}, {})",
            o.name, o.worst_delta, o.tolerance, o.origin
        );
        if o.passed {
            println!();
        } else {
            println!("\n        {}", o.detail);
        }
    }
    println!("  worst |Δ| {:.3e}", report.worst_delta());
    println!("{} passed, {} failed", report.passed(), report.failed());
    if !report.all_passed() {
        println!("{FAILING_SELF_TESTS}");
    }
    Ok(if report.all_passed() { 0 } else { 1 })
}

/// What a failing case usually means, and what to do about it.
const FAILING_SELF_TESTS: &str = "a failing case means the model answers differently from what its \
training script computed: after retraining, run the training script again so the tests file matches the \
weights; otherwise the model's feature transforms or arithmetic differ from the training code's.";

fn spec_list(specs: &[TensorSpec]) -> String {
    specs
        .iter()
        .map(|s| format!("{} {} {:?}", s.name, datatype_name(s.datatype), s.shape))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_metadata(m: &ModelMetadata) {
    println!("  model      {} — {}", m.platform, m.description);
    if !m.inputs.is_empty() {
        println!(
            "  infer      {} → {}",
            spec_list(&m.inputs),
            spec_list(&m.outputs)
        );
    }
    if m.predicts_json {
        println!("  predict    JSON features → JSON");
    }
}
