//! Links libmoas from an existing CMake build; the library is never built from here.
//!
//! MOAS_LIB_DIR     directory holding libmoas.so (default: the repository's build/)
//! MOAS_INCLUDE_DIR directory holding moas.h     (default: the repository's include/)
//!
//! Both directories are handed on: to this crate's tests (rustc-env) and, through `links = "moas"`, to the build
//! scripts of dependent crates as DEP_MOAS_LIB_DIR / DEP_MOAS_INCLUDE_DIR. Cargo applies `rustc-link-arg` only to
//! the package whose build script emits it, so a dependent that wants the rpath emits its own from
//! DEP_MOAS_LIB_DIR (the `moas` crate does).

use std::env;
use std::path::{Path, PathBuf};

fn dir_from_env(var: &str, default_relative: &str) -> PathBuf {
    println!("cargo:rerun-if-env-changed={var}");
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let dir = match env::var_os(var) {
        Some(value) if !value.is_empty() => manifest_dir.join(value), // join keeps an absolute value as it is
        _ => manifest_dir.join(default_relative),
    };
    // An absolute, symlink-free path, so the rpath stays valid wherever the test binary runs from.
    dir.canonicalize().unwrap_or(dir)
}

fn main() {
    let lib_dir = dir_from_env("MOAS_LIB_DIR", "../../../build");
    let include_dir = dir_from_env("MOAS_INCLUDE_DIR", "../../../include");

    if !has_shared_library(&lib_dir) {
        println!("cargo:warning=libmoas not found in {} (build it with CMake, or set MOAS_LIB_DIR)", lib_dir.display());
    }
    let header = include_dir.join("moas.h");
    println!("cargo:rerun-if-changed={}", header.display());

    println!("cargo:rustc-link-search=native={}", lib_dir.display());
    println!("cargo:rustc-link-lib=dylib=moas");
    if env::var("CARGO_CFG_TARGET_OS").map_or(true, |os| os != "windows") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib_dir.display());
    }

    println!("cargo:rustc-env=MOAS_SYS_LIB_DIR={}", lib_dir.display());
    println!("cargo:rustc-env=MOAS_SYS_INCLUDE_DIR={}", include_dir.display());
    println!("cargo:lib_dir={}", lib_dir.display());
    println!("cargo:include_dir={}", include_dir.display());
}

fn has_shared_library(dir: &Path) -> bool {
    ["libmoas.so", "libmoas.dylib", "moas.lib"].iter().any(|name| dir.join(name).exists())
}
