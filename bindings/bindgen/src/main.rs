//! uniffi's bindgen CLI, pinned to the same uniffi version as the library it reads
//! (`uniffi` is `=x.y.z` in the workspace), so generated code always matches the scaffolding.

fn main() {
    uniffi::uniffi_bindgen_main()
}
