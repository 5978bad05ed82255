//! The crate a user writes: ../dependant-check depends on `moas` alone and lives outside this workspace, so none of
//! the bindings' build scripts' `rustc-link-arg`s (rpaths) reach its binary. Linked statically (the default) the
//! binary must start with no LD_LIBRARY_PATH; with MOAS_LINK=dylib the library path is what finds libmoas.so.
use std::path::Path;
use std::process::Command;

#[test]
fn a_crate_depending_on_moas_builds_and_runs() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("dependant-check").join("Cargo.toml");
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dependant-check");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let build = Command::new(cargo)
        .args(["build", "--offline", "--locked", "--quiet", "--manifest-path"])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", &target_dir)
        .output()
        .expect("run cargo");
    assert!(
        build.status.success(),
        "cargo build of dependant-check failed:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );

    let mut binary = Command::new(target_dir.join("debug").join("dependant-check"));
    binary.env_remove("LD_LIBRARY_PATH");
    if env!("MOAS_LINKAGE") != "static" {
        binary.env("LD_LIBRARY_PATH", env!("MOAS_SYS_LIB_DIR"));
    }
    let run = binary.output().expect("start dependant-check");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "dependant-check ({} libmoas) failed: {}\n{stdout}{}",
        env!("MOAS_LINKAGE"),
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.starts_with("dependant-check: ") && stdout.contains(" parameters, loss "), "{stdout}");
}
