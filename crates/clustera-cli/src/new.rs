//! `clustera new`: scaffold a kernel crate (or, with `--python`, a Python kernel) that builds
//! and passes its tests.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use clap::Args;

/// Arguments of `clustera new`.
#[derive(Args)]
pub struct NewArgs {
    /// The kernel's name: lowercase letters, digits and dashes, starting with a letter.
    name: String,
    /// Where to create it (default: `./NAME`).
    #[arg(long)]
    path: Option<PathBuf>,
    /// Depend on the `clustera` crate in this directory (local work only: the path is
    /// absolute, so the crate then builds on this machine and not in its Dockerfile).
    #[arg(long, value_name = "DIR", conflicts_with = "clustera_git")]
    clustera_path: Option<PathBuf>,
    /// Depend on `clustera` from this git repository (an unreleased version), at
    /// `--clustera-rev` if given. Default: the crates.io release of this `clustera`'s version.
    #[arg(long, value_name = "URL")]
    clustera_git: Option<String>,
    /// The commit (or tag) of `--clustera-git`.
    #[arg(long, value_name = "REV", requires = "clustera_git")]
    clustera_rev: Option<String>,
    /// A Python kernel instead (`main.py` with `process_message`, run by
    /// `python -m clustera run main.py`; tests with pytest).
    #[arg(long)]
    python: bool,
}

const FILES: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        include_str!("../templates/kernel/Cargo.toml.tmpl"),
    ),
    (
        "src/main.rs",
        include_str!("../templates/kernel/main.rs.tmpl"),
    ),
    (
        ".env.template",
        include_str!("../templates/kernel/env.template.tmpl"),
    ),
    (
        "Dockerfile",
        include_str!("../templates/kernel/Dockerfile.tmpl"),
    ),
    (
        "README.md",
        include_str!("../templates/kernel/README.md.tmpl"),
    ),
    (
        ".gitignore",
        include_str!("../templates/kernel/gitignore.tmpl"),
    ),
];

const PYTHON_FILES: &[(&str, &str)] = &[
    (
        "main.py",
        include_str!("../templates/python-kernel/main.py.tmpl"),
    ),
    (
        "test_main.py",
        include_str!("../templates/python-kernel/test_main.py.tmpl"),
    ),
    (
        ".env.template",
        include_str!("../templates/python-kernel/env.template.tmpl"),
    ),
    (
        "Dockerfile",
        include_str!("../templates/python-kernel/Dockerfile.tmpl"),
    ),
    (
        "README.md",
        include_str!("../templates/python-kernel/README.md.tmpl"),
    ),
    (
        ".gitignore",
        include_str!("../templates/python-kernel/gitignore.tmpl"),
    ),
];

/// Where the `clustera` Python package is built from: this build's source tree if it still
/// exists, else a placeholder the README explains.
fn clustera_py_source() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../clustera-py")
        .canonicalize()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "CLUSTERA_SOURCE/crates/clustera-py".to_owned())
}

fn validate(name: &str) -> anyhow::Result<()> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !ok {
        bail!("{name:?} is not a valid kernel name: use lowercase letters, digits and dashes, starting with a letter");
    }
    Ok(())
}

/// `my-kernel` → `MyKernel`.
fn type_name(name: &str) -> String {
    name.split('-')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// The `clustera` dependency: by version (the default, so the crate builds anywhere, its
/// Dockerfile included), from git, or from a local path.
fn clustera_dependency(args: &NewArgs) -> anyhow::Result<String> {
    Ok(match (&args.clustera_path, &args.clustera_git) {
        (Some(p), _) => {
            let p = p
                .canonicalize()
                .with_context(|| format!("--clustera-path {}", p.display()))?;
            if !p.join("Cargo.toml").is_file() {
                bail!("--clustera-path {}: no Cargo.toml there", p.display());
            }
            format!("{{ path = {:?} }}", p.display().to_string())
        }
        (None, Some(url)) => match &args.clustera_rev {
            Some(rev) => format!("{{ git = {url:?}, rev = {rev:?} }}"),
            None => format!("{{ git = {url:?} }}"),
        },
        (None, None) => format!("\"{}\"", env!("CARGO_PKG_VERSION")),
    })
}

/// The same dependency with clustera's `testing` feature, for the kernel's tests.
fn with_testing(dependency: &str) -> String {
    match dependency.strip_suffix(" }") {
        Some(table) => format!("{table}, features = [\"testing\"] }}"),
        None => format!("{{ version = {dependency}, features = [\"testing\"] }}"),
    }
}

/// Writes the crate; refuses to touch an existing non-empty directory.
pub fn run(args: NewArgs) -> anyhow::Result<()> {
    validate(&args.name)?;
    let dir = args
        .path
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.exists()
        && dir
            .read_dir()
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!("{} already exists and is not empty", dir.display());
    }
    let (files, dependency) = if args.python {
        (PYTHON_FILES, String::new())
    } else {
        (FILES, clustera_dependency(&args)?)
    };
    let dev_dependency = with_testing(&dependency);
    let type_name = type_name(&args.name);
    let py_source = clustera_py_source();
    for (file, template) in files {
        let text = template
            .replace("{{name}}", &args.name)
            .replace("{{type_name}}", &type_name)
            .replace("{{clustera_dependency}}", &dependency)
            .replace("{{clustera_dev_dependency}}", &dev_dependency)
            .replace("{{clustera_py_source}}", &py_source);
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("created kernel {} in {}", args.name, dir.display());
    if args.python {
        println!(
            "next: pip install {py_source} pytest && cd {} && pytest",
            dir.display()
        );
    } else {
        println!("next: cd {} && cargo test", dir.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_typed() {
        assert!(validate("order-enricher2").is_ok());
        for bad in ["", "Order", "1abc", "a_b", "a-", "a b"] {
            assert!(validate(bad).is_err(), "{bad:?}");
        }
        assert_eq!(type_name("order-enricher2"), "OrderEnricher2");
    }

    #[test]
    fn a_python_kernel_is_written_with_every_placeholder_filled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("py-kernel");
        run(NewArgs {
            name: "py-kernel".into(),
            path: Some(path.clone()),
            clustera_path: None,
            clustera_git: None,
            clustera_rev: None,
            python: true,
        })
        .unwrap();
        for (file, _) in PYTHON_FILES {
            let text = std::fs::read_to_string(path.join(file)).unwrap();
            assert!(!text.contains("{{"), "{file} keeps a placeholder");
        }
        let main = std::fs::read_to_string(path.join("main.py")).unwrap();
        assert!(main.contains("KERNEL_NAME = \"py-kernel\""));
        assert!(!path.join("Cargo.toml").exists());
    }

    #[test]
    fn the_tests_get_the_testing_feature() {
        assert_eq!(
            with_testing(r#"{ path = "/src/clustera" }"#),
            r#"{ path = "/src/clustera", features = ["testing"] }"#
        );
        assert_eq!(
            with_testing(r#""0.1.0""#),
            r#"{ version = "0.1.0", features = ["testing"] }"#
        );
        assert_eq!(
            with_testing(r#"{ git = "https://example.org/clustera", rev = "abc" }"#),
            r#"{ git = "https://example.org/clustera", rev = "abc", features = ["testing"] }"#
        );
    }
}
