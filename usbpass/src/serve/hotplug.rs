//! Reader hot-plug: an inotify watch on `/dev/bus/usb` (and each bus directory in it) triggers a
//! rescan when device nodes come, go, or change permissions (udev grants access after creating
//! the node). This works inside Flatpak sandboxes given `--device=all` or `--device=usb`, where
//! libusb's own hot-plug monitor (udev or netlink) sees nothing. A slow periodic rescan backs it
//! up (and retries readers another program held), and is all there is when inotify cannot be
//! used (no `/dev/bus/usb` yet, no inotify).

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Weak;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};

use super::UsbBackend;

/// Where usbfs device nodes live.
pub const USB_DEV_ROOT: &str = "/dev/bus/usb";
/// How long to let a burst of events settle before rescanning.
const SETTLE: Duration = Duration::from_millis(250);

/// Starts the watcher thread; it ends when the backend is dropped or shut down.
pub fn spawn(backend: Weak<UsbBackend>, root: PathBuf, periodic: Duration) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("usbpass-hotplug".into())
        .spawn(move || watch(backend, &root, periodic))
        .map(|_| ())
}

struct Watch {
    fd: OwnedFd,
    root_wd: i32,
}

fn flags() -> WatchFlags {
    WatchFlags::CREATE
        | WatchFlags::DELETE
        | WatchFlags::ATTRIB
        | WatchFlags::MOVED_TO
        | WatchFlags::MOVED_FROM
        | WatchFlags::DELETE_SELF
}

/// Watches `root` and its subdirectories.
fn setup(root: &Path) -> rustix::io::Result<Watch> {
    let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
    let root_wd = inotify::add_watch(&fd, root, flags() | WatchFlags::ONLYDIR)?;
    if let Ok(dir) = std::fs::read_dir(root) {
        for e in dir.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = inotify::add_watch(&fd, e.path(), flags() | WatchFlags::ONLYDIR);
            }
        }
    }
    Ok(Watch { fd, root_wd })
}

/// Reads every pending event; new bus directories get a watch. Returns whether anything came,
/// and whether the root itself went away.
fn drain(w: &Watch, root: &Path) -> (bool, bool) {
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
    let mut reader = inotify::Reader::new(w.fd.as_fd(), &mut buf);
    let (mut any, mut root_gone) = (false, false);
    let mut new_dirs = Vec::new();
    while let Ok(ev) = reader.next() {
        any = true;
        let f = ev.events();
        if ev.wd() == w.root_wd {
            if f.intersects(ReadFlags::DELETE_SELF | ReadFlags::IGNORED) {
                root_gone = true;
            }
            if f.contains(ReadFlags::ISDIR) && f.intersects(ReadFlags::CREATE | ReadFlags::MOVED_TO) {
                if let Some(name) = ev.file_name() {
                    new_dirs.push(root.join(name.to_string_lossy().as_ref()));
                }
            }
        }
    }
    for d in new_dirs {
        let _ = inotify::add_watch(&w.fd, &d, flags() | WatchFlags::ONLYDIR);
    }
    (any, root_gone)
}

fn wait_readable(fd: &OwnedFd, timeout: Duration) -> bool {
    let mut fds = [PollFd::new(fd, PollFlags::IN)];
    let ts = Timespec { tv_sec: timeout.as_secs() as _, tv_nsec: timeout.subsec_nanos() as _ };
    matches!(poll(&mut fds, Some(&ts)), Ok(n) if n > 0)
}

fn watch(backend: Weak<UsbBackend>, root: &Path, periodic: Duration) {
    let mut w: Option<Watch> = None;
    let mut warned = false;
    let mut last_scan = Instant::now();
    loop {
        if w.is_none() {
            match setup(root) {
                Ok(x) => {
                    tracing::debug!(root = %root.display(), "watching for USB devices");
                    w = Some(x);
                    warned = false;
                }
                Err(e) => {
                    if !warned {
                        tracing::info!(root = %root.display(), "cannot watch for USB devices ({e}); rescanning every {} s", periodic.as_secs());
                        warned = true;
                    }
                }
            }
        }
        // Wait for an event, or until the next periodic rescan.
        let remaining = periodic.saturating_sub(last_scan.elapsed()).max(Duration::from_millis(10));
        let mut rescan = false;
        match &w {
            Some(x) => {
                if wait_readable(&x.fd, remaining.min(Duration::from_secs(1))) {
                    let (any, gone) = drain(x, root);
                    if any {
                        // Let udev finish (permissions) and the burst end.
                        std::thread::sleep(SETTLE);
                        let (_, gone2) = drain(x, root);
                        rescan = true;
                        if gone || gone2 {
                            w = None;
                        }
                    }
                }
            }
            None => std::thread::sleep(remaining.min(Duration::from_secs(1))),
        }
        let Some(b) = backend.upgrade() else { return };
        if b.is_stopped() {
            return;
        }
        if rescan || last_scan.elapsed() >= periodic {
            last_scan = Instant::now();
            b.rescan();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_new_bus_dirs_and_nodes() {
        let root = std::env::temp_dir().join(format!("usbpass-hotplug-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("001")).unwrap();
        let w = setup(&root).unwrap();
        assert_eq!(drain(&w, &root), (false, false));
        std::fs::write(root.join("001/002"), b"").unwrap();
        assert!(wait_readable(&w.fd, Duration::from_secs(2)));
        assert_eq!(drain(&w, &root), (true, false));
        // A new bus directory is watched too.
        std::fs::create_dir(root.join("002")).unwrap();
        assert!(wait_readable(&w.fd, Duration::from_secs(2)));
        assert!(drain(&w, &root).0);
        std::fs::write(root.join("002/003"), b"").unwrap();
        assert!(wait_readable(&w.fd, Duration::from_secs(2)));
        assert!(drain(&w, &root).0);
        std::fs::remove_dir_all(&root).unwrap();
        assert!(wait_readable(&w.fd, Duration::from_secs(2)));
        assert!(drain(&w, &root).1);
    }
}
