//! The 22 exports of `libpcsclite.so.1`, and nothing else.
//!
//! Each export: the [`ffi_boundary`] (lazy logging set-up, `catch_unwind`), the
//! pointer checks upstream's client makes (same codes, same order), conversion
//! to Rust types, one call into [`crate::api`], and the writes to the caller's
//! out-parameters.
//!
//! # Safety (all exports)
//! The caller keeps the C contract of `<PCSC/winscard.h>`: every non-NULL pointer
//! points to memory of the type and, for buffers, of the length it passes, and
//! strings are NUL-terminated. NULL is accepted wherever upstream's client
//! accepts it and answered with upstream's code where it checks for it; where
//! upstream would crash on NULL we return `SCARD_E_INVALID_PARAMETER` instead.
//!
//! # Deliberate differences from libpcsclite 1.9.9
//! Return codes and out-parameters match Debian's 1.9.9 for every case
//! `tests/clients/exercise.c` and `interpose/tests/abi.rs` check, except:
//! * `SCardTransmit` with `cbSendLength == 0`: `SCARD_E_INVALID_PARAMETER`
//!   (upstream hands the empty command to the driver; vpcd never answers and the
//!   reader stays locked).
//! * NULL where upstream dereferences it (`pcchGroups`): `SCARD_E_INVALID_PARAMETER`.
//! * `SCardControl` with a NULL send buffer and a length: upstream's code
//!   (`SCARD_E_NO_SERVICE`), but the connection stays in step (upstream's does not).
//! * `SCardStatus` copies the reader name like `strncpy` but does not zero-pad
//!   the rest of the caller's buffer.
//! * Receive lengths above 65548 are clamped (upstream's daemon drops the
//!   connection on them).
//! * `SCardReleaseContext` wakes a `SCardGetStatusChange` blocked on the same
//!   context (it returns `SCARD_E_CANCELLED`) instead of waiting for it to end.
//! * After `fork()` the parent's handles are invalid in the child (upstream would
//!   share the parent's sockets); after a daemon restart contexts keep working
//!   and older card handles answer `SCARD_W_REMOVED_CARD` (upstream: every call
//!   fails until the app starts over).

#![allow(non_snake_case, non_upper_case_globals, clippy::missing_safety_doc)]

use core::ffi::{c_char, c_void, CStr};
use core::ptr::{addr_of, addr_of_mut, NonNull};

use pcsc_proto::client::ReaderStateQuery;
use pcsc_proto::consts::{reader_state, MAX_ATR_SIZE, MAX_BUFFER_SIZE, MAX_BUFFER_SIZE_EXTENDED, MAX_READERS_CONTEXTS};
use pcsc_proto::Rv;

use crate::api::{self, TransmitRefusal};
use crate::buffers::{self, CallerBuf, MallocBuf, OutBuf, PtrSlot};
use crate::panic::{ffi_boundary, ffi_boundary_or};
use crate::types::*;

/// `g_rgSCardT0Pci`
#[no_mangle]
pub static g_rgSCardT0Pci: SCARD_IO_REQUEST = SCARD_IO_REQUEST { dwProtocol: 1, cbPciLength: PCI_LEN };
/// `g_rgSCardT1Pci`
#[no_mangle]
pub static g_rgSCardT1Pci: SCARD_IO_REQUEST = SCARD_IO_REQUEST { dwProtocol: 2, cbPciLength: PCI_LEN };
/// `g_rgSCardRawPci`
#[no_mangle]
pub static g_rgSCardRawPci: SCARD_IO_REQUEST = SCARD_IO_REQUEST { dwProtocol: 4, cbPciLength: PCI_LEN };

const PCI_LEN: DWORD = core::mem::size_of::<SCARD_IO_REQUEST>() as DWORD;
const AUTO: usize = SCARD_AUTOALLOCATE as usize;

/// A `DWORD` argument as the 32-bit value upstream puts on the wire.
fn wire(v: DWORD) -> u32 {
    v as u32
}

/// A `DWORD` timeout in milliseconds (`INFINITE` and `(DWORD)-1` both mean no
/// limit; the engine treats every value from 0xFFFFFFFF up as infinite).
#[allow(clippy::useless_conversion)] // c_ulong is u32 on 32-bit targets
fn timeout_ms(v: DWORD) -> u64 {
    u64::from(v)
}

/// Writes `v` through an optional out-pointer.
fn put<T>(p: Option<&mut T>, v: T) {
    if let Some(p) = p {
        *p = v;
    }
}

/// A caller's send buffer. A length above the extended maximum is refused
/// before anything is read, so only that much is ever borrowed.
///
/// # Safety
/// `p` valid for reads of `len` bytes (or NULL).
unsafe fn send_slice<'a>(p: *const u8, len: DWORD) -> Option<&'a [u8]> {
    let n = (len as usize).min(MAX_BUFFER_SIZE_EXTENDED + 1);
    if p.is_null() {
        return (n == 0).then_some(&[][..]);
    }
    // SAFETY: the caller provides `len >= n` readable bytes.
    Some(unsafe { core::slice::from_raw_parts(p, n) })
}

/// # Safety
/// `phContext` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn SCardEstablishContext(
    dwScope: DWORD,
    pvReserved1: *const c_void,
    pvReserved2: *const c_void,
    phContext: *mut SCARDCONTEXT,
) -> LONG {
    let _ = (pvReserved1, pvReserved2);
    ffi_boundary("SCardEstablishContext", || {
        if !api::daemon_available() {
            return Rv::E_NO_SERVICE;
        }
        // SAFETY: C contract.
        let Some(out) = (unsafe { phContext.as_mut() }) else { return Rv::E_INVALID_PARAMETER };
        *out = 0;
        match api::establish(wire(dwScope)) {
            Ok(h) => {
                *out = h;
                tracing::debug!(hContext = h, "context established");
                Rv::SUCCESS
            }
            Err(rv) => rv,
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn SCardReleaseContext(hContext: SCARDCONTEXT) -> LONG {
    ffi_boundary("SCardReleaseContext", || api::release(hContext))
}

#[no_mangle]
pub unsafe extern "C" fn SCardIsValidContext(hContext: SCARDCONTEXT) -> LONG {
    ffi_boundary("SCardIsValidContext", || api::is_valid(hContext))
}

/// # Safety
/// `szReader` NULL or a C string; `phCard`, `pdwActiveProtocol` writable.
#[no_mangle]
pub unsafe extern "C" fn SCardConnect(
    hContext: SCARDCONTEXT,
    szReader: *const c_char,
    dwShareMode: DWORD,
    dwPreferredProtocols: DWORD,
    phCard: *mut SCARDHANDLE,
    pdwActiveProtocol: *mut DWORD,
) -> LONG {
    ffi_boundary("SCardConnect", || {
        // SAFETY: C contract.
        let (Some(card), Some(proto)) = (unsafe { phCard.as_mut() }, unsafe { pdwActiveProtocol.as_mut() }) else {
            return Rv::E_INVALID_PARAMETER;
        };
        *card = 0;
        if szReader.is_null() {
            return Rv::E_UNKNOWN_READER;
        }
        // SAFETY: C contract: a NUL-terminated string.
        let name = unsafe { CStr::from_ptr(szReader) }.to_bytes();
        match api::connect(hContext, name, wire(dwShareMode), wire(dwPreferredProtocols)) {
            Ok((rv, h, p)) => {
                *card = h.unwrap_or(0);
                *proto = p as DWORD;
                rv
            }
            Err(rv) => rv,
        }
    })
}

/// # Safety
/// `pdwActiveProtocol` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn SCardReconnect(
    hCard: SCARDHANDLE,
    dwShareMode: DWORD,
    dwPreferredProtocols: DWORD,
    dwInitialization: DWORD,
    pdwActiveProtocol: *mut DWORD,
) -> LONG {
    ffi_boundary("SCardReconnect", || {
        // SAFETY: C contract.
        let Some(proto) = (unsafe { pdwActiveProtocol.as_mut() }) else { return Rv::E_INVALID_PARAMETER };
        match api::reconnect(hCard, wire(dwShareMode), wire(dwPreferredProtocols), wire(dwInitialization)) {
            Ok((rv, p)) => {
                *proto = p as DWORD;
                rv
            }
            Err(rv) => rv,
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn SCardDisconnect(hCard: SCARDHANDLE, dwDisposition: DWORD) -> LONG {
    ffi_boundary("SCardDisconnect", || api::disconnect(hCard, wire(dwDisposition)))
}

#[no_mangle]
pub unsafe extern "C" fn SCardBeginTransaction(hCard: SCARDHANDLE) -> LONG {
    ffi_boundary("SCardBeginTransaction", || api::begin_transaction(hCard))
}

#[no_mangle]
pub unsafe extern "C" fn SCardEndTransaction(hCard: SCARDHANDLE, dwDisposition: DWORD) -> LONG {
    ffi_boundary("SCardEndTransaction", || api::end_transaction(hCard, wire(dwDisposition)))
}

/// # Safety
/// Buffers valid for the lengths in `*pcchReaderLen` / `*pcbAtrLen` (or for a
/// pointer when that length is `SCARD_AUTOALLOCATE`); other pointers NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn SCardStatus(
    hCard: SCARDHANDLE,
    szReaderName: *mut c_char,
    pcchReaderLen: *mut DWORD,
    pdwState: *mut DWORD,
    pdwProtocol: *mut DWORD,
    pbAtr: *mut u8,
    pcbAtrLen: *mut DWORD,
) -> LONG {
    ffi_boundary("SCardStatus", || {
        // SAFETY: C contract (each pointer NULL or writable).
        let (mut state, mut proto, mut rlen, mut alen) =
            unsafe { (pdwState.as_mut(), pdwProtocol.as_mut(), pcchReaderLen.as_mut(), pcbAtrLen.as_mut()) };
        put(state.as_deref_mut(), 0);
        put(proto.as_deref_mut(), 0);
        let reader_cap = rlen.as_deref().map_or(0, |v| *v as usize);
        let atr_cap = alen.as_deref().map_or(0, |v| *v as usize);
        put(rlen.as_deref_mut(), 0);
        put(alen.as_deref_mut(), 0);
        let st = match api::status(hCard) {
            Ok(s) => s,
            Err(rv) => return rv,
        };
        let mut name = st.reader;
        name.push(0);
        put(rlen, name.len() as DWORD);
        put(alen, st.atr.len() as DWORD);
        put(state, st.state as DWORD);
        put(proto, st.protocol as DWORD);
        let mut rv = Rv::SUCCESS;
        // SAFETY: C contract for szReaderName with its length.
        match unsafe { OutBuf::from_raw(szReaderName.cast(), reader_cap, AUTO) }.deliver_prefix(&name) {
            Rv::SUCCESS => {}
            Rv::E_INSUFFICIENT_BUFFER => rv = Rv::E_INSUFFICIENT_BUFFER,
            other => return other,
        }
        // SAFETY: C contract for pbAtr with its length.
        match unsafe { OutBuf::from_raw(pbAtr, atr_cap, AUTO) }.deliver_prefix(&st.atr) {
            Rv::SUCCESS => {}
            Rv::E_INSUFFICIENT_BUFFER => rv = Rv::E_INSUFFICIENT_BUFFER,
            other => return other,
        }
        rv
    })
}

/// # Safety
/// `rgReaderStates` valid for `cReaders` entries with C-string names.
#[no_mangle]
pub unsafe extern "C" fn SCardGetStatusChange(
    hContext: SCARDCONTEXT,
    dwTimeout: DWORD,
    rgReaderStates: *mut SCARD_READERSTATE,
    cReaders: DWORD,
) -> LONG {
    ffi_boundary("SCardGetStatusChange", || {
        if (rgReaderStates.is_null() && cReaders > 0) || cReaders as usize > MAX_READERS_CONTEXTS {
            return Rv::E_INVALID_PARAMETER;
        }
        let n = cReaders as usize;
        let entry = |i: usize| rgReaderStates.wrapping_add(i);
        let mut current = [0u32; MAX_READERS_CONTEXTS];
        for (i, cur) in current.iter_mut().enumerate().take(n) {
            // SAFETY: i < cReaders entries (C contract); fields read in place.
            let (name, state) =
                unsafe { (addr_of!((*entry(i)).szReader).read(), addr_of!((*entry(i)).dwCurrentState).read()) };
            if name.is_null() {
                return Rv::E_INVALID_VALUE;
            }
            *cur = wire(state);
        }
        if current[..n].iter().all(|s| s & reader_state::IGNORE != 0) {
            return Rv::SUCCESS;
        }
        let mut queries: Vec<ReaderStateQuery> = (0..n)
            .map(|i| {
                // SAFETY: checked non-NULL above; NUL-terminated by contract.
                let name = unsafe { CStr::from_ptr(addr_of!((*entry(i)).szReader).read()) };
                // SAFETY: as above.
                let event = unsafe { addr_of!((*entry(i)).dwEventState).read() };
                ReaderStateQuery {
                    name: name.to_bytes().to_vec(),
                    current_state: current[i],
                    event_state: wire(event),
                    atr: [0; MAX_ATR_SIZE],
                    atr_len: ATR_UNTOUCHED,
                }
            })
            .collect();
        let before: Vec<u32> = queries.iter().map(|q| q.event_state).collect();
        let rv = api::get_status_change(hContext, timeout_ms(dwTimeout), &mut queries);
        for (i, q) in queries.iter().enumerate() {
            let p = entry(i);
            // SAFETY: entry i is the caller's writable record.
            unsafe {
                if q.event_state != before[i] {
                    addr_of_mut!((*p).dwEventState).write(q.event_state as DWORD);
                }
                if q.atr_len != ATR_UNTOUCHED {
                    let len = (q.atr_len as usize).min(MAX_ATR_SIZE);
                    addr_of_mut!((*p).cbAtr).write(len as DWORD);
                    let dst = addr_of_mut!((*p).rgbAtr).cast::<u8>();
                    core::ptr::copy_nonoverlapping(q.atr.as_ptr(), dst, len);
                }
            }
        }
        rv
    })
}

/// `atr_len` marker: the engine did not report an ATR for this entry.
const ATR_UNTOUCHED: u32 = u32::MAX;

/// # Safety
/// Send buffer readable for `cbSendLength`, receive buffer writable for
/// `cbRecvLength`; `lpBytesReturned` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn SCardControl(
    hCard: SCARDHANDLE,
    dwControlCode: DWORD,
    pbSendBuffer: *const c_void,
    cbSendLength: DWORD,
    pbRecvBuffer: *mut c_void,
    cbRecvLength: DWORD,
    lpBytesReturned: *mut DWORD,
) -> LONG {
    ffi_boundary("SCardControl", || {
        // SAFETY: C contract.
        let mut returned = unsafe { lpBytesReturned.as_mut() };
        put(returned.as_deref_mut(), 0);
        // SAFETY: C contract for the send buffer.
        let Some(send) = (unsafe { send_slice(pbSendBuffer.cast(), cbSendLength) }) else {
            return api::control_null_send(hCard, cbSendLength as usize);
        };
        let mut scratch = vec![0u8; (cbRecvLength as usize).min(MAX_BUFFER_SIZE_EXTENDED)];
        let r = api::control(hCard, wire(dwControlCode), send, &mut scratch);
        tracing::trace!(
            code = format_args!("{:#010X}", wire(dwControlCode)),
            sent = send.len(),
            returned = r.len,
            "control"
        );
        if r.rv == Rv::SUCCESS && r.len > 0 {
            match NonNull::new(pbRecvBuffer.cast::<u8>()) {
                // SAFETY: C contract: cbRecvLength >= r.len writable bytes.
                Some(p) => unsafe { CallerBuf::new(p, cbRecvLength as usize) }.write_prefix(&scratch[..r.len]),
                // Upstream reads into NULL and fails.
                None => return Rv::F_COMM_ERROR,
            };
        }
        if r.rv == Rv::SUCCESS || r.rv == Rv::E_INSUFFICIENT_BUFFER || r.len > 0 {
            put(returned, r.len as DWORD);
        }
        r.rv
    })
}

/// # Safety
/// PCIs readable/writable, send buffer readable for `cbSendLength`, receive
/// buffer writable for `*pcbRecvLength`.
#[no_mangle]
pub unsafe extern "C" fn SCardTransmit(
    hCard: SCARDHANDLE,
    pioSendPci: *const SCARD_IO_REQUEST,
    pbSendBuffer: *const u8,
    cbSendLength: DWORD,
    pioRecvPci: *mut SCARD_IO_REQUEST,
    pbRecvBuffer: *mut u8,
    pcbRecvLength: *mut DWORD,
) -> LONG {
    ffi_boundary("SCardTransmit", || {
        // SAFETY: C contract.
        let (Some(spci), Some(recv_ptr), Some(rlen)) =
            (unsafe { pioSendPci.as_ref() }, NonNull::new(pbRecvBuffer), unsafe { pcbRecvLength.as_mut() })
        else {
            return Rv::E_INVALID_PARAMETER;
        };
        // SAFETY: C contract for the send buffer.
        let Some(send) = (unsafe { send_slice(pbSendBuffer, cbSendLength) }).filter(|_| !pbSendBuffer.is_null()) else {
            return Rv::E_INVALID_PARAMETER;
        };
        // SAFETY: C contract.
        let rpci = unsafe { pioRecvPci.as_mut() };
        let rpci_in = rpci.as_deref().map(|p| (wire(p.dwProtocol), wire(p.cbPciLength)));
        let cap = *rlen as usize;
        let mut scratch = vec![0u8; cap.min(MAX_BUFFER_SIZE_EXTENDED)];
        match api::transmit(hCard, (wire(spci.dwProtocol), wire(spci.cbPciLength)), send, rpci_in, &mut scratch) {
            Err(TransmitRefusal::InvalidHandle) => {
                *rlen = 0;
                Rv::E_INVALID_HANDLE
            }
            Err(TransmitRefusal::Other(rv)) => rv,
            Ok(t) => {
                if t.rv == Rv::SUCCESS {
                    // SAFETY: C contract: `cap` writable bytes; t.len <= scratch.len() <= cap.
                    unsafe { CallerBuf::new(recv_ptr, cap) }.write_prefix(&scratch[..t.len.min(scratch.len())]);
                    if let Some(p) = rpci {
                        p.dwProtocol = t.recv_pci_protocol as DWORD;
                        p.cbPciLength = t.recv_pci_length as DWORD;
                    }
                }
                *rlen = t.len as DWORD;
                t.rv
            }
        }
    })
}

/// # Safety
/// `mszGroups` valid for `*pcchGroups` bytes (or a pointer for AUTOALLOCATE).
#[no_mangle]
pub unsafe extern "C" fn SCardListReaderGroups(
    hContext: SCARDCONTEXT,
    mszGroups: *mut c_char,
    pcchGroups: *mut DWORD,
) -> LONG {
    ffi_boundary("SCardListReaderGroups", || {
        let groups = match api::list_reader_groups(hContext) {
            Ok(g) => g,
            Err(rv) => return rv,
        };
        // SAFETY: C contract.
        let Some(len) = (unsafe { pcchGroups.as_mut() }) else { return Rv::E_INVALID_PARAMETER };
        // SAFETY: C contract for the buffer with its length.
        let rv = unsafe { OutBuf::from_raw(mszGroups.cast(), *len as usize, AUTO) }.deliver_all(groups);
        *len = groups.len() as DWORD;
        rv
    })
}

/// # Safety
/// `mszReaders` valid for `*pcchReaders` bytes (or a pointer for AUTOALLOCATE).
#[no_mangle]
pub unsafe extern "C" fn SCardListReaders(
    hContext: SCARDCONTEXT,
    mszGroups: *const c_char,
    mszReaders: *mut c_char,
    pcchReaders: *mut DWORD,
) -> LONG {
    let _ = mszGroups;
    ffi_boundary("SCardListReaders", || {
        // SAFETY: C contract.
        let Some(len) = (unsafe { pcchReaders.as_mut() }) else { return Rv::E_INVALID_PARAMETER };
        let list = match api::list_readers(hContext) {
            Ok(l) => l,
            Err(Rv::E_INVALID_HANDLE) => return Rv::E_INVALID_HANDLE,
            Err(rv) => {
                *len = if rv == Rv::E_NO_READERS_AVAILABLE { 1 } else { 0 };
                return rv;
            }
        };
        // SAFETY: C contract for the buffer with its length.
        let rv = unsafe { OutBuf::from_raw(mszReaders.cast(), *len as usize, AUTO) }.deliver_all(&list);
        *len = list.len() as DWORD;
        rv
    })
}

/// # Safety
/// `pvMem` NULL or from this library's `SCARD_AUTOALLOCATE` (i.e. `malloc`).
#[no_mangle]
pub unsafe extern "C" fn SCardFreeMemory(hContext: SCARDCONTEXT, pvMem: *const c_void) -> LONG {
    ffi_boundary("SCardFreeMemory", || {
        if api::is_valid(hContext) != Rv::SUCCESS {
            return Rv::E_INVALID_HANDLE;
        }
        // SAFETY: C contract.
        unsafe { buffers::free(pvMem.cast_mut()) };
        Rv::SUCCESS
    })
}

#[no_mangle]
pub unsafe extern "C" fn SCardCancel(hContext: SCARDCONTEXT) -> LONG {
    ffi_boundary("SCardCancel", || api::cancel(hContext))
}

/// # Safety
/// `pbAttr` valid for `*pcbAttrLen` bytes (or a pointer for AUTOALLOCATE).
#[no_mangle]
pub unsafe extern "C" fn SCardGetAttrib(
    hCard: SCARDHANDLE,
    dwAttrId: DWORD,
    pbAttr: *mut u8,
    pcbAttrLen: *mut DWORD,
) -> LONG {
    ffi_boundary("SCardGetAttrib", || {
        // SAFETY: C contract.
        let Some(len) = (unsafe { pcbAttrLen.as_mut() }) else { return Rv::E_INVALID_PARAMETER };
        // Upstream's local handling, before the handle is even checked.
        let mut dst: Option<CallerBuf<'_>> = None;
        if *len as usize == AUTO {
            let Some(slot) = NonNull::new(pbAttr.cast::<*mut u8>()) else { return Rv::E_INVALID_PARAMETER };
            let Some(buf) = MallocBuf::new(MAX_BUFFER_SIZE) else { return Rv::E_NO_MEMORY };
            *len = MAX_BUFFER_SIZE as DWORD;
            let p = buf.into_raw();
            // SAFETY: 264 bytes from malloc, which the caller frees only after
            // this call returns.
            dst = Some(unsafe { CallerBuf::new(p, MAX_BUFFER_SIZE) });
            // SAFETY: C contract: pbAttr is the address of a pointer variable.
            unsafe { PtrSlot::new(slot) }.store_raw(p);
        } else if let Some(p) = NonNull::new(pbAttr) {
            // SAFETY: C contract: *len writable bytes.
            dst = Some(unsafe { CallerBuf::new(p, *len as usize) });
        } else {
            *len = MAX_BUFFER_SIZE as DWORD;
        }
        if crate::handles::card(hCard).is_none() {
            return Rv::E_INVALID_HANDLE;
        }
        if *len as usize > MAX_BUFFER_SIZE {
            return Rv::E_INSUFFICIENT_BUFFER;
        }
        let a = match api::get_attrib(hCard, wire(dwAttrId)) {
            Ok(a) => a,
            Err(rv) => return rv,
        };
        if a.rv != Rv::SUCCESS {
            return a.rv;
        }
        let cap = *len as usize;
        let mut rv = Rv::SUCCESS;
        let n = if cap < a.len {
            *len = a.len as DWORD;
            rv = Rv::E_INSUFFICIENT_BUFFER;
            cap
        } else {
            *len = a.len as DWORD;
            a.len
        };
        if let Some(mut d) = dst {
            d.write_prefix(&a.data[..n.min(a.data.len())]);
        }
        rv
    })
}

/// # Safety
/// `pbAttr` readable for `cbAttrLen` bytes.
#[no_mangle]
pub unsafe extern "C" fn SCardSetAttrib(
    hCard: SCARDHANDLE,
    dwAttrId: DWORD,
    pbAttr: *const u8,
    cbAttrLen: DWORD,
) -> LONG {
    ffi_boundary("SCardSetAttrib", || {
        if pbAttr.is_null() || cbAttrLen == 0 {
            return Rv::E_INVALID_PARAMETER;
        }
        let n = (cbAttrLen as usize).min(MAX_BUFFER_SIZE + 1);
        // SAFETY: C contract: cbAttrLen >= n readable bytes.
        let value = unsafe { core::slice::from_raw_parts(pbAttr, n) };
        api::set_attrib(hCard, wire(dwAttrId), value)
    })
}

/// `pcsc_stringify_error`: upstream's texts, in a per-thread buffer.
#[no_mangle]
pub extern "C" fn pcsc_stringify_error(pcscError: LONG) -> *const c_char {
    ffi_boundary_or("pcsc_stringify_error", EMPTY.as_ptr().cast(), || crate::strerror::stringify(pcscError))
}

static EMPTY: [u8; 1] = [0];
