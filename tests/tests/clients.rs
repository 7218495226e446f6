//! Unmodified PC/SC clients through pcsc-bridge behave as through Debian's libpcsclite.
//!
//! Brings up a test host, builds `tests/clients/exercise.c` with gcc and runs
//! `scripts/compare-clients.sh SOCKET LIB READER`, which runs pcsc_scan, opensc-tool, the exercise
//! program and `tests/clients/pyscard_check.py` natively, with `LD_PRELOAD=LIB` and with LIB as a
//! drop-in `libpcsclite.so.1`, and diffs each route against native.
//!
//! LIB is `PCSC_BRIDGE_LIB` if set, else `target/release/libpcscbridge.so` (built with
//! `cargo build --release -p pcsc-bridge-interpose` when missing).

use std::path::{Path, PathBuf};
use std::process::Command;

use pcsc_bridge_tests::host::{repo_root, skip_reason, target_dir, TestHost};

const NATIVE_LIB: &str = "/usr/lib/x86_64-linux-gnu/libpcsclite.so.1";

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file())).unwrap_or(false)
}

/// Why the client comparison cannot run here (beyond the test host's own needs).
fn client_skip_reason() -> Option<String> {
    if let Some(why) = skip_reason() {
        return Some(why);
    }
    for tool in ["gcc", "pcsc_scan", "opensc-tool", "timeout", "diff"] {
        if !on_path(tool) {
            return Some(format!("{tool} not found (apt-get install gcc pcsc-tools opensc)"));
        }
    }
    if !Path::new("/usr/include/PCSC/winscard.h").exists() {
        return Some("PC/SC headers missing (apt-get install libpcsclite-dev)".into());
    }
    if !Path::new(NATIVE_LIB).exists() {
        return Some(format!("{NATIVE_LIB} missing (apt-get install libpcsclite1)"));
    }
    let pyscard = Command::new("/usr/bin/python3").args(["-c", "import smartcard.scard"]).output();
    if !matches!(pyscard, Ok(o) if o.status.success()) {
        return Some("pyscard missing for /usr/bin/python3 (apt-get install python3-pyscard)".into());
    }
    None
}

/// The library under test, building it when it is missing.
fn bridge_lib() -> PathBuf {
    if let Some(p) = std::env::var_os("PCSC_BRIDGE_LIB") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "PCSC_BRIDGE_LIB={} does not exist", p.display());
        return p;
    }
    let lib = target_dir().join("release/libpcscbridge.so");
    if !lib.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        println!("building {} (cargo build --release -p pcsc-bridge-interpose)", lib.display());
        let st = Command::new(cargo)
            .args(["build", "--release", "-p", "pcsc-bridge-interpose"])
            .current_dir(repo_root())
            .status()
            .expect("run cargo build");
        assert!(st.success(), "cargo build --release -p pcsc-bridge-interpose failed: {st}");
        assert!(lib.is_file(), "{} not produced by the build", lib.display());
    }
    lib
}

fn build_exercise(dir: &Path) -> PathBuf {
    let src = repo_root().join("tests/clients/exercise.c");
    let bin = dir.join("exercise");
    let out = Command::new("gcc")
        .args(["-O1", "-g", "-Wall", "-pthread", "-I/usr/include/PCSC", "-o"])
        .arg(&bin)
        .arg(&src)
        .arg("-lpcsclite")
        .output()
        .expect("run gcc");
    assert!(out.status.success(), "gcc {} failed:\n{}", src.display(), String::from_utf8_lossy(&out.stderr));
    bin
}

#[test]
fn clients_behave_as_with_native_libpcsclite() {
    if let Some(why) = client_skip_reason() {
        println!("SKIP: {why}");
        return;
    }
    let lib = bridge_lib();
    let host = TestHost::up().expect("test host");

    let work = std::env::temp_dir().join(format!("pcsc-bridge-clients.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("work folder");
    let exercise = build_exercise(&work);

    let out = Command::new("bash")
        .arg(repo_root().join("scripts/compare-clients.sh"))
        .arg(&host.socket)
        .arg(&lib)
        .arg(&host.reader)
        .env("EXERCISE_BIN", &exercise)
        .env("COMPARE_OUT", work.join("out"))
        .current_dir(repo_root())
        .output()
        .expect("run scripts/compare-clients.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    if !stderr.is_empty() {
        eprintln!("{stderr}");
    }
    assert!(
        stdout.lines().any(|l| l.starts_with("compare-clients: ")),
        "compare-clients.sh printed no summary (status {})",
        out.status
    );
    assert!(
        out.status.success(),
        "clients differ through {} (outputs in {}); see the FAIL lines above",
        lib.display(),
        work.join("out").display()
    );
    let _ = std::fs::remove_dir_all(&work);
}
