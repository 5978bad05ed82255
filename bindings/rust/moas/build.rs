//! Cargo applies a build script's `rustc-link-arg` only to its own package, so the rpath that moas-sys emits when it
//! links libmoas.so does not reach this crate's tests and examples; moas-sys hands its library directory on as
//! DEP_MOAS_LIB_DIR. A static libmoas needs no rpath. The tests learn the linkage and the directory as MOAS_LINKAGE
//! and MOAS_SYS_LIB_DIR.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_MOAS_LIB_DIR");
    println!("cargo:rerun-if-env-changed=DEP_MOAS_LINKAGE");
    let linkage = std::env::var("DEP_MOAS_LINKAGE").unwrap_or_else(|_| "dylib".to_string());
    println!("cargo:rustc-env=MOAS_LINKAGE={linkage}");
    let Ok(lib_dir) = std::env::var("DEP_MOAS_LIB_DIR") else { return };
    println!("cargo:rustc-env=MOAS_SYS_LIB_DIR={lib_dir}");
    let windows = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "windows");
    if linkage != "static" && !windows {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    }
}
