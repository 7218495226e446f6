//! `pcsc_stringify_error`: upstream 1.9.9's texts in a per-thread buffer (the
//! returned pointer stays valid until the same thread calls again).

use core::cell::UnsafeCell;
use core::ffi::c_char;
use std::fmt::Write as _;

use pcsc_proto::Rv;

use crate::types::LONG;

/// Upstream's buffer size (`static __thread char strError[75]`).
const LEN: usize = 75;

thread_local! {
    // A plain byte array: no destructor is registered for it, so nothing runs
    // at thread exit (the library may be dlclose'd; it is also NODELETE).
    static BUF: UnsafeCell<[u8; LEN]> = const { UnsafeCell::new([0; LEN]) };
}

/// The text for a code, as upstream writes it. Values that are not 32-bit codes
/// (e.g. a sign-extended code) are unknown, printed with all their bits.
pub fn text(code: LONG) -> String {
    match u32::try_from(code) {
        Ok(v) => Rv(v).text(),
        Err(_) => {
            let mut s = String::new();
            let _ = write!(s, "Unknown error: 0x{:08X}", code as core::ffi::c_ulong);
            s
        }
    }
}

/// Writes the text into this thread's buffer and returns it.
pub fn stringify(code: LONG) -> *const c_char {
    let t = text(code);
    BUF.with(|b| {
        let p = b.get();
        // SAFETY: the buffer belongs to this thread; no reference to it is alive
        // (callers only hold the raw pointer returned by an earlier call, which
        // upstream also invalidates).
        let buf = unsafe { &mut *p };
        let n = t.len().min(LEN - 1);
        buf[..n].copy_from_slice(&t.as_bytes()[..n]);
        buf[n] = 0;
        p.cast::<c_char>().cast_const()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::ffi::CStr;

    fn s(code: LONG) -> String {
        // SAFETY: stringify returns a NUL-terminated per-thread buffer.
        unsafe { CStr::from_ptr(stringify(code)) }.to_string_lossy().into_owned()
    }

    #[test]
    fn matches_debian_1_9_9() {
        // Observed with Debian's libpcsclite 1.9.9.
        assert_eq!(s(0), "Command successful.");
        assert_eq!(s(0x8010_006A), "Access denied.");
        assert_eq!(s(0x8010_001F), "Feature not supported.");
        assert_eq!(s(0x8010_0018), "Unknown error: 0x80100018");
        assert_eq!(s(0x1234), "Unknown error: 0x00001234");
        #[cfg(target_pointer_width = "64")]
        {
            assert_eq!(s(-1), "Unknown error: 0xFFFFFFFFFFFFFFFF");
            assert_eq!(s(0xFFFF_FFFF_8010_001Eu64 as LONG), "Unknown error: 0xFFFFFFFF8010001E");
        }
    }
}
