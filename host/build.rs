//! Finds the component to embed: `$POTTERY_SEMAPHORE_COMPONENT` if set, else builds `core/` for
//! wasm32 (see `pottery-semaphore-wasm-build`), so `cargo build` alone is enough.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=POTTERY_SEMAPHORE_COMPONENT");
    let component = match std::env::var_os("POTTERY_SEMAPHORE_COMPONENT") {
        // Absolute only: cargo runs this script in host/, and `include_bytes!` would read a
        // relative path from host/src/, neither of them where the caller meant.
        Some(path) if PathBuf::from(&path).is_absolute() => PathBuf::from(path),
        Some(path) => panic!("POTTERY_SEMAPHORE_COMPONENT must be an absolute path, not {}", PathBuf::from(path).display()),
        None => {
            let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
            let workspace = manifest.parent().expect("host/ sits in the workspace").to_path_buf();
            // The workspace's manifest and lock pin wit-bindgen, whose output the component holds.
            // Relative to host/ (cargo keeps them so), so that a copy of the workspace with its
            // target/ watches its own sources, not the original's.
            for input in ["core/src", "core/scripts", "core/Cargo.toml", "wit", "Cargo.toml", "Cargo.lock"] {
                println!("cargo:rerun-if-changed=../{input}");
            }
            match pottery_semaphore_wasm_build::build(&workspace) {
                Ok(built) => built.component,
                Err(e) => panic!("cannot build the pottery-semaphore component: {e}"),
            }
        }
    };
    println!("cargo:rerun-if-changed={}", component.display());
    println!("cargo:rustc-env=POTTERY_SEMAPHORE_COMPONENT_PATH={}", component.display());
}
