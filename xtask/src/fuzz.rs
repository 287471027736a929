//! `cargo xtask fuzz [TARGET...] [--seconds N]`: builds the cargo-fuzz targets of
//! `fuzz/` (a workspace of its own) with the nightly toolchain and runs each for N
//! seconds from its committed seeds (`fuzz/seeds/TARGET`), printing executions and
//! corpus size per target. Installs the nightly toolchain and cargo-fuzz when missing.
//! A crash fails the command and names the input that caused it; reproduce it with
//! `cargo +nightly fuzz run TARGET ARTIFACT` in `fuzz/` (README.md, "Fuzzing").

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::bootstrap::sh;
use crate::test::cargo;

/// Flags of every build and run (one build serves all targets). No sanitizer: the
/// code is safe Rust, and AddressSanitizer would double the build in CI; debug
/// assertions on, so integer overflow is a crash.
const BUILD_FLAGS: &[&str] = &["--sanitizer", "none", "--debug-assertions"];

/// Per-input limits: an input that runs longer than this or makes the process this
/// large is reported like a crash (a hang or a memory blow-up is a finding too).
const INPUT_TIMEOUT_SECS: u32 = 10;
const RSS_LIMIT_MB: u32 = 2048;

pub struct FuzzOptions {
    pub targets: Vec<String>,
    pub seconds: u32,
}

struct Outcome {
    target: String,
    executions: u64,
    corpus: u64,
    crashed: Option<String>,
}

pub fn run(opts: &FuzzOptions, target_dir: &Path) -> Result<()> {
    let fuzz_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let fuzz_dir = fuzz_dir
        .canonicalize()
        .with_context(|| format!("{} is missing", fuzz_dir.display()))?;
    let out_dir = target_dir.join("fuzz");
    ensure_tools()?;
    let all = list_targets(&fuzz_dir)?;
    let targets = select(&all, &opts.targets)?;
    let t = Instant::now();
    eprintln!(
        "[fuzz] building {} target(s) with nightly (target dir {})",
        all.len(),
        out_dir.display()
    );
    sh(fuzz_cmd(&fuzz_dir)
        .arg("build")
        .args(BUILD_FLAGS)
        .arg("--target-dir")
        .arg(&out_dir))?;
    eprintln!("[fuzz] built in {:.0} s", t.elapsed().as_secs_f64());
    let mut outcomes = Vec::new();
    for (i, target) in targets.iter().enumerate() {
        eprintln!("[fuzz {}/{}] {target}: {} s", i + 1, targets.len(), opts.seconds);
        let o = run_one(&fuzz_dir, &out_dir, target, opts.seconds)?;
        eprintln!(
            "[fuzz {}/{}] {target}: {} executions, corpus {} inputs, {}",
            i + 1,
            targets.len(),
            o.executions,
            o.corpus,
            o.crashed
                .as_deref()
                .map_or("no crash".to_owned(), |a| format!("CRASH: {a}"))
        );
        outcomes.push(o);
    }
    report(&outcomes)
}

fn report(outcomes: &[Outcome]) -> Result<()> {
    println!("{:<20} {:>12} {:>8}  result", "target", "executions", "corpus");
    for o in outcomes {
        let result = o
            .crashed
            .as_deref()
            .map_or("ok".to_owned(), |a| format!("crash, input {a}"));
        println!("{:<20} {:>12} {:>8}  {result}", o.target, o.executions, o.corpus);
    }
    let crashed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.crashed.is_some())
        .map(|o| o.target.as_str())
        .collect();
    if !crashed.is_empty() {
        bail!(
            "fuzz targets crashed: {} (reproduce: cd fuzz && cargo +nightly fuzz run TARGET INPUT)",
            crashed.join(", ")
        );
    }
    Ok(())
}

/// `cargo +nightly fuzz` in `fuzz/`. Through rustup's `cargo` proxy: `+nightly` means
/// nothing to the toolchain's own cargo, which `$CARGO` names under `cargo xtask`.
fn fuzz_cmd(fuzz_dir: &Path) -> Command {
    let proxy = std::env::var_os("HOME")
        .map(|h| Path::new(&h).join(".cargo/bin/cargo"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("cargo"));
    let mut cmd = Command::new(proxy);
    cmd.current_dir(fuzz_dir)
        .args(["+nightly", "fuzz"])
        // The main workspace's CARGO (stable) must not leak into nightly's cargo.
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN");
    cmd
}

fn run_one(fuzz_dir: &Path, out_dir: &Path, target: &str, seconds: u32) -> Result<Outcome> {
    // New inputs go to the corpus under the target dir; the committed seeds stay as they are.
    let corpus = out_dir.join("corpus").join(target);
    let artifacts = out_dir.join("artifacts").join(target);
    std::fs::create_dir_all(&corpus)?;
    std::fs::create_dir_all(&artifacts)?;
    let seeds = fuzz_dir.join("seeds").join(target);
    let mut cmd = fuzz_cmd(fuzz_dir);
    cmd.args(["run", target])
        .args(BUILD_FLAGS)
        .arg("--target-dir")
        .arg(out_dir)
        .arg(&corpus)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECS}"))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-print_final_stats=1")
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped());
    let started = std::time::SystemTime::now();
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start cargo fuzz run {target}"))?;
    let output = child.wait_with_output()?;
    let log = String::from_utf8_lossy(&output.stderr);
    let crashed = (!output.status.success()).then(|| {
        eprintln!("{}", tail(&log, 60));
        newest_file(&artifacts, started).map_or_else(
            || format!("({}, no input saved: see the log above)", output.status),
            |p| p.display().to_string(),
        )
    });
    Ok(Outcome {
        target: target.to_owned(),
        executions: stat(&log, "stat::number_of_executed_units:"),
        corpus: std::fs::read_dir(&corpus).map_or(0, |d| d.count() as u64),
        crashed,
    })
}

fn stat(log: &str, key: &str) -> u64 {
    log.lines()
        .filter_map(|l| l.trim().strip_prefix(key))
        .filter_map(|v| v.trim().parse().ok())
        .next_back()
        .unwrap_or(0)
}

fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The newest file of `dir` written after `since` (artifacts of earlier runs stay).
fn newest_file(dir: &Path, since: std::time::SystemTime) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .filter(|(t, _)| *t >= since)
        .max()
        .map(|(_, p)| p)
}

fn list_targets(fuzz_dir: &Path) -> Result<Vec<String>> {
    let names: Vec<String> = std::fs::read_dir(fuzz_dir.join("fuzz_targets"))?
        .flatten()
        .filter_map(|e| e.path().file_stem()?.to_str().map(str::to_owned))
        .collect();
    let mut names = names;
    names.sort();
    Ok(names)
}

fn select(all: &[String], wanted: &[String]) -> Result<Vec<String>> {
    if wanted.is_empty() {
        return Ok(all.to_vec());
    }
    for w in wanted {
        if !all.contains(w) {
            bail!("no fuzz target `{w}`; available: {}", all.join(", "));
        }
    }
    Ok(wanted.to_vec())
}

/// The nightly toolchain (libFuzzer's instrumentation needs it) and cargo-fuzz.
fn ensure_tools() -> Result<()> {
    if !succeeds(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])) {
        eprintln!("[fuzz] installing the nightly toolchain (rustup, minimal profile)");
        sh(Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))?;
    }
    if !succeeds(cargo().args(["fuzz", "--version"])) {
        eprintln!("[fuzz] installing cargo-fuzz (cargo install --locked, about a minute)");
        sh(cargo().args(["install", "cargo-fuzz", "--locked"]))?;
    }
    Ok(())
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
