//! The Swift SDK (bindings/swift): generates its UniFFI sources and parse-checks the package.
//!
//! No Swift toolchain is needed: `check` parses with tree-sitter's Swift grammar from a pinned
//! Python venv (target/swift-venv), and matches the layer's calls on the generated Semaphore
//! against the functions the generated module declares. It proves the sources are well-formed
//! and call what exists, not that they compile.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{target_dir, workspace};

/// The package, relative to the workspace.
pub const PACKAGE: &str = "bindings/swift";
/// The C module: the generated header and the modulemap that links the Rust library.
const C_MODULE: &str = "CPotterySemaphore";
/// The generated Swift module, as bindings/swift/uniffi.toml names it.
const FFI_MODULE: &str = "PotterySemaphoreFFI";
/// The hand-written layer: its module and its file.
const LAYER_MODULE: &str = "PotterySemaphore";
const LAYER: &str = "Sources/PotterySemaphore/PotterySemaphore.swift";
/// The native library the modulemap links (`-lpottery_semaphore_ffi`).
const LIBRARY: &str = "pottery_semaphore_ffi";

fn c_dir(package: &Path) -> PathBuf {
    package.join("Sources").join(C_MODULE)
}

fn ffi_dir(package: &Path) -> PathBuf {
    package.join("Sources").join(FFI_MODULE)
}

/// Every file the package needs, generated or not.
fn required(package: &Path) -> Vec<PathBuf> {
    vec![
        package.join("Package.swift"),
        c_dir(package).join(format!("{C_MODULE}.h")),
        c_dir(package).join("module.modulemap"),
        ffi_dir(package).join(format!("{FFI_MODULE}.swift")),
        package.join(LAYER),
    ]
}

/// SwiftPM wants this exact name; `link` makes every user of the module link the Rust library
/// (on Linux the shared one from the library path; an XCFramework brings its own, see README.md).
fn modulemap() -> String {
    format!("module {C_MODULE} {{\n    header \"{C_MODULE}.h\"\n    link \"{LIBRARY}\"\n    export *\n}}\n")
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().map_err(|e| format!("cannot run {shown}: {e}"))?;
    status.success().then_some(()).ok_or_else(|| format!("{shown} failed ({status})"))
}

fn cargo(workspace: &Path) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace);
    cmd
}

fn write(path: &Path, contents: &[u8]) -> Result<(), String> {
    std::fs::write(path, contents).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Builds the ffi library (debug), generates the Swift bindings with the pinned uniffi-bindgen
/// (bindings/bindgen) and writes them into the package: header and modulemap into
/// Sources/CPotterySemaphore, the Swift source into Sources/PotterySemaphoreFFI (all kept out of
/// git). Returns the package directory.
pub fn generate(workspace: &Path) -> Result<PathBuf, String> {
    let package = workspace.join(PACKAGE);
    run(cargo(workspace).args(["build", "-p", "pottery-semaphore-ffi", "--lib"]))?;
    let library = target_dir(workspace).join("debug").join(format!(
        "{}{LIBRARY}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    if !library.is_file() {
        return Err(format!("cargo built no {}", library.display()));
    }

    // Generate aside and copy into place, so a failed bindgen run leaves the package as it was.
    let out = target_dir(workspace).join("swift-gen");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    run(cargo(workspace)
        .args(["run", "--quiet", "-p", "pottery-semaphore-bindgen", "--bin", "uniffi-bindgen", "--"])
        .args(["generate", "--language", "swift", "--no-format", "--config"])
        .arg(package.join("uniffi.toml"))
        .arg("--out-dir")
        .arg(&out)
        .arg(&library))?;

    for dir in [c_dir(&package), ffi_dir(&package)] {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    for (name, dir) in [(format!("{C_MODULE}.h"), c_dir(&package)), (format!("{FFI_MODULE}.swift"), ffi_dir(&package))]
    {
        let from = out.join(&name);
        std::fs::copy(&from, dir.join(&name))
            .map_err(|e| format!("uniffi-bindgen did not write {}: {e}", from.display()))?;
    }
    write(&c_dir(&package).join("module.modulemap"), modulemap().as_bytes())?;
    Ok(package)
}

/// target/swift-venv of this workspace, with the pinned parser of the package's
/// requirements-check.txt; remade when the requirements change.
fn venv(package: &Path) -> Result<PathBuf, String> {
    let venv = target_dir(&workspace()).join("swift-venv");
    let requirements = package.join("requirements-check.txt");
    let wanted = std::fs::read_to_string(&requirements).map_err(|e| format!("{}: {e}", requirements.display()))?;
    let stamp = venv.join(".requirements");
    let python = venv.join(if cfg!(windows) { "Scripts/python.exe" } else { "bin/python" });
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) || !python.is_file() {
        let system = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        run(Command::new(&system).args(["-m", "venv", "--clear"]).arg(&venv))
            .map_err(|e| format!("{e}\n(needs Python 3.10+ with the venv module: apt-get install python3-venv)"))?;
        run(Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(&requirements))?;
        write(&stamp, wanted.as_bytes())?;
    }
    Ok(python)
}

/// Checks that the package is complete (manifest, generated header, modulemap and Swift source,
/// hand-written layer) and that every .swift file in it parses: any ERROR or MISSING node fails
/// the check with its file:line:column. Returns the parser's report.
pub fn check(package: &Path) -> Result<String, String> {
    let missing: Vec<String> = required(package)
        .into_iter()
        .filter(|file| !file.is_file())
        .map(|file| format!("  {}", file.display()))
        .collect();
    if !missing.is_empty() {
        return Err(format!("the Swift package is incomplete (run the generator first):\n{}", missing.join("\n")));
    }
    let manifest_path = package.join("Package.swift");
    let manifest = std::fs::read_to_string(&manifest_path).map_err(|e| format!("{}: {e}", manifest_path.display()))?;
    for target in [C_MODULE, FFI_MODULE, LAYER_MODULE] {
        if !manifest.contains(&format!("name: \"{target}\"")) {
            return Err(format!("{} declares no target {target}", manifest_path.display()));
        }
    }
    let modulemap_path = c_dir(package).join("module.modulemap");
    let map = std::fs::read_to_string(&modulemap_path).map_err(|e| format!("{}: {e}", modulemap_path.display()))?;
    for wanted in [format!("module {C_MODULE} "), format!("header \"{C_MODULE}.h\""), format!("link \"{LIBRARY}\"")] {
        if !map.contains(&wanted) {
            return Err(format!("{} lacks `{wanted}`", modulemap_path.display()));
        }
    }

    let python = venv(package)?;
    let output = Command::new(&python)
        .arg(package.join("check_parse.py"))
        .arg(package)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let report = report.trim_end().to_owned();
    if !output.status.success() {
        return Err(format!("Swift sources do not parse:\n{report}"));
    }
    refuses_an_empty_module(package, &python)?;
    Ok(report)
}

/// The check must be able to fail: on a copy of the package whose generated module is empty
/// (nothing the layer calls exists) it has to say so.
fn refuses_an_empty_module(package: &Path, python: &Path) -> Result<(), String> {
    let copy = target_dir(&workspace()).join(format!("swift-check-empty-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&copy);
    let write = |relative: &Path, contents: &[u8]| {
        let file = copy.join(relative);
        std::fs::create_dir_all(file.parent().expect("a file in a directory")).and_then(|()| std::fs::write(&file, contents))
            .map_err(|e| format!("{}: {e}", file.display()))
    };
    for relative in [Path::new("Package.swift"), Path::new(LAYER)] {
        let contents = std::fs::read(package.join(relative)).map_err(|e| format!("{}: {e}", relative.display()))?;
        write(relative, &contents)?;
    }
    write(&Path::new("Sources").join(FFI_MODULE).join(format!("{FFI_MODULE}.swift")), b"")?;
    let output = Command::new(python).arg(package.join("check_parse.py")).arg(&copy).output().map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    let _ = std::fs::remove_dir_all(&copy);
    let said = String::from_utf8_lossy(&output.stdout);
    if output.status.success() || !said.contains("no function declared") {
        return Err(format!("the Swift check did not refuse a package whose generated module is empty:\n{said}"));
    }
    Ok(())
}
