//! The out-buffer rules of the PC/SC C API, in one place (pcscd-protocol.md §8):
//!
//! * a NULL buffer asks for the length only;
//! * a length of `SCARD_AUTOALLOCATE` makes the library `malloc()` the buffer and
//!   store the pointer into `*(char **)buffer` (freed by `SCardFreeMemory`, i.e.
//!   `free()`); a NULL buffer then is `SCARD_E_INVALID_PARAMETER`;
//! * a buffer shorter than needed gives `SCARD_E_INSUFFICIENT_BUFFER` (the
//!   caller reports the needed length in the length out-parameter).
//!
//! The raw pointers are turned into [`OutBuf`] by one `unsafe` constructor whose
//! contract is the C caller's; everything after that is safe and never writes
//! more than the caller's stated length.

use core::marker::PhantomData;
use core::ptr::NonNull;

use pcsc_proto::Rv;

/// A caller-owned buffer of `len` writable bytes.
#[derive(Debug)]
pub struct CallerBuf<'a> {
    ptr: NonNull<u8>,
    len: usize,
    _borrow: PhantomData<&'a mut [u8]>,
}

impl<'a> CallerBuf<'a> {
    /// # Safety
    /// `ptr` must be valid for writes of `len` bytes for `'a` (it may be
    /// uninitialised; nothing is ever read from it).
    pub unsafe fn new(ptr: NonNull<u8>, len: usize) -> Self {
        CallerBuf { ptr, len, _borrow: PhantomData }
    }

    /// From a Rust slice (safe; for tests and internal buffers).
    pub fn from_slice(s: &'a mut [u8]) -> Self {
        let len = s.len();
        CallerBuf { ptr: NonNull::from(s).cast(), len, _borrow: PhantomData }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies as much of `data` as fits; returns the number of bytes written.
    pub fn write_prefix(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.len);
        // SAFETY: n <= self.len, the buffer is valid for self.len bytes of writes
        // (constructor contract), and `data` cannot overlap caller memory we own
        // exclusively for 'a.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr(), n) };
        n
    }
}

/// Where to store the pointer to an allocated buffer (`*(char **)buffer`).
#[derive(Debug)]
pub struct PtrSlot<'a> {
    slot: NonNull<*mut u8>,
    _borrow: PhantomData<&'a mut *mut u8>,
}

impl<'a> PtrSlot<'a> {
    /// # Safety
    /// `slot` must be valid for a pointer-sized write (any alignment) for `'a`.
    pub unsafe fn new(slot: NonNull<*mut u8>) -> Self {
        PtrSlot { slot, _borrow: PhantomData }
    }

    pub fn from_mut(p: &'a mut *mut u8) -> Self {
        PtrSlot { slot: NonNull::from(p), _borrow: PhantomData }
    }

    /// Hands `buf` over to the caller.
    pub fn store(self, buf: MallocBuf) {
        self.store_raw(buf.into_raw());
    }

    /// Stores a pointer the caller will own.
    pub fn store_raw(self, p: NonNull<u8>) {
        // SAFETY: constructor contract; C callers pass a `char *` or `BYTE *`
        // variable's address cast to the buffer type, so use an unaligned write.
        unsafe { self.slot.as_ptr().write_unaligned(p.as_ptr()) };
    }
}

/// A buffer from `malloc()`, freed with `free()` unless handed to the caller.
#[derive(Debug)]
pub struct MallocBuf {
    ptr: NonNull<u8>,
    len: usize,
}

impl MallocBuf {
    /// `malloc(len)` (at least one byte, so that an empty result still gets a
    /// unique pointer, as glibc's `malloc(0)` gives). `None` when out of memory.
    pub fn new(len: usize) -> Option<MallocBuf> {
        // SAFETY: malloc has no preconditions.
        let p = unsafe { libc::malloc(len.max(1)) }.cast::<u8>();
        NonNull::new(p).map(|ptr| MallocBuf { ptr, len })
    }

    /// A `malloc`ed copy of `data`.
    pub fn copy_of(data: &[u8]) -> Option<MallocBuf> {
        let mut b = MallocBuf::new(data.len())?;
        b.as_caller_buf().write_prefix(data);
        Some(b)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The allocation as a writable buffer.
    pub fn as_caller_buf(&mut self) -> CallerBuf<'_> {
        // SAFETY: we own `len` bytes at `ptr`.
        unsafe { CallerBuf::new(self.ptr, self.len) }
    }

    /// Gives up ownership (the caller frees it with `free()`).
    pub fn into_raw(self) -> NonNull<u8> {
        let p = self.ptr;
        core::mem::forget(self);
        p
    }
}

impl Drop for MallocBuf {
    fn drop(&mut self) {
        // SAFETY: ptr came from malloc and was not handed out.
        unsafe { libc::free(self.ptr.as_ptr().cast()) };
    }
}

/// What the caller's (buffer, length) pair asks for.
#[derive(Debug)]
pub enum OutBuf<'a> {
    /// NULL buffer, ordinary length: report the length only.
    LengthQuery,
    /// `SCARD_AUTOALLOCATE` with a NULL buffer argument.
    AutoAllocateNull,
    /// `SCARD_AUTOALLOCATE`: allocate and store the pointer here.
    AutoAllocate(PtrSlot<'a>),
    /// The caller's buffer.
    Caller(CallerBuf<'a>),
}

impl<'a> OutBuf<'a> {
    /// Classifies a C buffer argument and the length the caller passed in.
    ///
    /// # Safety
    /// If `buf` is non-NULL: when `len == autoallocate` it must be valid for a
    /// pointer-sized write; otherwise valid for writes of `len` bytes, for `'a`.
    pub unsafe fn from_raw(buf: *mut u8, len: usize, autoallocate: usize) -> OutBuf<'a> {
        match (NonNull::new(buf), len == autoallocate) {
            (None, true) => OutBuf::AutoAllocateNull,
            (None, false) => OutBuf::LengthQuery,
            // SAFETY: forwarded contract.
            (Some(p), true) => OutBuf::AutoAllocate(unsafe { PtrSlot::new(p.cast()) }),
            // SAFETY: forwarded contract.
            (Some(p), false) => OutBuf::Caller(unsafe { CallerBuf::new(p, len) }),
        }
    }

    /// All or nothing (`SCardListReaders`, `SCardListReaderGroups`): copy `data`
    /// if it fits, else `SCARD_E_INSUFFICIENT_BUFFER` with nothing written.
    pub fn deliver_all(self, data: &[u8]) -> Rv {
        match self {
            OutBuf::LengthQuery => Rv::SUCCESS,
            OutBuf::AutoAllocateNull => Rv::E_INVALID_PARAMETER,
            OutBuf::AutoAllocate(slot) => match MallocBuf::copy_of(data) {
                Some(b) => {
                    slot.store(b);
                    Rv::SUCCESS
                }
                None => Rv::E_NO_MEMORY,
            },
            OutBuf::Caller(mut b) => {
                if b.len() < data.len() {
                    Rv::E_INSUFFICIENT_BUFFER
                } else {
                    b.write_prefix(data);
                    Rv::SUCCESS
                }
            }
        }
    }

    /// What fits (`SCardStatus`): copy the prefix that fits; if not all of
    /// `data` fits, `SCARD_E_INSUFFICIENT_BUFFER`.
    pub fn deliver_prefix(self, data: &[u8]) -> Rv {
        match self {
            OutBuf::Caller(mut b) => {
                let all = b.len() >= data.len();
                b.write_prefix(data);
                if all {
                    Rv::SUCCESS
                } else {
                    Rv::E_INSUFFICIENT_BUFFER
                }
            }
            other => other.deliver_all(data),
        }
    }
}

/// `free()` for `SCardFreeMemory`.
///
/// # Safety
/// `p` must be NULL or a pointer from `malloc` not yet freed.
pub unsafe fn free(p: *mut core::ffi::c_void) {
    // SAFETY: forwarded contract.
    unsafe { libc::free(p) };
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUTO: usize = usize::MAX;

    fn from_slice(s: &mut [u8]) -> OutBuf<'_> {
        // SAFETY: the slice is valid for its length.
        unsafe { OutBuf::from_raw(s.as_mut_ptr(), s.len(), AUTO) }
    }

    #[test]
    fn length_query() {
        // SAFETY: NULL buffer: nothing is written.
        let q = unsafe { OutBuf::from_raw(core::ptr::null_mut(), 0, AUTO) };
        assert!(matches!(q, OutBuf::LengthQuery));
        assert_eq!(q.deliver_all(b"abc\0\0"), Rv::SUCCESS);
        // SAFETY: as above.
        let q = unsafe { OutBuf::from_raw(core::ptr::null_mut(), 5, AUTO) };
        assert_eq!(q.deliver_prefix(b"abc\0"), Rv::SUCCESS);
    }

    #[test]
    fn autoallocate() {
        let mut p: *mut u8 = core::ptr::null_mut();
        // SAFETY: &mut p is valid for a pointer write.
        let ob = unsafe { OutBuf::from_raw((&mut p as *mut *mut u8).cast(), AUTO, AUTO) };
        assert!(matches!(ob, OutBuf::AutoAllocate(_)));
        assert_eq!(ob.deliver_all(b"R1\0R2\0\0"), Rv::SUCCESS);
        assert!(!p.is_null());
        // SAFETY: p is a 7-byte malloc'd buffer we were handed.
        unsafe {
            assert_eq!(core::slice::from_raw_parts(p, 7), b"R1\0R2\0\0");
            free(p.cast());
        }
        // SAFETY: NULL buffer.
        let ob = unsafe { OutBuf::from_raw(core::ptr::null_mut(), AUTO, AUTO) };
        assert_eq!(ob.deliver_all(b"x"), Rv::E_INVALID_PARAMETER);
        // Empty data still gets a pointer.
        let mut p: *mut u8 = core::ptr::null_mut();
        PtrSlot::from_mut(&mut p).store(MallocBuf::copy_of(b"").unwrap());
        assert!(!p.is_null());
        // SAFETY: from malloc.
        unsafe { free(p.cast()) };
    }

    #[test]
    fn short_buffer() {
        let mut b = [0xEEu8; 4];
        assert_eq!(from_slice(&mut b).deliver_all(b"R1\0R2\0\0"), Rv::E_INSUFFICIENT_BUFFER);
        assert_eq!(b, [0xEE; 4], "all-or-nothing writes nothing");
        assert_eq!(from_slice(&mut b).deliver_prefix(b"Reader\0"), Rv::E_INSUFFICIENT_BUFFER);
        assert_eq!(&b, b"Read");
        let mut b = [0xEEu8; 8];
        assert_eq!(from_slice(&mut b).deliver_all(b"R1\0R2\0\0"), Rv::SUCCESS);
        assert_eq!(&b, b"R1\0R2\0\0\xEE", "nothing past the data");
        let mut z = [0u8; 0];
        assert_eq!(from_slice(&mut z).deliver_prefix(b"x"), Rv::E_INSUFFICIENT_BUFFER);
    }
}
