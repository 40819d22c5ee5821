//! `cargo xtask <command>`; see `usage()`.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

fn usage() -> &'static str {
    "usage: cargo xtask <command>
  component   build the wasm component (says which toolchain it used) and print its path
  demo        build everything and run the demo against $REDIS_URL or a throwaway redis-server
  test        build the component and run every test
  bench       run the benchmark (prints a table) against a throwaway redis-server"
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().map(PathBuf::from).unwrap_or_default()
}

fn cargo(args: &[&str]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo).args(args).current_dir(workspace()).status().map_err(|e| e.to_string())?;
    status.success().then_some(()).ok_or_else(|| format!("cargo {} failed ({status})", args.join(" ")))
}

fn component() -> Result<(), String> {
    let built = pottery_semaphore_wasm_build::build(&workspace())?;
    let size = std::fs::metadata(&built.component).map(|m| m.len()).unwrap_or(0);
    println!("built with {}: {} ({} KiB)", built.toolchain, built.component.display(), size / 1024);
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("component") => component(),
        // The CLI tests run the host's binary, which `cargo test` alone does not build.
        Some("test") => component()
            .and_then(|()| cargo(&["build", "-p", "pottery-semaphore-host", "--bins"]))
            .and_then(|()| cargo(&["test", "--workspace"])),
        Some("demo") => component().and_then(|()| cargo(&["run", "--release", "-p", "pottery-semaphore-tests", "--bin", "demo"])),
        Some("bench") => component().and_then(|()| cargo(&["bench", "-p", "pottery-semaphore-tests", "--bench", "semaphore"])),
        _ => Err(usage().to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
