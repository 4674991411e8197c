//! `ferry new NAME [--lang rust|python|js]`: a model project that builds and passes `ferry test`
//! unchanged — its `ferry.toml`, the model file (a feature transform and a linear model), its weights and
//! self-tests, a training-script stub, a README. The templates live in `templates/` of the repository
//! and are compiled into the binary.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::project::Language;
use crate::registry::check_name;

#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The model's name (also the directory created).
    name: String,
    /// The language of the model.
    #[arg(long, value_enum, default_value_t = Language::Rust)]
    lang: Language,
    /// Where to create the project (default: ./NAME).
    #[arg(long)]
    path: Option<PathBuf>,
}

const RUST: &[(&str, &str)] = &[
    (
        "ferry.toml",
        include_str!("../../../templates/rust/ferry.toml.tmpl"),
    ),
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
        "ferry.toml",
        include_str!("../../../templates/python/ferry.toml.tmpl"),
    ),
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

const JS: &[(&str, &str)] = &[
    (
        "ferry.toml",
        include_str!("../../../templates/js/ferry.toml.tmpl"),
    ),
    (
        "package.json",
        include_str!("../../../templates/js/package.json.tmpl"),
    ),
    ("model.js", include_str!("../../../templates/js/model.js")),
    (
        "features.js",
        include_str!("../../../templates/js/features.js"),
    ),
    (
        "weights.json",
        include_str!("../../../templates/js/weights.json"),
    ),
    (
        "tests.json",
        include_str!("../../../templates/js/tests.json"),
    ),
    (
        "training/train.mjs",
        include_str!("../../../templates/js/training/train.mjs"),
    ),
    ("README.md", include_str!("../../../templates/js/README.md")),
    // `ferry build` writes the SDK into node_modules/ferry-sdk.
    (".gitignore", "/target\n/node_modules\n"),
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
        Language::Rust => RUST,
        Language::Python => PYTHON,
        Language::Js => JS,
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
    // Python and JavaScript projects get the SDK from the `ferry` binary at build time; Rust ones depend
    // on it by path.
    let sdk = match args.lang {
        Language::Rust => sdk_path().canonicalize().with_context(|| {
            format!(
                "the ferry SDK is not at {}; set FERRY_SDK_PATH",
                sdk_path().display()
            )
        })?,
        Language::Python | Language::Js => PathBuf::new(),
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
    println!(
        "  cd {} && ferry dev     (or: ferry build, ferry test, ferry push --alias production)",
        dir.display()
    );
    Ok(0)
}
