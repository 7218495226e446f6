//! The C ABI, called directly through the rlib, against a real pcscd with a vpcd
//! reader and the project's virtual card (`pcsc_bridge_tests::host`).
//!
//! Tests run one at a time (one lock): the client configuration is process-wide,
//! and each test points it at its own test host. A test that cannot get a host
//! prints `SKIP: why` and passes.

use std::ffi::{CStr, CString};
use std::ptr::{null, null_mut};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pcsc_bridge_tests::host::{skip_reason, Options, TestHost};
use pcsc_proto::client::ClientConfig;
use pcsc_proto::consts::{reader_state as rs, CM_IOCTL_GET_FEATURE_REQUEST};
use pcscbridge::ffi::*;
use pcscbridge::types::*;

static SERIAL: Mutex<()> = Mutex::new(());

const SUCCESS: LONG = 0;
const E_CANCELLED: LONG = 0x8010_0002;
const E_INVALID_HANDLE: LONG = 0x8010_0003;
const E_INVALID_PARAMETER: LONG = 0x8010_0004;
const E_INSUFFICIENT_BUFFER: LONG = 0x8010_0008;
const E_UNKNOWN_READER: LONG = 0x8010_0009;
const E_TIMEOUT: LONG = 0x8010_000A;
const E_INVALID_VALUE: LONG = 0x8010_0011;
const E_UNSUPPORTED_FEATURE: LONG = 0x8010_001F;
const W_RESET_CARD: LONG = 0x8010_0068;
const W_REMOVED_CARD: LONG = 0x8010_0069;

const SELECT_AID: [u8; 12] = [0x00, 0xA4, 0x04, 0x00, 0x07, 0xA0, 0x00, 0x00, 0x05, 0x27, 0x21, 0x01];
const ATR: [u8; 15] = pcsc_bridge_tests::card::ATR;

struct Env {
    host: TestHost,
    reader: CString,
    _serial: MutexGuard<'static, ()>,
}

fn setup(opts: Options) -> Option<Env> {
    let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(why) = skip_reason() {
        println!("SKIP: {why}");
        return None;
    }
    let host = match TestHost::up_with(&opts) {
        Ok(h) => h,
        Err(e) => panic!("test host: {e}"),
    };
    pcscbridge::set_config_for_tests(Some(ClientConfig::with_socket(&host.socket)));
    let reader = CString::new(host.reader.clone()).unwrap();
    Some(Env { host, reader, _serial: serial })
}

fn establish() -> SCARDCONTEXT {
    let mut c: SCARDCONTEXT = 0;
    // SAFETY: valid out-pointer.
    assert_eq!(unsafe { SCardEstablishContext(2, null(), null(), &mut c) }, SUCCESS);
    assert!(c > 0 && c <= 0x7FFF_FFFF);
    c
}

fn connect(c: SCARDCONTEXT, reader: &CStr, share: DWORD) -> (LONG, SCARDHANDLE, DWORD) {
    let (mut h, mut p) = (0, 0);
    // SAFETY: valid string and out-pointers.
    let rv = unsafe { SCardConnect(c, reader.as_ptr(), share, 3, &mut h, &mut p) };
    (rv, h, p)
}

fn transmit(h: SCARDHANDLE, cmd: &[u8], cap: usize) -> (LONG, Vec<u8>, DWORD) {
    let mut buf = vec![0u8; cap];
    let mut len = cap as DWORD;
    // SAFETY: buffers valid for the lengths passed.
    let rv = unsafe {
        SCardTransmit(h, &g_rgSCardT1Pci, cmd.as_ptr(), cmd.len() as DWORD, null_mut(), buf.as_mut_ptr(), &mut len)
    };
    buf.truncate((len as usize).min(cap));
    (rv, buf, len)
}

fn state(name: &CStr, current: DWORD) -> SCARD_READERSTATE {
    SCARD_READERSTATE {
        szReader: name.as_ptr(),
        pvUserData: null_mut(),
        dwCurrentState: current,
        dwEventState: 0,
        cbAtr: 0,
        rgbAtr: [0; 33],
    }
}

fn gsc(c: SCARDCONTEXT, timeout: DWORD, states: &mut [SCARD_READERSTATE]) -> LONG {
    // SAFETY: the array and its names are valid.
    unsafe { SCardGetStatusChange(c, timeout, states.as_mut_ptr(), states.len() as DWORD) }
}

fn release(c: SCARDCONTEXT) {
    // SAFETY: plain handle.
    assert_eq!(unsafe { SCardReleaseContext(c) }, SUCCESS);
}

fn file_byte(o: usize) -> u8 {
    (o & 0xFF) as u8 ^ 0x5A
}

#[test]
fn readers_connect_status_transmit() {
    let Some(env) = setup(Options::default()) else { return };
    let c = establish();
    // SAFETY (block): every pointer below is a live local of the right type/length.
    unsafe {
        assert_eq!(SCardIsValidContext(c), SUCCESS);

        // SCardListReaders: length query, exact buffer, short buffer, autoallocate.
        let mut len: DWORD = 0;
        assert_eq!(SCardListReaders(c, null(), null_mut(), &mut len), SUCCESS);
        let mut buf = vec![0xEEu8; len as usize];
        assert_eq!(SCardListReaders(c, null(), buf.as_mut_ptr().cast(), &mut len), SUCCESS);
        assert_eq!(*buf.last().unwrap(), 0);
        let names: Vec<&[u8]> = buf[..buf.len() - 1].split(|&b| b == 0).filter(|s| !s.is_empty()).collect();
        assert!(names.contains(&env.host.reader.as_bytes()), "{names:?}");
        let mut short = [0xEEu8; 4];
        let mut slen: DWORD = 4;
        assert_eq!(SCardListReaders(c, null(), short.as_mut_ptr().cast(), &mut slen), E_INSUFFICIENT_BUFFER);
        assert_eq!((slen, short), (len, [0xEE; 4]));
        let mut p: *mut u8 = null_mut();
        let mut alen = SCARD_AUTOALLOCATE;
        assert_eq!(SCardListReaders(c, null(), (&mut p as *mut *mut u8).cast(), &mut alen), SUCCESS);
        assert_eq!(std::slice::from_raw_parts(p, alen as usize), &buf[..]);
        assert_eq!(SCardFreeMemory(c, p.cast()), SUCCESS);
        let mut alen = SCARD_AUTOALLOCATE;
        assert_eq!(SCardListReaders(c, null(), null_mut(), &mut alen), E_INVALID_PARAMETER);
        assert_eq!(SCardListReaders(c, null(), null_mut(), null_mut()), E_INVALID_PARAMETER);

        // SCardListReaderGroups.
        let mut g = [0u8; 64];
        let mut glen = g.len() as DWORD;
        assert_eq!(SCardListReaderGroups(c, g.as_mut_ptr().cast(), &mut glen), SUCCESS);
        assert_eq!(&g[..glen as usize], b"SCard$DefaultReaders\0\0");

        // Connect, status.
        let (rv, h, proto) = connect(c, &env.reader, 2);
        assert_eq!((rv, proto), (SUCCESS, 2));
        assert!(h > 0);
        let (mut nlen, mut st, mut pr, mut alen2) = (0 as DWORD, 0 as DWORD, 0 as DWORD, 0 as DWORD);
        assert_eq!(SCardStatus(h, null_mut(), &mut nlen, &mut st, &mut pr, null_mut(), &mut alen2), SUCCESS);
        assert_eq!((nlen as usize, alen2 as usize, pr), (env.host.reader.len() + 1, ATR.len(), 2));
        assert_eq!(st & 0xFFFF, 0x34, "present | powered | negotiable: {st:#x}");
        let mut name = [0xEEu8; 128];
        let mut atr = [0xEEu8; 40];
        let (mut nl, mut al) = (name.len() as DWORD, atr.len() as DWORD);
        assert_eq!(
            SCardStatus(h, name.as_mut_ptr().cast(), &mut nl, null_mut(), null_mut(), atr.as_mut_ptr(), &mut al),
            SUCCESS
        );
        assert_eq!(CStr::from_ptr(name.as_ptr().cast()).to_bytes(), env.host.reader.as_bytes());
        assert_eq!(&atr[..al as usize], &ATR);
        let (mut nl, mut al) = (3 as DWORD, 40 as DWORD);
        name.fill(0xEE);
        assert_eq!(
            SCardStatus(h, name.as_mut_ptr().cast(), &mut nl, null_mut(), null_mut(), atr.as_mut_ptr(), &mut al),
            E_INSUFFICIENT_BUFFER
        );
        assert_eq!((nl as usize, &name[..4]), (env.host.reader.len() + 1, &b"Vir\xEE"[..]));
        let (mut pn, mut pa): (*mut u8, *mut u8) = (null_mut(), null_mut());
        let (mut nl, mut al) = (SCARD_AUTOALLOCATE, SCARD_AUTOALLOCATE);
        assert_eq!(
            SCardStatus(
                h,
                (&mut pn as *mut *mut u8).cast(),
                &mut nl,
                null_mut(),
                null_mut(),
                (&mut pa as *mut *mut u8).cast(),
                &mut al
            ),
            SUCCESS
        );
        assert_eq!(CStr::from_ptr(pn.cast()).to_bytes(), env.host.reader.as_bytes());
        assert_eq!(std::slice::from_raw_parts(pa, al as usize), &ATR);
        SCardFreeMemory(c, pn.cast());
        SCardFreeMemory(c, pa.cast());

        // Transmit: SELECT, echo (short and extended), READ BINARY pattern.
        let (rv, r, _) = transmit(h, &SELECT_AID, 258);
        assert_eq!((rv, &r[r.len() - 2..]), (SUCCESS, &[0x90, 0x00][..]));
        let (rv, r, _) = transmit(h, &[0x80, 0x01, 0, 0, 3, 1, 2, 3], 258);
        assert_eq!((rv, r), (SUCCESS, vec![1, 2, 3, 0x90, 0x00]));
        let (rv, r, _) = transmit(h, &[0x00, 0xB0, 0x01, 0x00, 0x10], 258);
        assert_eq!(rv, SUCCESS);
        assert_eq!(r.len(), 18);
        assert!(r[..16].iter().enumerate().all(|(i, &b)| b == file_byte(0x100 + i)));
        let data: Vec<u8> = (0..4000u32).map(|i| (i * 7) as u8).collect();
        let mut ext = vec![0x80, 0x01, 0, 0, 0, (data.len() >> 8) as u8, data.len() as u8];
        ext.extend_from_slice(&data);
        ext.extend_from_slice(&[0, 0]);
        let (rv, r, _) = transmit(h, &ext, 65538);
        assert_eq!(rv, SUCCESS);
        assert_eq!(&r[..data.len()], &data[..]);
        assert_eq!(&r[data.len()..], &[0x90, 0x00]);
        // Short receive buffer: the needed length comes back, and the
        // connection stays in step.
        let (rv, _, need) = transmit(h, &ext, 100);
        assert_eq!((rv, need as usize), (E_INSUFFICIENT_BUFFER, data.len() + 2));
        let (rv, r, _) = transmit(h, &[0x80, 0x01, 0, 0, 1, 9], 258);
        assert_eq!((rv, r), (SUCCESS, vec![9, 0x90, 0x00]));
        // Receive PCI filled in when given.
        let mut rpci = SCARD_IO_REQUEST { dwProtocol: 0, cbPciLength: 0 };
        let mut out = [0u8; 32];
        let mut olen = out.len() as DWORD;
        let cmd = [0x80, 0x01, 0, 0, 1, 7];
        assert_eq!(SCardTransmit(h, &g_rgSCardT1Pci, cmd.as_ptr(), 6, &mut rpci, out.as_mut_ptr(), &mut olen), SUCCESS);
        assert_eq!(olen, 3);
        // Misuse.
        let mut olen = out.len() as DWORD;
        assert_eq!(
            SCardTransmit(h, null(), cmd.as_ptr(), 6, null_mut(), out.as_mut_ptr(), &mut olen),
            E_INVALID_PARAMETER
        );
        assert_eq!(
            SCardTransmit(h, &g_rgSCardT1Pci, null(), 6, null_mut(), out.as_mut_ptr(), &mut olen),
            E_INVALID_PARAMETER
        );
        assert_eq!(
            SCardTransmit(h, &g_rgSCardT1Pci, cmd.as_ptr(), 6, null_mut(), null_mut(), &mut olen),
            E_INVALID_PARAMETER
        );
        assert_eq!(
            SCardTransmit(h, &g_rgSCardT1Pci, cmd.as_ptr(), 6, null_mut(), out.as_mut_ptr(), null_mut()),
            E_INVALID_PARAMETER
        );
        assert_eq!(
            SCardTransmit(h, &g_rgSCardT1Pci, cmd.as_ptr(), 0, null_mut(), out.as_mut_ptr(), &mut olen),
            E_INVALID_PARAMETER
        );
        let big = vec![0u8; 65549];
        assert_eq!(
            SCardTransmit(h, &g_rgSCardT1Pci, big.as_ptr(), 65549, null_mut(), out.as_mut_ptr(), &mut olen),
            E_INSUFFICIENT_BUFFER
        );
        let mut olen = 77;
        assert_eq!(
            SCardTransmit(h + 1, &g_rgSCardT1Pci, cmd.as_ptr(), 6, null_mut(), out.as_mut_ptr(), &mut olen),
            E_INVALID_HANDLE
        );
        assert_eq!(olen, 0);

        assert_eq!(SCardDisconnect(h, 0), SUCCESS);
        assert_eq!(SCardDisconnect(h, 0), E_INVALID_HANDLE);
    }
    release(c);
    // SAFETY: plain handle.
    assert_eq!(unsafe { SCardIsValidContext(c) }, E_INVALID_HANDLE);
}

#[test]
fn control_attributes_transactions_reconnect() {
    let Some(env) = setup(Options::default()) else { return };
    let c = establish();
    let (rv, h1, _) = connect(c, &env.reader, 2);
    assert_eq!(rv, SUCCESS);
    let (rv, h2, _) = connect(c, &env.reader, 2);
    assert_eq!(rv, SUCCESS);
    // SAFETY (block): every pointer below is a live local of the right type/length.
    unsafe {
        // vpcd implements no control codes and few attributes; codes as Debian's
        // libpcsclite 1.9.9 reports them with this driver.
        let mut r = [0u8; 256];
        let mut n: DWORD = 99;
        assert_eq!(
            SCardControl(h1, CM_IOCTL_GET_FEATURE_REQUEST as DWORD, null(), 0, r.as_mut_ptr().cast(), 256, &mut n),
            E_UNSUPPORTED_FEATURE
        );
        assert_eq!(n, 0);
        assert_eq!(SCardControl(h1, 1, null(), 70000, r.as_mut_ptr().cast(), 256, &mut n), E_INSUFFICIENT_BUFFER);
        assert_eq!(SCardControl(0, 1, null(), 0, r.as_mut_ptr().cast(), 256, &mut n), E_INVALID_HANDLE);

        let mut len: DWORD = 264;
        assert_eq!(SCardGetAttrib(h1, 0x0009_0303, r.as_mut_ptr(), &mut len), E_UNSUPPORTED_FEATURE);
        let mut len: DWORD = 300;
        assert_eq!(SCardGetAttrib(h1, 0x0009_0303, r.as_mut_ptr(), &mut len), E_INSUFFICIENT_BUFFER, "buffer > 264");
        let mut len: DWORD = 5;
        assert_eq!(SCardGetAttrib(h1, 0x0009_0303, null_mut(), &mut len), E_UNSUPPORTED_FEATURE);
        assert_eq!(len, 264, "length query asks with 264");
        let mut p: *mut u8 = null_mut();
        let mut len = SCARD_AUTOALLOCATE;
        SCardGetAttrib(h1, 0x0009_0303, (&mut p as *mut *mut u8).cast(), &mut len);
        assert!(!p.is_null(), "autoallocate allocates (264 bytes) before asking");
        assert_eq!(SCardFreeMemory(c, p.cast()), SUCCESS);
        assert_eq!(SCardGetAttrib(h1, 0x0009_0303, r.as_mut_ptr(), null_mut()), E_INVALID_PARAMETER);
        assert_eq!(SCardSetAttrib(h1, 0x7FFF_0003, r.as_ptr(), 0), E_INVALID_PARAMETER);
        assert_eq!(SCardSetAttrib(h1, 0x7FFF_0003, r.as_ptr(), 300), E_INSUFFICIENT_BUFFER);
        assert_eq!(SCardSetAttrib(0, 0x7FFF_0003, r.as_ptr(), 3), E_INVALID_HANDLE);

        // Transactions: nested begin/end on one handle.
        assert_eq!(SCardBeginTransaction(h1), SUCCESS);
        assert_eq!(SCardBeginTransaction(h1), SUCCESS);
        assert_eq!(SCardEndTransaction(h1, 0), SUCCESS);
        assert_eq!(SCardEndTransaction(h1, 0), SUCCESS);
        assert_eq!(SCardEndTransaction(h1, 9), E_INVALID_VALUE);

        // Reconnect with a reset: the other handle sees the reset once.
        let mut p: DWORD = 0;
        assert_eq!(SCardReconnect(h1, 2, 3, 1, &mut p), SUCCESS);
        assert_eq!(p, 2);
        assert_eq!(transmit(h2, &SELECT_AID, 258).0, W_RESET_CARD);
        assert_eq!(SCardReconnect(h2, 2, 3, 0, &mut p), SUCCESS);
        assert_eq!(transmit(h2, &SELECT_AID, 258).0, SUCCESS);
        assert_eq!(SCardReconnect(h1, 2, 3, 0, null_mut()), E_INVALID_PARAMETER);
        let mut p: DWORD = 77;
        assert_eq!(SCardReconnect(h1, 0, 3, 0, &mut p), E_INVALID_VALUE);
        assert_eq!(p, 0, "the daemon's protocol comes back even on failure");
    }
    release(c);
    // SAFETY: plain handles.
    assert_eq!(unsafe { SCardDisconnect(h1, 0) }, E_INVALID_HANDLE, "cards go with their context");
}

#[test]
fn removal_and_insertion_seen_by_get_status_change() {
    let Some(env) = setup(Options::default()) else { return };
    let c = establish();
    let mut st = [state(&env.reader, rs::UNAWARE as DWORD)];
    assert_eq!(gsc(c, 0, &mut st), SUCCESS);
    assert_eq!(st[0].dwEventState & 0xFFFF, (rs::PRESENT | rs::CHANGED) as DWORD);
    assert_eq!(&st[0].rgbAtr[..st[0].cbAtr as usize], &ATR);
    // Nothing changes: timeout after about the time asked.
    st[0].dwCurrentState = st[0].dwEventState & !(rs::CHANGED as DWORD);
    let t = Instant::now();
    assert_eq!(gsc(c, 300, &mut st), E_TIMEOUT);
    let el = t.elapsed();
    assert!(el >= Duration::from_millis(290) && el < Duration::from_secs(3), "{el:?}");
    assert_eq!(gsc(c, 0, &mut st), E_TIMEOUT);

    // Removal while waiting without a timeout.
    let waiter = {
        let cur = st[0].dwCurrentState;
        let name = env.reader.clone();
        std::thread::spawn(move || {
            let mut s = [state(&name, cur)];
            let rv = gsc(c, INFINITE_DW, &mut s);
            (rv, s[0].dwEventState, s[0].cbAtr)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    env.host.card_remove().unwrap();
    let (rv, ev, cb) = waiter.join().unwrap();
    assert_eq!(rv, SUCCESS);
    assert_eq!(ev & 0xFFFF, (rs::EMPTY | rs::CHANGED) as DWORD);
    assert_eq!(cb, 0);
    // Insertion, with (DWORD)-1 as the timeout.
    let cur = ev & !(rs::CHANGED as DWORD);
    let waiter = {
        let name = env.reader.clone();
        std::thread::spawn(move || {
            let mut s = [state(&name, cur)];
            let rv = gsc(c, DWORD::MAX, &mut s);
            (rv, s[0].dwEventState, s[0].rgbAtr, s[0].cbAtr)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    env.host.card_insert().unwrap();
    let (rv, ev, atr, cb) = waiter.join().unwrap();
    assert_eq!(rv, SUCCESS);
    assert_eq!(ev & (rs::PRESENT | rs::CHANGED) as DWORD, (rs::PRESENT | rs::CHANGED) as DWORD);
    assert_eq!(&atr[..cb as usize], &ATR);
    release(c);
}

const INFINITE_DW: DWORD = 0xFFFF_FFFF;

#[test]
fn cancel_from_another_thread_ends_an_infinite_wait() {
    let Some(env) = setup(Options::default()) else { return };
    let c = establish();
    let mut st = [state(&env.reader, rs::UNAWARE as DWORD)];
    assert_eq!(gsc(c, 0, &mut st), SUCCESS);
    let cur = st[0].dwEventState & !(rs::CHANGED as DWORD);
    // SAFETY: plain handle.
    assert_eq!(unsafe { SCardCancel(c) }, SUCCESS, "nothing to cancel is fine");
    let name = env.reader.clone();
    let waiter = std::thread::spawn(move || {
        let mut s = [state(&name, cur)];
        let t = Instant::now();
        (gsc(c, INFINITE_DW, &mut s), t.elapsed())
    });
    std::thread::sleep(Duration::from_millis(400));
    // SAFETY: plain handle.
    assert_eq!(unsafe { SCardCancel(c) }, SUCCESS);
    let (rv, el) = waiter.join().unwrap();
    assert_eq!(rv, E_CANCELLED);
    assert!(el < Duration::from_secs(3), "{el:?}");
    // The context is still usable.
    let mut len: DWORD = 0;
    // SAFETY: valid out-pointer.
    assert_eq!(unsafe { SCardListReaders(c, null(), null_mut(), &mut len) }, SUCCESS);
    // SAFETY: plain handles.
    unsafe {
        assert_eq!(SCardCancel(0), E_INVALID_HANDLE);
    }
    release(c);
}

#[test]
fn misuse_codes_match_libpcsclite() {
    let Some(env) = setup(Options::default()) else { return };
    let c = establish();
    // SAFETY (block): pointers are NULL or live locals.
    unsafe {
        assert_eq!(SCardEstablishContext(2, null(), null(), null_mut()), E_INVALID_PARAMETER);
        let mut h: SCARDHANDLE = 55;
        let mut p: DWORD = 0;
        assert_eq!(SCardConnect(c, null(), 2, 3, &mut h, &mut p), E_UNKNOWN_READER);
        assert_eq!(h, 0);
        assert_eq!(SCardConnect(c, env.reader.as_ptr(), 2, 3, null_mut(), &mut p), E_INVALID_PARAMETER);
        let long = CString::new("x".repeat(129)).unwrap();
        assert_eq!(SCardConnect(c, long.as_ptr(), 2, 3, &mut h, &mut p), E_INVALID_VALUE);
        assert_eq!(SCardConnect(c + 1, env.reader.as_ptr(), 2, 3, &mut h, &mut p), E_INVALID_HANDLE);
        let unknown = CString::new("No such reader").unwrap();
        let (rv, h, _) = connect(c, &unknown, 2);
        assert_eq!((rv, h), (E_UNKNOWN_READER, 0));

        // SCardGetStatusChange argument checks, in upstream's order.
        let mut many: Vec<SCARD_READERSTATE> = (0..17).map(|_| state(&env.reader, 0)).collect();
        assert_eq!(gsc(c, 0, &mut many), E_INVALID_PARAMETER);
        assert_eq!(SCardGetStatusChange(c, 0, null_mut(), 1), E_INVALID_PARAMETER);
        assert_eq!(SCardGetStatusChange(c, 0, null_mut(), 0), SUCCESS);
        let mut nul = [state(&env.reader, 0)];
        nul[0].szReader = null();
        assert_eq!(gsc(c, 0, &mut nul), E_INVALID_VALUE);
        let mut ign = [state(&unknown, rs::IGNORE as DWORD)];
        assert_eq!(gsc(0, 0, &mut ign), SUCCESS, "all ignored: success before the handle check");
        let mut mix = [state(&unknown, rs::IGNORE as DWORD), state(&env.reader, 0)];
        mix[0].dwEventState = 0xAB;
        assert_eq!(gsc(c, 0, &mut mix), E_UNKNOWN_READER);
        assert_eq!(mix[0].dwEventState, 0xAB, "untouched");
        let mut one = [state(&env.reader, 0)];
        assert_eq!(gsc(0, 0, &mut one), E_INVALID_HANDLE);

        // Handles that never were.
        assert_eq!(SCardIsValidContext(0), E_INVALID_HANDLE);
        assert_eq!(SCardReleaseContext(-5), E_INVALID_HANDLE);
        assert_eq!(SCardFreeMemory(0, null()), E_INVALID_HANDLE);
        assert_eq!(SCardFreeMemory(c, null()), SUCCESS);
        assert_eq!(SCardBeginTransaction(1), E_INVALID_HANDLE);
        assert_eq!(SCardEndTransaction(1, 0), E_INVALID_HANDLE);
        let mut g: DWORD = 0;
        assert_eq!(SCardListReaderGroups(0, null_mut(), &mut g), E_INVALID_HANDLE);
        let (mut a, mut b) = (7 as DWORD, 7 as DWORD);
        assert_eq!(SCardStatus(1, null_mut(), &mut a, null_mut(), null_mut(), null_mut(), &mut b), E_INVALID_HANDLE);
        assert_eq!((a, b), (0, 0));

        assert_eq!(CStr::from_ptr(pcsc_stringify_error(0x8010_0069)).to_str().unwrap(), "Card was removed.");
        assert_eq!(g_rgSCardT0Pci, SCARD_IO_REQUEST { dwProtocol: 1, cbPciLength: 16 });
        assert_eq!(g_rgSCardRawPci.dwProtocol, 4);
    }
    release(c);
}

#[test]
fn fork_child_gets_fresh_tables() {
    let Some(env) = setup(Options::default()) else { return };
    let c = establish();
    let (rv, h, _) = connect(c, &env.reader, 2);
    assert_eq!(rv, SUCCESS);
    // SAFETY: the child only calls the library and _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // Child: the parent's handles are not ours; a new context works.
        let code = (|| unsafe {
            if SCardIsValidContext(c) != E_INVALID_HANDLE {
                return 10;
            }
            if transmit(h, &SELECT_AID, 258).0 != E_INVALID_HANDLE {
                return 11;
            }
            let mut c2: SCARDCONTEXT = 0;
            if SCardEstablishContext(2, null(), null(), &mut c2) != SUCCESS {
                return 12;
            }
            let (rv, h2, _) = connect(c2, &env.reader, 2);
            if rv != SUCCESS {
                return 13;
            }
            let (rv, r, _) = transmit(h2, &SELECT_AID, 258);
            if rv != SUCCESS || r[r.len() - 2..] != [0x90, 0x00] {
                return 14;
            }
            if SCardReleaseContext(c2) != SUCCESS {
                return 15;
            }
            0
        })();
        // SAFETY: no unwinding or destructors in the child.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status), "child died: {status:#x}");
    assert_eq!(libc::WEXITSTATUS(status), 0, "child failed at step {}", libc::WEXITSTATUS(status));
    // The parent's context and card are unaffected.
    let (rv, r, _) = transmit(h, &SELECT_AID, 258);
    assert_eq!((rv, &r[r.len() - 2..]), (SUCCESS, &[0x90, 0x00][..]));
    release(c);
}

#[test]
fn daemon_restart_keeps_the_context() {
    let Some(env) = setup(Options::default()) else { return };
    let c = establish();
    let (rv, h, _) = connect(c, &env.reader, 2);
    assert_eq!(rv, SUCCESS);
    env.host.restart_pcscd().unwrap();
    // SAFETY (block): pointers are live locals.
    unsafe {
        assert_eq!(SCardIsValidContext(c), SUCCESS);
        let mut len: DWORD = 0;
        assert_eq!(SCardListReaders(c, null(), null_mut(), &mut len), SUCCESS, "same SCARDCONTEXT works again");
    }
    assert_eq!(transmit(h, &SELECT_AID, 258).0, W_REMOVED_CARD, "old card handle");
    let (rv, h2, _) = connect(c, &env.reader, 2);
    assert_eq!(rv, SUCCESS);
    assert_eq!(transmit(h2, &SELECT_AID, 258).0, SUCCESS);
    // SAFETY: plain handles.
    assert_eq!(unsafe { SCardDisconnect(h, 0) }, SUCCESS, "an old handle just goes away");
    release(c);
}

#[test]
fn release_wakes_a_blocked_wait() {
    let Some(env) = setup(Options::default()) else { return };
    let c = establish();
    let mut st = [state(&env.reader, rs::UNAWARE as DWORD)];
    assert_eq!(gsc(c, 0, &mut st), SUCCESS);
    let cur = st[0].dwEventState & !(rs::CHANGED as DWORD);
    let name = env.reader.clone();
    let waiter = std::thread::spawn(move || {
        let mut s = [state(&name, cur)];
        gsc(c, INFINITE_DW, &mut s)
    });
    std::thread::sleep(Duration::from_millis(300));
    release(c);
    let rv = waiter.join().unwrap();
    assert!(rv == E_CANCELLED || rv == E_INVALID_HANDLE, "{rv:#x}");
}

#[test]
fn threads_share_one_context_and_use_their_own() {
    let Some(env) = setup(Options::default()) else { return };
    let shared = establish();
    let (rv, hs, _) = connect(shared, &env.reader, 2);
    assert_eq!(rv, SUCCESS);
    let threads: Vec<_> = (0..6u8)
        .map(|t| {
            let name = env.reader.clone();
            std::thread::spawn(move || {
                let own = establish();
                let (rv, h, _) = connect(own, &name, 2);
                assert_eq!(rv, SUCCESS);
                for i in 0..40u8 {
                    // Alternate between the shared context's card and our own.
                    let card = if i % 2 == 0 { hs } else { h };
                    let (rv, r, _) = transmit(card, &[0x80, 0x01, 0, 0, 2, t, i], 258);
                    assert_eq!((rv, r), (SUCCESS, vec![t, i, 0x90, 0x00]));
                }
                release(own);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    release(shared);
}
