//! Build script: with the `torch` feature, writes libtorch's library folder (the one
//! torch-sys linked against, taken from the PyTorch venv by the Makefile) into the
//! rpath of every binary and test, so they run without LD_LIBRARY_PATH.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_TORCH").is_none() {
        return;
    }
    // torch-sys (`links = "tch"`) publishes the folder it linked as `libtorch_lib`.
    let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!("cargo:warning=torch-sys did not report its libtorch folder; binaries will need LD_LIBRARY_PATH");
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    // Nothing calls into libtorch_cuda directly, so `--as-needed` would drop it and
    // libtorch would never see a GPU: keep it linked where the wheel has it.
    if std::path::Path::new(&dir).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-L{dir}");
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
