//! `cargo xtask report`: runs the benchmarks with `BENCH_JSON` and merges their JSON into
//! target/report/benchmarks.md and target/report/wait-times.png (`bench/report.py`).
//!
//! Each benchmark starts its own throwaway redis-server; nothing else is started here. The
//! caller has installed the release wheel into the venv (`python(true)`); the chart's pinned
//! matplotlib (bench/requirements.txt) is installed here when the venv lacks it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The JSON files this module's benchmarks write into target/report/json. Any other `*.json`
/// there (another SDK's benchmark, e.g. Kotlin's) is left alone and merged too.
const OURS: [&str; 4] = ["rust.json", "python.json", "reference.json", "kotlin.json"];

fn run_step(what: &str, cmd: &mut Command) -> Result<(), String> {
    let cmd = crate::child_env(cmd);
    let shown = format!("{cmd:?}");
    let started = Instant::now();
    eprintln!("report: {what} ...");
    let status = cmd.status().map_err(|e| format!("cannot run {shown}: {e}"))?;
    eprintln!("report: {what}: {:.0} s", started.elapsed().as_secs_f64());
    status.success().then_some(()).ok_or_else(|| format!("{shown} failed ({status})"))
}

/// bench/requirements.txt into the venv, once per change of that file.
fn requirements(workspace: &Path, venv: &Path) -> Result<(), String> {
    let requirements = workspace.join("bench/requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).map_err(|e| format!("{}: {e}", requirements.display()))?;
    let stamp = venv.join(".bench-requirements");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        run_step(
            "pip install -r bench/requirements.txt",
            Command::new(venv.join("bin/pip")).args(["install", "-q", "-r"]).arg(&requirements),
        )?;
        std::fs::write(&stamp, wanted).map_err(|e| format!("{}: {e}", stamp.display()))?;
    }
    Ok(())
}

/// Runs the Rust, Python SDK, reference and Kotlin SDK benchmarks, then the report; returns (and prints) the
/// path of benchmarks.md.
pub fn run(workspace: &Path, venv: &Path) -> Result<PathBuf, String> {
    let started = Instant::now();
    let out = workspace.join("target/report");
    let json = out.join("json");
    std::fs::create_dir_all(&json).map_err(|e| format!("{}: {e}", json.display()))?;
    for name in OURS {
        // A benchmark that fails must not leave an older run's figures to be reported.
        let _ = std::fs::remove_file(json.join(name));
    }
    requirements(workspace, venv)?;
    let python = venv.join("bin/python");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());

    run_step(
        "Rust benchmark (tests/benches/semaphore.rs)",
        Command::new(cargo)
            .args(["bench", "-p", "pottery-semaphore-tests", "--bench", "semaphore"])
            .env("BENCH_JSON", json.join("rust.json"))
            .current_dir(workspace),
    )?;
    run_step(
        "Python SDK benchmark (bindings/python/bench.py)",
        Command::new(&python)
            .arg(workspace.join("bindings/python/bench.py"))
            .env("BENCH_JSON", json.join("python.json"))
            .current_dir(workspace),
    )?;
    run_step(
        "reference benchmark (bench/reference/original.py)",
        Command::new(&python)
            .arg(workspace.join("bench/reference/original.py"))
            .env("BENCH_JSON", json.join("reference.json"))
            .current_dir(workspace),
    )?;
    let kotlin = workspace.join("bindings/kotlin");
    let classpath = kotlin.join("target/bench-classpath.txt");
    run_step(
        "Kotlin SDK build (release library)",
        Command::new("mvn")
            .args(["-q", "-f"])
            .arg(kotlin.join("pom.xml"))
            .args(["-Dcargo.profile=release", "test-compile", "dependency:build-classpath"])
            .arg(format!("-Dmdep.outputFile={}", classpath.display()))
            .current_dir(workspace),
    )?;
    let deps = std::fs::read_to_string(&classpath).map_err(|e| format!("{}: {e}", classpath.display()))?;
    let target = kotlin.join("target");
    let cp = format!("{}:{}:{}", target.join("test-classes").display(), target.join("classes").display(), deps.trim());
    run_step(
        "Kotlin SDK benchmark (bindings/kotlin/.../Bench.kt)",
        Command::new("java")
            .args(["-cp", &cp, "io.pottery.semaphore.BenchKt"])
            .env("BENCH_JSON", json.join("kotlin.json"))
            .current_dir(workspace),
    )?;
    run_step(
        "report (bench/report.py)",
        Command::new(&python)
            .arg(workspace.join("bench/report.py"))
            .arg("--json-dir")
            .arg(&json)
            .arg("--out")
            .arg(&out)
            .current_dir(workspace),
    )?;

    let report = out.join("benchmarks.md");
    if !report.is_file() {
        return Err(format!("bench/report.py wrote no {}", report.display()));
    }
    eprintln!("report: done in {:.0} s", started.elapsed().as_secs_f64());
    println!("{}", report.display());
    Ok(report)
}
