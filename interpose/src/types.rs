//! C types of `<PCSC/winscard.h>` / `<PCSC/pcsclite.h>` on Linux, exactly as the
//! C headers spell them (pcscd-protocol.md §9.2). `DWORD` and `LONG` are C
//! `unsigned long` / `long`: 8 bytes on LP64, 4 on ILP32, unlike the 4-byte
//! values on the wire.

#![allow(non_camel_case_types, non_snake_case)]

use core::ffi::{c_char, c_long, c_ulong, c_void};
use core::mem::size_of;

pub type DWORD = c_ulong;
pub type LONG = c_long;
pub type SCARDCONTEXT = LONG;
pub type SCARDHANDLE = LONG;

/// `SCARD_AUTOALLOCATE`: `(DWORD)-1`.
pub const SCARD_AUTOALLOCATE: DWORD = DWORD::MAX;

/// `SCARD_IO_REQUEST` (protocol control information).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SCARD_IO_REQUEST {
    pub dwProtocol: c_ulong,
    pub cbPciLength: c_ulong,
}

/// `SCARD_READERSTATE` (80 bytes on x86_64, 56 on i386).
#[repr(C)]
pub struct SCARD_READERSTATE {
    pub szReader: *const c_char,
    pub pvUserData: *mut c_void,
    pub dwCurrentState: DWORD,
    pub dwEventState: DWORD,
    pub cbAtr: DWORD,
    pub rgbAtr: [u8; 33],
}

const _: () = assert!(size_of::<SCARD_IO_REQUEST>() == 2 * size_of::<c_ulong>());
#[cfg(target_pointer_width = "64")]
const _: () = assert!(size_of::<SCARD_READERSTATE>() == 80);
#[cfg(target_pointer_width = "32")]
const _: () = assert!(size_of::<SCARD_READERSTATE>() == 56);

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::MaybeUninit;
    use core::ptr::addr_of;

    #[test]
    fn readerstate_offsets_match_winscard_h() {
        let w = size_of::<c_ulong>();
        let p = size_of::<*const u8>();
        let rs = MaybeUninit::<SCARD_READERSTATE>::uninit();
        let base = rs.as_ptr();
        let off = |f: *const u8| f as usize - base as usize;
        // SAFETY: only field addresses are computed, nothing is read.
        unsafe {
            assert_eq!(off(addr_of!((*base).szReader).cast()), 0);
            assert_eq!(off(addr_of!((*base).pvUserData).cast()), p);
            assert_eq!(off(addr_of!((*base).dwCurrentState).cast()), 2 * p);
            assert_eq!(off(addr_of!((*base).dwEventState).cast()), 2 * p + w);
            assert_eq!(off(addr_of!((*base).cbAtr).cast()), 2 * p + 2 * w);
            assert_eq!(off(addr_of!((*base).rgbAtr).cast()), 2 * p + 3 * w);
        }
    }
}
