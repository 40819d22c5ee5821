//! `cargo xtask sdk`: every package, ready to publish, in dist/ — the wasm component with its
//! WIT, the native library, the Python wheel, the Kotlin/JVM jar and the Swift package. Each part
//! is rebuilt from scratch into its own folder, so running it twice gives the same dist/.

use std::path::{Path, PathBuf};
use std::process::Command;

fn copy_dir(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    for entry in std::fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))?.flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target).map_err(|e| format!("{}: {e}", target.display()))?;
        }
    }
    Ok(())
}

fn fresh(dir: &Path) -> Result<PathBuf, String> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir.to_path_buf())
}

fn copy(file: &Path, dir: &Path) -> Result<PathBuf, String> {
    let name = file.file_name().ok_or_else(|| format!("{} has no file name", file.display()))?;
    let target = dir.join(name);
    std::fs::copy(file, &target).map_err(|e| format!("{} -> {}: {e}", file.display(), target.display()))?;
    Ok(target)
}

/// Fails early, with what to install, when a tool is missing.
pub fn require(tool: &str, hint: &str) -> Result<(), String> {
    match Command::new(tool).arg("--version").output() {
        Ok(out) if out.status.success() => Ok(()),
        _ => Err(format!("`{tool}` is not available: {hint}")),
    }
}

pub struct Parts<'a> {
    pub workspace: &'a Path,
    pub component: &'a Path,
    pub wheel: &'a Path,
    pub jar: &'a Path,
    pub swift_package: &'a Path,
    pub native_lib: &'a Path,
}

/// Lays the built parts out in dist/ and returns what it wrote.
pub fn assemble(parts: &Parts) -> Result<Vec<PathBuf>, String> {
    let dist = parts.workspace.join("dist");
    let mut written = Vec::new();
    let wasm = fresh(&dist.join("component"))?;
    let target = wasm.join("pottery_semaphore.wasm");
    std::fs::copy(parts.component, &target).map_err(|e| e.to_string())?;
    written.push(target);
    copy_dir(&parts.workspace.join("wit"), &wasm.join("wit"))?;
    written.push(wasm.join("wit"));
    let native = fresh(&dist.join("native/linux-x86-64"))?;
    let lib = copy(parts.native_lib, &native)?;
    // Debug info only: the symbol table stays, uniffi-bindgen reads the interface from it.
    let _ = Command::new("strip").arg("--strip-debug").arg(&lib).status();
    written.push(lib);
    written.push(copy(parts.wheel, &fresh(&dist.join("python"))?)?);
    written.push(copy(parts.jar, &fresh(&dist.join("kotlin"))?)?);
    let swift = fresh(&dist.join("swift/PotterySemaphore"))?;
    for entry in ["Package.swift", "README.md", "Sources"] {
        let from = parts.swift_package.join(entry);
        if from.is_dir() {
            copy_dir(&from, &swift.join(entry))?;
        } else {
            std::fs::copy(&from, swift.join(entry)).map_err(|e| format!("{}: {e}", from.display()))?;
        }
    }
    written.push(swift);
    Ok(written)
}
