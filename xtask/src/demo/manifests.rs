//! `cargo xtask demo apply|delete [-n NS] [-f] FILE…`: kubectl's `apply -f` and
//! `delete -f` for the running demo's watched directory. Objects without
//! `metadata.namespace` go to `-n`, by default the app's namespace (`bookinfo`), so
//! Istio's samples work unchanged; each object is printed as kubectl prints it.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use xtask::mesh::objects::{self, Change, Namespace, Outcome};

#[derive(Args, Clone, Debug)]
pub struct ManifestArgs {
    /// Namespace for objects that name none (default: the app's namespace, `bookinfo`).
    /// Like kubectl, an object that names a different namespace is then refused.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// File to read; repeatable; `-` reads standard input.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub filenames: Vec<PathBuf>,
    /// Files to read, as with `-f`.
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

impl ManifestArgs {
    fn namespace(&self) -> Namespace {
        match &self.namespace {
            Some(n) => Namespace::Explicit(n.clone()),
            None => Namespace::Default(xtask::bookinfo::NAMESPACE.into()),
        }
    }

    fn inputs(&self) -> Result<Vec<(String, String)>> {
        let paths: Vec<&PathBuf> = self.filenames.iter().chain(&self.files).collect();
        if paths.is_empty() {
            bail!("no file given: `cargo xtask demo apply -f FILE` (or `-f -` for standard input)");
        }
        paths.into_iter().map(|p| read_input(p)).collect()
    }
}

fn read_input(path: &Path) -> Result<(String, String)> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read standard input")?;
        return Ok(("<stdin>".into(), text));
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok((path.display().to_string(), text))
}

/// `demo apply`: every input is checked before the first is written.
pub fn apply(dir: &Path, args: &ManifestArgs) -> Result<()> {
    run(dir, args, objects::apply)
}

/// `demo delete`: fails (after deleting the rest) when an object was not there.
pub fn delete(dir: &Path, args: &ManifestArgs) -> Result<()> {
    run(dir, args, objects::delete)
}

type Op = fn(&Path, &str, &str, &Namespace) -> Result<Vec<Change>, objects::ApplyError>;

fn run(dir: &Path, args: &ManifestArgs, op: Op) -> Result<()> {
    let ns = args.namespace();
    let inputs = args.inputs()?;
    // A bad object in a later file refuses the whole command before anything changes.
    for (name, text) in &inputs {
        objects::check(name, text, &ns)?;
    }
    let mut missing = 0;
    for (name, text) in &inputs {
        for change in op(dir, name, text, &ns)? {
            if change.outcome == Outcome::NotFound {
                missing += 1;
                eprintln!("Error: {change}");
            } else {
                println!("{change}");
            }
        }
    }
    if missing > 0 {
        bail!("{missing} object(s) not found");
    }
    Ok(())
}
