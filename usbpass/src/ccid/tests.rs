//! End-to-end tests: `Slot` (exchange.rs) over `Ccid` over the simulated readers of `sim.rs`,
//! with the project's virtual card behind them, at every exchange level, with faults.

use super::atr::{Protocol, Protocols};
use super::descriptor::CcidDescriptor;
use super::device::Op;
use super::exchange::{ExchangeError, ExchangeOptions, Slot};
use super::message::{msg_type, Notification, PowerSelect};
use super::sim::{profiles, Fault, SimCard, SimReader, T0_ONLY_ATR, T1_ONLY_ATR};
use super::t0::{T0Mode, T0Options};
use super::t1::{Block, Edc, T1Error};
use super::transport::class_request;
use pcsc_bridge_tests::card::{self, Card};
use pcsc_proto::Rv;
use std::time::Duration;

fn vcard() -> Box<dyn SimCard> {
    Box::new(Card::new())
}

fn slot_with(r: SimReader, opts: ExchangeOptions) -> Slot<SimReader> {
    let desc: CcidDescriptor = r.desc.clone();
    Slot::new(r, desc, 0, opts).expect("supported level")
}

fn slot(r: SimReader) -> Slot<SimReader> {
    slot_with(r, ExchangeOptions::default())
}

fn sim(s: &mut Slot<SimReader>) -> &mut SimReader {
    s.ccid().transport()
}

const SELECT: [u8; 12] = [0x00, 0xA4, 0x04, 0x00, 0x07, 0xA0, 0x00, 0x00, 0x05, 0x27, 0x21, 0x01];

fn select_ok() -> Vec<u8> {
    let mut v = card::FCI.to_vec();
    v.extend_from_slice(&[0x90, 0x00]);
    v
}

/// ECHO (`80 01`) with `n` data bytes, short or extended, with Le = 0.
fn echo(n: usize, extended: bool) -> (Vec<u8>, Vec<u8>) {
    let data: Vec<u8> = (0..n).map(|i| (i * 7 + 3) as u8).collect();
    let mut apdu = vec![0x80, 0x01, 0x00, 0x00];
    if extended {
        apdu.push(0);
        apdu.extend_from_slice(&(n as u16).to_be_bytes());
        apdu.extend_from_slice(&data);
        apdu.extend_from_slice(&[0, 0]);
    } else {
        apdu.push(n as u8);
        apdu.extend_from_slice(&data);
        apdu.push(0);
    }
    let mut resp = data;
    resp.extend_from_slice(&[0x90, 0x00]);
    (apdu, resp)
}

/// PATTERN (`80 02`) of `n` bytes with an extended Le.
fn pattern_ext(n: u16) -> (Vec<u8>, Vec<u8>) {
    let [hi, lo] = n.to_be_bytes();
    let apdu = vec![0x80, 0x02, hi, lo, 0x00, 0x00, 0x00];
    let mut resp: Vec<u8> = (0..n as usize).map(card::file_byte).collect();
    resp.extend_from_slice(&[0x90, 0x00]);
    (apdu, resp)
}

fn sent_types(r: &SimReader) -> Vec<u8> {
    r.log.commands.iter().map(|c| c[0]).collect()
}

fn xfr_levels(r: &SimReader) -> Vec<u16> {
    r.log.commands.iter().filter(|c| c[0] == msg_type::XFR_BLOCK).map(|c| u16::from_le_bytes([c[8], c[9]])).collect()
}

// ---------------------------------------------------------------------------------------------
// Extended APDU level

#[test]
fn extended_level_yubikey_like() {
    let mut s = slot(SimReader::new(profiles::extended(3072), vcard(), &T1_ONLY_ATR));
    let (atr, p) = s.connect(Protocols::ANY).unwrap();
    assert_eq!(atr, T1_ONLY_ATR);
    assert_eq!(p, Protocol::T1);
    // Everything automatic: power-on with automatic voltage, no PPS, no SetParameters.
    assert_eq!(sent_types(sim(&mut s)), [msg_type::ICC_POWER_ON]);
    assert_eq!(sim(&mut s).log.voltages, [0]);
    // Timeout from the ATR (1 511 ms) plus 1 s slack.
    assert_eq!(s.card().unwrap().timeout, Duration::from_millis(2511));
    assert_eq!(s.transmit(&SELECT).unwrap(), select_ok());
    // A 5000-byte command: chained 3062 + 1938 bytes; a 6000-byte answer chained back.
    let (apdu, resp) = echo(5000, true);
    assert_eq!(s.transmit(&apdu).unwrap(), resp);
    let (apdu, resp) = pattern_ext(6000);
    assert_eq!(s.transmit(&apdu).unwrap(), resp);
    let levels = xfr_levels(sim(&mut s));
    assert_eq!(levels, [0x00, 0x01, 0x02, 0x10, 0x00, 0x10]);
}

#[test]
fn extended_level_small_messages_chain_many_pieces() {
    let mut s = slot(SimReader::new(profiles::extended(271), vcard(), &T1_ONLY_ATR));
    s.connect(Protocols::T1).unwrap();
    let (apdu, resp) = echo(1000, true);
    assert_eq!(s.transmit(&apdu).unwrap(), resp);
    // 1009 command bytes in 261-byte pieces: 1, 3, 3, 2; 1002 answer bytes: 3 requests.
    assert_eq!(xfr_levels(sim(&mut s)), [0x01, 0x03, 0x03, 0x02, 0x10, 0x10, 0x10]);
    let (apdu, resp) = pattern_ext(65535);
    assert_eq!(s.transmit(&apdu).unwrap(), resp);
}

// ---------------------------------------------------------------------------------------------
// Short APDU level

#[test]
fn short_apdu_level() {
    let mut s = slot(SimReader::new(profiles::short_apdu(), vcard(), &card::ATR));
    let (_, p) = s.connect(Protocols::ANY).unwrap();
    assert_eq!(p, Protocol::T1);
    // Automatic voltage and PPS by the reader: SetParameters only.
    assert_eq!(sent_types(sim(&mut s)), [msg_type::ICC_POWER_ON, msg_type::SET_PARAMETERS]);
    let setp = sim(&mut s).log.commands[1].clone();
    // T=1 structure: Fi/Di 11, 0x10 LRC, guard 0, BWI/CWI 4D, clock stop 0, IFSC 32, NAD 0.
    assert_eq!(&setp[7..], &[1, 0, 0, 0x11, 0x10, 0x00, 0x4D, 0x00, 0x20, 0x00]);
    assert_eq!(s.transmit(&SELECT).unwrap(), select_ok());
    // A 300-byte answer to a short command: the card chains with 61xx, passed through.
    let r = s.transmit(&[0x80, 0x02, 0x01, 0x2C, 0x00]).unwrap();
    assert_eq!(r.len(), 258);
    assert_eq!(&r[256..], &[0x61, 0x2C]);
    let r = s.transmit(&[0x00, 0xC0, 0x00, 0x00, 0x2C]).unwrap();
    assert_eq!(r.len(), 46);
    // An APDU that does not fit 271 - 10: refused, SCARD_E_NOT_TRANSACTED.
    let (apdu, _) = echo(300, true);
    let e = s.transmit(&apdu).unwrap_err();
    assert_eq!(e, ExchangeError::CommandTooLong { len: 309, max: 261 });
    assert_eq!(e.rv(), Rv::E_NOT_TRANSACTED);
    // An extended command that fits, whose answer does not: the reader overruns.
    let (apdu, _) = pattern_ext(600);
    assert_eq!(s.transmit(&apdu).unwrap_err().rv(), Rv::E_NOT_TRANSACTED);
}

#[test]
fn short_apdu_reader_that_chains_anyway() {
    let mut r = SimReader::new(profiles::short_apdu(), vcard(), &card::ATR);
    r.quirks.chain_short_responses = true;
    let mut s = slot(r);
    s.connect(Protocols::ANY).unwrap();
    let (apdu, resp) = pattern_ext(600);
    assert_eq!(s.transmit(&apdu).unwrap(), resp);
    assert_eq!(xfr_levels(sim(&mut s)), [0x00, 0x10, 0x10]);
}

// ---------------------------------------------------------------------------------------------
// TPDU level, T=1

fn tpdu_t1() -> Slot<SimReader> {
    let mut s = slot(SimReader::new(profiles::tpdu(), vcard(), &card::ATR));
    let (_, p) = s.connect(Protocols::ANY).unwrap();
    assert_eq!(p, Protocol::T1);
    s
}

#[test]
fn tpdu_t1_bring_up() {
    let mut s = tpdu_t1();
    let r = sim(&mut s);
    // 5 V power-on, PPS for T=1 (the card's default is T=0), SetParameters, S(IFS request 254).
    assert_eq!(r.log.voltages, [1]);
    assert_eq!(
        sent_types(r),
        [msg_type::ICC_POWER_ON, msg_type::XFR_BLOCK, msg_type::SET_PARAMETERS, msg_type::XFR_BLOCK]
    );
    assert_eq!(r.log.xfr[0], [0xFF, 0x01, 0xFE]);
    assert_eq!(
        r.log.xfr[1],
        Block::S { kind: super::t1::SKind::Ifs, response: false, inf: vec![254] }.encode(0, Edc::Lrc)
    );
    let t1 = s.card().unwrap().t1().unwrap();
    assert_eq!((t1.ifsc(), t1.ifsd()), (32, 254));
    // libccid's T=1 timeout for this ATR (201 068 ms) + 1 s.
    assert_eq!(s.card().unwrap().timeout, Duration::from_millis(202_068));
}

#[test]
fn tpdu_t1_chaining_both_ways() {
    let mut s = tpdu_t1();
    assert_eq!(s.transmit(&SELECT).unwrap(), select_ok());
    let (apdu, resp) = echo(200, false);
    assert_eq!(s.transmit(&apdu).unwrap(), resp);
    // 206 command bytes in IFSC-32 chunks: 7 I-blocks; 202 answer bytes in one (IFSD 254).
    let (apdu, resp) = echo(250, false);
    assert_eq!(s.transmit(&apdu).unwrap(), resp);
    let (apdu, resp) = pattern_ext(3000);
    assert_eq!(s.transmit(&apdu).unwrap(), resp);
    assert_eq!(sim(&mut s).log.apdus.len(), 4);
}

#[test]
fn tpdu_t1_card_chains_in_small_blocks() {
    let mut r = SimReader::new(profiles::tpdu(), vcard(), &card::ATR);
    r.quirks.card_chunk = 10;
    let mut s = slot(r);
    s.connect(Protocols::T1).unwrap();
    let (apdu, resp) = echo(100, false);
    assert_eq!(s.transmit(&apdu).unwrap(), resp);
}

#[test]
fn tpdu_t1_error_recovery() {
    let mut s = tpdu_t1();
    let faults: &[&[Fault]] = &[
        &[Fault::CorruptReply],
        &[Fault::LoseCommand],
        &[Fault::LoseReply],
        &[Fault::Parity],
        &[Fault::CorruptReply, Fault::Zlp],
    ];
    for f in faults {
        sim(&mut s).fault(0, f);
        assert_eq!(s.transmit(&SELECT).unwrap(), select_ok(), "{f:?}");
    }
    // Faults in the middle of both chains.
    let (apdu, resp) = echo(250, false);
    sim(&mut s).fault(2, &[Fault::LoseReply]);
    sim(&mut s).fault(4, &[Fault::CorruptReply]);
    sim(&mut s).fault(8, &[Fault::LoseCommand]);
    assert_eq!(s.transmit(&apdu).unwrap(), resp);
    let (apdu, resp) = pattern_ext(1000);
    sim(&mut s).fault(2, &[Fault::CorruptReply]);
    sim(&mut s).fault(3, &[Fault::Parity]);
    assert_eq!(s.transmit(&apdu).unwrap(), resp);
    let t1 = s.card().unwrap().t1().unwrap();
    assert_eq!(t1.stats().resyncs, 0);
    assert!(t1.stats().errors >= 10);
    // Each APDU reached the card once.
    assert_eq!(sim(&mut s).log.apdus.len(), 7);
}

#[test]
fn tpdu_t1_wtx_and_ifs_requests() {
    let mut s = tpdu_t1();
    let before = sim(&mut s).log.bwi.len();
    sim(&mut s).fault(0, &[Fault::CardWtx(5)]);
    assert_eq!(s.transmit(&SELECT).unwrap(), select_ok());
    // The S(WTX response) went out with bBWI = 5, the next block without.
    assert_eq!(&sim(&mut s).log.bwi[before..], &[0, 5]);
    // The card lowers IFSC to 16: the next long command goes out in 16-byte pieces.
    sim(&mut s).fault(0, &[Fault::CardIfs(16)]);
    assert_eq!(s.transmit(&SELECT).unwrap(), select_ok());
    assert_eq!(s.card().unwrap().t1().unwrap().ifsc(), 16);
    let before = sim(&mut s).log.xfr.len();
    let (apdu, resp) = echo(40, false);
    assert_eq!(s.transmit(&apdu).unwrap(), resp);
    let blocks = &sim(&mut s).log.xfr[before..];
    assert_eq!(blocks.len(), 3);
    assert!(blocks.iter().all(|b| b[2] <= 16));
}

#[test]
fn tpdu_t1_resync_then_dead_until_reset() {
    let mut s = tpdu_t1();
    // Three lost exchanges: resynchronisation, then the command again from the start.
    sim(&mut s).fault(0, &[Fault::LoseCommand]);
    sim(&mut s).fault(1, &[Fault::LoseCommand]);
    sim(&mut s).fault(2, &[Fault::LoseCommand]);
    assert_eq!(s.transmit(&SELECT).unwrap(), select_ok());
    assert_eq!(s.card().unwrap().t1().unwrap().stats().resyncs, 1);
    assert_eq!(s.transmit(&SELECT).unwrap(), select_ok());
    // A card that stops answering: 3 tries, 3 resyncs, dead.
    for i in 0..6 {
        sim(&mut s).fault(i, &[Fault::LoseCommand]);
    }
    let e = s.transmit(&SELECT).unwrap_err();
    assert_eq!(e, ExchangeError::T1(T1Error::Dead));
    assert_eq!(e.rv(), Rv::E_NOT_TRANSACTED);
    // Dead until the card is reset (power-up again), as pcscd clients see with libccid.
    let n = sim(&mut s).log.commands.len();
    assert_eq!(s.transmit(&SELECT).unwrap_err().rv(), Rv::E_NOT_TRANSACTED);
    assert_eq!(sim(&mut s).log.commands.len(), n);
    s.power_on().unwrap();
    s.connect(Protocols::ANY).unwrap();
    assert_eq!(s.transmit(&SELECT).unwrap(), select_ok());
}

#[test]
fn tpdu_t1_card_removed_mid_command() {
    let mut s = tpdu_t1();
    sim(&mut s).fault(0, &[Fault::RemoveCard]);
    let e = s.transmit(&SELECT).unwrap_err();
    assert_eq!(e.rv(), Rv::E_NO_SMARTCARD);
    let note = s.ccid().wait_notification(Duration::from_millis(10)).unwrap().unwrap();
    assert_eq!(note, Notification::single_slot(false, true));
    assert!(!s.presence().unwrap());
    assert!(s.card().is_none());
    assert_eq!(s.transmit(&SELECT).unwrap_err(), ExchangeError::NotPowered);
}

// ---------------------------------------------------------------------------------------------
// TPDU level, T=0

fn tpdu_t0(opts: ExchangeOptions, strict: bool) -> Slot<SimReader> {
    let mut r = SimReader::new(profiles::tpdu(), vcard(), &T0_ONLY_ATR);
    r.quirks.t0_strict_le = strict;
    let mut s = slot_with(r, opts);
    let (_, p) = s.connect(Protocols::ANY).unwrap();
    assert_eq!(p, Protocol::T0);
    s
}

#[test]
fn tpdu_t0_passthrough() {
    let mut s = tpdu_t0(ExchangeOptions::default(), false);
    // Default protocol, no TA1: no PPS; SetParameters with WI 10.
    assert_eq!(sent_types(sim(&mut s)), [msg_type::ICC_POWER_ON, msg_type::SET_PARAMETERS]);
    assert_eq!(&sim(&mut s).log.commands[1][7..], &[0, 0, 0, 0x11, 0x00, 0x00, 0x0A, 0x00]);
    // Case 4: the card answers 61xx, which goes back to the application unchanged.
    let mut case4 = SELECT.to_vec();
    case4.push(0);
    assert_eq!(s.transmit(&case4).unwrap(), [0x61, 0x10]);
    let mut fci = s.transmit(&[0x00, 0xC0, 0x00, 0x00, 0x10]).unwrap();
    assert_eq!(fci.split_off(16), [0x90, 0x00]);
    assert_eq!(fci, card::FCI);
    // Case 1 and case 2 go out unchanged too (the reader pads case 1).
    assert_eq!(s.transmit(&[0x00, 0x20, 0x00, 0x81]).unwrap(), [0x63, 0xC3]);
    let (apdu, resp) = echo(10, false);
    assert_eq!(s.transmit(&apdu).unwrap(), [0x61, 0x0A]);
    let mut got = s.transmit(&[0x00, 0xC0, 0x00, 0x00, 0x0A]).unwrap();
    assert_eq!(got.split_off(10), [0x90, 0x00]);
    assert_eq!(got, resp[..10]);
    let xfr = &sim(&mut s).log.xfr;
    assert_eq!(xfr[0], case4);
    assert_eq!(xfr[2], [0x00, 0x20, 0x00, 0x81]);
}

#[test]
fn tpdu_t0_iso_mapping_and_status_words() {
    let iso =
        ExchangeOptions { t0: T0Options { mode: T0Mode::Iso, ..T0Options::default() }, ..ExchangeOptions::default() };
    let mut s = tpdu_t0(iso.clone(), true);
    assert_eq!(s.transmit(&[0x00, 0x20, 0x00, 0x81]).unwrap(), [0x63, 0xC3]);
    let mut case4 = SELECT.to_vec();
    case4.push(0);
    assert_eq!(s.transmit(&case4).unwrap(), [0x61, 0x10]);
    // Strict-Le card: 6Cxx is returned as is by default.
    assert_eq!(s.transmit(&[0x80, 0x02, 0x00, 0x10, 0x00]).unwrap(), [0x6C, 0x10]);
    let xfr = sim(&mut s).log.xfr.clone();
    assert_eq!(xfr[0], [0x00, 0x20, 0x00, 0x81, 0x00]);
    assert_eq!(xfr[1], SELECT);
    // Extended APDUs are refused in ISO mode.
    let (apdu, _) = pattern_ext(10);
    assert!(matches!(s.transmit(&apdu).unwrap_err(), ExchangeError::T0(super::t0::T0Error::Extended)));

    // With the follow-ups switched on: Le corrected and GET RESPONSE done by the driver.
    let helpful =
        ExchangeOptions { t0: T0Options { mode: T0Mode::Iso, fix_wrong_length: true, get_response: true }, ..iso };
    let mut s = tpdu_t0(helpful, true);
    let r = s.transmit(&[0x80, 0x02, 0x00, 0x10, 0x00]).unwrap();
    assert_eq!(r.len(), 18);
    assert_eq!(s.transmit(&case4).unwrap(), select_ok());
    // 300 bytes with Le 00: 256 + 61 2C, then the rest by GET RESPONSE.
    let r = s.transmit(&[0x80, 0x02, 0x01, 0x2C, 0x00]).unwrap();
    assert_eq!(r.len(), 302);
    assert_eq!(&r[300..], &[0x90, 0x00]);
}

// ---------------------------------------------------------------------------------------------
// QEMU 7.2

#[test]
fn qemu_reader() {
    let mut s = slot(SimReader::qemu(vcard(), &card::ATR));
    // The card offers T=1 first but the reader is T=0 only: pcscd falls back to T=0.
    let (_, p) = s.connect(Protocols::ANY).unwrap();
    assert_eq!(p, Protocol::T0);
    // All automatic: no PPS, no SetParameters.
    assert_eq!(sent_types(sim(&mut s)), [msg_type::ICC_POWER_ON]);
    // The CAC-style timeout: T=0 WWT with WI 10.
    assert!(s.card().unwrap().timeout > Duration::from_secs(10));
    // 52 echoed bytes: a 64-byte reply, then a zero-length read before the next reply
    // (libccid 1.5.2 fails here; we re-read).
    let (apdu, resp) = echo(52, false);
    assert_eq!(s.transmit(&apdu).unwrap(), resp);
    assert_eq!(s.transmit(&SELECT).unwrap(), select_ok());
    assert!(s.ccid().stats().zero_length_reads >= 1);
    // An answer above 374 bytes vanishes on 7.2: timeout, ABORT refused (stall), error.
    let (apdu, _) = pattern_ext(400);
    let e = s.transmit(&apdu).unwrap_err();
    assert_eq!(e.rv(), Rv::E_NOT_TRANSACTED);
    assert_eq!(sim(&mut s).log.class_requests.last().map(|r| r.0), Some(class_request::ABORT));
    assert_eq!(s.transmit(&SELECT).unwrap(), select_ok());
    // Escape: a failed SlotStatus instead of an Escape reply.
    let e = s.escape(&[0x6A], Duration::from_secs(1)).unwrap_err();
    assert_eq!(e.rv(), Rv::E_NOT_TRANSACTED);
}

#[test]
fn qemu_t1_only_card_is_unresponsive() {
    let mut s = slot(SimReader::qemu(vcard(), &T1_ONLY_ATR));
    let e = s.connect(Protocols::ANY).unwrap_err();
    assert_eq!(e, ExchangeError::ProtocolNotSupported(Protocol::T1));
    assert_eq!(e.rv(), Rv::W_UNRESPONSIVE_CARD);
}

#[test]
fn qemu_late_reply_is_dropped_by_seq() {
    let mut s = slot(SimReader::qemu(vcard(), &card::ATR));
    s.connect(Protocols::ANY).unwrap();
    sim(&mut s).fault(0, &[Fault::Withhold]);
    assert_eq!(s.transmit(&SELECT).unwrap_err().rv(), Rv::E_NOT_TRANSACTED);
    // The late answer arrives before the next one and is dropped as stale.
    let (apdu, resp) = echo(5, false);
    assert_eq!(s.transmit(&apdu).unwrap(), resp);
    assert_eq!(s.ccid().stats().stale_replies, 1);
}

// ---------------------------------------------------------------------------------------------
// USB-level faults (any level)

#[test]
fn usb_time_extension_stale_zlp_packets() {
    let mut r = SimReader::new(profiles::extended(3072), vcard(), &T1_ONLY_ATR);
    r.quirks.packetize = true;
    let mut s = slot(r);
    s.connect(Protocols::ANY).unwrap();
    sim(&mut s).fault(0, &[Fault::TimeExtension(3, 2), Fault::Stale, Fault::Zlp]);
    let (apdu, resp) = echo(1000, true);
    assert_eq!(s.transmit(&apdu).unwrap(), resp);
    let st = s.ccid().stats();
    assert_eq!((st.time_extensions, st.stale_replies), (3, 1));
    assert!(st.zero_length_reads >= 1);
}

#[test]
fn usb_timeout_with_abort() {
    let mut s = slot(SimReader::new(profiles::extended(3072), vcard(), &T1_ONLY_ATR));
    s.connect(Protocols::ANY).unwrap();
    sim(&mut s).fault(0, &[Fault::Withhold]);
    assert_eq!(s.transmit(&SELECT).unwrap_err().rv(), Rv::E_NOT_TRANSACTED);
    let r = sim(&mut s);
    // ABORT with wValue = bSlot | bSeq << 8, then PC_to_RDR_Abort with the same bSeq.
    let seq = r.log.commands[1][6];
    assert_eq!(r.log.class_requests, [(class_request::ABORT, (seq as u16) << 8)]);
    let abort = r.log.commands.last().unwrap();
    assert_eq!((abort[0], abort[6]), (msg_type::ABORT, seq));
    assert_eq!(s.transmit(&SELECT).unwrap(), select_ok());
    assert_eq!(s.ccid().stats().stale_replies, 0);
}

#[test]
fn usb_stalls() {
    let mut s = slot(SimReader::new(profiles::short_apdu(), vcard(), &card::ATR));
    s.connect(Protocols::ANY).unwrap();
    sim(&mut s).fault(0, &[Fault::StallIn]);
    assert_eq!(s.transmit(&SELECT).unwrap_err().rv(), Rv::E_NOT_TRANSACTED);
    sim(&mut s).fault(0, &[Fault::StallOut]);
    assert_eq!(s.transmit(&SELECT).unwrap_err().rv(), Rv::E_NOT_TRANSACTED);
    assert_eq!(s.transmit(&SELECT).unwrap(), select_ok());
    use super::transport::Endpoint;
    assert_eq!(sim(&mut s).log.halts, [Endpoint::BulkIn, Endpoint::BulkOut]);
}

#[test]
fn usb_unplugged() {
    let mut s = slot(SimReader::new(profiles::short_apdu(), vcard(), &card::ATR));
    s.connect(Protocols::ANY).unwrap();
    sim(&mut s).fault(0, &[Fault::Unplug]);
    assert_eq!(s.transmit(&SELECT).unwrap_err().rv(), Rv::E_READER_UNAVAILABLE);
    assert_eq!(s.transmit(&SELECT).unwrap_err().rv(), Rv::E_READER_UNAVAILABLE);
    assert_eq!(s.presence().unwrap_err().rv(), Rv::E_READER_UNAVAILABLE);
    assert_eq!(s.power_on().unwrap_err().rv(), Rv::E_READER_UNAVAILABLE);
    assert!(s.ccid().wait_notification(Duration::from_millis(1)).unwrap_err().is_reader_gone());
}

// ---------------------------------------------------------------------------------------------
// Bring-up details

#[test]
fn voltage_sequence() {
    // A 3 V card in a reader without automatic voltage: 5 V, 1.8 V, then 3 V.
    let mut r = SimReader::new(profiles::tpdu(), vcard(), &card::ATR);
    r.quirks.voltage = Some(PowerSelect::V3);
    let mut s = slot(r);
    assert_eq!(s.power_on().unwrap(), card::ATR);
    assert_eq!(sim(&mut s).log.voltages, [1, 3, 2]);
    assert_eq!(s.card().unwrap().voltage, PowerSelect::V3);
    // A card that takes none of them: W_UNRESPONSIVE_CARD after three tries.
    let mut r = SimReader::new(profiles::tpdu(), vcard(), &card::ATR);
    r.quirks.voltage = Some(PowerSelect::Auto);
    let mut s = slot(r);
    assert_eq!(s.power_on().unwrap_err().rv(), Rv::W_UNRESPONSIVE_CARD);
    assert_eq!(sim(&mut s).log.voltages, [1, 3, 2]);
    // A 5 V-only reader starting at 3 V by option: 5 V is moved... the start is fixed first.
    let mut d = profiles::tpdu();
    d.voltage_support.0 = 0x02;
    let r = SimReader::new(d.clone(), vcard(), &card::ATR);
    let s = Slot::new(r, d, 0, ExchangeOptions::default()).unwrap();
    assert_eq!(s.voltage_sequence(), [PowerSelect::V3, PowerSelect::V5, PowerSelect::V1_8]);
    // Empty slot: one try, SCARD_E_NO_SMARTCARD.
    let mut r = SimReader::new(profiles::tpdu(), vcard(), &card::ATR);
    r.remove_card();
    let mut s = slot(r);
    assert_eq!(s.power_on().unwrap_err().rv(), Rv::E_NO_SMARTCARD);
    assert_eq!(sim(&mut s).log.voltages, [1]);
    assert!(!s.presence().unwrap());
}

#[test]
fn protocol_choice_like_pcscd() {
    // T=1 requested from a T=0-only card: SCARD_E_PROTO_MISMATCH.
    let mut s = slot(SimReader::new(profiles::tpdu(), vcard(), &T0_ONLY_ATR));
    let e = s.connect(Protocols::T1).unwrap_err();
    assert_eq!(e.rv(), Rv::E_PROTO_MISMATCH);
    // Nothing requested at all.
    assert_eq!(s.connect(Protocols::default()).unwrap_err().rv(), Rv::E_PROTO_MISMATCH);
    // T=0 explicitly on the dual card.
    let mut s = slot(SimReader::new(profiles::tpdu(), vcard(), &card::ATR));
    assert_eq!(s.connect(Protocols::T0).unwrap().1, Protocol::T0);
    assert_eq!(s.transmit(&SELECT).unwrap(), [0x61, 0x10]);
    // Already connected with T=0: a T=1-only request is a mismatch.
    assert_eq!(s.connect(Protocols::T1).unwrap_err().rv(), Rv::E_PROTO_MISMATCH);
}

#[test]
fn set_parameters_failures() {
    // bError 0 (command not supported): pcscd carries on with the card's default protocol.
    let mut r = SimReader::new(profiles::short_apdu(), vcard(), &card::ATR);
    r.quirks.set_parameters_error = Some(0);
    let mut s = slot(r);
    assert_eq!(s.connect(Protocols::ANY).unwrap().1, Protocol::T0);
    // bError 1..=127 (parameter not changeable): ignored.
    let mut r = SimReader::new(profiles::short_apdu(), vcard(), &card::ATR);
    r.quirks.set_parameters_error = Some(7);
    let mut s = slot(r);
    assert_eq!(s.connect(Protocols::ANY).unwrap().1, Protocol::T1);
    // Anything else: W_UNRESPONSIVE_CARD.
    let mut r = SimReader::new(profiles::short_apdu(), vcard(), &card::ATR);
    r.quirks.set_parameters_error = Some(0xFB);
    let mut s = slot(r);
    assert_eq!(s.connect(Protocols::ANY).unwrap_err().rv(), Rv::W_UNRESPONSIVE_CARD);
    // A PPS the card answers wrongly: W_UNRESPONSIVE_CARD.
    let mut r = SimReader::new(profiles::tpdu(), vcard(), &card::ATR);
    r.quirks.pps_reject = true;
    let mut s = slot(r);
    let e = s.connect(Protocols::T1).unwrap_err();
    assert_eq!(e, ExchangeError::PpsFailed);
    assert_eq!(e.rv(), Rv::W_UNRESPONSIVE_CARD);
}

#[test]
fn pps_with_ta1() {
    // A T=1 card with TA1 = 13 (Di 4): the TPDU reader (max 344 086 bps) gets PPS1 = 13.
    let mut atr = vec![0x3B, 0x90, 0x13, 0x81, 0x31, 0xFE, 0x15];
    let tck = atr.iter().skip(1).fold(0, |a, b| a ^ b);
    atr.push(tck);
    let mut s = slot(SimReader::new(profiles::tpdu(), vcard(), &atr));
    assert_eq!(s.connect(Protocols::ANY).unwrap().1, Protocol::T1);
    let r = sim(&mut s);
    assert_eq!(r.log.xfr[0], [0xFF, 0x11, 0x13, 0xFF ^ 0x11 ^ 0x13]);
    // SetParameters carries the negotiated Fi/Di, BWI/CWI 15, IFSC 254.
    let setp = r.log.commands.iter().find(|c| c[0] == msg_type::SET_PARAMETERS).unwrap();
    assert_eq!(&setp[10..], &[0x13, 0x10, 0x00, 0x15, 0x00, 0xFE, 0x00]);
    assert_eq!(s.transmit(&SELECT).unwrap(), select_ok());
}

#[test]
fn character_level_refused() {
    let r = SimReader::new(profiles::character(), vcard(), &card::ATR);
    let e = Slot::new(r, profiles::character(), 0, ExchangeOptions::default()).unwrap_err();
    assert_eq!(e.rv(), Rv::E_READER_UNSUPPORTED);
    assert!(e.to_string().contains("character"));
}

#[test]
fn presence_and_swap() {
    let mut s = slot(SimReader::new(profiles::extended(3072), vcard(), &T1_ONLY_ATR));
    assert!(s.presence().unwrap());
    s.connect(Protocols::ANY).unwrap();
    assert!(s.presence().unwrap());
    // Card swapped between two polls: present but unpowered after we powered it → absent once.
    sim(&mut s).remove_card();
    sim(&mut s).insert_card(vcard(), &T1_ONLY_ATR);
    assert!(!s.presence().unwrap());
    assert!(s.presence().unwrap());
    let n1 = s.ccid().wait_notification(Duration::ZERO).unwrap().unwrap();
    let n2 = s.ccid().wait_notification(Duration::ZERO).unwrap().unwrap();
    assert_eq!((n1.slot(0), n2.slot(0)), (Some((false, true)), Some((true, true))));
    assert_eq!(s.ccid().wait_notification(Duration::ZERO).unwrap(), None);
    assert_eq!(s.connect(Protocols::T1).unwrap().1, Protocol::T1);
}

#[test]
fn errors_carry_the_operation() {
    let mut r = SimReader::new(profiles::short_apdu(), vcard(), &card::ATR);
    r.remove_card();
    let mut s = slot(r);
    match s.power_on().unwrap_err() {
        ExchangeError::Ccid { op, source } => {
            assert_eq!(op, Op::PowerOn);
            assert!(source.is_card_absent());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn tpdu_t1_crc_card() {
    // TD1 81 (T=1, TD2), TD2 51 (TA3, TC3, T=1), TA3 FE, TC3 01: CRC.
    let mut atr = vec![0x3B, 0x80, 0x81, 0x51, 0xFE, 0x01];
    let tck = atr.iter().skip(1).fold(0, |a, b| a ^ b);
    atr.push(tck);
    let mut s = slot(SimReader::new(profiles::tpdu(), vcard(), &atr));
    assert_eq!(s.connect(Protocols::ANY).unwrap().1, Protocol::T1);
    assert_eq!(s.card().unwrap().t1().unwrap().edc(), Edc::Crc);
    sim(&mut s).fault(0, &[Fault::CorruptReply]);
    assert_eq!(s.transmit(&SELECT).unwrap(), select_ok());
    // SetParameters says CRC (bmTCCKST1 = 0x11); blocks end with two EDC bytes.
    let r = sim(&mut s);
    let setp = r.log.commands.iter().find(|c| c[0] == msg_type::SET_PARAMETERS).unwrap();
    assert_eq!(setp[11], 0x11);
    let first_i = r.log.xfr.iter().find(|b| b[1] == 0x00).unwrap();
    assert_eq!(first_i.len(), 3 + SELECT.len() + 2);
}
