//! The LD_PRELOAD route's `dlopen` interceptor, in real processes: PC/SC library
//! names (by full path, `.so`, `.so.1.0.0`) land on libpcscbridge.so, other
//! libraries load as before, and the caller's RUNPATH still applies (the
//! trampoline keeps the application's return address). Needs gcc.

use std::path::{Path, PathBuf};
use std::process::Command;

fn cdylib() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join("libpcscbridge.so");
    p.exists().then_some(p)
}

fn gcc(src: &Path, out: &Path, extra: &[&str]) -> bool {
    Command::new("gcc")
        .arg("-O2")
        .arg(src)
        .arg("-o")
        .arg(out)
        .args(extra)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[test]
fn pcsc_names_are_redirected_and_runpath_survives() {
    let Some(lib) = cdylib() else {
        println!("SKIP: libpcscbridge.so not built next to the test binary");
        return;
    };
    if Command::new("gcc").arg("--version").output().is_err() {
        println!("SKIP: gcc not available");
        return;
    }
    let tmp = std::env::temp_dir().join(format!("pcsc-bridge-dlopen-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let probe = tmp.join("probe");
    assert!(gcc(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/dlopen_probe.c"), &probe, &["-ldl"]));
    // A library only the app's RUNPATH can find.
    std::fs::write(tmp.join("foo.c"), "int foo(void){return 42;}\n").unwrap();
    assert!(Command::new("gcc")
        .args(["-shared", "-fPIC"])
        .arg(tmp.join("foo.c"))
        .arg("-o")
        .arg(tmp.join("libfoo.so"))
        .status()
        .unwrap()
        .success());
    std::fs::write(
        tmp.join("app.c"),
        "#include <dlfcn.h>\n#include <stdio.h>\nint main(void){void*h=dlopen(\"libfoo.so\",RTLD_NOW);if(!h){printf(\"FAIL %s\\n\",dlerror());return 1;}int(*f)(void)=dlsym(h,\"foo\");printf(\"foo=%d\\n\",f());return 0;}\n",
    )
    .unwrap();
    let app = tmp.join("app");
    let rpath = format!("-Wl,-rpath,{}", tmp.display());
    assert!(gcc(&tmp.join("app.c"), &app, &["-ldl", &rpath, "-Wl,--enable-new-dtags"]));

    let fake = tmp.join("libpcsclite.so.1.0.0");
    std::fs::copy("/bin/true", &fake).ok();
    let names = ["libpcsclite.so.1", "libpcsclite.so", "/usr/lib/x86_64-linux-gnu/libpcsclite.so.1"];
    let out = Command::new(&probe).args(names).env("LD_PRELOAD", &lib).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for n in names {
        let line = text.lines().find(|l| l.starts_with(&format!("{n} "))).unwrap_or_else(|| panic!("{text}"));
        assert!(line.ends_with(&*lib.to_string_lossy()), "{n} did not reach pcsc-bridge: {line}");
    }
    assert!(text.contains("libm: ok"), "{text}");

    let out = Command::new(&app).env("LD_PRELOAD", &lib).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "foo=42");
    std::fs::remove_dir_all(&tmp).ok();
}
