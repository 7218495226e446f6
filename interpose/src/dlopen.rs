//! In-process interception of `dlopen` for PC/SC library names (the LD_PRELOAD
//! route).
//!
//! Apps such as OpenSC and pyscard `dlopen` their PC/SC library and call through
//! `dlsym(handle, …)`, which looks only in that library. `dlopen("libpcsclite.so.1")`
//! already lands on us when we are preloaded (our SONAME is that name), but a full
//! path (`/app/lib/libpcsclite.so.1`), the development name `libpcsclite.so` or
//! 2.1+'s `libpcsclite_real.so.1` would load the runtime's own library. Our
//! exported `dlopen` sends those names to this library instead and passes every
//! other call through untouched.
//!
//! glibc's `dlopen` looks at its caller's return address (for the caller's
//! RUNPATH, `$ORIGIN` and namespace), so the pass-through must not become the
//! caller: on x86_64 the export is a small assembly trampoline that asks
//! [`pcsc_bridge_dlopen_filter`] which name to use and then *jumps* to the real
//! `dlopen`, leaving the application's return address in place. Elsewhere there
//! is no interception (the SONAME route still works).

use std::ffi::{c_char, c_void, CStr};
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// The names that mean "the PC/SC client library" (compared on the last path
/// component).
pub fn is_pcsclite_name(name: &[u8]) -> bool {
    let base = match name.iter().rposition(|&b| b == b'/') {
        Some(i) => &name[i + 1..],
        None => name,
    };
    base == b"libpcsclite.so"
        || base == b"libpcsclite_real.so.1"
        || (base.starts_with(b"libpcsclite.so.") && base[15..].iter().all(|b| b.is_ascii_digit() || *b == b'.'))
}

/// The real `dlopen`, resolved on first use (read by the trampoline).
#[no_mangle]
#[used]
static PCSC_BRIDGE_REAL_DLOPEN: AtomicUsize = AtomicUsize::new(0);

static SELF_PATH: AtomicPtr<c_char> = AtomicPtr::new(std::ptr::null_mut());

fn resolve_real() -> usize {
    let cur = PCSC_BRIDGE_REAL_DLOPEN.load(Ordering::Acquire);
    if cur != 0 {
        return cur;
    }
    // SAFETY: dlsym with a NUL-terminated name; RTLD_NEXT finds the next
    // definition after this library (libc's or libdl's).
    let p = unsafe { libc::dlsym(libc::RTLD_NEXT, c"dlopen".as_ptr()) } as usize;
    if p != 0 {
        PCSC_BRIDGE_REAL_DLOPEN.store(p, Ordering::Release);
    }
    p
}

/// This library's own file name, as the dynamic loader knows it.
fn self_path() -> *const c_char {
    let cur = SELF_PATH.load(Ordering::Acquire);
    if !cur.is_null() {
        return cur;
    }
    // SAFETY: Dl_info is plain data (pointers and integers): all zeroes is valid.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr writes into `info`; the address is a function of ours.
    let ok = unsafe { libc::dladdr(is_pcsclite_name as *const c_void, &mut info) };
    if ok == 0 || info.dli_fname.is_null() {
        return std::ptr::null();
    }
    // dli_fname points into the loader's link map, which lives as long as we
    // are mapped (we are linked -z nodelete).
    SELF_PATH.store(info.dli_fname as *mut c_char, Ordering::Release);
    info.dli_fname
}

/// Called by the trampoline with `dlopen`'s file name; returns the file name to
/// pass on. Resolves the real `dlopen` first, so the trampoline can jump to it.
/// Never unwinds.
///
/// # Safety
/// `filename` is NULL or a NUL-terminated string (`dlopen`'s contract).
#[no_mangle]
pub unsafe extern "C" fn pcsc_bridge_dlopen_filter(filename: *const c_char) -> *const c_char {
    let r = std::panic::catch_unwind(|| {
        resolve_real();
        if filename.is_null() {
            return filename;
        }
        // SAFETY: dlopen's contract: a NUL-terminated string.
        let name = unsafe { CStr::from_ptr(filename) }.to_bytes();
        if !is_pcsclite_name(name) {
            return filename;
        }
        let me = self_path();
        if me.is_null() {
            return filename;
        }
        tracing::debug!(name = %String::from_utf8_lossy(name), "dlopen of a PC/SC library sent to pcsc-bridge");
        me
    });
    r.unwrap_or(filename)
}

// The exported `dlopen`: keep the caller's return address for the real one.
// Entry: rsp = 8 mod 16; after one push it is 0 mod 16, as a call needs.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
std::arch::global_asm!(
    ".globl dlopen",
    ".type dlopen,@function",
    ".hidden pcsc_bridge_dlopen_filter",
    ".hidden PCSC_BRIDGE_REAL_DLOPEN",
    "dlopen:",
    "    push rsi",
    "    call pcsc_bridge_dlopen_filter",
    "    mov rdi, rax",
    "    pop rsi",
    "    mov rax, qword ptr [rip + PCSC_BRIDGE_REAL_DLOPEN]",
    "    test rax, rax",
    "    jz 2f",
    "    jmp rax",
    "2:",
    "    xor eax, eax",
    "    ret",
    ".size dlopen, .-dlopen",
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcsc_names() {
        assert!(is_pcsclite_name(b"libpcsclite.so.1"));
        assert!(is_pcsclite_name(b"libpcsclite.so"));
        assert!(is_pcsclite_name(b"/app/lib/libpcsclite.so.1"));
        assert!(is_pcsclite_name(b"/usr/lib/x86_64-linux-gnu/libpcsclite.so.1.0.0"));
        assert!(is_pcsclite_name(b"libpcsclite_real.so.1"));
        assert!(!is_pcsclite_name(b"libpcsclite.so.1.bak"));
        assert!(!is_pcsclite_name(b"libpcsclite-spy.so.1"));
        assert!(!is_pcsclite_name(b"libc.so.6"));
        assert!(!is_pcsclite_name(b""));
    }

    #[test]
    fn filter_passes_other_names_through() {
        let n = c"libm.so.6";
        // SAFETY: a NUL-terminated string, and NULL.
        unsafe {
            assert_eq!(pcsc_bridge_dlopen_filter(n.as_ptr()), n.as_ptr());
            assert!(pcsc_bridge_dlopen_filter(std::ptr::null()).is_null());
        }
    }
}
