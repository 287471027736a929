//! Builds `mesh-ebpf` for `bpfel-unknown-none` and leaves the object in OUT_DIR,
//! from where `src/ebpf.rs` embeds it. Needs the toolchain that `cargo xtask bootstrap`
//! installs (rustup toolchain `bpf-debian` + bpf-linker); see README.md.
fn main() -> aya_build::Result<()> {
    // aya-ebpf needs #![feature(asm_experimental_arch)]: allow it for that crate only.
    // "1" or the package name would make aya-build add -Z build-std (needs rust-src).
    if std::env::var_os("RUSTC_BOOTSTRAP").is_none() {
        // SAFETY: build scripts are single-threaded.
        unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "aya_ebpf") };
    }
    // aya-build relays every stderr line of the inner cargo as `cargo:warning`, so its
    // "Compiling …" progress read as ~40 warnings. Quiet cargo still reports real
    // compiler diagnostics (they come through its JSON messages) and failures.
    // SAFETY: build scripts are single-threaded.
    unsafe { std::env::set_var("CARGO_TERM_QUIET", "true") };
    println!("cargo:rerun-if-env-changed=EBPF_TOOLCHAIN");
    let toolchain = std::env::var("EBPF_TOOLCHAIN").unwrap_or_else(|_| "bpf-debian".into());
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "mesh-ebpf",
            root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../mesh-ebpf"),
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(Box::leak(toolchain.into_boxed_str())),
    )
}
