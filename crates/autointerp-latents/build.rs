//! tch sets no rpath: with the `local` feature (the in-process sentence embedder), this crate's
//! tests, examples and benches would exit 127 looking for libtorch_cpu.so. torch-sys
//! (`links = "tch"`, an optional dependency of that feature) tells us where libtorch's libraries
//! are; without the feature the variable is absent and nothing is emitted.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
}
