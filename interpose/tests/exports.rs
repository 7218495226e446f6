//! The built cdylib has libpcsclite.so.1's ABI: exactly the 22 symbols, no symbol
//! versions on them, plus `dlopen` (the LD_PRELOAD route's interceptor), SONAME `libpcsclite.so.1`, and NODELETE. Compared with
//! Debian's library when it is installed. Needs binutils (`nm`, `readelf`).

use std::path::PathBuf;
use std::process::Command;

const EXPORTS: [&str; 22] = [
    "SCardBeginTransaction",
    "SCardCancel",
    "SCardConnect",
    "SCardControl",
    "SCardDisconnect",
    "SCardEndTransaction",
    "SCardEstablishContext",
    "SCardFreeMemory",
    "SCardGetAttrib",
    "SCardGetStatusChange",
    "SCardIsValidContext",
    "SCardListReaderGroups",
    "SCardListReaders",
    "SCardReconnect",
    "SCardReleaseContext",
    "SCardSetAttrib",
    "SCardStatus",
    "SCardTransmit",
    "g_rgSCardRawPci",
    "g_rgSCardT0Pci",
    "g_rgSCardT1Pci",
    "pcsc_stringify_error",
];

const NATIVE: &str = "/usr/lib/x86_64-linux-gnu/libpcsclite.so.1";

/// The cdylib cargo built with this test (target/<profile>/libpcscbridge.so).
fn cdylib() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join("libpcscbridge.so");
    p.exists().then_some(p)
}

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `nm -D --defined-only` names (an `@VERSION` suffix would stay attached).
fn defined(path: &str) -> Option<Vec<String>> {
    let out = run("nm", &["-D", "--defined-only", path])?;
    let mut v: Vec<String> = out.lines().filter_map(|l| l.split_whitespace().nth(2)).map(str::to_string).collect();
    v.sort();
    Some(v)
}

#[test]
fn exports_soname_and_flags() {
    let Some(lib) = cdylib() else {
        println!("SKIP: libpcscbridge.so not built next to the test binary");
        return;
    };
    let lib = lib.to_string_lossy().into_owned();
    let Some(syms) = defined(&lib) else {
        println!("SKIP: nm (binutils) not available");
        return;
    };
    let pcsc: Vec<String> = syms.iter().filter(|s| *s != "dlopen").cloned().collect();
    assert_eq!(pcsc, EXPORTS, "exactly the 22 PC/SC symbols, unversioned");
    assert_eq!(syms.len(), 23, "and dlopen, nothing else: {syms:?}");
    if std::path::Path::new(NATIVE).exists() {
        assert_eq!(defined(NATIVE).unwrap(), pcsc, "same list as Debian's libpcsclite.so.1");
    }
    let dynamic = run("readelf", &["-d", &lib]).expect("readelf");
    assert!(dynamic.contains("Library soname: [libpcsclite.so.1]"), "{dynamic}");
    let flags = dynamic.lines().find(|l| l.contains("FLAGS_1")).unwrap_or_default();
    assert!(flags.contains("NODELETE"), "{dynamic}");
}
