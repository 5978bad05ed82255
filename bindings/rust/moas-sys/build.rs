//! Links libmoas from an existing CMake build; the library is never built from here.
//!
//! MOAS_LIB_DIR     directory holding libmoas.a / libmoas.so (default: the repository's build/)
//! MOAS_INCLUDE_DIR directory holding moas.h                   (default: the repository's include/)
//! MOAS_LINK        `static` or `dylib`; unset: static when MOAS_LIB_DIR holds libmoas.a and moas-static-libs.txt
//!
//! Static is the default because it is the only mode that reaches every binary of every dependent crate: Cargo
//! hands `rustc-link-lib` and `rustc-link-search` on to dependents but applies `rustc-link-arg` (the dylib mode's
//! rpath) only to the package whose build script emits it. moas-static-libs.txt, written by CMake beside libmoas.a,
//! names the rest of its link line: one library per line, an absolute path or a bare name for `-l`.
//!
//! Both directories are handed on to this crate's tests (rustc-env) and, with the mode, through `links = "moas"` to
//! the build scripts of dependent crates as DEP_MOAS_LIB_DIR / DEP_MOAS_INCLUDE_DIR / DEP_MOAS_LINKAGE.

use std::env;
use std::path::{Path, PathBuf};

const STATIC_LIBRARY: &str = "libmoas.a";
const LINK_LINE: &str = "moas-static-libs.txt";
const SHARED_LIBRARY: &str = "libmoas.so";

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

/// Reruns this script when one of `files` changes; while one is missing, on every build. Cargo reruns for a watched
/// path that does not exist, but a file that appears with an older mtime than the last run (copied with `cp -a`,
/// installed by CMake) does not count as a change; so a missing file is watched through a path in OUT_DIR that is
/// never created, and a library that appears later is picked up (and the "not found" warning goes) however it came.
fn watch(lib_dir: &Path, files: &[&str]) {
    for file in files {
        let path = lib_dir.join(file);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        } else {
            let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
            println!("cargo:rerun-if-changed={}", out_dir.join(format!("until-{file}-exists")).display());
        }
    }
}

fn main() {
    let lib_dir = dir_from_env("MOAS_LIB_DIR", "../../../build");
    let include_dir = dir_from_env("MOAS_INCLUDE_DIR", "../../../include");
    println!("cargo:rerun-if-env-changed=MOAS_LINK");
    println!("cargo:rerun-if-changed={}", include_dir.join("moas.h").display());

    let static_ready = lib_dir.join(STATIC_LIBRARY).is_file() && lib_dir.join(LINK_LINE).is_file();
    let linkage = match env::var("MOAS_LINK").unwrap_or_default().as_str() {
        "static" => {
            watch(&lib_dir, &[STATIC_LIBRARY, LINK_LINE]);
            if !static_ready {
                panic!(
                    "MOAS_LINK=static but {} lacks {STATIC_LIBRARY} or {LINK_LINE}: build the moas_static target \
                     with CMake, or set MOAS_LINK=dylib",
                    lib_dir.display()
                );
            }
            "static"
        }
        "dylib" => "dylib",
        "" => {
            watch(&lib_dir, &[STATIC_LIBRARY, LINK_LINE]);
            if static_ready {
                "static"
            } else {
                "dylib"
            }
        }
        other => panic!("MOAS_LINK is '{other}': use static or dylib (or leave it unset)"),
    };

    println!("cargo:rustc-link-search=native={}", lib_dir.display());
    if linkage == "static" {
        println!("cargo:rustc-link-lib=static=moas");
        link_static_dependencies(&lib_dir.join(LINK_LINE));
    } else {
        watch(&lib_dir, &[SHARED_LIBRARY]);
        if !has_shared_library(&lib_dir) {
            println!(
                "cargo:warning=libmoas not found in {} (build it with CMake, or set MOAS_LIB_DIR)",
                lib_dir.display()
            );
        }
        println!("cargo:rustc-link-lib=dylib=moas");
        if env::var("CARGO_CFG_TARGET_OS").map_or(true, |os| os != "windows") {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib_dir.display());
        }
    }

    println!("cargo:rustc-env=MOAS_SYS_LIB_DIR={}", lib_dir.display());
    println!("cargo:rustc-env=MOAS_SYS_INCLUDE_DIR={}", include_dir.display());
    println!("cargo:lib_dir={}", lib_dir.display());
    println!("cargo:include_dir={}", include_dir.display());
    println!("cargo:linkage={linkage}");
}

fn link_static_dependencies(link_line: &Path) {
    let text =
        std::fs::read_to_string(link_line).unwrap_or_else(|e| panic!("cannot read {}: {e}", link_line.display()));
    let mut search_dirs: Vec<&Path> = Vec::new();
    for entry in text.lines().map(str::trim).filter(|line| !line.is_empty()) {
        let path = Path::new(entry);
        if !path.is_absolute() {
            println!("cargo:rustc-link-lib=dylib={entry}");
            continue;
        }
        // The exact file CMake links (verbatim: a versioned libdnnl.so.2.6 may have no unversioned link); a system
        // archive such as libpthread.a stays out of this crate's rlib (-bundle) and joins the final link instead.
        let (Some(dir), Some(file)) = (path.parent(), path.file_name().and_then(|f| f.to_str())) else {
            panic!("{}: cannot link '{entry}'", link_line.display());
        };
        if !search_dirs.contains(&dir) {
            search_dirs.push(dir);
            println!("cargo:rustc-link-search=native={}", dir.display());
        }
        let kind = if file.ends_with(".a") { "static:-bundle,+verbatim" } else { "dylib:+verbatim" };
        println!("cargo:rustc-link-lib={kind}={file}");
    }
}

fn has_shared_library(dir: &Path) -> bool {
    [SHARED_LIBRARY, "libmoas.dylib", "moas.lib"].iter().any(|name| dir.join(name).exists())
}
