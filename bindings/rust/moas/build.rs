//! Cargo applies a build script's `rustc-link-arg` only to its own package, so the rpath that moas-sys emits does
//! not reach this crate's tests and examples; moas-sys hands its library directory on as DEP_MOAS_LIB_DIR.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_MOAS_LIB_DIR");
    let windows = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "windows");
    if let (Ok(lib_dir), false) = (std::env::var("DEP_MOAS_LIB_DIR"), windows) {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    }
}
