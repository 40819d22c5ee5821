//! What `demo` and `test` need from Debian, installed when missing, as `.ci/run` does: README's
//! two commands then work on a fresh Debian 12 machine by themselves. Without `apt-get` nothing
//! is installed, and a missing piece fails later with what to install.

use std::path::Path;
use std::process::Command;

use crate::{run, sdk};

/// The Debian packages missing for `demo` (which can use `$REDIS_URL` instead of a local
/// redis-server) or `test`: those everything needs, and Maven with a JDK, which the demo can do
/// without (it then runs no Kotlin workers).
fn missing(demo: bool) -> (Vec<&'static str>, Vec<&'static str>) {
    let installed = |pkg: &str| Command::new("dpkg").args(["-s", pkg]).output().is_ok_and(|o| o.status.success());
    let have = |tool: &str| sdk::require(tool, "").is_ok();
    let mut needed: Vec<&'static str> = vec!["libssl-dev", "pkg-config"];
    needed.retain(|pkg| !installed(pkg));
    // The tests send signals to processes with kill(1), which minimal images lack.
    if !demo && Command::new("kill").arg("-l").output().is_err() {
        needed.push("procps");
    }
    let remote_redis = demo && std::env::var_os("REDIS_URL").is_some();
    if !remote_redis && !have("redis-server") {
        needed.push("redis-server");
    }
    let venv = Command::new("python3").args(["-c", "import ensurepip, venv"]).output().is_ok_and(|o| o.status.success());
    if !venv {
        needed.push("python3-venv");
    }
    if !pottery_semaphore_wasm_build::toolchain_available() {
        needed.extend(["rustc-web", "rust-web-src", "rust-web-llvm"]);
    }
    let mut jvm = Vec::new();
    if !have("mvn") {
        jvm.push("maven");
    }
    if Command::new("javac").arg("-version").output().is_err() {
        jvm.push("openjdk-17-jdk-headless");
    }
    (needed, jvm)
}

/// Says so when the suites will run against Redis only: libtest captures the note each test
/// prints, so a run without Valkey would otherwise look like one with it.
pub fn note_missing_valkey() {
    if sdk::require("valkey-server", "").is_err() {
        println!("note: valkey-server is not installed: the tests run against redis-server only (.ci/run installs it)");
    }
}

pub fn ensure(demo: bool) -> Result<(), String> {
    let (needed, jvm) = missing(demo);
    if needed.is_empty() && jvm.is_empty() {
        return Ok(());
    }
    if !Path::new("/usr/bin/apt-get").exists() {
        println!("(not installed, and no apt-get to install them with: {} {})", needed.join(" "), jvm.join(" "));
        return Ok(());
    }
    let optional = |result: Result<(), String>| match result {
        Err(e) if demo => {
            println!("({e}: the demo runs without Kotlin workers)");
            Ok(())
        }
        other => other,
    };
    let updated = apt(&["update", "-q"]);
    if needed.is_empty() {
        return optional(updated.and_then(|()| install(&jvm)));
    }
    updated.and_then(|()| install(&needed))?;
    // rust-web-llvm's rust-lld links to the lld of its LLVM (lld-22 today), which no package
    // pulls in: the one it names, once it is there.
    if let Some(lld) = pottery_semaphore_wasm_build::missing_debian_lld() {
        install(&[lld.as_str()])?;
    }
    optional(install(&jvm))
}

fn install(packages: &[&str]) -> Result<(), String> {
    if packages.is_empty() {
        return Ok(());
    }
    println!("installing what this needs from Debian: {}", packages.join(" "));
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(packages);
    apt(&args).map_err(|e| format!("{e}\ninstall {} (or see .ci/run)", packages.join(" ")))
}

/// apt-get as root, through sudo otherwise.
fn apt(args: &[&str]) -> Result<(), String> {
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let mut cmd = if root { Command::new("apt-get") } else { Command::new("sudo") };
    if !root {
        cmd.arg("apt-get");
    }
    run(cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive"))
}
