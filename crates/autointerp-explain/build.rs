//! This crate never calls libtorch, but in a workspace build its tests link the client crate with
//! its `local` feature (enabled by the CLI), which does; tch sets no rpath, so without this the
//! test binaries exit 127 looking for libtorch_cpu.so. `LIBTORCH` comes from the
//! `.cargo/config.toml` that scripts/setup-libtorch.sh writes; without it nothing is emitted.
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(dir) = std::env::var("LIBTORCH") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}/lib");
    }
}
