//! The boundary every export runs inside: no panic ever unwinds into C.
//!
//! A panic inside a PC/SC call becomes `SCARD_F_INTERNAL_ERROR`; the host
//! application (a browser, a mail client) keeps running. The crate is never built
//! with `panic = "abort"` for the same reason (style.md §5).

use std::panic::{catch_unwind, AssertUnwindSafe};

use pcsc_proto::Rv;

use crate::types::LONG;

/// Runs one PC/SC call: sets logging up on first use, catches panics, logs the
/// result at debug level, and converts it to the C `LONG` (zero-extended).
pub fn ffi_boundary(name: &'static str, f: impl FnOnce() -> Rv) -> LONG {
    crate::log::init();
    let rv = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(rv) => rv,
        Err(_) => {
            // Logging itself must not panic again here; tracing does not.
            tracing::error!(call = name, "panic inside the call; returning SCARD_F_INTERNAL_ERROR");
            Rv::F_INTERNAL_ERROR
        }
    };
    tracing::debug!(target: "pcscbridge::call", "{name} -> {rv:?}");
    rv_to_long(rv)
}

/// Like [`ffi_boundary`] for an export that returns something other than a code:
/// `fallback` on panic.
pub fn ffi_boundary_or<T>(name: &'static str, fallback: T, f: impl FnOnce() -> T) -> T {
    crate::log::init();
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(_) => {
            tracing::error!(call = name, "panic inside the call");
            fallback
        }
    }
}

/// `Rv` as the C ABI's `LONG`: zero-extended, never sign-extended (§9.3).
pub fn rv_to_long(rv: Rv) -> LONG {
    rv.0 as LONG
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_becomes_internal_error() {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let r = ffi_boundary("test", || panic!("boom"));
        std::panic::set_hook(prev);
        assert_eq!(r as u64, 0x8010_0001);
        assert_eq!(ffi_boundary("test", || Rv::E_NO_SERVICE) as u64, 0x8010_001D);
        assert_eq!(ffi_boundary_or("test", 7, || -> i32 { panic!("x") }), 7);
    }
}
