//! Bakes libtorch's directory into every binary as an rpath, so `kdcompress` runs from anywhere
//! without LD_LIBRARY_PATH. torch-sys reports the directory as `DEP_TCH_LIBTORCH_LIB`.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
