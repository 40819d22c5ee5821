//! `cargo xtask <command>`; see `usage()`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

mod prereqs;
mod report;
mod sdk;
mod swift;

fn usage() -> &'static str {
    "usage: cargo xtask <command>
  component   build the wasm component (says which toolchain it used) and print its path
  python      build the Python wheel and install it into target/py/venv (made if missing)
  swift       generate the Swift package and check its layout and that every file parses
  demo        build everything and run the demo against $REDIS_URL or a throwaway redis-server
  test        build everything and run every test: Rust, Python, Swift check, Kotlin, the demo
  bench       run the benchmarks (Rust and Python) against throwaway redis-servers
  report      run every benchmark and write target/report/benchmarks.md and wait-times.png
  kotlin      build the Kotlin/JVM SDK with Maven and run its JUnit suite
  sdk         build every package into dist/: component + WIT, native library, wheel, jar, Swift"
}

/// The workspace this xtask was run from: `cargo run` names xtask's own directory at run time.
/// The path baked in at compile time is only the fallback: a copy of the workspace whose
/// target/ came along (`cp -a`) may run a binary built for the original, and must not act on it.
fn workspace() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest.parent().map(PathBuf::from).unwrap_or_default()
}

/// Where cargo puts this workspace's builds, as cargo itself resolves it (`CARGO_TARGET_DIR`,
/// `build.target-dir` in any config file, or `target/`): a guess that missed a configured one
/// would package or test an old build left in `target/`.
fn target_dir(workspace: &Path) -> PathBuf {
    static RESOLVED: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    let resolved = RESOLVED.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .args(["metadata", "--no-deps", "--format-version", "1", "--offline"])
            .current_dir(workspace)
            .stderr(std::process::Stdio::inherit())
            .output()
            .ok()
            .filter(|out| out.status.success())?;
        json_string_field(&String::from_utf8_lossy(&out.stdout), "target_directory").map(PathBuf::from)
    });
    resolved.clone().unwrap_or_else(|| std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace.join("target"), |dir| workspace.join(dir)))
}

/// The string value of the first `"field":` in `json` (cargo metadata's output), unescaped.
fn json_string_field(json: &str, field: &str) -> Option<String> {
    let rest = &json[json.find(&format!("\"{field}\":\""))? + field.len() + 4..];
    let mut value = String::new();
    let mut chars = rest.chars();
    loop {
        match chars.next()? {
            '"' => return Some(value),
            '\\' => match chars.next()? {
                'u' => value.push(char::from_u32(u32::from_str_radix(&chars.by_ref().take(4).collect::<String>(), 16).ok()?)?),
                'n' => value.push('\n'),
                't' => value.push('\t'),
                escaped => value.push(escaped),
            },
            c => value.push(c),
        }
    }
}

/// What every command xtask runs sees: the compiled component cached in the target directory,
/// not in the user's ~/.cache, where nothing would ever prune it (unless told otherwise); the
/// target directory cargo resolved, for the Python tests that look for the worker there; and no
/// `POTTERY_SEMAPHORE_COMPONENT`, which would make every binary embed that file instead of the
/// component xtask builds and reports (and so test or ship other code than the workspace's).
fn child_env(cmd: &mut Command) -> &mut Command {
    let target = target_dir(&workspace());
    if std::env::var_os("POTTERY_SEMAPHORE_CACHE_DIR").is_none() {
        cmd.env("POTTERY_SEMAPHORE_CACHE_DIR", target.join("component-cache"));
    }
    cmd.env("CARGO_TARGET_DIR", target).env_remove("POTTERY_SEMAPHORE_COMPONENT")
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let cmd = child_env(cmd);
    let shown = format!("{cmd:?}");
    let status = cmd.status().map_err(|e| format!("cannot run {shown}: {e}"))?;
    status.success().then_some(()).ok_or_else(|| format!("{shown} failed ({status})"))
}

/// `cargo <args> --locked`: a Cargo.lock out of date fails the run rather than being resolved
/// anew on each machine.
fn cargo(args: &[&str]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let (before, after) = args.iter().position(|a| *a == "--").map_or((args, &[][..]), |i| args.split_at(i));
    run(Command::new(cargo).args(before).arg("--locked").args(after).current_dir(workspace()))
}

fn component() -> Result<(), String> {
    let built = pottery_semaphore_wasm_build::build(&workspace())?;
    let size = std::fs::metadata(&built.component).map(|m| m.len()).unwrap_or(0);
    println!("built with {}: {} ({} KiB)", built.toolchain, built.component.display(), size / 1024);
    Ok(())
}

/// target/py/venv with the pinned build and test dependencies.
fn venv() -> Result<PathBuf, String> {
    let root = workspace();
    let venv = root.join("target/py/venv");
    let requirements = root.join("bindings/python/requirements-dev.txt");
    let stamp = venv.join(".requirements");
    let wanted = std::fs::read_to_string(&requirements).map_err(|e| format!("{}: {e}", requirements.display()))?;
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        run(Command::new(&python).args(["-m", "venv"]).arg(&venv))
            .map_err(|e| format!("{e}\n(the tests need Python 3.10+ with the venv module: apt-get install python3-venv)"))?;
        run(Command::new(venv.join("bin/python")).args(["-m", "pip", "install", "-q", "-r"]).arg(&requirements))?;
        std::fs::write(&stamp, wanted).map_err(|e| e.to_string())?;
    }
    Ok(venv)
}

/// Builds the wheel (`release` for benchmarks) and installs it into the venv.
fn python(release: bool) -> Result<PathBuf, String> {
    let root = workspace();
    let venv = venv()?;
    let wheels = root.join("target/py/wheels");
    let _ = std::fs::remove_dir_all(&wheels);
    let mut build = Command::new(venv.join("bin/maturin"));
    // `linux`: the library links the system OpenSSL, so the wheel is not manylinux.
    build.args(["build", "--quiet", "--compatibility", "linux", "-o"]).arg(&wheels).current_dir(root.join("bindings/python"));
    if release {
        build.arg("--release");
    }
    run(&mut build)?;
    let wheel = std::fs::read_dir(&wheels)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or("maturin built no wheel")?;
    // Through the venv's python, not bin/pip: pip's first line names the venv it was made in,
    // the original's in a copy of the workspace (`cp -a`), where it would install this wheel.
    run(Command::new(venv.join("bin/python")).args(["-m", "pip", "install", "-q", "--force-reinstall", "--no-deps"]).arg(&wheel))?;
    println!("installed {} into {}", wheel.display(), venv.display());
    Ok(venv)
}

fn pytest(venv: &Path, args: &[&str]) -> Result<(), String> {
    run(Command::new(venv.join("bin/python"))
        .args(["-m", "pytest"])
        .args(args)
        .current_dir(workspace().join("bindings/python")))
}

/// The Kotlin SDK's Maven build (which generates its bindings with the pinned uniffi-bindgen).
fn kotlin(goals: &[&str]) -> Result<(), String> {
    sdk::require("mvn", "install Maven and a JDK 17 (apt-get install maven openjdk-17-jdk-headless)")?;
    let pom = workspace().join("bindings/kotlin/pom.xml");
    // `cargo run` (the xtask alias) puts target/release on LD_LIBRARY_PATH, where JNA would find
    // a release build of the native library before the one this build puts on the class path:
    // a stale one, from an earlier `cargo xtask sdk`, fails with missing symbols.
    let cargo_target = format!("-Dcargo.target.dir={}", target_dir(&workspace()).display());
    run(Command::new("mvn").arg("-q").arg("-f").arg(&pom).arg(cargo_target).args(goals).env_remove("LD_LIBRARY_PATH"))
}

/// Compiles the Kotlin SDK and its demo worker and writes their class path for the demo; without
/// Maven the demo runs without Kotlin workers.
fn kotlin_demo_classpath() -> Result<(), String> {
    if sdk::require("mvn", "").is_err() || sdk::require("javac", "").is_err() {
        println!("(Maven or a JDK is not installed: the demo runs without Kotlin workers)");
        return Ok(());
    }
    kotlin(&["test-compile", "dependency:build-classpath", "-Dmdep.outputFile=target/demo-classpath.txt"])
}

/// Every package, release-built, laid out in dist/.
fn sdk_packages() -> Result<(), String> {
    let root = workspace();
    sdk::require("mvn", "install Maven and a JDK 17 (apt-get install maven openjdk-17-jdk-headless)")?;
    let built = pottery_semaphore_wasm_build::build(&root)?;
    println!("component built with {}", built.toolchain);
    cargo(&["build", "--release", "-p", "pottery-semaphore-ffi"])?;
    python(true)?;
    let wheel = std::fs::read_dir(root.join("target/py/wheels"))
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or("no wheel was built")?;
    kotlin(&["-Dcargo.profile=release", "-DskipTests", "package"])?;
    let jar = root.join("bindings/kotlin/target/pottery-semaphore-0.1.0.jar");
    let swift_package = swift::generate(&root)?;
    println!("{}", swift::check(&swift_package)?);
    let written = sdk::assemble(&sdk::Parts {
        workspace: &root,
        component: &built.component,
        wheel: &wheel,
        jar: &jar,
        swift_package: &swift_package,
        native_lib: &target_dir(&root).join("release/libpottery_semaphore_ffi.so"),
    })?;
    println!("\ndist/ now holds:");
    for path in written {
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let shown = path.strip_prefix(&root).unwrap_or(&path).display().to_string();
        if path.is_dir() { println!("  {shown}/") } else { println!("  {shown} ({} KiB)", size / 1024) }
    }
    Ok(())
}

/// No Swift toolchain exists here: the generated package is checked for completeness and syntax.
fn swift_check() -> Result<(), String> {
    let package = swift::generate(&workspace())?;
    println!("{}", swift::check(&package)?);
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if std::env::var_os("POTTERY_SEMAPHORE_COMPONENT").is_some() {
        eprintln!("xtask: ignoring $POTTERY_SEMAPHORE_COMPONENT: what it builds embeds the component it builds");
    }
    let result = match args.first().map(String::as_str) {
        Some("component") => component(),
        Some("python") => python(false).map(drop),
        Some("report") => component().and_then(|()| python(true)).and_then(|venv| report::run(&workspace(), &venv)).map(drop),
        Some("swift") => swift_check(),
        Some("kotlin") => kotlin(&["verify"]),
        Some("sdk") => sdk_packages(),
        Some("test") => prereqs::ensure(false)
            .map(|()| prereqs::note_missing_valkey())
            .and_then(|()| component())
            // The CLI and cross-process tests run binaries that `cargo test` alone does not build.
            // `--workspace --tests` resolves features as `cargo test --workspace` does, so the two
            // share one build of every dependency (disk on CI machines is not unlimited).
            // The benchmark too (dev profile here): it is not run, but must keep compiling.
            .and_then(|()| cargo(&["build", "--workspace", "--bins", "--tests", "--benches"]))
            .and_then(|()| cargo(&["test", "--workspace", "--", "--skip", "faults_on_"]))
            // The fault suite's report (operations, faults, maximum concurrent holders, stale
            // tokens rejected, permits recovered) belongs in the log, so its output is not captured.
            .and_then(|()| cargo(&["test", "-p", "pottery-semaphore-tests", "--test", "faults", "--", "--nocapture"]))
            .and_then(|()| python(false))
            .and_then(|venv| pytest(&venv, &["-q", "tests"]))
            .and_then(|()| swift_check())
            // Its cross-language tests use the Python venv built above.
            .and_then(|()| kotlin(&["verify"]))
            // The main job too (README's first command), so a run that breaks it fails here.
            .and_then(|()| kotlin_demo_classpath())
            .and_then(|()| cargo(&["run", "-p", "pottery-semaphore-tests", "--bin", "demo"])),
        Some("demo") => prereqs::ensure(true)
            .and_then(|()| component())
            .and_then(|()| python(false))
            .and_then(|_| kotlin_demo_classpath())
            .and_then(|()| cargo(&["run", "-p", "pottery-semaphore-tests", "--bin", "demo"])),
        Some("bench") => component()
            .and_then(|()| cargo(&["bench", "-p", "pottery-semaphore-tests", "--bench", "semaphore"]))
            .and_then(|()| python(true))
            .and_then(|venv| run(Command::new(venv.join("bin/python")).arg(workspace().join("bindings/python/bench.py")))),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_string_field_of_cargo_metadata() {
        let json = r#"{"packages":[],"target_directory":"/home/a \"b\"\\c/t\u00e9","version":1,"workspace_root":"/w"}"#;
        assert_eq!(json_string_field(json, "target_directory").as_deref(), Some("/home/a \"b\"\\c/té"));
        assert_eq!(json_string_field(json, "workspace_root").as_deref(), Some("/w"));
        assert_eq!(json_string_field(json, "missing"), None);
        assert_eq!(json_string_field(r#"{"target_directory":"/unterminated"#, "target_directory"), None);
    }

    #[test]
    fn finds_the_target_directory_cargo_uses() {
        // This test binary is <target dir>/<profile>/deps/<name>, however cargo was configured.
        let exe = std::env::current_exe().expect("test exe");
        let expected = exe.ancestors().nth(3).expect("in a target directory");
        assert_eq!(target_dir(&workspace()).canonicalize().ok(), expected.canonicalize().ok());
    }
}
