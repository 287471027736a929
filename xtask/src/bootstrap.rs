//! `cargo xtask bootstrap`: installs what the eBPF build and the test suite need on a
//! fresh Debian machine (root, Rust toolchain only) and does nothing when all is present.
//! The recipe is docs/ebpf-toolchain.md §1; every step checks before it acts.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// Debian packages: the eBPF-capable rustc (Debian's rustc-web ships the bpf target's
/// std), iproute2 for the netns harness, tcpdump for wire checks in tests; for
/// `cargo xtask bench`: iperf3, stunnel4 (TLS tunnel reference), haproxy (L7 reference),
/// iptables (Istio-style capture reference, only inside the bench's own netns), openssl
/// (stunnel's certificate); chromium (headless, for the e2e test that uses Bookinfo's
/// page as a person would) and fonts-dejavu-core (text and the rating stars in its screenshot);
/// prometheus (the demo's and the telemetry e2e's real Prometheus, run as a plain process).
const APT_PACKAGES: &[&str] = &[
    "rustc-web",
    "libstd-rust-web-dev-bpf",
    "iproute2",
    "tcpdump",
    "iperf3",
    "stunnel4",
    "haproxy",
    "iptables",
    "openssl",
    "chromium",
    "fonts-dejavu-core",
    "prometheus",
];
const BPF_LINKER_VERSION: &str = "0.13.0";
/// bpf-linker must be built against the LLVM major version Debian's rustc uses.
const LLVM_MAJOR: &str = "22";
const TOOLCHAIN_NAME: &str = "bpf-debian";
const TOOLCHAIN_DIR: &str = "/opt/rust-bpf-debian";
/// Python packages used by tests (manifest validation against Kubernetes schemas).
const PIP_PACKAGES: &[(&str, &str)] = &[("kubernetes_validate", "kubernetes-validate==1.37.0")];

struct Step {
    name: &'static str,
    by_hand: &'static str,
    run: fn() -> Result<String>,
}

const STEPS: &[Step] = &[
    Step {
        name: "Debian packages",
        by_hand: "apt-get update && apt-get install -y rustc-web libstd-rust-web-dev-bpf iproute2 tcpdump iperf3 stunnel4 haproxy iptables openssl chromium fonts-dejavu-core prometheus",
        run: apt_packages,
    },
    Step {
        name: "rustup toolchain `bpf-debian`",
        by_hand: "see docs/ebpf-toolchain.md §1 (rustup toolchain link)",
        run: link_toolchain,
    },
    Step {
        name: "bpf-linker",
        by_hand: "LLVM_PREFIX=/opt/rust-bpf-debian cargo +stable install --locked bpf-linker@0.13.0 --no-default-features --features llvm-22",
        run: bpf_linker,
    },
    Step {
        name: "Python test tools",
        by_hand: "python3 -m pip install kubernetes-validate",
        run: pip_packages,
    },
];

pub fn run() -> Result<()> {
    let started = Instant::now();
    for (i, step) in STEPS.iter().enumerate() {
        let t = Instant::now();
        eprintln!("[bootstrap {}/{}] {} ...", i + 1, STEPS.len(), step.name);
        let outcome = (step.run)().with_context(|| {
            format!(
                "bootstrap step \"{}\" failed; to do it by hand: {}",
                step.name, step.by_hand
            )
        })?;
        eprintln!(
            "[bootstrap {}/{}] {}: {} ({:.1} s)",
            i + 1,
            STEPS.len(),
            step.name,
            outcome,
            t.elapsed().as_secs_f64()
        );
    }
    eprintln!("[bootstrap] done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn apt_packages() -> Result<String> {
    let missing: Vec<&str> = APT_PACKAGES.iter().copied().filter(|p| !dpkg_installed(p)).collect();
    if missing.is_empty() {
        return Ok("already installed".into());
    }
    eprintln!(
        "  installing {} (apt-get; a few hundred MB on a fresh machine, chromium included)",
        missing.join(" ")
    );
    sh(Command::new("apt-get").args(["update", "-qq"]))?;
    sh(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    Ok(format!("installed {}", missing.join(" ")))
}

fn dpkg_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn debian_libllvm() -> Result<String> {
    let out = capture(Command::new("ldd").arg("/usr/bin/rustc"))?;
    let lib = out
        .lines()
        .find_map(|l| l.split_whitespace().nth(2).filter(|p| p.contains("libLLVM")))
        .context("Debian's /usr/bin/rustc does not link libLLVM; is rustc-web installed?")?
        .to_owned();
    if !lib.contains(&format!("libLLVM.so.{LLVM_MAJOR}")) {
        bail!(
            "Debian rustc now uses {lib}, not LLVM {LLVM_MAJOR}: bump LLVM_MAJOR and bpf-linker's --features llvm-NN in xtask/src/bootstrap.rs"
        );
    }
    Ok(lib)
}

fn link_toolchain() -> Result<String> {
    let libllvm = debian_libllvm()?;
    let stable_cargo = capture(Command::new("rustup").args(["which", "--toolchain", "stable", "cargo"]))?;
    let dir = Path::new(TOOLCHAIN_DIR);
    let links = [
        (dir.join("bin/rustc"), "/usr/bin/rustc".to_owned()),
        (dir.join("bin/cargo"), stable_cargo.trim().to_owned()),
        // Only for bpf-linker's build script (-lLLVM).
        (dir.join("lib/libLLVM.so"), libllvm),
    ];
    let listed = capture(Command::new("rustup").args(["toolchain", "list"]))?;
    let linked = listed
        .lines()
        .any(|l| l.split_whitespace().next() == Some(TOOLCHAIN_NAME));
    let current = links
        .iter()
        .all(|(l, t)| std::fs::read_link(l).is_ok_and(|p| p == Path::new(t)));
    if linked && current {
        return Ok("already linked".into());
    }
    std::fs::create_dir_all(dir.join("bin"))?;
    std::fs::create_dir_all(dir.join("lib"))?; // rustup refuses a toolchain without lib/
    for (link, target) in &links {
        let _ = std::fs::remove_file(link);
        std::os::unix::fs::symlink(target, link).with_context(|| format!("symlink {}", link.display()))?;
    }
    sh(Command::new("rustup").args(["toolchain", "link", TOOLCHAIN_NAME, TOOLCHAIN_DIR]))?;
    Ok(format!("linked {TOOLCHAIN_NAME} -> {TOOLCHAIN_DIR}"))
}

fn bpf_linker() -> Result<String> {
    let want = format!("bpf-linker {BPF_LINKER_VERSION}");
    let have = Command::new("bpf-linker").arg("--version").output();
    if have.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == want) {
        return Ok(format!("{want} present"));
    }
    eprintln!("  building {want} against Debian's LLVM {LLVM_MAJOR} (about 1-2 minutes)");
    sh(Command::new("cargo")
        .args([
            "+stable",
            "install",
            "--locked",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
        ])
        .args(["--no-default-features", "--features", &format!("llvm-{LLVM_MAJOR}")])
        .env("LLVM_PREFIX", TOOLCHAIN_DIR))?;
    Ok(format!("installed {want}"))
}

fn pip_packages() -> Result<String> {
    let missing: Vec<&str> = PIP_PACKAGES
        .iter()
        .filter(|(module, _)| {
            !Command::new("python3")
                .args(["-c", &format!("import {module}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(|(_, spec)| *spec)
        .collect();
    if missing.is_empty() {
        return Ok("already installed".into());
    }
    sh(Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
        .args(&missing))?;
    Ok(format!("installed {}", missing.join(" ")))
}

/// Runs a command with inherited output; fails with the command line and exit status.
pub fn sh(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn capture(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
