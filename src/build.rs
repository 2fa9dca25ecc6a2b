//! Build script: the freestanding Orion driver (the `raid` bin without the `std` feature)
//! links with no C runtime and no libc: its own `_start`, statically, position-dependent.

fn main() {
    println!("cargo:rerun-if-changed=src/build.rs");
    if std::env::var_os("CARGO_FEATURE_STD").is_none() {
        for arg in ["-nostartfiles", "-nostdlib", "-static", "-no-pie"] {
            println!("cargo:rustc-link-arg-bins={arg}");
        }
    }
}
