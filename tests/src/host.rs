//! Harness for integration tests: a private test host (real pcscd in its own mount namespace, a
//! vpcd reader and the virtual card) driven through `scripts/testhost.sh`.
//!
//! ```no_run
//! use pcsc_bridge_tests::host::{skip_reason, TestHost};
//! if let Some(why) = skip_reason() {
//!     println!("SKIP: {why}");
//!     return;
//! }
//! let host = TestHost::up().unwrap();
//! // point a client at host.socket (PCSCLITE_CSOCK_NAME), use reader host.reader
//! host.card_remove().unwrap();
//! // dropping `host` runs `testhost.sh down`
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The repository root (parent of this crate's folder).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("crate folder has a parent").to_path_buf()
}

/// Cargo's target folder (`CARGO_TARGET_DIR`, relative to the repository root
/// when relative, else `target/`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_absolute() { p } else { repo_root().join(p) })
        .unwrap_or_else(|| repo_root().join("target"))
}

/// Path of `scripts/testhost.sh`.
pub fn script() -> PathBuf {
    repo_root().join("scripts/testhost.sh")
}

/// Why a test host cannot be brought up on this machine, if it cannot.
pub fn skip_reason() -> Option<String> {
    if unsafe { libc::geteuid() } != 0 {
        return Some("test hosts need root (pcscd runs in its own mount namespace)".into());
    }
    if !Path::new("/usr/lib/pcsc/drivers/serial/libifdvpcd.so").exists() {
        return Some("vpcd driver missing (apt-get install vsmartcard-vpcd)".into());
    }
    let pcscd = std::env::var("PCSCD").unwrap_or_else(|_| "pcscd".into());
    let found = if pcscd.contains('/') {
        Path::new(&pcscd).exists()
    } else {
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(&pcscd).exists())).unwrap_or(false)
            || Path::new("/usr/sbin").join(&pcscd).exists()
    };
    if !found {
        return Some(format!("pcscd not found ({pcscd}; apt-get install pcscd)"));
    }
    if Command::new("unshare").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        return Some("unshare (util-linux) not found".into());
    }
    if !script().exists() {
        return Some(format!("{} missing", script().display()));
    }
    None
}

/// A running test host; `Drop` tears it down.
#[derive(Debug)]
pub struct TestHost {
    /// The host's private folder (logs: pcscd.log, vcard.log).
    pub dir: PathBuf,
    /// pcscd's socket: give it to clients as `PCSCLITE_CSOCK_NAME`.
    pub socket: PathBuf,
    /// Name of the reader with the card ("Virtual PCD 00 00").
    pub reader: String,
    /// vpcd's TCP port (the card's reader; PORT+1 is the second, empty slot).
    pub port: u16,
    /// The card's control socket.
    pub card_ctl: PathBuf,
}

/// Options of [`TestHost::up_with`].
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// Start with the card absent (`--no-card`).
    pub no_card: bool,
    /// pcscd binary to run (`--pcscd`).
    pub pcscd: Option<PathBuf>,
}

fn run_script(args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new("bash");
    cmd.arg(script()).args(args).current_dir(repo_root()).stdin(Stdio::null());
    // The test binary's own vcard, if cargo built it alongside (integration tests get this).
    if std::env::var_os("VCARD").is_none() {
        if let Some(p) = option_env!("CARGO_BIN_EXE_vcard") {
            cmd.env("VCARD", p);
        }
    }
    let out = cmd.output().map_err(|e| format!("testhost.sh {}: {e}", args.join(" ")))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "testhost.sh {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            stdout
        ));
    }
    Ok(stdout)
}

impl TestHost {
    /// Bring up a host with the card inserted.
    pub fn up() -> Result<TestHost, String> {
        Self::up_with(&Options::default())
    }

    /// Bring up a host with options.
    pub fn up_with(opts: &Options) -> Result<TestHost, String> {
        let mut args: Vec<String> = vec!["up".into()];
        if opts.no_card {
            args.push("--no-card".into());
        }
        if let Some(p) = &opts.pcscd {
            args.push("--pcscd".into());
            args.push(p.display().to_string());
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run_script(&argv)?;
        let get = |k: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
                .map(str::to_string)
                .ok_or_else(|| format!("testhost.sh up: no {k}= line in {out:?}"))
        };
        let host = TestHost {
            dir: get("DIR")?.into(),
            socket: get("SOCKET")?.into(),
            reader: get("READER")?,
            port: get("PORT")?.parse().map_err(|e| format!("PORT: {e}"))?,
            card_ctl: get("CARD_CTL")?.into(),
        };
        Ok(host)
    }

    fn dir_str(&self) -> String {
        self.dir.display().to_string()
    }

    /// The card's state as its control socket reports it: "present" or "absent".
    pub fn card_status(&self) -> Result<String, String> {
        Ok(run_script(&["card", &self.dir_str(), "status"])?.trim().to_string())
    }

    /// Insert the card (connect it to vpcd; pcscd notices within ~0.5 s).
    pub fn card_insert(&self) -> Result<(), String> {
        run_script(&["card", &self.dir_str(), "insert"]).map(drop)
    }

    /// Remove the card (close its connection to vpcd; pcscd notices within ~0.5 s).
    pub fn card_remove(&self) -> Result<(), String> {
        run_script(&["card", &self.dir_str(), "remove"]).map(drop)
    }

    /// Make a second vpcd reader pair appear ("Virtual PCD 01 00" / "01 01").
    ///
    /// Err starting with "unsupported:" when this pcscd does not re-read its reader configuration
    /// on SIGUSR1 (Debian's libudev builds): tests should print `SKIP: ...` then.
    pub fn reader_add(&self) -> Result<(), String> {
        Self::reader_op(&["reader", &self.dir_str(), "add"])
    }

    /// Make the second reader pair disappear (same "unsupported:" convention).
    pub fn reader_remove(&self) -> Result<(), String> {
        Self::reader_op(&["reader", &self.dir_str(), "remove"])
    }

    fn reader_op(args: &[&str]) -> Result<(), String> {
        match run_script(args) {
            Ok(_) => Ok(()),
            Err(e) if e.contains("unsupported:") => Err(format!("unsupported: {e}")),
            Err(e) => Err(e),
        }
    }

    /// Bring the readers back (`true`) or take them all away (`false`) by
    /// restarting pcscd with the changed configuration: works with every build.
    pub fn reader_change_by_restart(&self, add: bool) -> Result<(), String> {
        let op = if add { "add" } else { "remove" };
        run_script(&["reader", &self.dir_str(), op, "--restart"]).map(drop)
    }

    /// Stop and start pcscd (same socket path); returns when the card is seen again.
    pub fn restart_pcscd(&self) -> Result<(), String> {
        run_script(&["restart-pcscd", &self.dir_str()]).map(drop)
    }

    /// pcscd's log so far.
    pub fn pcscd_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pcscd.log")).unwrap_or_default()
    }

    /// The card's log so far.
    pub fn vcard_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("vcard.log")).unwrap_or_default()
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        if let Err(e) = run_script(&["down", &self.dir_str()]) {
            eprintln!("TestHost drop: {e}");
        }
    }
}
