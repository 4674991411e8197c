//! `ferry add`: put a version into a store directly, without a server — for seeding a store (the
//! quick start does this with the sample models) or for a training pipeline that writes straight
//! into a fleet's store (`--store s3://BUCKET/PREFIX`). Running hosts pick the version up at their
//! next sync.

use std::path::PathBuf;

use anyhow::Context;

use crate::registry::{check_name, names, Store, VersionLimits, VersionManifest};
use crate::storage::BlobCache;

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// The model component (`.wasm`).
    component: PathBuf,
    /// The model's name.
    #[arg(long)]
    model: String,
    /// The version's name (default: the next number).
    #[arg(long)]
    version: Option<String>,
    #[command(flatten)]
    files: super::VersionFiles,
    /// Limits for this version (JSON, some of the fields of a model's limits): each host runs it
    /// under its operator's limits for the model, lowered where these ask for less (never raised).
    #[arg(long)]
    limits: Option<PathBuf>,
    /// The store: a directory, or `s3://BUCKET/PREFIX` (AWS environment variables as for `serve`).
    #[arg(long, default_value = "ferry-store", env = "FERRY_STORE")]
    store: String,
    #[command(flatten)]
    cache: super::serve::HostCacheArgs,
}

pub fn run(args: AddArgs) -> anyhow::Result<i32> {
    check_name("model", &args.model)?;
    if let Some(v) = &args.version {
        names::check_version_name(v).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let mut header = [0u8; 4];
    let got = std::fs::File::open(&args.component)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut header))
        .with_context(|| format!("reading {}", args.component.display()));
    got?;
    if &header != b"\0asm" {
        anyhow::bail!(
            "{} is not a WebAssembly component",
            args.component.display()
        );
    }
    if let Some(p) = &args.files.config {
        serde_json::from_slice::<serde_json::Value>(&read(p)?)
            .with_context(|| format!("{} is not JSON", p.display()))?;
    }
    if let Some(p) = &args.files.profile {
        crate::drift::profile::Profile::parse(&read(p)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
    }
    let limits: Option<VersionLimits> = args
        .limits
        .as_ref()
        .map(|p| {
            VersionLimits::parse(&read(p)?)
                .map_err(|e| anyhow::anyhow!("limits in {}: {e}", p.display()))
        })
        .transpose()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let storage = crate::storage::open(&args.store)?;
        let blobs = BlobCache::open(
            storage,
            &args.cache.dir()?,
            crate::config::CacheSection::default().max_bytes,
        )?;
        // Each file is copied into the upload area first, hashed as it goes (a 1 GB file never sits
        // in memory): the store may hard-link what it is given, and the caller's file must stay the
        // caller's.
        let put = |path: PathBuf| {
            let blobs = blobs.clone();
            async move {
                let (staged, file) = blobs.upload_file()?;
                let sha = tokio::task::spawn_blocking(move || copy_hashing(&path, file)).await??;
                blobs.commit_upload(&staged, &sha).await?;
                anyhow::Ok(sha)
            }
        };
        let optional = |p: &Option<PathBuf>| {
            let p = p.clone();
            let put = &put;
            async move {
                match p {
                    Some(p) => put(p).await.map(Some),
                    None => Ok(None),
                }
            }
        };
        let manifest = VersionManifest {
            model: args.model.clone(),
            version: args.version.clone().unwrap_or_default(),
            sequence: 0,
            component_sha256: put(args.component.clone()).await?,
            weights_sha256: optional(&args.files.weights).await?,
            config_sha256: optional(&args.files.config).await?,
            tests_sha256: optional(&args.files.tests).await?,
            profile_sha256: optional(&args.files.profile).await?,
            limits,
            graphs: {
                let mut graphs = std::collections::BTreeMap::new();
                for (name, path) in &args.files.graphs {
                    graphs.insert(name.clone(), put(path.clone()).await?);
                }
                graphs
            },
        };
        let manifest = Store::new(blobs)
            .create_version(&manifest)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        println!("{} version {}", manifest.model, manifest.version);
        println!("  component_sha256 {}", manifest.component_sha256);
        if let Some(w) = &manifest.weights_sha256 {
            println!("  weights_sha256   {w}");
        }
        anyhow::Ok(())
    })?;
    Ok(0)
}

/// Copies `from` into `to` (synced), returning the content's sha256.
fn copy_hashing(from: &std::path::Path, mut to: std::fs::File) -> anyhow::Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::{Read, Write};
    let mut source =
        std::fs::File::open(from).with_context(|| format!("reading {}", from.display()))?;
    let (mut hasher, mut buf) = (Sha256::new(), vec![0u8; 1 << 20]);
    loop {
        let n = source
            .read(&mut buf)
            .with_context(|| format!("reading {}", from.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        to.write_all(&buf[..n]).context("staging the upload")?;
    }
    to.sync_all().context("staging the upload")?;
    Ok(hex::encode(hasher.finalize()))
}
