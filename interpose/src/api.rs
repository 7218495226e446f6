//! The PC/SC calls in safe Rust, on handles and slices: what `ffi.rs` calls after
//! it has checked and converted the C arguments. Checks that upstream's client
//! makes locally, and their order, live here (pcscd-protocol.md §7–§8).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use pcsc_proto::client::{
    AttrResult, CardStatus, ClientConfig, Context, ControlResult, ReaderStateQuery, TransmitResult,
};
use pcsc_proto::consts::{DEFAULT_READER_GROUPS, MAX_BUFFER_SIZE, MAX_BUFFER_SIZE_EXTENDED, MAX_READERNAME};
use pcsc_proto::Rv;

use crate::handles::{self, card_handle};
use crate::types::{SCARDCONTEXT, SCARDHANDLE};

static CONFIG: OnceLock<ClientConfig> = OnceLock::new();
/// Whether [`TEST_CONFIG`] is in use: production processes never take its lock
/// (a lock held by another thread at `fork()` would hang the child).
static TEST_OVERRIDE: AtomicBool = AtomicBool::new(false);
static TEST_CONFIG: Mutex<Option<ClientConfig>> = Mutex::new(None);

/// The client configuration: read from the environment once per process, on
/// the first `SCardEstablishContext` (`PCSCLITE_CSOCK_NAME`, …; ignored in
/// secure-execution processes).
pub fn config() -> ClientConfig {
    if TEST_OVERRIDE.load(Ordering::Acquire) {
        if let Some(c) = TEST_CONFIG.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            return c.clone();
        }
    }
    CONFIG.get_or_init(ClientConfig::from_env).clone()
}

/// Overrides the configuration for contexts established from now on (tests,
/// which cannot change the environment once it was read). `None` restores it.
#[doc(hidden)]
pub fn set_config_for_tests(cfg: Option<ClientConfig>) {
    TEST_OVERRIDE.store(cfg.is_some(), Ordering::Release);
    *TEST_CONFIG.lock().unwrap_or_else(|p| p.into_inner()) = cfg;
}

/// Whether the daemon's socket exists (upstream's `SCardCheckDaemonAvailability`,
/// a `stat()`), or the usbpass fallback is to be tried (`establish` then
/// connects to or starts usbpass).
pub fn daemon_available() -> bool {
    std::fs::metadata(config().socket).is_ok() || crate::fallback::applies()
}

fn ctx(h: SCARDCONTEXT) -> Result<Arc<Context>, Rv> {
    handles::context(h).ok_or(Rv::E_INVALID_HANDLE)
}

fn card(h: SCARDHANDLE) -> Result<(Arc<Context>, u32), Rv> {
    handles::card(h).ok_or(Rv::E_INVALID_HANDLE)
}

/// `SCardEstablishContext`: a new context handle. With no pcscd reachable, the
/// context goes to usbpass where it applies ([`crate::fallback`]).
pub fn establish(scope: u32) -> Result<SCARDCONTEXT, Rv> {
    let base = config();
    let c = match Context::establish(&base, scope) {
        Err(Rv::E_NO_SERVICE) => match crate::fallback::usbpass_config(&base) {
            Some(alt) => Context::establish(&alt, scope)?,
            None => return Err(Rv::E_NO_SERVICE),
        },
        r => r?,
    };
    Ok(handles::tables().insert_context(Arc::new(c)))
}

/// `SCardReleaseContext`.
pub fn release(h: SCARDCONTEXT) -> Rv {
    let c = match ctx(h) {
        Ok(c) => c,
        Err(rv) => return rv,
    };
    tracing::debug!(hContext = h, "release");
    // Wake a SCardGetStatusChange blocked on this context in another thread (it
    // returns SCARD_E_CANCELLED); upstream would block here until that wait
    // ended, forever for an INFINITE one.
    let _ = c.cancel();
    let r = c.release();
    // Local state goes even when the daemon is gone (or answered an error).
    handles::tables().remove_context(h);
    into_rv(r)
}

/// `SCardIsValidContext`: local check only.
pub fn is_valid(h: SCARDCONTEXT) -> Rv {
    match ctx(h) {
        Ok(c) if c.is_valid() => Rv::SUCCESS,
        _ => Rv::E_INVALID_HANDLE,
    }
}

/// `SCardConnect` after the pointer checks. `Ok` when the daemon answered:
/// `(rv, card handle if connected, active protocol)`; upstream hands the
/// protocol of the reply to the app even when the daemon refused.
pub fn connect(
    h: SCARDCONTEXT,
    reader: &[u8],
    share: u32,
    protocols: u32,
) -> Result<(Rv, Option<SCARDHANDLE>, u32), Rv> {
    if reader.len() > MAX_READERNAME {
        return Err(Rv::E_INVALID_VALUE);
    }
    let c = ctx(h)?;
    let r = c.connect_reply(reader, share, protocols)?;
    if let Some(id) = r.card {
        handles::tables().insert_card(id, h);
    }
    tracing::debug!(hContext = h, reader = %String::from_utf8_lossy(reader), share, protocols, hCard = ?r.card, active = r.active_protocol, "connect");
    Ok((r.rv, r.card.map(card_handle), r.active_protocol))
}

/// `SCardReconnect`: `Ok((rv, active protocol))` when the daemon answered.
pub fn reconnect(h: SCARDHANDLE, share: u32, protocols: u32, init: u32) -> Result<(Rv, u32), Rv> {
    let (c, id) = card(h)?;
    c.reconnect_reply(id, share, protocols, init)
}

/// `SCardDisconnect`.
pub fn disconnect(h: SCARDHANDLE, disposition: u32) -> Rv {
    let (c, id) = match card(h) {
        Ok(x) => x,
        Err(rv) => return rv,
    };
    let r = c.disconnect(id, disposition);
    if r.is_ok() || !c.has_card(id) {
        handles::tables().remove_card(h);
    }
    into_rv(r)
}

pub fn begin_transaction(h: SCARDHANDLE) -> Rv {
    match card(h) {
        Ok((c, id)) => into_rv(c.begin_transaction(id)),
        Err(rv) => rv,
    }
}

pub fn end_transaction(h: SCARDHANDLE, disposition: u32) -> Rv {
    match card(h) {
        Ok((c, id)) => into_rv(c.end_transaction(id, disposition)),
        Err(rv) => rv,
    }
}

/// `SCardStatus`: name (as given to `SCardConnect`), state, protocol, ATR.
pub fn status(h: SCARDHANDLE) -> Result<CardStatus, Rv> {
    let (c, id) = card(h)?;
    c.status(id)
}

/// `SCardGetStatusChange` after the argument checks (`queries` non-empty, not all
/// ignored).
pub fn get_status_change(h: SCARDCONTEXT, timeout_ms: u64, queries: &mut [ReaderStateQuery]) -> Rv {
    let c = match ctx(h) {
        Ok(c) => c,
        Err(rv) => return rv,
    };
    tracing::debug!(hContext = h, timeout_ms, readers = queries.len(), "get_status_change: waiting");
    let rv = into_rv(c.get_status_change(timeout_ms, queries));
    if tracing::enabled!(tracing::Level::DEBUG) {
        for q in queries.iter() {
            tracing::debug!(reader = %String::from_utf8_lossy(&q.name), current = format_args!("{:#x}", q.current_state), event = format_args!("{:#x}", q.event_state), "get_status_change");
        }
    }
    rv
}

/// `SCardControl`: `recv` is scratch space of the caller's receive length.
pub fn control(h: SCARDHANDLE, code: u32, send: &[u8], recv: &mut [u8]) -> ControlResult {
    let (c, id) = match card(h) {
        Ok(x) => x,
        Err(rv) => return ControlResult { rv, len: 0 },
    };
    if send.len() > MAX_BUFFER_SIZE_EXTENDED {
        return ControlResult { rv: Rv::E_INSUFFICIENT_BUFFER, len: 0 };
    }
    c.control(id, code, send, recv)
}

/// `SCardControl` with a NULL send buffer and a non-zero length: upstream checks
/// the handle and the length, then its `send()` from NULL fails
/// (`SCARD_E_NO_SERVICE`, and its connection is out of step from then on; ours
/// is not, since nothing is sent).
pub fn control_null_send(h: SCARDHANDLE, send_len: usize) -> Rv {
    if handles::card(h).is_none() {
        Rv::E_INVALID_HANDLE
    } else if send_len > MAX_BUFFER_SIZE_EXTENDED {
        Rv::E_INSUFFICIENT_BUFFER
    } else {
        Rv::E_NO_SERVICE
    }
}

/// Where a transmit ended before reaching the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransmitRefusal {
    /// Unknown handle: upstream zeroes `*pcbRecvLength`.
    InvalidHandle,
    /// Any other local refusal: `*pcbRecvLength` untouched.
    Other(Rv),
}

/// `SCardTransmit` after the pointer checks. `recv` is scratch space of the
/// caller's receive length (clamped to the extended maximum).
pub fn transmit(
    h: SCARDHANDLE,
    send_pci: (u32, u32),
    send: &[u8],
    recv_pci: Option<(u32, u32)>,
    recv: &mut [u8],
) -> Result<TransmitResult, TransmitRefusal> {
    let (c, id) = card(h).map_err(|_| TransmitRefusal::InvalidHandle)?;
    if send.len() > MAX_BUFFER_SIZE_EXTENDED {
        return Err(TransmitRefusal::Other(Rv::E_INSUFFICIENT_BUFFER));
    }
    if send.is_empty() {
        // Upstream sends an empty command to the daemon, which hands it to the
        // driver (vpcd then never answers and the reader stays locked): refuse it.
        return Err(TransmitRefusal::Other(Rv::E_INVALID_PARAMETER));
    }
    let t = c.transmit(id, send_pci, send, recv_pci, recv);
    if tracing::enabled!(tracing::Level::TRACE) {
        let resp = (t.rv == Rv::SUCCESS).then(|| &recv[..t.len.min(recv.len())]);
        crate::log::trace_transmit(send, resp);
    }
    Ok(t)
}

/// `SCardListReaders`: the multi-string (names, each NUL-terminated, then a NUL).
/// No reader: `Err(SCARD_E_NO_READERS_AVAILABLE)` (length 1 for the caller).
pub fn list_readers(h: SCARDCONTEXT) -> Result<Vec<u8>, Rv> {
    let c = ctx(h)?;
    let names = c.list_readers()?;
    if names.is_empty() {
        return Err(Rv::E_NO_READERS_AVAILABLE);
    }
    Ok(multi_string(&names))
}

/// Names joined as a multi-string.
pub fn multi_string(names: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(names.iter().map(|n| n.len() + 1).sum::<usize>() + 1);
    for n in names {
        out.extend_from_slice(n);
        out.push(0);
    }
    out.push(0);
    out
}

/// `SCardListReaderGroups`: a constant, after the handle check.
pub fn list_reader_groups(h: SCARDCONTEXT) -> Result<&'static [u8], Rv> {
    ctx(h)?;
    Ok(DEFAULT_READER_GROUPS)
}

/// `SCardCancel`: never waits for the context's lock.
pub fn cancel(h: SCARDCONTEXT) -> Rv {
    match ctx(h) {
        Ok(c) => into_rv(c.cancel()),
        Err(rv) => rv,
    }
}

/// `SCardGetAttrib`, after upstream's local handling of the length: asks the
/// daemon with a full 264-byte buffer, as upstream does.
pub fn get_attrib(h: SCARDHANDLE, attr: u32) -> Result<AttrResult, Rv> {
    let (c, id) = card(h)?;
    c.get_attrib(id, attr, MAX_BUFFER_SIZE)
}

/// `SCardSetAttrib` after the pointer checks.
pub fn set_attrib(h: SCARDHANDLE, attr: u32, value: &[u8]) -> Rv {
    let (c, id) = match card(h) {
        Ok(x) => x,
        Err(rv) => return rv,
    };
    if value.len() > MAX_BUFFER_SIZE {
        return Rv::E_INSUFFICIENT_BUFFER;
    }
    into_rv(c.set_attrib(id, attr, value))
}

fn into_rv(r: Result<(), Rv>) -> Rv {
    match r {
        Ok(()) => Rv::SUCCESS,
        Err(rv) => rv,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_strings() {
        assert_eq!(multi_string(&[b"A".to_vec(), b"BC".to_vec()]), b"A\0BC\0\0");
        assert_eq!(multi_string(&[]), b"\0");
    }

    #[test]
    fn unknown_handles() {
        assert_eq!(is_valid(0), Rv::E_INVALID_HANDLE);
        assert_eq!(release(12345), Rv::E_INVALID_HANDLE);
        assert_eq!(cancel(-1), Rv::E_INVALID_HANDLE);
        assert_eq!(disconnect(99, 0), Rv::E_INVALID_HANDLE);
        assert_eq!(transmit(99, (2, 16), b"\0\0\0\0", None, &mut []), Err(TransmitRefusal::InvalidHandle));
        assert_eq!(list_reader_groups(5), Err(Rv::E_INVALID_HANDLE));
    }
}
