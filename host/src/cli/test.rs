//! `ferry test FILE.wasm`: what the host will do when the version loads, done locally and reported
//! case by case.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

use super::CacheArgs;
use crate::engine::EngineSettings;
use crate::host_api::graph::{GraphFile, GraphOptions, VersionGraphs};
use crate::runtime::{
    ModelInstance, ModelLimits, ModelMetadata, ModelRuntime, StartMode, Startup, TensorSpec,
    VersionCode,
};
use crate::selftest::{collect_cases, run_cases};
use crate::tensor::datatype_name;

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// The model component (`.wasm`).
    component: PathBuf,
    #[command(flatten)]
    files: super::VersionFiles,
    /// Limits to run under (JSON, the fields of a model's limits); defaults otherwise.
    #[arg(long)]
    limits: Option<PathBuf>,
    #[command(flatten)]
    cache: CacheArgs,
}

fn read(path: &PathBuf, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))
}

pub fn run(args: TestArgs) -> anyhow::Result<i32> {
    let bytes = read(&args.component, "component")?;
    let weights = args
        .files
        .weights
        .as_ref()
        .map(|p| read(p, "weights"))
        .transpose()?;
    let config = match &args.files.config {
        Some(p) => {
            let text = String::from_utf8(read(p, "config")?).context("the config is not UTF-8")?;
            serde_json::from_str::<serde_json::Value>(&text)
                .with_context(|| format!("the config {} is not JSON", p.display()))?;
            text
        }
        None => "{}".to_owned(),
    };
    let tests_file = match &args.files.tests {
        Some(p) => {
            Some(String::from_utf8(read(p, "tests file")?).context("the tests file is not UTF-8")?)
        }
        None => None,
    };
    if let Some(p) = &args.files.profile {
        let profile = crate::drift::profile::Profile::parse(&read(p, "profile")?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
        println!(
            "training profile: {} features, {} outputs, from {} rows",
            profile.features.len(),
            profile.outputs.len(),
            profile.rows
        );
    }
    let limits: ModelLimits = match &args.limits {
        Some(p) => serde_json::from_slice(&read(p, "limits")?)
            .with_context(|| format!("limits in {}", p.display()))?,
        None => ModelLimits::default(),
    };
    let limits = ModelLimits {
        memory_bytes: limits
            .memory_bytes
            .max(weights.as_ref().map_or(0, |w| 4 * w.len() as u64)),
        ..limits
    };

    let graphs = if args.files.graphs.is_empty() {
        None
    } else {
        let mut files = Vec::new();
        for (name, path) in &args.files.graphs {
            let bytes = read(path, &format!("graph `{name}`"))?;
            files.push(GraphFile {
                name: name.clone(),
                sha256: crate::stamps::sha256_hex(&bytes),
                bytes: bytes.into(),
            });
        }
        let options = GraphOptions::from_config(&config)?;
        let started = Instant::now();
        let graphs = VersionGraphs::load(files, &options, limits.graph_threads)?;
        println!(
            "  graphs     {} by {} ({:.1} MB in memory; loaded in {:.1?})",
            args.files
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
            cache_dir: args.cache.dir(),
            total_instances: 8,
            ..Default::default()
        },
        true,
    )?;
    println!("ferry test {}", args.component.display());

    let component_sha = crate::stamps::sha256_hex(&bytes);
    // As the host does: `init` once, then a snapshot of the initialised instance that the self-tests
    // run on (or `init` per instance, when the guest's state cannot be captured).
    let started = Instant::now();
    let weights_sha = weights.as_deref().map(crate::stamps::sha256_hex);
    let label: Arc<str> = Arc::from("ferry-test");
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
                    args.component.display()
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
