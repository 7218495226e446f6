//! Link arguments for the cdylib only (the rlib used by tests is unaffected):
//! SONAME `libpcsclite.so.1`, `-z nodelete` (apps such as OpenSC `dlclose` their
//! PC/SC library; Rust TLS destructors must never run into unmapped code), and a
//! version script that exports exactly libpcsclite's 22 symbols, unversioned.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let map = std::path::Path::new(&dir).join("exports.map");
    println!("cargo:rerun-if-changed={}", map.display());
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "linux" {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libpcsclite.so.1");
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
        println!("cargo:rustc-cdylib-link-arg=-Wl,--version-script={}", map.display());
    }
}
