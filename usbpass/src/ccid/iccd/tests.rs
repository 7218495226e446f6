//! The ICCD adapter: its wire structures; the driver (`Slot` over `Ccid`) over
//! [`IccdTransport`] over the simulated tokens of [`super::sim`], end to end and with faults;
//! and random token answers, which must never panic.

use super::sim::{descriptors, IccdFault, SimIccd};
use super::*;
use crate::ccid::atr::{Protocol, Protocols};
use crate::ccid::device::{CcidError, Op};
use crate::ccid::exchange::{ExchangeError, ExchangeOptions, Slot, MAX_RESPONSE};
use crate::ccid::message::{Command, SetParameters, T1Params, XfrBlock};
use crate::ccid::sim::{Rng, T0_ONLY_ATR, T1_ONLY_ATR};
use pcsc_bridge_tests::card::cmd::{echo, pattern_ext, select_ok, SELECT, SELECT_NO_FCI};
use pcsc_bridge_tests::card::{self, Card};
use pcsc_proto::Rv;

type Token = IccdTransport<SimIccd>;

fn token(version: Version) -> SimIccd {
    match version {
        Version::A => SimIccd::version_a(Box::new(Card::new())),
        Version::B => SimIccd::version_b(Box::new(Card::new())),
    }
}

/// A slot over the adapter over `sim`, opened as the open hook does (power cycle included).
fn slot(sim: SimIccd) -> Slot<Token> {
    let version = sim.version;
    let desc = driver_descriptor(version, &sim.desc);
    Slot::new(IccdTransport::open(sim, version), desc, 0, ExchangeOptions::default()).expect("supported level")
}

fn sim(s: &mut Slot<Token>) -> &mut SimIccd {
    s.ccid().transport().inner()
}

fn adapter(s: &mut Slot<Token>) -> &mut Token {
    s.ccid().transport()
}

/// Forget what the token logged so far.
fn clear_log(s: &mut Slot<Token>) {
    sim(s).log = Default::default();
}

/// The ICCD error text inside a driver error (USB I/O errors made by the adapter).
fn iccd_text(e: &ExchangeError) -> String {
    match e {
        ExchangeError::Ccid { source: CcidError::Transport { source: TransportError::Io(s), .. }, .. } => s.clone(),
        other => panic!("not an ICCD protocol error: {other:?}"),
    }
}

fn failed_error(e: &ExchangeError) -> u8 {
    match e {
        ExchangeError::Ccid { source: CcidError::Failed { status, .. }, .. } => status.error,
        other => panic!("not a failed reply: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Wire structures

#[test]
fn requests_parse_what_they_emit() {
    let data = [1u8, 2, 3];
    for version in [Version::A, Version::B] {
        let chain = if version == Version::B { 0x03 } else { 0 };
        for r in [
            Request::PowerOn,
            Request::PowerOff,
            Request::XfrBlock { chain, data: &data },
            Request::DataBlock,
            if version == Version::A { Request::IccStatus } else { Request::SlotStatus },
        ] {
            let setup = r.setup(version);
            assert_eq!(Request::parse(version, setup, r.data()), Ok(r), "{version} {r:?}");
        }
    }
    // The numbers of Appendix A.
    let s = |r: Request<'_>, v| {
        let s = r.setup(v);
        (s.direction, s.request, s.value)
    };
    assert_eq!(s(Request::PowerOn, Version::A), (Direction::In, 0x62, 0));
    assert_eq!(s(Request::PowerOn, Version::B), (Direction::Out, 0x62, 1));
    assert_eq!(s(Request::PowerOff, Version::B), (Direction::Out, 0x63, 0));
    assert_eq!(s(Request::XfrBlock { chain: 0x10, data: &[] }, Version::B), (Direction::Out, 0x65, 0x1000));
    assert_eq!(s(Request::DataBlock, Version::A), (Direction::In, 0x6F, 0));
    assert_eq!(s(Request::IccStatus, Version::A), (Direction::In, 0xA0, 0));
    assert_eq!(s(Request::SlotStatus, Version::B), (Direction::In, 0x81, 0));
    // Requests of the other version are unknown.
    let slot_status = Setup { direction: Direction::In, request: 0x81, value: 0 };
    assert_eq!(Request::parse(Version::A, slot_status, &[]), Err(IccdError::UnknownRequest(slot_status)));
}

#[test]
fn b_responses() {
    let cases: [(&[u8], BResponse<'_>); 7] = [
        (&[0x00, 0x90, 0x00], BResponse::Data { chain: 0, data: &[0x90, 0x00] }),
        (&[0x01, 0xAA], BResponse::Data { chain: 1, data: &[0xAA] }),
        (&[0x02], BResponse::Data { chain: 2, data: &[] }),
        (&[0x03, 0x01], BResponse::Data { chain: 3, data: &[0x01] }),
        (&[0x10], BResponse::Data { chain: 0x10, data: &[] }),
        (&[0x40, 0x41, 0xFE], BResponse::Status { status: 0x41, error: 0xFE }),
        (&[0x80, 0x34, 0x12], BResponse::Poll { delay: 0x1234 }),
    ];
    for (bytes, r) in cases {
        assert_eq!(BResponse::parse(bytes), Ok(r));
        let mut out = Vec::new();
        r.emit(&mut out);
        assert_eq!(out, bytes);
    }
    assert_eq!(BResponse::parse(&[]), Err(IccdError::Empty { request: 0x6F }));
    assert_eq!(BResponse::parse(&[0x40, 1]), Err(IccdError::Short { request: 0x6F, len: 2, need: 3 }));
    assert_eq!(BResponse::parse(&[0x80]), Err(IccdError::Short { request: 0x6F, len: 1, need: 3 }));
    assert_eq!(BResponse::parse(&[0x55, 0, 0]), Err(IccdError::UnknownResponseType(0x55)));
    assert_eq!(poll_wait(0, POLL_UNIT), Duration::from_millis(10));
    assert_eq!(poll_wait(7, POLL_UNIT), Duration::from_millis(70));
    assert_eq!(poll_wait(0xFFFF, POLL_UNIT), Duration::from_millis(655_350));
}

#[test]
fn status_bytes() {
    for (bytes, icc) in [
        (&[0x00, 0x00, 0x00][..], IccStatus::Active),
        (&[0x00, 0x01], IccStatus::Inactive),
        (&[0x00, 0x02, 0x00], IccStatus::Absent),
        (&[0x00, 0x03, 0x00], IccStatus::Absent),
        (&[0x81, 0x40, 0xFE], IccStatus::Active),
    ] {
        let s = BSlotStatus::parse(bytes).unwrap();
        assert_eq!(s.icc(), icc, "{bytes:02X?}");
        let mut out = Vec::new();
        s.emit(&mut out);
        assert_eq!(out[..bytes.len()], *bytes);
    }
    assert_eq!(BSlotStatus::parse(&[]), Err(IccdError::Empty { request: 0x81 }));
    assert_eq!(BSlotStatus::parse(&[0]), Err(IccdError::Short { request: 0x81, len: 1, need: 2 }));
    let a = |b: u8| AStatus::parse(&[b]).unwrap();
    assert!(a(0x40).is_busy() && a(0xC0).is_busy() && !a(0x40).is_mute());
    assert!(a(0x80).is_mute() && !a(0x80).is_busy());
    assert!(!a(0x10).is_busy() && !a(0x20).is_mute());
    assert_eq!(AStatus::parse(&[]), Err(IccdError::Empty { request: 0xA0 }));
    let mut out = Vec::new();
    a(0x20).emit(&mut out);
    assert_eq!(out, [0x20]);
}

#[test]
fn descriptors_for_the_driver() {
    let a = driver_descriptor(Version::A, &descriptors::version_a());
    assert_eq!(descriptors::version_a().level(), Some(ExchangeLevel::Character));
    assert_eq!(a.level(), Some(ExchangeLevel::ShortApdu));
    assert_eq!(a.max_message_len(), 271);
    assert!(a.features.auto_voltage() && a.features.auto_parameters());
    assert!(a.features.has(Features::ICCD_TOKEN));
    assert_eq!(a.protocols, descriptors::version_a().protocols);

    let b = driver_descriptor(Version::B, &descriptors::version_b());
    assert_eq!(b.level(), Some(ExchangeLevel::ExtendedApdu));
    assert_eq!(b.max_message_len(), 261);
    assert!(b.features.auto_voltage() && b.features.auto_parameters());

    // Messages never exceed one control transfer; other levels stay; one slot, no PIN pad.
    let mut big = descriptors::version_b();
    big.features = Features(0x0004_0840);
    big.max_ccid_message_length = 65_554;
    big.max_slot_index = 3;
    big.pin_support = PinSupport(3);
    big.num_data_rates_supported = 4;
    let b = driver_descriptor(Version::B, &big);
    assert_eq!(b.max_message_len(), HEADER_LEN + MAX_CONTROL);
    assert_eq!(b.level(), Some(ExchangeLevel::ExtendedApdu));
    assert_eq!((b.slots(), b.pin_support.0, b.num_data_rates_supported), (1, 0, 0));
    big.features = Features(0x0001_0840);
    assert_eq!(driver_descriptor(Version::B, &big).level(), Some(ExchangeLevel::Tpdu));

    // The open hook leaves CCID readers alone.
    let (d, _) = adapt(InterfaceKind::Ccid, big.clone(), token(Version::B)).unwrap();
    assert_eq!(d, big);
    let (d, _) = adapt(InterfaceKind::Iccd(2), descriptors::version_b(), token(Version::B)).unwrap();
    assert_eq!(d.level(), Some(ExchangeLevel::ExtendedApdu));
    assert!(adapt(InterfaceKind::Iccd(7), big, token(Version::B)).is_err());
}

// ---------------------------------------------------------------------------------------------
// Version A, end to end

#[test]
fn version_a_end_to_end() {
    use super::request::XFR_BLOCK as XFR;
    use super::request::{DATA_BLOCK as DB, GET_ICC_STATUS as ST, ICC_POWER_OFF as OFF, ICC_POWER_ON as ON};
    let mut s = slot(token(Version::A));
    // libccid's power cycle at open: off, then power-on (off, wait, ATR), off.
    assert_eq!(sim(&mut s).log.request_codes(), [OFF, OFF, ST, ON, OFF]);
    assert!(!sim(&mut s).is_powered());
    assert!(s.presence().unwrap());
    clear_log(&mut s);

    let (atr, p) = s.connect(Protocols::ANY).unwrap();
    assert_eq!((atr, p), (T0_ONLY_ATR.to_vec(), Protocol::T0));
    // One power-on, no PPS, no SetParameters.
    assert_eq!(sim(&mut s).log.request_codes(), [OFF, ST, ON]);
    assert_eq!(sim(&mut s).log.requests[2].3, 33, "ATR read with room for 33 bytes");
    clear_log(&mut s);

    // SELECT (case 3 at T=0): header, status 10, the AID, status 20, SW = 61 10 (T=0 case 4).
    assert_eq!(s.transmit(&SELECT).unwrap(), [0x61, 0x10]);
    let log = &sim(&mut s).log;
    let kinds: Vec<(u8, usize)> = log.requests.iter().map(|r| (r.1, r.3)).collect();
    assert_eq!(kinds, [(XFR, 5), (ST, 1), (XFR, 7), (ST, 1), (DB, 2)]);
    assert_eq!(log.apdus, [SELECT.to_vec()]);
    // GET RESPONSE (case 2): header, status 10, data, status 20, SW.
    assert_eq!(s.transmit(&[0x00, 0xC0, 0x00, 0x00, 0x10]).unwrap(), select_ok());
    assert_eq!(s.transmit(&SELECT_NO_FCI).unwrap(), [0x90, 0x00]);
    // READ BINARY of 256 bytes (P3 = 00): one data read.
    clear_log(&mut s);
    let rb = s.transmit(&[0x00, 0xB0, 0x00, 0x00, 0x00]).unwrap();
    assert_eq!(rb.len(), 258);
    assert_eq!(rb[..256], (0..256).map(card::file_byte).collect::<Vec<u8>>()[..]);
    assert_eq!(&rb[256..], [0x90, 0x00]);
    let kinds: Vec<(u8, usize)> = sim(&mut s).log.requests.iter().map(|r| (r.1, r.3)).collect();
    assert_eq!(kinds, [(XFR, 5), (ST, 1), (DB, MAX_CONTROL), (ST, 1), (DB, 2)]);
    // Status word only (offset past the file), and a 4-byte case-1 command (sent with P3 = 00).
    assert_eq!(s.transmit(&[0x00, 0xB0, 0x80, 0x00, 0x10]).unwrap()[..], [0x6B, 0x00]);
    clear_log(&mut s);
    assert_eq!(s.transmit(&[0x00, 0x20, 0x00, 0x81]).unwrap()[..], [0x63, 0xC3]);
    assert_eq!(sim(&mut s).log.apdus, [vec![0x00, 0x20, 0x00, 0x81]]);
    assert_eq!(sim(&mut s).log.requests[0].3, 5);
    // Case 4: the card answers 61xx; GET RESPONSE brings the data.
    let (apdu, resp) = echo(100, false);
    assert_eq!(s.transmit(&apdu).unwrap(), [0x61, 100]);
    assert_eq!(s.transmit(&[0x00, 0xC0, 0x00, 0x00, 100]).unwrap(), resp);

    assert_eq!(s.status().unwrap(), IccStatus::Active);
    s.power_off().unwrap();
    assert!(!sim(&mut s).is_powered());
    assert_eq!(s.status().unwrap(), IccStatus::Inactive);
    assert!(s.presence().unwrap(), "an ICCD card is always there");
    assert_eq!(s.transmit(&SELECT).unwrap_err(), ExchangeError::NotPowered);
    assert_eq!(s.power_on().unwrap(), T0_ONLY_ATR);
    assert_eq!(adapter(&mut s).stats().time_extensions, 0);
}

#[test]
fn version_a_busy_mute_and_bad_answers() {
    let mut s = slot(token(Version::A));
    s.connect(Protocols::ANY).unwrap();
    // Busy: polled again every 10 ms.
    sim(&mut s).fault(IccdFault::Busy { times: 5, delay: 0 });
    let t0 = Instant::now();
    assert_eq!(s.transmit(&SELECT_NO_FCI).unwrap(), [0x90, 0x00]);
    assert!(t0.elapsed() >= Duration::from_millis(50));
    assert_eq!(adapter(&mut s).stats().polls, 5);
    // Busy while powering up, and while reporting the status.
    sim(&mut s).fault(IccdFault::Busy { times: 2, delay: 0 });
    assert_eq!(s.power_on().unwrap(), T0_ONLY_ATR);
    sim(&mut s).fault(IccdFault::Busy { times: 2, delay: 0 });
    assert_eq!(s.status().unwrap(), IccStatus::Active);
    assert_eq!(adapter(&mut s).stats().polls, 9);
    s.connect(Protocols::T0).unwrap();

    // Mute in an exchange: ICC_MUTE, SCARD_E_NOT_TRANSACTED; the next command works.
    sim(&mut s).fault(IccdFault::Error(0));
    let e = s.transmit(&[0x00, 0xB0, 0x00, 0x00, 0x10]).unwrap_err();
    assert_eq!(failed_error(&e), ErrorCode::ICC_MUTE);
    assert_eq!(e.rv(), Rv::E_NOT_TRANSACTED);
    assert_eq!(s.transmit(&SELECT_NO_FCI).unwrap(), [0x90, 0x00]);
    // Mute in a status: "no card", as libccid reports it.
    sim(&mut s).fault(IccdFault::Error(0));
    assert_eq!(s.status().unwrap(), IccStatus::Absent);

    // Bad answers: clear errors, no panic; the token is usable after a new power-up.
    let mut bad = |faults: Vec<IccdFault>, apdu: &[u8], want: &str| {
        s.power_on().unwrap();
        s.connect(Protocols::T0).unwrap();
        for f in faults {
            sim(&mut s).fault(f);
        }
        let e = s.transmit(apdu).unwrap_err();
        assert_eq!(e.rv(), Rv::E_NOT_TRANSACTED);
        let text = iccd_text(&e);
        assert!(text.contains(want), "{text} (want {want})");
        s.power_on().unwrap();
        s.connect(Protocols::T0).unwrap();
        assert_eq!(s.transmit(&SELECT_NO_FCI).unwrap(), [0x90, 0x00]);
    };
    bad(vec![IccdFault::Truncate(0)], &SELECT_NO_FCI, "ICCD: empty answer to request 0xa0");
    bad(vec![IccdFault::Replace(vec![0x00])], &SELECT_NO_FCI, "unexpected status byte 0x00");
    // SELECT: status 10, status 20, then a 1-byte status word.
    let sw1 = vec![IccdFault::Replace(vec![0x10]), IccdFault::Replace(vec![0x20]), IccdFault::Replace(vec![0x90])];
    bad(sw1, &SELECT_NO_FCI, "1-byte status word");
    // A token that offers data once more after it was read (faults apply to IN requests in
    // order: status, status, data, status).
    let r = |b: &[u8]| IccdFault::Replace(b.to_vec());
    let again = vec![r(&[0x10]), r(&[0x10]), r(&[0xAA]), r(&[0x10])];
    bad(again, &SELECT_NO_FCI, "unexpected status byte 0x10");
    bad(vec![r(&[0x20]), r(&[])], &SELECT_NO_FCI, "0-byte status word");
    bad(vec![], &[0x00, 0xA4, 0x04], "3-byte command");
    let mut s = slot(token(Version::A));
    sim(&mut s).fault(IccdFault::Truncate(0));
    let e = s.power_on().unwrap_err();
    assert_eq!(e.rv(), Rv::W_UNRESPONSIVE_CARD);
    assert!(iccd_text(&e).contains("empty answer to request 0xa0"));
    sim(&mut s).fault(IccdFault::Replace(vec![0x00]));
    sim(&mut s).fault(IccdFault::Replace(vec![]));
    assert!(iccd_text(&s.power_on().unwrap_err()).contains("without an ATR"));
    assert_eq!(s.power_on().unwrap(), T0_ONLY_ATR);
}

// ---------------------------------------------------------------------------------------------
// Version B, end to end

#[test]
fn version_b_end_to_end() {
    use super::request::{DATA_BLOCK as DB, ICC_POWER_OFF as OFF, ICC_POWER_ON as ON, SLOT_STATUS as ST};
    let mut s = slot(token(Version::B));
    assert_eq!(s.level(), ExchangeLevel::ExtendedApdu);
    // Power cycle at open: off (+ status), on (off, on, ATR), off (+ status).
    assert_eq!(sim(&mut s).log.request_codes(), [OFF, ST, OFF, ON, DB, OFF, ST]);
    assert_eq!(sim(&mut s).log.requests[3], (Direction::Out, ON, 1, 0));
    assert_eq!(sim(&mut s).log.requests[4].3, 34, "ATR read with room for bResponseType + 33");
    assert!(s.presence().unwrap());
    clear_log(&mut s);

    let (atr, p) = s.connect(Protocols::ANY).unwrap();
    assert_eq!((atr, p), (T1_ONLY_ATR.to_vec(), Protocol::T1));
    assert_eq!(sim(&mut s).log.request_codes(), [OFF, ON, DB]);
    clear_log(&mut s);
    assert_eq!(s.transmit(&SELECT).unwrap(), select_ok());
    assert_eq!(sim(&mut s).log.chain_codes(), [0x00]);
    assert_eq!(sim(&mut s).log.requests[1].3, MAX_CONTROL, "answers read with a whole control transfer");

    // A full short APDU does not fit 261 − 10 bytes: chained 251 + 10, as libccid does.
    clear_log(&mut s);
    let (apdu, resp) = echo(255, false);
    assert_eq!(s.transmit(&apdu).unwrap(), resp);
    assert_eq!(sim(&mut s).log.chain_codes(), [0x01, 0x02]);
    assert_eq!(sim(&mut s).log.apdus, [apdu]);
    // 1009 command bytes: 251 × 4 + 5.
    clear_log(&mut s);
    let (apdu, resp) = echo(1000, true);
    assert_eq!(s.transmit(&apdu).unwrap(), resp);
    assert_eq!(sim(&mut s).log.chain_codes(), [0x01, 0x03, 0x03, 0x03, 0x02]);
    // A 6002-byte answer does not fit one control transfer: 4095 (01) + 1907 (02).
    clear_log(&mut s);
    let (apdu, resp) = pattern_ext(6000);
    assert_eq!(s.transmit(&apdu).unwrap(), resp);
    assert_eq!(sim(&mut s).log.chain_codes(), [0x00, 0x10]);
    // Both ways at once, and the largest answer.
    let (apdu, resp) = echo(5000, true);
    assert_eq!(s.transmit(&apdu).unwrap(), resp);
    let (apdu, resp) = pattern_ext(65535);
    assert_eq!(s.transmit(&apdu).unwrap(), resp);
    // A token that chains in small parts.
    sim(&mut s).chunk = 100;
    clear_log(&mut s);
    let (apdu, resp) = pattern_ext(300);
    assert_eq!(s.transmit(&apdu).unwrap(), resp);
    assert_eq!(sim(&mut s).log.chain_codes(), [0x00, 0x10, 0x10, 0x10]);

    assert_eq!(s.status().unwrap(), IccStatus::Active);
    s.power_off().unwrap();
    assert!(!sim(&mut s).is_powered());
    assert_eq!(s.status().unwrap(), IccStatus::Inactive);
    assert!(s.presence().unwrap());
    assert_eq!(s.power_on().unwrap(), T1_ONLY_ATR);
}

#[test]
fn version_b_poll_again_and_time_extension() {
    let mut s = slot(token(Version::B));
    s.connect(Protocols::ANY).unwrap();
    sim(&mut s).fault(IccdFault::Busy { times: 3, delay: 2 });
    let t0 = Instant::now();
    assert_eq!(s.transmit(&SELECT).unwrap(), select_ok());
    assert!(t0.elapsed() >= Duration::from_millis(60));
    assert_eq!(adapter(&mut s).stats().polls, 3);
    // "Poll again" during power-up too (delay 0: the host chooses, 10 ms).
    sim(&mut s).fault(IccdFault::Busy { times: 2, delay: 0 });
    assert_eq!(s.power_on().unwrap(), T1_ONLY_ATR);
    s.connect(Protocols::T1).unwrap();

    // A poll delay beyond the driver's timeout: time extensions keep it waiting.
    sim(&mut s).fault(IccdFault::Busy { times: 1, delay: 15 });
    let t0 = Instant::now();
    let r = s.ccid().transact(0, &XfrBlock { bwi: 0, level: 0, data: &SELECT }, Duration::from_millis(40)).unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(150));
    assert_eq!(r.data, select_ok());
    let driver_te = s.ccid().stats().time_extensions;
    assert!(driver_te >= 1, "{driver_te}");
    assert_eq!(adapter(&mut s).stats().time_extensions, driver_te);
}

#[test]
fn version_b_status_errors_and_bad_answers() {
    let mut s = slot(token(Version::B));
    s.connect(Protocols::ANY).unwrap();
    // Status with an error: a failed reply with that bError; the token goes on.
    sim(&mut s).fault(IccdFault::Error(ErrorCode::HW_ERROR));
    let e = s.transmit(&SELECT).unwrap_err();
    assert_eq!(failed_error(&e), ErrorCode::HW_ERROR);
    assert_eq!(e.rv(), Rv::E_NOT_TRANSACTED);
    assert_eq!(s.transmit(&SELECT).unwrap(), select_ok());
    // In the middle of a chained answer.
    let (apdu, resp) = pattern_ext(9000);
    sim(&mut s).fault(IccdFault::Replace(vec![0x01, 0xAA]));
    sim(&mut s).fault(IccdFault::Error(ErrorCode::XFR_OVERRUN));
    assert_eq!(failed_error(&s.transmit(&apdu).unwrap_err()), ErrorCode::XFR_OVERRUN);
    assert_eq!(s.transmit(&apdu).unwrap(), resp);

    for (fault, want) in [
        (IccdFault::Replace(vec![]), "ICCD: empty answer to request 0x6f"),
        (IccdFault::Replace(vec![0x80]), "1-byte answer to request 0x6f (need 3)"),
        (IccdFault::Replace(vec![0x40, 0x00]), "2-byte answer to request 0x6f (need 3)"),
        (IccdFault::Replace(vec![0x55, 0, 0]), "unknown bResponseType 0x55"),
    ] {
        sim(&mut s).fault(fault);
        let e = s.transmit(&SELECT).unwrap_err();
        assert_eq!(e.rv(), Rv::E_NOT_TRANSACTED);
        assert!(iccd_text(&e).contains(want), "{e}");
        assert_eq!(s.transmit(&SELECT).unwrap(), select_ok());
    }
    // Short slot status.
    sim(&mut s).fault(IccdFault::Truncate(1));
    let e = s.status().unwrap_err();
    assert!(iccd_text(&e).contains("1-byte answer to request 0x81"), "{e}");
    assert_eq!(s.status().unwrap(), IccStatus::Active);
    // Power-up: status with an error, or no ATR.
    sim(&mut s).fault(IccdFault::Error(ErrorCode::ICC_MUTE));
    let e = s.power_on().unwrap_err();
    assert_eq!((failed_error(&e), e.rv()), (ErrorCode::ICC_MUTE, Rv::W_UNRESPONSIVE_CARD));
    sim(&mut s).fault(IccdFault::Replace(vec![0x00]));
    assert!(iccd_text(&s.power_on().unwrap_err()).contains("without an ATR"));
    assert_eq!(s.power_on().unwrap(), T1_ONLY_ATR);
}

// ---------------------------------------------------------------------------------------------
// Both versions

#[test]
fn unsupported_commands_stalls_and_unplugging() {
    for version in [Version::A, Version::B] {
        let mut s = slot(token(version));
        s.connect(Protocols::ANY).unwrap();
        // Escape and SetParameters: "command not supported".
        let e = s.escape(&[0x01], Duration::from_secs(1)).unwrap_err();
        assert_eq!(failed_error(&e), ErrorCode::CMD_NOT_SUPPORTED, "{version}");
        assert_eq!(e.rv(), Rv::E_NOT_TRANSACTED);
        let params = SetParameters::new(crate::ccid::message::ProtocolParams::T1(T1Params {
            fi_di: 0x11,
            tcckst: 0x10,
            guard_time: 0,
            waiting_integers: 0x4D,
            clock_stop: 0,
            ifsc: 32,
            nad: 0,
        }));
        let e = s.ccid().transact(0, &params, Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.status().map(|s| s.error), Some(ErrorCode::CMD_NOT_SUPPORTED), "{version}");
        // A stalled request fails the command only.
        sim(&mut s).fault(IccdFault::Stall);
        let e = s.transmit(&SELECT_NO_FCI).unwrap_err();
        assert!(
            matches!(
                &e,
                ExchangeError::Ccid { source: CcidError::Transport { source: TransportError::Stall, .. }, .. }
            ),
            "{e:?}"
        );
        assert_eq!(s.transmit(&SELECT_NO_FCI).unwrap(), [0x90, 0x00]);
        // Unplugged: reader gone, at once afterwards.
        sim(&mut s).fault(IccdFault::Unplug);
        let e = s.transmit(&SELECT_NO_FCI).unwrap_err();
        assert_eq!(e.rv(), Rv::E_READER_UNAVAILABLE, "{version}");
        assert!(s.ccid().is_gone());
        assert!(matches!(s.presence(), Err(ExchangeError::Ccid { op: Op::Status, .. })));
    }
}

#[test]
fn adapter_without_driver() {
    let mut t = IccdTransport::new(token(Version::B), Version::B);
    let mut buf = [0u8; 64];
    // Nothing asked: nothing to read.
    assert_eq!(t.bulk_in(&mut buf, Duration::from_millis(1)), Err(TransportError::Timeout));
    assert!(t.interrupt_in(&mut buf, Duration::from_millis(1)).is_err());
    // Not a CCID command.
    let e = t.bulk_out(&[0x6F, 0xFF], Duration::from_secs(1)).unwrap_err();
    assert_eq!(e, TransportError::Io("ICCD: not a CCID command".into()));
    // A reply larger than the caller's buffer.
    let mut cmd = Vec::new();
    IccPowerOn { power: PowerSelect::Auto }.emit(0, 9, &mut cmd);
    t.bulk_out(&cmd, Duration::from_secs(1)).unwrap();
    assert_eq!(t.bulk_in(&mut buf[..12], Duration::from_secs(1)), Err(TransportError::Overflow));
    // The CCID class requests are refused; halts are nothing to clear.
    assert_eq!(t.class_out(0x01, 0, &[], Duration::from_secs(1)), Err(TransportError::Stall));
    assert_eq!(t.clear_halt(crate::ccid::transport::Endpoint::BulkIn), Ok(()));
    // A command too long for one control transfer.
    let mut big = Vec::new();
    XfrBlock { bwi: 0, level: 0, data: &[0; MAX_CONTROL + 1] }.emit(0, 1, &mut big);
    assert_eq!(t.bulk_out(&big, Duration::from_secs(1)), Err(IccdError::TooLong(MAX_CONTROL + 1).into()));
    let mut t = IccdTransport::new(token(Version::A), Version::A);
    let mut chained = Vec::new();
    XfrBlock { bwi: 0, level: 1, data: &[0; 8] }.emit(0, 1, &mut chained);
    assert_eq!(t.bulk_out(&chained, Duration::from_secs(1)), Err(IccdError::Chaining(1).into()));
}

// ---------------------------------------------------------------------------------------------
// Random answers

/// A token that answers every request with random bytes (biased towards meaningful first
/// bytes) or a random failure.
struct RandomToken {
    rng: Rng,
}

impl RandomToken {
    fn next(&mut self) -> u64 {
        self.rng.next_u64()
    }

    fn below(&mut self, n: usize) -> usize {
        self.rng.below(n)
    }

    fn failure(&mut self) -> Option<TransportError> {
        match self.below(64) {
            0 => Some(TransportError::Stall),
            1 => Some(TransportError::Timeout),
            2 => Some(TransportError::Io("random".into())),
            3 if self.below(8) == 0 => Some(TransportError::NoDevice),
            _ => None,
        }
    }
}

impl Transport for RandomToken {
    fn bulk_out(&mut self, _: &[u8], _: Duration) -> Result<(), TransportError> {
        Err(TransportError::Io("no bulk".into()))
    }
    fn bulk_in(&mut self, _: &mut [u8], _: Duration) -> Result<usize, TransportError> {
        Err(TransportError::Io("no bulk".into()))
    }
    fn interrupt_in(&mut self, _: &mut [u8], _: Duration) -> Result<usize, TransportError> {
        Err(TransportError::Timeout)
    }
    fn class_out(&mut self, _: u8, _: u16, _: &[u8], _: Duration) -> Result<(), TransportError> {
        self.failure().map_or(Ok(()), Err)
    }
    fn class_in(&mut self, _: u8, _: u16, buf: &mut [u8], _: Duration) -> Result<usize, TransportError> {
        if let Some(e) = self.failure() {
            return Err(e);
        }
        let n = match self.below(4) {
            0 => self.below(4),
            1 => self.below(300),
            2 => self.below(buf.len() + 1),
            _ => buf.len(),
        }
        .min(buf.len());
        for b in buf[..n].iter_mut() {
            *b = self.next() as u8;
        }
        const FIRST: [u8; 11] = [0x00, 0x01, 0x02, 0x03, 0x10, 0x20, 0x40, 0x80, 0x3B, 0x90, 0xC0];
        if n > 0 && self.below(4) != 0 {
            buf[0] = FIRST[self.below(FIRST.len())];
        }
        Ok(n)
    }
}

#[test]
fn random_answers_never_panic() {
    let (apdu, _) = echo(1000, true);
    for seed in 1..=3000u64 {
        for version in [Version::A, Version::B] {
            let token = RandomToken { rng: Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1) };
            let desc = match version {
                Version::A => descriptors::version_a(),
                Version::B => descriptors::version_b(),
            };
            let mut t = IccdTransport::new(token, version).with_poll_unit(Duration::ZERO);
            if seed % 8 == 0 {
                t.power_cycle();
            }
            let Ok(mut s) = Slot::new(t, driver_descriptor(version, &desc), 0, ExchangeOptions::default()) else {
                panic!("supported level");
            };
            for round in 0..4 {
                let _ = s.presence();
                if s.power_on().is_ok() {
                    let _ = s.connect(Protocols::ANY);
                    for a in [&SELECT[..], &apdu, &[0x00, 0xB0, 0x00, 0x00, 0x00], &[0x00, 0x20, 0x00, 0x81], &[1, 2]] {
                        if let Ok(r) = s.transmit(a) {
                            assert!(r.len() <= MAX_RESPONSE, "seed {seed} round {round}");
                        }
                    }
                }
                let _ = s.escape(&[0x01], Duration::from_millis(10));
                let _ = s.power_off();
                if s.ccid().is_gone() {
                    break;
                }
            }
        }
    }
}

#[test]
fn random_commands_never_panic() {
    let mut rng = RandomToken { rng: Rng(0x1234_5678_9ABC_DEF1) };
    for version in [Version::A, Version::B] {
        let mut t = IccdTransport::new(token(version), version).with_poll_unit(Duration::ZERO);
        let mut buf = vec![0u8; 70_000];
        for _ in 0..3000 {
            let len = rng.below(40);
            let mut msg: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if len >= 10 && rng.below(2) == 0 {
                // A plausible header: a known type and a matching dwLength.
                const TYPES: [u8; 6] = [0x62, 0x63, 0x65, 0x6F, 0x61, 0x6B];
                msg[0] = TYPES[rng.below(6)];
                msg[1..5].copy_from_slice(&((len - 10) as u32).to_le_bytes());
            }
            if t.bulk_out(&msg, Duration::from_millis(50)).is_ok() {
                let _ = t.bulk_in(&mut buf, Duration::from_millis(50));
            }
        }
    }
}
