//! `ferry new NAME [--lang rust|python]`: a model project that builds and passes `ferry test` unchanged — the model file (a
//! feature transform and a linear model), its weights and self-tests, a training-script stub, a README.
//! The templates live in `templates/` of the repository and are compiled into the binary.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::registry::check_name;

#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The model's name (also the directory created).
    name: String,
    /// The language of the model.
    #[arg(long, value_enum, default_value_t = Lang::Rust)]
    lang: Lang,
    /// Where to create the project (default: ./NAME).
    #[arg(long)]
    path: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Lang {
    Rust,
    Python,
}

const RUST: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        include_str!("../../../templates/rust/Cargo.toml.tmpl"),
    ),
    (
        "src/lib.rs",
        include_str!("../../../templates/rust/src/lib.rs"),
    ),
    (
        "weights.json",
        include_str!("../../../templates/rust/weights.json"),
    ),
    (
        "tests.json",
        include_str!("../../../templates/rust/tests.json"),
    ),
    (
        "training/train.py",
        include_str!("../../../templates/rust/training/train.py"),
    ),
    (
        "README.md",
        include_str!("../../../templates/rust/README.md"),
    ),
    (".gitignore", "/target\n"),
];

const PYTHON: &[(&str, &str)] = &[
    (
        "pyproject.toml",
        include_str!("../../../templates/python/pyproject.toml.tmpl"),
    ),
    (
        "model.py",
        include_str!("../../../templates/python/model.py"),
    ),
    (
        "features.py",
        include_str!("../../../templates/python/features.py"),
    ),
    (
        "weights.json",
        include_str!("../../../templates/python/weights.json"),
    ),
    (
        "tests.json",
        include_str!("../../../templates/python/tests.json"),
    ),
    (
        "training/train.py",
        include_str!("../../../templates/python/training/train.py"),
    ),
    (
        "README.md",
        include_str!("../../../templates/python/README.md"),
    ),
    (".gitignore", "/target\n__pycache__/\n"),
];

/// The SDK this binary was built with; the project depends on it by path (it is not on crates.io yet).
fn sdk_path() -> PathBuf {
    let from_env = std::env::var_os("FERRY_SDK_PATH").map(PathBuf::from);
    from_env.unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk"))
}

pub fn run(args: NewArgs) -> anyhow::Result<i32> {
    check_name("model", &args.name)?;
    if args.name.contains('.') {
        bail!("a project name cannot contain '.': it is also the crate's name");
    }
    let files = match args.lang {
        Lang::Rust => RUST,
        Lang::Python => PYTHON,
    };
    let dir = args.path.unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.exists()
        && dir
            .read_dir()
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!("{} exists and is not empty", dir.display());
    }
    // Python projects get the SDK from the `ferry` binary at build time; Rust ones depend on it by path.
    let sdk = match args.lang {
        Lang::Rust => sdk_path().canonicalize().with_context(|| {
            format!(
                "the ferry SDK is not at {}; set FERRY_SDK_PATH",
                sdk_path().display()
            )
        })?,
        Lang::Python => PathBuf::new(),
    };
    for (path, template) in files {
        let text = template
            .replace("{{name}}", &args.name)
            .replace("{{sdk_path}}", &sdk.to_string_lossy());
        let target = dir.join(path);
        std::fs::create_dir_all(target.parent().expect("template paths have a parent"))?;
        std::fs::write(&target, text).with_context(|| format!("writing {}", target.display()))?;
    }
    println!("created {} ({:?}); next:", dir.display(), args.lang);
    println!("  cd {} && ferry build && ferry test target/ferry/{}.wasm --weights weights.json --tests tests.json", dir.display(), args.name);
    Ok(0)
}
