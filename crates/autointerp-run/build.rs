//! tch sets no rpath: without this, binaries and tests of this crate exit 127 looking for
//! libtorch_cpu.so. torch-sys (`links = "tch"`) tells us where libtorch's libraries are.
fn main() {
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
}
