//! `pcsc-bridge flatpak enable|disable|status`: wire pcsc-bridge into a Flatpak app.
//!
//! `enable` copies `libpcscbridge.so` (and this tool, for `doctor` inside the
//! sandbox) into the app's data folder `~/.var/app/APP-ID/pcsc-bridge/`, which the
//! sandbox sees at the same path, and adds a per-user override with `flatpak
//! override --user` (Flatpak clears `LD_PRELOAD` from the host environment, so an
//! override it is):
//!
//! | route | override |
//! |---|---|
//! | preload (default) | `--env=LD_PRELOAD=…/libpcscbridge.so` (+ `--socket=pcsc` if the app lacks it) |
//! | delegate | `--env=LIBPCSCLITE_DELEGATE=…/libpcscbridge.so` (+ `--socket=pcsc`); apps bundling pcsc-lite 2.1.0+ |
//! | proxy | `--filesystem=xdg-run/pcsc-bridge` + `--env=PCSCLITE_CSOCK_NAME=/run/user/UID/pcsc-bridge/pcscd.comm` |
//!
//! What it added is recorded in `~/.var/app/APP-ID/pcsc-bridge/enabled`; `disable`
//! edits the override file (`$FLATPAK_USER_DIR/overrides/APP-ID`) to remove exactly
//! that, restoring values it replaced (`flatpak override` can only add entries, or
//! add negations such as `unset-environment`), then deletes the copies.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::keyfile::KeyFile;
use super::{bridge_version, which, FlatpakCmd, Route};

const STATE_GROUP: &str = "pcsc-bridge";
const LIB_NAME: &str = "libpcscbridge.so";
const BIN_NAME: &str = "pcsc-bridge";
/// usbpass, installed beside the library: the library starts it inside the sandbox when no
/// pcscd is reachable and USB devices are visible (`--device=usb` or `--device=all`).
const USBPASS_NAME: &str = "usbpass";
const PROXY_FS: &str = "xdg-run/pcsc-bridge";

/// Flatpak application IDs: reverse DNS, at least three elements of
/// `[A-Za-z0-9_-]`, at most 255 bytes (so never a path).
pub fn valid_app_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    s.len() <= 255
        && parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && !p.starts_with('-')
                && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}

pub fn run(c: &FlatpakCmd) -> i32 {
    let r = match c {
        FlatpakCmd::Enable { app, route, lib, user_dir } => {
            Paths::new(user_dir.as_deref()).and_then(|p| enable(&p, app, *route, lib.as_deref()))
        }
        FlatpakCmd::Disable { app, user_dir } => {
            Paths::new(user_dir.as_deref()).and_then(|p| disable(&p, app, true).map(|_| ()))
        }
        FlatpakCmd::Status { app, user_dir } => {
            Paths::new(user_dir.as_deref()).and_then(|p| status(&p, app.as_deref()))
        }
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("pcsc-bridge: {e}");
            1
        }
    }
}

/// Where things are for this user.
#[derive(Debug, Clone)]
pub struct Paths {
    pub home: PathBuf,
    /// Flatpak's per-user installation.
    pub user_dir: PathBuf,
}

impl Paths {
    pub fn new(user_dir: Option<&Path>) -> Result<Paths, String> {
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .ok_or("HOME is not set: it says where ~/.var/app is")?;
        let user_dir = match user_dir {
            Some(d) => d.to_path_buf(),
            None => match std::env::var_os("FLATPAK_USER_DIR").filter(|v| !v.is_empty()) {
                Some(d) => PathBuf::from(d),
                None => std::env::var_os("XDG_DATA_HOME")
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
                    .unwrap_or_else(|| home.join(".local/share"))
                    .join("flatpak"),
            },
        };
        Ok(Paths { home, user_dir })
    }

    pub fn override_file(&self, app: &str) -> PathBuf {
        self.user_dir.join("overrides").join(app)
    }

    /// `~/.var/app/APP-ID/pcsc-bridge`: the sandbox sees it at the same path.
    pub fn data_dir(&self, app: &str) -> PathBuf {
        self.home.join(".var/app").join(app).join("pcsc-bridge")
    }

    fn state_file(&self, app: &str) -> PathBuf {
        self.data_dir(app).join("enabled")
    }

    fn flatpak(&self) -> Result<Command, String> {
        let bin = which("flatpak").ok_or(
            "the flatpak command is not installed (apt-get install flatpak / dnf install flatpak): \
             pcsc-bridge adds its override with `flatpak override --user`",
        )?;
        let mut c = Command::new(bin);
        c.env("FLATPAK_USER_DIR", &self.user_dir);
        Ok(c)
    }
}

fn read_keyfile(p: &Path) -> Result<KeyFile, String> {
    match std::fs::read_to_string(p) {
        Ok(t) => Ok(KeyFile::parse(&t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KeyFile::default()),
        Err(e) => Err(format!("{}: {e}", p.display())),
    }
}

/// Writes `data` to `dest` through a temporary file and a rename (an app running
/// with the old file mapped keeps it).
fn write_atomic(dest: &Path, data: &[u8], mode: u32) -> Result<(), String> {
    let dir = dest.parent().ok_or_else(|| format!("{}: no parent folder", dest.display()))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let r = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        std::fs::rename(&tmp, dest)
    })();
    if let Err(e) = r {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("writing {}: {e}", dest.display()));
    }
    Ok(())
}

fn multiarch() -> String {
    match std::env::consts::ARCH {
        "x86" => "i386-linux-gnu".into(),
        a => format!("{a}-linux-gnu"),
    }
}

/// The library to install: `--lib`, next to this program, or an installed copy.
pub fn find_library(explicit: Option<&Path>) -> Result<(PathBuf, String), String> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = explicit {
        return match bridge_version(p) {
            Ok(Some(v)) => Ok((p.to_path_buf(), v)),
            Ok(None) => Err(format!("{} is not pcsc-bridge's library (no pcsc-bridge note in it)", p.display())),
            Err(e) => Err(format!("--lib {}: {e}", p.display())),
        };
    }
    if let Some(dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) {
        candidates.push(dir.join(LIB_NAME));
        candidates.push(dir.join("../lib/pcsc-bridge").join(LIB_NAME));
    }
    let ma = multiarch();
    for d in [
        "/usr/local/lib/pcsc-bridge",
        "/usr/lib/pcsc-bridge",
        &format!("/usr/lib/{ma}/pcsc-bridge"),
        "/usr/local/lib",
        &format!("/usr/lib/{ma}"),
    ] {
        candidates.push(Path::new(d).join(LIB_NAME));
    }
    for c in &candidates {
        if let Ok(Some(v)) = bridge_version(c) {
            return Ok((c.clone(), v));
        }
    }
    Err(format!(
        "{LIB_NAME} not found next to this program or in the usual places; give it with --lib PATH \
         (build it: cargo build --release -p pcsc-bridge-interpose)"
    ))
}

/// usbpass to install beside the library: next to the library being installed, next to this
/// program, or on `PATH`.
fn find_usbpass(lib: &Path) -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(d) = lib.parent() {
        candidates.push(d.join(USBPASS_NAME));
    }
    if let Some(d) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) {
        candidates.push(d.join(USBPASS_NAME));
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join(USBPASS_NAME)));
    }
    candidates.into_iter().find(|c| c.is_file())
}

/// The app's own metadata and deployment, if installed (`flatpak info`).
struct AppInfo {
    location: PathBuf,
    metadata: KeyFile,
    runtime: Option<String>,
}

fn app_info(p: &Paths, app: &str) -> Option<AppInfo> {
    let out = p.flatpak().ok()?.args(["info", "--show-location", app]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let location = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let metadata = read_keyfile(&location.join("metadata")).ok()?;
    let runtime = metadata.get("Application", "runtime");
    Some(AppInfo { location, metadata, runtime })
}

/// libpcsclite.so.1 copies the app would load: in /app, then its runtime's /usr.
fn app_libraries(p: &Paths, info: &AppInfo) -> Vec<PathBuf> {
    let ma = multiarch();
    let mut v = Vec::new();
    for d in ["lib", "lib64", &format!("lib/{ma}")] {
        v.push(info.location.join("files").join(d).join("libpcsclite.so.1"));
    }
    if let Some(rt) = &info.runtime {
        let out = p
            .flatpak()
            .ok()
            .and_then(|mut c| c.args(["info", "--show-location", &format!("runtime/{rt}")]).output().ok());
        if let Some(o) = out.filter(|o| o.status.success()) {
            let loc = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
            for d in [format!("lib/{ma}"), "lib64".into(), "lib".into()] {
                v.push(loc.join("files").join(d).join("libpcsclite.so.1"));
            }
        }
    }
    v.into_iter().filter(|p| p.exists()).collect()
}

/// The usbpass proxy's socket as the app sees it. Flatpak exports `xdg-run/pcsc-bridge` at
/// its host path (`$XDG_RUNTIME_DIR/pcsc-bridge`, normally `/run/user/UID/pcsc-bridge`), the
/// folder where `usbpass proxy` listens by default.
fn proxy_socket_in_sandbox() -> String {
    super::proxy_socket_default().display().to_string()
}

fn split_preload(v: &str) -> Vec<String> {
    v.split([':', ' ']).filter(|e| !e.is_empty()).map(str::to_string).collect()
}

/// The override edits of one route, before they are applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Variable, the full new value, the value it replaces.
    pub env: Option<(String, String, Option<String>)>,
    /// What our part of the value is (LD_PRELOAD may hold other entries too).
    pub env_ours: String,
    pub add_sockets: Vec<String>,
    pub replaced_sockets: Vec<String>,
    pub add_filesystems: Vec<String>,
}

/// What `enable` changes in the override file `ovr`. `app_has_pcsc`: the app's
/// own metadata grants `--socket=pcsc`.
pub fn plan(route: Route, lib_in_sandbox: &str, ovr: &KeyFile, app_has_pcsc: bool) -> Plan {
    let mut p = Plan::default();
    let (var, ours) = match route {
        Route::Preload => ("LD_PRELOAD", lib_in_sandbox.to_string()),
        Route::Delegate => ("LIBPCSCLITE_DELEGATE", lib_in_sandbox.to_string()),
        Route::Proxy => ("PCSCLITE_CSOCK_NAME", proxy_socket_in_sandbox()),
    };
    let prev = ovr.get("Environment", var).filter(|v| !v.is_empty());
    let new = match (route, &prev) {
        (Route::Preload, Some(old)) => {
            let mut e = vec![ours.clone()];
            e.extend(split_preload(old).into_iter().filter(|x| *x != ours));
            e.join(":")
        }
        _ => ours.clone(),
    };
    p.env = Some((var.to_string(), new, prev));
    p.env_ours = ours;
    let sockets = ovr.list("Context", "sockets");
    match route {
        Route::Preload | Route::Delegate => {
            if !sockets.iter().any(|s| s == "pcsc") && (!app_has_pcsc || sockets.iter().any(|s| s == "!pcsc")) {
                p.add_sockets.push("pcsc".into());
                if sockets.iter().any(|s| s == "!pcsc") {
                    p.replaced_sockets.push("!pcsc".into());
                }
            }
        }
        Route::Proxy => {
            if !ovr.list("Context", "filesystems").iter().any(|f| f == PROXY_FS) {
                p.add_filesystems.push(PROXY_FS.into());
            }
            // --socket=pcsc would set PCSCLITE_CSOCK_NAME=/run/pcscd/pcscd.comm in the
            // sandbox after (over) the override's environment: turn it off.
            if !sockets.iter().any(|s| s == "!pcsc") {
                p.add_sockets.push("!pcsc".into());
                if sockets.iter().any(|s| s == "pcsc") {
                    p.replaced_sockets.push("pcsc".into());
                }
            }
        }
    }
    p
}

/// Applies a plan to a key file (what `flatpak override` does with the same arguments).
#[cfg(test)]
pub fn apply(ovr: &mut KeyFile, p: &Plan) {
    if let Some((k, v, _)) = &p.env {
        ovr.set("Environment", k, v);
    }
    for s in &p.add_sockets {
        if !p.replaced_sockets.iter().any(|r| ovr.list_replace("Context", "sockets", r, s)) {
            ovr.list_add("Context", "sockets", s);
        }
    }
    for f in &p.add_filesystems {
        ovr.list_add("Context", "filesystems", f);
    }
}

/// The record of what was added.
pub fn state_text(route: Route, lib: Option<&str>, p: &Plan) -> String {
    let mut k = KeyFile::default();
    k.set(STATE_GROUP, "route", route.name());
    if let Some(l) = lib {
        k.set(STATE_GROUP, "library", l);
    }
    if let Some((var, _, prev)) = &p.env {
        k.set(STATE_GROUP, "env", var);
        k.set(STATE_GROUP, "env-value", &p.env_ours);
        if let Some(prev) = prev {
            k.set(STATE_GROUP, "env-previous", prev);
        }
    }
    k.set_list(STATE_GROUP, "added-sockets", &p.add_sockets);
    k.set_list(STATE_GROUP, "replaced-sockets", &p.replaced_sockets);
    k.set_list(STATE_GROUP, "added-filesystems", &p.add_filesystems);
    k.render()
}

/// Removes from `ovr` what the state records (or, without a record, whatever
/// points into `data_dir` or at the proxy). Returns the changes made, in words.
pub fn undo(ovr: &mut KeyFile, state: Option<&KeyFile>, data_dir: &str) -> Vec<String> {
    let mut done = Vec::new();
    let in_ours = |v: &str| v.starts_with(&format!("{data_dir}/"));
    match state {
        Some(st) => {
            if let (Some(var), Some(ours)) = (st.get(STATE_GROUP, "env"), st.get(STATE_GROUP, "env-value")) {
                let prev = st.get(STATE_GROUP, "env-previous");
                if let Some(cur) = ovr.get("Environment", &var) {
                    if var == "LD_PRELOAD" {
                        let rest: Vec<String> =
                            split_preload(&cur).into_iter().filter(|e| *e != ours && !in_ours(e)).collect();
                        if rest.is_empty() {
                            ovr.remove("Environment", &var);
                            done.push(format!("removed {var}"));
                        } else {
                            ovr.set("Environment", &var, &rest.join(":"));
                            done.push(format!("{var}={}", rest.join(":")));
                        }
                    } else if cur == ours {
                        match prev {
                            Some(pv) => {
                                ovr.set("Environment", &var, &pv);
                                done.push(format!("{var}={pv} (as before)"));
                            }
                            None => {
                                ovr.remove("Environment", &var);
                                done.push(format!("removed {var}"));
                            }
                        }
                    } else {
                        done.push(format!("left {var}={cur} (changed since enable)"));
                    }
                }
            }
            // an added `pcsc` / `!pcsc` goes back to what it replaced, in place
            let replaced = st.list(STATE_GROUP, "replaced-sockets");
            for s in st.list(STATE_GROUP, "added-sockets") {
                let back = replaced.iter().find(|r| r.trim_start_matches('!') == s.trim_start_matches('!'));
                match back {
                    Some(r) if ovr.list_replace("Context", "sockets", &s, r) => {
                        done.push(format!("socket {s} back to {r}"))
                    }
                    _ if ovr.list_remove("Context", "sockets", &s) => done.push(format!("removed socket {s}")),
                    _ => {}
                }
            }
            for f in st.list(STATE_GROUP, "added-filesystems") {
                if ovr.list_remove("Context", "filesystems", &f) {
                    done.push(format!("removed filesystem {f}"));
                }
            }
        }
        None => {
            if let Some(cur) = ovr.get("Environment", "LD_PRELOAD") {
                let all = split_preload(&cur);
                let rest: Vec<String> = all.iter().filter(|e| !in_ours(e)).cloned().collect();
                if rest.len() != all.len() {
                    if rest.is_empty() {
                        ovr.remove("Environment", "LD_PRELOAD");
                    } else {
                        ovr.set("Environment", "LD_PRELOAD", &rest.join(":"));
                    }
                    done.push("removed pcsc-bridge from LD_PRELOAD".into());
                }
            }
            if ovr.get("Environment", "LIBPCSCLITE_DELEGATE").is_some_and(|v| in_ours(&v)) {
                ovr.remove("Environment", "LIBPCSCLITE_DELEGATE");
                done.push("removed LIBPCSCLITE_DELEGATE".into());
            }
            if ovr.get("Environment", "PCSCLITE_CSOCK_NAME").is_some_and(|v| v.ends_with("/pcsc-bridge/pcscd.comm")) {
                ovr.remove("Environment", "PCSCLITE_CSOCK_NAME");
                done.push("removed PCSCLITE_CSOCK_NAME".into());
            }
            if ovr.list_remove("Context", "filesystems", PROXY_FS) {
                done.push(format!("removed filesystem {PROXY_FS}"));
            }
        }
    }
    done
}

fn copy_into(src: &Path, dest: &Path, mode: u32) -> Result<(), String> {
    let data = std::fs::read(src).map_err(|e| format!("{}: {e}", src.display()))?;
    write_atomic(dest, &data, mode)
}

fn enable(p: &Paths, app: &str, route: Route, lib: Option<&Path>) -> Result<(), String> {
    let mut flatpak = p.flatpak()?;
    if p.state_file(app).exists() {
        disable(p, app, false)?;
    }
    let info = app_info(p, app);
    if info.is_none() {
        eprintln!(
            "pcsc-bridge: note: {app} is not installed (flatpak info found nothing); the override applies once it is"
        );
    }
    let dir = p.data_dir(app);
    let dir_s = dir.display().to_string();
    let mut lib_dest = None;
    if route != Route::Proxy {
        let (src, ver) = find_library(lib)?;
        let dest = dir.join(LIB_NAME);
        copy_into(&src, &dest, 0o755)?;
        println!("copied {} ({ver}) to {}", src.display(), dest.display());
        lib_dest = Some(dest.display().to_string());
        match find_usbpass(&src) {
            Some(u) => match copy_into(&u, &dir.join(USBPASS_NAME), 0o755) {
                Ok(()) => println!(
                    "copied {} to {} (started by the library when the app sees USB readers and no pcscd)",
                    u.display(),
                    dir.display()
                ),
                Err(e) => eprintln!("pcsc-bridge: note: {e} (no USB fallback inside the sandbox)"),
            },
            None => eprintln!(
                "pcsc-bridge: note: usbpass not found beside {} or on PATH: no USB fallback inside the sandbox",
                src.display()
            ),
        }
    } else {
        let host_proxy = super::proxy_socket_default();
        // Flatpak exports the folder only if it exists when the app starts: make it now, so
        // the proxy may start (and restart) at any time.
        if let Some(d) = host_proxy.parent() {
            use std::os::unix::fs::DirBuilderExt;
            let _ = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(d);
        }
        if !host_proxy.exists() {
            eprintln!(
                "pcsc-bridge: note: the usbpass proxy is not running (no {}): start `usbpass proxy` before the app",
                host_proxy.display()
            );
        }
    }
    // this tool too, so `doctor` can run inside the sandbox
    if let Ok(exe) = std::env::current_exe() {
        if let Err(e) = copy_into(&exe, &dir.join(BIN_NAME), 0o755) {
            eprintln!("pcsc-bridge: note: {e} (doctor will not be available inside the sandbox)");
        }
    }
    if route == Route::Delegate {
        if let Some(i) = &info {
            let libs = app_libraries(p, i);
            let dispatcher = libs
                .iter()
                .any(|l| std::fs::read(l).map(|d| super::contains(&d, b"LIBPCSCLITE_DELEGATE")).unwrap_or(false));
            if !libs.is_empty() && !dispatcher {
                eprintln!(
                    "pcsc-bridge: warning: {app}'s libpcsclite ({}) predates pcsc-lite 2.1.0 and ignores LIBPCSCLITE_DELEGATE: \
                     use --route preload",
                    libs[0].display()
                );
            }
        }
    }
    let ovr_path = p.override_file(app);
    let ovr = read_keyfile(&ovr_path)?;
    let app_has_pcsc = info.as_ref().is_some_and(|i| i.metadata.list("Context", "sockets").iter().any(|s| s == "pcsc"));
    let lib_in_sandbox = lib_dest.clone().unwrap_or_default();
    let plan = plan(route, &lib_in_sandbox, &ovr, app_has_pcsc);

    let mut args: Vec<String> = vec!["override".into(), "--user".into(), app.into()];
    if let Some((k, v, _)) = &plan.env {
        args.push(format!("--env={k}={v}"));
    }
    for s in &plan.add_sockets {
        match s.strip_prefix('!') {
            Some(n) => args.push(format!("--nosocket={n}")),
            None => args.push(format!("--socket={s}")),
        }
    }
    for f in &plan.add_filesystems {
        args.push(format!("--filesystem={f}"));
    }
    let out = flatpak.args(&args).output().map_err(|e| format!("running flatpak: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`flatpak {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    write_atomic(&p.state_file(app), state_text(route, lib_dest.as_deref(), &plan).as_bytes(), 0o644)?;
    println!("enabled pcsc-bridge for {app} (route {}): flatpak {}", route.name(), args.join(" "));
    if route == Route::Proxy {
        println!("the app's own libpcsclite now talks to the usbpass proxy ({})", proxy_socket_in_sandbox());
    }
    println!("restart the app if it is running; check inside it with:");
    println!("  flatpak run --command={dir_s}/{BIN_NAME} {app} doctor");
    Ok(())
}

/// Undoes `enable`. Returns whether anything was found to undo.
fn disable(p: &Paths, app: &str, verbose: bool) -> Result<bool, String> {
    let dir = p.data_dir(app);
    let state_path = p.state_file(app);
    let state = match std::fs::read_to_string(&state_path) {
        Ok(t) => Some(KeyFile::parse(&t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("{}: {e}", state_path.display())),
    };
    let ovr_path = p.override_file(app);
    let original = std::fs::read_to_string(&ovr_path).ok();
    let mut ovr = original.as_deref().map(KeyFile::parse).unwrap_or_default();
    let done = undo(&mut ovr, state.as_ref(), &dir.display().to_string());
    if original.is_some() {
        let text = ovr.render();
        if ovr.is_empty() {
            std::fs::remove_file(&ovr_path).map_err(|e| format!("{}: {e}", ovr_path.display()))?;
        } else if Some(text.as_str()) != original.as_deref() {
            write_atomic(&ovr_path, text.as_bytes(), 0o644)?;
        }
    }
    let mut removed = Vec::new();
    for f in [LIB_NAME, BIN_NAME, USBPASS_NAME, "enabled"] {
        if std::fs::remove_file(dir.join(f)).is_ok() {
            removed.push(f);
        }
    }
    let _ = std::fs::remove_dir(&dir); // only if empty
    let found = state.is_some() || !done.is_empty() || !removed.is_empty();
    if verbose {
        if found {
            println!(
                "disabled pcsc-bridge for {app}: {}",
                if done.is_empty() { "no override entries were left to remove".to_string() } else { done.join(", ") }
            );
            if !removed.is_empty() {
                println!("removed {} from {}", removed.join(", "), dir.display());
            }
            if ovr.is_empty() {
                println!("{} has no overrides left", app);
            } else {
                println!("overrides left in {}:\n{}", ovr_path.display(), ovr.render().trim_end());
            }
        } else {
            println!("pcsc-bridge was not enabled for {app}: nothing to do");
        }
    }
    Ok(found)
}

fn status_one(p: &Paths, app: &str) -> Result<(), String> {
    let dir = p.data_dir(app);
    let ovr = read_keyfile(&p.override_file(app))?;
    let state = std::fs::read_to_string(p.state_file(app)).ok().map(|t| KeyFile::parse(&t));
    let Some(st) = state else {
        let mut probe = ovr.clone();
        let traces = undo(&mut probe, None, &dir.display().to_string());
        if traces.is_empty() {
            println!("{app}: not enabled");
        } else {
            println!("{app}: not enabled by this tool, but its overrides mention pcsc-bridge ({})", traces.join(", "));
            println!("  `pcsc-bridge flatpak disable {app}` removes them");
        }
        return Ok(());
    };
    let route = st.get(STATE_GROUP, "route").unwrap_or_else(|| "?".into());
    println!("{app}: enabled (route {route})");
    let mut broken = false;
    if let Some(lib) = st.get(STATE_GROUP, "library") {
        match bridge_version(Path::new(&lib)) {
            Ok(Some(v)) => println!("  library: {lib} ({v})"),
            Ok(None) => {
                broken = true;
                println!("  library: {lib} is not pcsc-bridge's library any more")
            }
            Err(e) => {
                broken = true;
                println!("  library: {lib}: {e}")
            }
        }
    }
    if let (Some(var), Some(ours)) = (st.get(STATE_GROUP, "env"), st.get(STATE_GROUP, "env-value")) {
        match ovr.get("Environment", &var) {
            Some(cur) if cur == ours || (var == "LD_PRELOAD" && split_preload(&cur).contains(&ours)) => {
                println!("  override: {var}={cur}")
            }
            Some(cur) => {
                broken = true;
                println!("  override: {var}={cur} (changed: pcsc-bridge set {ours})")
            }
            None => {
                broken = true;
                println!("  override: {var} is missing (pcsc-bridge set {ours})")
            }
        }
    }
    for s in st.list(STATE_GROUP, "added-sockets") {
        let present = ovr.list("Context", "sockets").contains(&s);
        broken |= !present;
        println!("  override: socket {s}{}", if present { "" } else { " (missing)" });
    }
    for f in st.list(STATE_GROUP, "added-filesystems") {
        let present = ovr.list("Context", "filesystems").contains(&f);
        broken |= !present;
        println!("  override: filesystem {f}{}", if present { "" } else { " (missing)" });
    }
    if dir.join(BIN_NAME).exists() {
        println!("  doctor: flatpak run --command={}/{BIN_NAME} {app} doctor", dir.display());
    }
    if broken {
        println!(
            "  something changed since enable: `pcsc-bridge flatpak enable {app} --route {route}` sets it up again"
        );
    }
    Ok(())
}

fn status(p: &Paths, app: Option<&str>) -> Result<(), String> {
    if let Some(a) = app {
        return status_one(p, a);
    }
    let mut apps: Vec<String> = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p.home.join(".var/app")) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if valid_app_id(&name) && e.path().join("pcsc-bridge/enabled").exists() {
                apps.push(name);
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir(p.user_dir.join("overrides")) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !valid_app_id(&name) || apps.contains(&name) {
                continue;
            }
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            if text.contains("pcsc-bridge") || text.contains("pcscbridge") {
                apps.push(name);
            }
        }
    }
    apps.sort();
    if apps.is_empty() {
        println!("pcsc-bridge is not enabled for any app (overrides in {})", p.user_dir.join("overrides").display());
    }
    for a in apps {
        status_one(p, &a)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIB: &str = "/home/u/.var/app/org.example.App/pcsc-bridge/libpcscbridge.so";
    const DIR: &str = "/home/u/.var/app/org.example.App/pcsc-bridge";

    fn enable_then_disable(before: &str, route: Route, app_has_pcsc: bool) -> (String, String) {
        let mut k = KeyFile::parse(before);
        let p = plan(route, LIB, &k, app_has_pcsc);
        apply(&mut k, &p);
        let enabled = k.render();
        let st = KeyFile::parse(&state_text(route, Some(LIB), &p));
        undo(&mut k, Some(&st), DIR);
        (enabled, k.render())
    }

    #[test]
    fn app_ids() {
        assert!(valid_app_id("org.example.App"));
        assert!(valid_app_id("com.yubico.yubioath"));
        assert!(valid_app_id("org.keepassxc.KeePassXC"));
        assert!(valid_app_id("io.github.some-app.Name_2"));
        assert!(!valid_app_id("example.App"));
        assert!(!valid_app_id("org..App"));
        assert!(!valid_app_id("org.example/../x"));
        assert!(!valid_app_id("../../etc"));
        assert!(!valid_app_id("org.example.-x"));
        assert!(!valid_app_id(""));
    }

    #[test]
    fn preload_on_an_empty_override() {
        let (on, off) = enable_then_disable("", Route::Preload, false);
        assert_eq!(on, format!("[Environment]\nLD_PRELOAD={LIB}\n\n[Context]\nsockets=pcsc;\n"));
        assert_eq!(off, "");
    }

    #[test]
    fn preload_keeps_what_was_there() {
        let before = "[Context]\nsockets=x11;\nfilesystems=home;\n\n[Environment]\nLD_PRELOAD=/other.so\nFOO=bar\n";
        let (on, off) = enable_then_disable(before, Route::Preload, false);
        assert!(on.contains(&format!("LD_PRELOAD={LIB}:/other.so\n")), "{on}");
        assert!(on.contains("sockets=x11;pcsc;\n"), "{on}");
        assert_eq!(off, before);
    }

    #[test]
    fn socket_not_added_when_present() {
        let before = "[Context]\nsockets=pcsc;\n";
        let mut k = KeyFile::parse(before);
        let p = plan(Route::Preload, LIB, &k, false);
        assert!(p.add_sockets.is_empty());
        apply(&mut k, &p);
        let st = KeyFile::parse(&state_text(Route::Preload, Some(LIB), &p));
        undo(&mut k, Some(&st), DIR);
        assert_eq!(k.render(), before); // the user's socket stays
                                        // the app's metadata has it: nothing to add either
        assert!(plan(Route::Preload, LIB, &KeyFile::default(), true).add_sockets.is_empty());
    }

    #[test]
    fn nosocket_is_replaced_and_restored() {
        let before = "[Context]\nsockets=!pcsc;\n";
        let (on, off) = enable_then_disable(before, Route::Delegate, true);
        assert!(on.contains("sockets=pcsc;\n"), "{on}");
        assert!(on.contains(&format!("LIBPCSCLITE_DELEGATE={LIB}\n")), "{on}");
        assert_eq!(off, before);
    }

    #[test]
    fn delegate_restores_a_previous_value() {
        let before = "[Environment]\nLIBPCSCLITE_DELEGATE=/app/lib/other.so\n";
        let (on, off) = enable_then_disable(before, Route::Delegate, true);
        assert_eq!(on, format!("[Environment]\nLIBPCSCLITE_DELEGATE={LIB}\n"));
        assert_eq!(off, before);
    }

    #[test]
    fn proxy_route() {
        let (on, off) = enable_then_disable("", Route::Proxy, true);
        let sock = super::super::proxy_socket_default().display().to_string();
        assert!(sock.ends_with("/pcsc-bridge/pcscd.comm"));
        assert_eq!(
            on,
            format!("[Environment]\nPCSCLITE_CSOCK_NAME={sock}\n\n[Context]\nsockets=!pcsc;\nfilesystems=xdg-run/pcsc-bridge;\n")
        );
        assert_eq!(off, "");
        // a user's --socket=pcsc is switched off, then back on
        let before = "[Context]\nsockets=pcsc;x11;\n";
        let (on, off) = enable_then_disable(before, Route::Proxy, true);
        assert!(on.contains("sockets=!pcsc;x11;\n"), "{on}");
        assert_eq!(off, before);
    }

    #[test]
    fn user_changes_after_enable_survive() {
        let mut k = KeyFile::default();
        let p = plan(Route::Preload, LIB, &k, true);
        apply(&mut k, &p);
        // the user adds things afterwards
        k.set("Environment", "LD_PRELOAD", &format!("{LIB}:/later.so"));
        k.set("Environment", "X", "1");
        let st = KeyFile::parse(&state_text(Route::Preload, Some(LIB), &p));
        undo(&mut k, Some(&st), DIR);
        assert_eq!(k.render(), "[Environment]\nLD_PRELOAD=/later.so\nX=1\n");
    }

    #[test]
    fn undo_without_a_record() {
        let mut k = KeyFile::parse(&format!(
            "[Environment]\nLD_PRELOAD={LIB}\nLIBPCSCLITE_DELEGATE={LIB}\nPCSCLITE_CSOCK_NAME=/run/user/1000/pcsc-bridge/pcscd.comm\nKEEP=1\n\n[Context]\nsockets=pcsc;\nfilesystems=xdg-run/pcsc-bridge;home;\n"
        ));
        let done = undo(&mut k, None, DIR);
        assert_eq!(done.len(), 4, "{done:?}");
        assert_eq!(k.render(), "[Environment]\nKEEP=1\n\n[Context]\nsockets=pcsc;\nfilesystems=home;\n");
    }

    #[test]
    fn paths_follow_the_environment() {
        let p = Paths { home: "/h".into(), user_dir: "/u".into() };
        assert_eq!(p.override_file("org.a.B"), Path::new("/u/overrides/org.a.B"));
        assert_eq!(p.data_dir("org.a.B"), Path::new("/h/.var/app/org.a.B/pcsc-bridge"));
        let q = Paths::new(Some(Path::new("/x"))).unwrap();
        assert_eq!(q.user_dir, Path::new("/x"));
    }
}
