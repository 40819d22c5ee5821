//! Builds `core/` as a wasm32 component. Shared by `cargo xtask component` and the host's
//! `build.rs`, so a plain `cargo build` of the host needs no manual step.
//!
//! Two toolchains are accepted, tried in this order:
//! 1. rustup's `wasm32-unknown-unknown` target (`rustup target add wasm32-unknown-unknown`);
//! 2. Debian's `rustc-web` + `rust-web-src` (`/usr/bin/rustc`), building `std` with `-Zbuild-std`.
//!
//! Both link with `wasm-component-ld` from the compiler's own sysroot, which turns the module into
//! a component using the WIT that wit-bindgen embedded.

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-unknown-unknown";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_LLD: &str = "/usr/bin/rust-lld";
const COMPONENT_MAGIC: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toolchain {
    RustupTarget,
    DebianRustcWeb,
}

impl std::fmt::Display for Toolchain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Toolchain::RustupTarget => "rustup's wasm32-unknown-unknown target",
            Toolchain::DebianRustcWeb => "Debian's rustc-web with -Zbuild-std",
        })
    }
}

#[derive(Debug)]
pub struct Built {
    pub component: PathBuf,
    pub toolchain: Toolchain,
}

/// Environment a parent cargo (e.g. when called from a build script) sets that must not leak
/// into the nested wasm build.
const INHERITED: &[&str] = &[
    "RUSTC", "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER", "RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_TARGET_DIR", "CARGO_BUILD_TARGET", "CARGO_BUILD_RUSTFLAGS", "RUSTDOCFLAGS", "TARGET", "HOST",
    "OUT_DIR", "PROFILE", "OPT_LEVEL", "DEBUG", "CARGO_PRIMARY_PACKAGE", "RUSTC_BOOTSTRAP",
];

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn host_triple(rustc: &str) -> Option<String> {
    let verbose = output(Command::new(rustc).arg("-vV"))?;
    verbose.lines().find_map(|l| l.strip_prefix("host: ").map(str::to_string))
}

/// `wasm-component-ld` shipped in the sysroot of `rustc`.
fn component_linker(rustc: &str) -> Option<PathBuf> {
    let sysroot = output(Command::new(rustc).args(["--print", "sysroot"]))?;
    let linker = Path::new(&sysroot).join("lib/rustlib").join(host_triple(rustc)?).join("bin/wasm-component-ld");
    linker.exists().then_some(linker)
}

fn detect() -> Result<(Toolchain, String, PathBuf), String> {
    let rustc = std::env::var("POTTERY_WASM_RUSTC").unwrap_or_else(|_| "rustc".to_string());
    if let Some(libdir) = output(Command::new(&rustc).args(["--print", "target-libdir", "--target", TARGET])) {
        let has_std = std::fs::read_dir(&libdir)
            .map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with("libstd-")))
            .unwrap_or(false);
        if let (true, Some(linker)) = (has_std, component_linker(&rustc)) {
            return Ok((Toolchain::RustupTarget, rustc, linker));
        }
    }
    if Path::new(DEBIAN_RUSTC).exists() {
        let sysroot = output(Command::new(DEBIAN_RUSTC).args(["--print", "sysroot"])).unwrap_or_default();
        let has_src = Path::new(&sysroot).join("lib/rustlib/src/rust/library/std").exists();
        // rust-web-llvm's `rust-lld` links to the lld of its LLVM, which it does not depend on:
        // without that it dangles (and `exists` is false), and the link would fail with no word
        // of what to install.
        let has_lld = Path::new(DEBIAN_LLD).exists();
        if let (true, true, Some(linker)) = (has_src, has_lld, component_linker(DEBIAN_RUSTC)) {
            return Ok((Toolchain::DebianRustcWeb, DEBIAN_RUSTC.to_string(), linker));
        }
    }
    let lld = missing_debian_lld().unwrap_or_else(|| "the lld its rust-lld links to".into());
    Err(format!(
        "no wasm32 toolchain found. Either run `rustup target add {TARGET}`, or on Debian 12 install \
         rustc-web, rust-web-src and rust-web-llvm, then {lld} (apt-get install -y rustc-web \
         rust-web-src rust-web-llvm, then apt-get install -y {lld})"
    ))
}

/// The package that Debian's `rust-lld` links to (`lld-22` for rust-web-llvm built on LLVM 22),
/// when the link is there but dangles: its lld is not installed.
pub fn missing_debian_lld() -> Option<String> {
    let target = std::fs::read_link(DEBIAN_LLD).ok()?;
    if Path::new(DEBIAN_LLD).exists() {
        return None;
    }
    target.file_name().map(|name| name.to_string_lossy().into_owned())
}

/// Whether a wasm32 toolchain this build can use is installed.
pub fn toolchain_available() -> bool {
    detect().is_ok()
}

/// Builds the component (release profile) under `<workspace>/target/wasm` and returns its path.
pub fn build(workspace: &Path) -> Result<Built, String> {
    let (toolchain, rustc, linker) = detect()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let target_dir = workspace.join("target/wasm");
    let mut cmd = Command::new(cargo);
    for var in INHERITED {
        cmd.env_remove(var);
    }
    cmd.current_dir(workspace)
        .args(["build", "--release", "-p", "pottery-semaphore-core", "--lib", "--target", TARGET])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("RUSTC", &rustc)
        .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER", &linker)
        // Self-contained: no unwinding tables, one codegen unit, a 64 KiB stack. Optimised for
        // speed, not size: at `s` the allocator's small helpers stayed calls, and the guest ran
        // ~10k more instructions per call (callgrind); with LTO the module is no bigger.
        .env("CARGO_PROFILE_RELEASE_PANIC", "abort")
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "3")
        .env("CARGO_PROFILE_RELEASE_LTO", "true")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS", "-Clink-arg=-zstack-size=65536");
    if toolchain == Toolchain::DebianRustcWeb {
        cmd.env("RUSTC_BOOTSTRAP", "1").arg("-Zbuild-std=std,panic_abort");
    }
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("the wasm32 build with {toolchain} failed ({status})"));
    }
    let component = target_dir.join(TARGET).join("release/pottery_semaphore_core.wasm");
    let bytes = std::fs::read(&component).map_err(|e| format!("{}: {e}", component.display()))?;
    if !bytes.starts_with(&COMPONENT_MAGIC) {
        return Err(format!("{} is not a component (the linker was not wasm-component-ld)", component.display()));
    }
    Ok(Built { component, toolchain })
}
