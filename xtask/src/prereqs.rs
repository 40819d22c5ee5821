//! What `demo` and `test` need from Debian, installed when missing, as `.ci/run` does: README's
//! two commands then work on a fresh Debian 12 machine by themselves. Without `apt-get` nothing
//! is installed, and a missing piece fails later with what to install.

use std::path::Path;
use std::process::Command;

use crate::{run, sdk};

/// The Debian packages missing for `demo` (which can use `$REDIS_URL` instead of a local
/// redis-server) or `test`.
fn missing(demo: bool) -> Vec<&'static str> {
    let installed = |pkg: &str| Command::new("dpkg").args(["-s", pkg]).output().is_ok_and(|o| o.status.success());
    let have = |tool: &str| sdk::require(tool, "").is_ok();
    let mut wanted: Vec<&'static str> = vec!["libssl-dev", "pkg-config"];
    wanted.retain(|pkg| !installed(pkg));
    let remote_redis = demo && std::env::var_os("REDIS_URL").is_some();
    if !remote_redis && !have("redis-server") {
        wanted.push("redis-server");
    }
    let venv = Command::new("python3").args(["-c", "import ensurepip, venv"]).output().is_ok_and(|o| o.status.success());
    if !venv {
        wanted.push("python3-venv");
    }
    if !have("mvn") {
        wanted.push("maven");
    }
    if Command::new("javac").arg("-version").output().is_err() {
        wanted.push("openjdk-17-jdk-headless");
    }
    if !pottery_semaphore_wasm_build::toolchain_available() {
        wanted.extend(["rustc-web", "rust-web-src", "rust-web-llvm", "lld-22"]);
    }
    wanted
}

pub fn ensure(demo: bool) -> Result<(), String> {
    let wanted = missing(demo);
    if wanted.is_empty() {
        return Ok(());
    }
    if !Path::new("/usr/bin/apt-get").exists() {
        println!("(not installed, and no apt-get to install them with: {})", wanted.join(" "));
        return Ok(());
    }
    println!("installing what this needs from Debian: {}", wanted.join(" "));
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let apt = |args: &[&str]| {
        let mut cmd = if root { Command::new("apt-get") } else { Command::new("sudo") };
        if !root {
            cmd.arg("apt-get");
        }
        run(cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive"))
    };
    apt(&["update", "-q"])?;
    let mut install = vec!["install", "-y", "-q", "--no-install-recommends"];
    install.extend(&wanted);
    apt(&install).map_err(|e| format!("{e}\ninstall {} (or see .ci/run)", wanted.join(" ")))
}
