//! End-to-end tests: `Slot` (exchange.rs) over `Ccid` over the simulated readers of `sim.rs`,
//! with the project's virtual card behind them, at every exchange level, with faults.

use super::atr::{Protocol, Protocols};
use super::character::CharError;
use super::descriptor::{CcidDescriptor, Features};
use super::device::Op;
use super::exchange::{ExchangeError, ExchangeOptions, Slot};
use super::message::{msg_type, Notification, PowerSelect};
use super::sim::{profiles, Fault, PinEntry, Rng, SimCard, SimReader, T0_ONLY_ATR, T1_ONLY_ATR};
use super::t0::{T0Error, T0Mode, T0Options};
use super::t1::{Block, Edc, T1Error};
use super::transport::class_request;
use pcsc_bridge_tests::card::cmd::{echo, pattern_ext, select_ok, SELECT};
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
// PIN entry on a pinpad (PC_to_RDR_Secure), TPDU level with T=1

const PIN_TIMEOUT: Duration = Duration::from_secs(90);

/// Secure payload (ccid.md §7.3) for VERIFY `00 20 00 81 06` + a 6-byte PIN block: ASCII,
/// byte positions, left-justified, PIN at data offset 0, 4 to 8 digits; `prologue` is what the
/// caller leaves in bTeoPrologue (the slot overwrites it at the TPDU level with T=1).
fn verify_payload(prologue: [u8; 3]) -> Vec<u8> {
    let mut v = vec![0x00, 30, 0x82, 0x06, 0x00, 0x08, 0x04, 0x02, 0x01, 0x09, 0x04, 0x00];
    v.extend_from_slice(&prologue);
    v.extend_from_slice(&[0x00, 0x20, 0x00, 0x81, 0x06, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
    v
}

/// Secure payload for CHANGE REFERENCE DATA `00 24 00 81 0C` (current PIN at 0, new at 6,
/// confirmation requested) with `messages` = bNumberMessage (which moves bTeoPrologue).
fn modify_payload(messages: u8) -> Vec<u8> {
    let mut v = vec![0x01, 30, 0x82, 0x06, 0x00, 0x00, 0x06, 0x08, 0x04, 0x03, 0x02, messages, 0x09, 0x04, 0x00];
    if messages != 0 {
        v.push(0x01);
    }
    if messages >= 3 {
        v.push(0x02);
    }
    v.extend_from_slice(&[0xEE; 3]);
    v.extend_from_slice(&[0x00, 0x24, 0x00, 0x81, 0x0C]);
    v.extend_from_slice(&[0xFF; 12]);
    v
}

fn types(pin: &[u8], new: &[u8]) -> PinEntry {
    PinEntry::Types { pin: pin.to_vec(), new: new.to_vec() }
}

fn tpdu_t1_pinpad(atr: &[u8]) -> Slot<SimReader> {
    let mut s = slot(SimReader::new(profiles::tpdu_pinpad(), vcard(), atr));
    assert_eq!(s.connect(Protocols::ANY).unwrap().1, Protocol::T1);
    s
}

fn t1_stats(s: &Slot<SimReader>) -> super::t1::T1Stats {
    s.card().unwrap().t1().unwrap().stats()
}

#[test]
fn tpdu_t1_pin_verify_and_modify() {
    let mut s = tpdu_t1_pinpad(&card::ATR);
    assert_eq!(s.transmit(&SELECT).unwrap(), select_ok());
    sim(&mut s).pinpad = types(b"123456", b"");
    assert_eq!(s.secure(&verify_payload([0; 3]), PIN_TIMEOUT).unwrap(), [0x90, 0x00]);
    let r = sim(&mut s);
    // The reader's block: our prologue (N(S) = 1 after one command, LEN = 11), the APDU with
    // the PIN, LRC; the card took it as its next block.
    let block = r.log.pin_blocks.last().unwrap().clone();
    assert_eq!(block[..3], [0x00, 0x40, 11]);
    assert_eq!(block.len(), 3 + 11 + 1);
    assert_eq!(r.log.apdus.last().unwrap(), b"\x00\x20\x00\x81\x06123456");
    assert_eq!(*r.log.commands.last().unwrap().first().unwrap(), msg_type::SECURE);
    // Ordinary commands go on in step (N(S) toggled as if we had sent the block).
    let (apdu, resp) = echo(100, false);
    assert_eq!(s.transmit(&apdu).unwrap(), resp);
    // A wrong PIN: the card's status word, retries counted.
    sim(&mut s).pinpad = types(b"654321", b"");
    assert_eq!(s.secure(&verify_payload([0; 3]), PIN_TIMEOUT).unwrap(), [0x63, 0xC2]);
    assert_eq!(s.transmit(&SELECT).unwrap(), select_ok());
    // Modify, with the prologue at each of its three places in the structure.
    for (messages, old, new) in [(0, b"123456", b"654321"), (1, b"654321", b"111111"), (3, b"111111", b"123456")] {
        sim(&mut s).pinpad = types(old, new);
        assert_eq!(s.secure(&modify_payload(messages), PIN_TIMEOUT).unwrap(), [0x90, 0x00], "{messages}");
        let mut apdu = vec![0x00, 0x24, 0x00, 0x81, 0x0C];
        apdu.extend_from_slice(old);
        apdu.extend_from_slice(new);
        assert_eq!(sim(&mut s).log.apdus.last().unwrap(), &apdu);
        assert_eq!(sim(&mut s).log.pin_blocks.last().unwrap()[2], 17);
        assert_eq!(s.transmit(&SELECT).unwrap(), select_ok());
    }
    sim(&mut s).pinpad = types(b"123456", b"");
    assert_eq!(s.secure(&verify_payload([0; 3]), PIN_TIMEOUT).unwrap(), [0x90, 0x00]);
    // The reader's blocks carried the N(S) the card expected: 1 after SELECT, then 0 (the
    // 106-byte ECHO went out in 4 I-blocks, each later command and PIN block toggles once),
    // and nothing needed repairing.
    let ns: Vec<u8> = sim(&mut s).log.pin_blocks.iter().map(|b| b[1]).collect();
    assert_eq!(ns, [0x40, 0x00, 0x00, 0x00, 0x00, 0x00]);
    let st = t1_stats(&s);
    assert_eq!((st.errors, st.resyncs), (0, 0));
}

#[test]
fn tpdu_t1_pin_timeout_and_cancel_keep_the_sequence() {
    let mut s = tpdu_t1_pinpad(&card::ATR);
    let apdus = sim(&mut s).log.apdus.len();
    // Nobody types: PIN_TIMEOUT becomes `64 00`; nothing reached the card.
    assert_eq!(s.secure(&verify_payload([0; 3]), PIN_TIMEOUT).unwrap(), [0x64, 0x00]);
    sim(&mut s).pinpad = PinEntry::Cancel;
    assert_eq!(s.secure(&verify_payload([0; 3]), PIN_TIMEOUT).unwrap(), [0x64, 0x01]);
    // Too short for the structure's minimum (4): the reader never accepts it.
    sim(&mut s).pinpad = types(b"123", b"");
    assert_eq!(s.secure(&verify_payload([0; 3]), PIN_TIMEOUT).unwrap(), [0x64, 0x00]);
    assert_eq!(sim(&mut s).log.apdus.len(), apdus);
    assert!(sim(&mut s).log.pin_blocks.is_empty());
    // The next transmits need no repair: the card still expects N(S) = 0.
    assert_eq!(s.transmit(&SELECT).unwrap(), select_ok());
    assert_eq!(s.transmit(&SELECT).unwrap(), select_ok());
    let st = t1_stats(&s);
    assert_eq!((st.errors, st.resyncs), (0, 0));
    // Then a PIN that is typed works with the current N(S).
    sim(&mut s).pinpad = types(b"123456", b"");
    assert_eq!(s.secure(&verify_payload([0; 3]), PIN_TIMEOUT).unwrap(), [0x90, 0x00]);
    assert_eq!(sim(&mut s).log.pin_blocks[0][1], 0x00);
}

#[test]
fn tpdu_t1_pin_card_asks_for_more_time() {
    let mut s = tpdu_t1_pinpad(&card::ATR);
    sim(&mut s).pinpad = types(b"123456", b"");
    let bwi = sim(&mut s).log.bwi.len();
    // The card answers the PIN block with S(WTX request ×7): S(WTX response) in an XfrBlock
    // with bBWI 7, then the card's I-block.
    sim(&mut s).fault(0, &[Fault::CardWtx(7)]);
    assert_eq!(s.secure(&verify_payload([0; 3]), PIN_TIMEOUT).unwrap(), [0x90, 0x00]);
    let r = sim(&mut s);
    assert_eq!(&r.log.bwi[bwi..], &[7]);
    assert_eq!(r.log.xfr.last().unwrap(), &[0x00, 0xE3, 0x01, 0x07, 0xE5]);
    assert_eq!(t1_stats(&s).wtx, 1);
    assert_eq!(s.transmit(&SELECT).unwrap(), select_ok());
    // WTX, then the S(WTX response)'s answer damaged: asked for again.
    sim(&mut s).fault(0, &[Fault::CardWtx(2)]);
    sim(&mut s).fault(1, &[Fault::CorruptReply]);
    assert_eq!(s.secure(&verify_payload([0; 3]), PIN_TIMEOUT).unwrap(), [0x90, 0x00]);
    assert_eq!(s.transmit(&SELECT).unwrap(), select_ok());
    assert_eq!(t1_stats(&s).resyncs, 0);
}

#[test]
fn tpdu_t1_pin_answer_errors() {
    let mut s = tpdu_t1_pinpad(&card::ATR);
    sim(&mut s).pinpad = types(b"123456", b"");
    // The card's answer arrives with a bad EDC, or is lost (mute): the card repeats it.
    for f in [Fault::CorruptReply, Fault::LoseReply, Fault::Parity] {
        sim(&mut s).fault(0, std::slice::from_ref(&f));
        let r = s.secure(&verify_payload([0; 3]), PIN_TIMEOUT);
        if f == Fault::Parity {
            // The block never reached the card: it asks for it, and only the reader had the PIN.
            assert_eq!(r, Err(ExchangeError::T1(T1Error::PinBlockLost)));
            assert_eq!(r.unwrap_err().rv(), Rv::E_NOT_TRANSACTED);
        } else {
            assert_eq!(r.unwrap(), [0x90, 0x00], "{f:?}");
        }
        assert_eq!(s.transmit(&SELECT).unwrap(), select_ok(), "{f:?}");
    }
    assert_eq!(t1_stats(&s).resyncs, 0);
    // An answer that stays corrupted: an error, not a panic; the channel is resynchronised so
    // the next command works.
    for i in 0..3 {
        sim(&mut s).fault(i, &[Fault::CorruptReply]);
    }
    let e = s.secure(&verify_payload([0; 3]), PIN_TIMEOUT).unwrap_err();
    assert_eq!(e, ExchangeError::T1(T1Error::PinBlockLost));
    assert_eq!(e.rv(), Rv::E_NOT_TRANSACTED);
    assert_eq!(t1_stats(&s).resyncs, 1);
    assert_eq!(s.transmit(&SELECT).unwrap(), select_ok());
    // Lost on the way to the card (the reader reports mute): same as parity.
    sim(&mut s).fault(0, &[Fault::LoseCommand]);
    assert_eq!(s.secure(&verify_payload([0; 3]), PIN_TIMEOUT), Err(ExchangeError::T1(T1Error::PinBlockLost)));
    let (apdu, resp) = echo(100, false);
    assert_eq!(s.transmit(&apdu).unwrap(), resp);
    // A PIN APDU longer than IFSC cannot be one block: refused before anything is sent.
    let n = sim(&mut s).log.commands.len();
    let mut long = verify_payload([0; 3]);
    long.extend_from_slice(&[0; 30]);
    let e = s.secure(&long, PIN_TIMEOUT).unwrap_err();
    assert_eq!(e, ExchangeError::T1(T1Error::BlockTooLong { len: 41, ifsc: 32 }));
    assert_eq!(sim(&mut s).log.commands.len(), n);
    // Not a verify/modify payload.
    assert_eq!(s.secure(&[0x04], PIN_TIMEOUT), Err(ExchangeError::SecurePayload));
    assert_eq!(s.transmit(&SELECT).unwrap(), select_ok());
}

#[test]
fn sim_pinpad_checks_the_prologue() {
    let mut s = tpdu_t1_pinpad(&card::ATR);
    sim(&mut s).pinpad = types(b"123456", b"");
    let apdus = sim(&mut s).log.apdus.len();
    // N(S) = 1 where the card expects 0, then LEN one short: the card answers R(N(R) = 0,
    // other error) and runs nothing.
    for prologue in [[0x00, 0x40, 11], [0x00, 0x00, 10]] {
        let secure = super::message::Secure { bwi: 0, level: 0, data: &verify_payload(prologue) };
        let r = s.ccid().transact(0, &secure, PIN_TIMEOUT).unwrap();
        assert_eq!(r.data, Block::R { nr: false, error: super::t1::RError::Other }.encode(0, Edc::Lrc));
    }
    assert_eq!(sim(&mut s).log.apdus.len(), apdus);
    // The slot's prologue is the right one.
    assert_eq!(s.secure(&verify_payload([0x00, 0x40, 11]), PIN_TIMEOUT).unwrap(), [0x90, 0x00]);
    assert_eq!(s.transmit(&SELECT).unwrap(), select_ok());
}

#[test]
fn tpdu_t1_pin_crc_card() {
    // TD1 81 (T=1, TD2), TD2 51 (TA3, TC3, T=1), TA3 FE, TC3 01: CRC.
    let mut atr = vec![0x3B, 0x80, 0x81, 0x51, 0xFE, 0x01];
    let tck = atr.iter().skip(1).fold(0, |a, b| a ^ b);
    atr.push(tck);
    let mut s = tpdu_t1_pinpad(&atr);
    sim(&mut s).pinpad = types(b"123456", b"");
    assert_eq!(s.secure(&verify_payload([0; 3]), PIN_TIMEOUT).unwrap(), [0x90, 0x00]);
    // A 2-byte EDC in the card's answer (libccid would strip one byte only), checked.
    sim(&mut s).fault(0, &[Fault::CorruptReply]);
    assert_eq!(s.secure(&verify_payload([0; 3]), PIN_TIMEOUT).unwrap(), [0x90, 0x00]);
    assert_eq!(sim(&mut s).log.pin_blocks[0].len(), 3 + 11 + 2);
    assert_eq!(s.transmit(&SELECT).unwrap(), select_ok());
    assert_eq!(t1_stats(&s).errors, 1);
}

#[test]
fn pin_at_the_apdu_level_is_passed_through() {
    let desc = CcidDescriptor { pin_support: super::descriptor::PinSupport(3), ..profiles::short_apdu() };
    let mut s = slot(SimReader::new(desc, vcard(), &card::ATR));
    s.connect(Protocols::ANY).unwrap();
    sim(&mut s).pinpad = types(b"123456", b"");
    // The payload goes out as given (the prologue is the reader's business, ignored here).
    let payload = verify_payload([1, 2, 3]);
    assert_eq!(s.secure(&payload, PIN_TIMEOUT).unwrap(), [0x90, 0x00]);
    assert_eq!(sim(&mut s).log.commands.last().unwrap()[10..], payload[..]);
    assert!(sim(&mut s).log.pin_blocks.is_empty());
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
fn undefined_level_refused() {
    // dwFeatures & 0x70000 = 0x30000: no such level.
    let desc = CcidDescriptor { features: Features(0x0003_0030), ..profiles::character() };
    let r = SimReader::new(desc.clone(), vcard(), &card::ATR);
    let e = Slot::new(r, desc, 0, ExchangeOptions::default()).unwrap_err();
    assert_eq!(e, ExchangeError::UnsupportedLevel(None));
    assert_eq!(e.rv(), Rv::E_READER_UNSUPPORTED);
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

// ---------------------------------------------------------------------------------------------
// Character level (character.rs): T=0 procedure bytes and T=1 blocks run by the host

fn character_t0(opts: ExchangeOptions, nulls: u8, ack: u8) -> Slot<SimReader> {
    let mut r = SimReader::new(profiles::character(), vcard(), &T0_ONLY_ATR);
    r.quirks.char_nulls = nulls;
    r.quirks.char_ack = ack;
    let mut s = slot_with(r, opts);
    assert_eq!(s.connect(Protocols::ANY).unwrap().1, Protocol::T0);
    s
}

/// The XfrBlocks sent since the last call.
fn xfr_levels_since(s: &mut Slot<SimReader>, from: &mut usize) -> Vec<u16> {
    let all = xfr_levels(sim(s));
    let new = all[*from..].to_vec();
    *from = all.len();
    new
}

#[test]
fn character_level_t0_cases_1_2_3() {
    let mut s = character_t0(ExchangeOptions::default(), 0, 0);
    // No PPS (T=0 is the default, no TA1): SetParameters T=0 only.
    assert_eq!(sent_types(sim(&mut s)), [msg_type::ICC_POWER_ON, msg_type::SET_PARAMETERS]);
    let mut seen = 0;
    // Case 3: header (1 back: the ACK), data (1 back: SW1), SW2. 61xx is the application's.
    assert_eq!(s.transmit(&SELECT).unwrap(), [0x61, 0x10]);
    assert_eq!(xfr_levels_since(&mut s, &mut seen), [1, 1, 1]);
    let xfr = sim(&mut s).log.xfr.clone();
    assert_eq!(xfr[0], SELECT[..5]);
    assert_eq!(xfr[1], SELECT[5..]);
    assert_eq!(xfr[2], [] as [u8; 0]);
    // Case 2: header, the 16 data bytes at once, SW1, SW2.
    let mut r = s.transmit(&[0x00, 0xC0, 0x00, 0x00, 0x10]).unwrap();
    assert_eq!(xfr_levels_since(&mut s, &mut seen), [1, 16, 1, 1]);
    assert_eq!(r.split_off(16), [0x90, 0x00]);
    assert_eq!(r, card::FCI);
    // Case 1: the header gets P3 = 00; VERIFY without data answers 63 C3.
    assert_eq!(s.transmit(&[0x00, 0x20, 0x00, 0x81]).unwrap(), [0x63, 0xC3]);
    assert_eq!(sim(&mut s).log.xfr.last().unwrap(), &[] as &[u8]);
    assert!(sim(&mut s).log.xfr.iter().any(|x| x == &[0x00, 0x20, 0x00, 0x81, 0x00]));
    // Case 2 with Le 00: 256 bytes.
    let r = s.transmit(&[0x00, 0xB0, 0x00, 0x00, 0x00]).unwrap();
    assert_eq!(r.len(), 258);
    assert_eq!(r[..256], (0..256).map(card::file_byte).collect::<Vec<u8>>()[..]);
    // A wrong Le: 6Cxx passed through (as pcscd + libccid), then the right one.
    seen = xfr_levels(sim(&mut s)).len();
    assert_eq!(s.transmit(&[0x80, 0x02, 0x00, 0x05, 0x10]).unwrap(), [0x6C, 0x05]);
    assert_eq!(xfr_levels_since(&mut s, &mut seen), [1, 1]);
    assert_eq!(s.transmit(&[0x80, 0x02, 0x00, 0x05, 0x05]).unwrap().len(), 7);
    // 54 characters would be a 64-byte DataBlock (O2Micro OZ776): 1 + 53.
    seen = xfr_levels(sim(&mut s)).len();
    assert_eq!(s.transmit(&[0x00, 0xB0, 0x00, 0x00, 54]).unwrap().len(), 56);
    assert_eq!(xfr_levels_since(&mut s, &mut seen), [1, 1, 53, 1, 1]);
    // Case 3 with 255 bytes, then GET RESPONSE.
    let (apdu, resp) = echo(255, false);
    assert_eq!(s.transmit(&apdu[..apdu.len() - 1]).unwrap(), [0x61, 0xFF]);
    assert_eq!(s.transmit(&[0x00, 0xC0, 0x00, 0x00, 0xFF]).unwrap(), resp);
}

#[test]
fn character_level_t0_refusals() {
    let mut s = character_t0(ExchangeOptions::default(), 0, 0);
    let before = sim(&mut s).log.commands.len();
    // Case 4: refused like libccid (communication error → SCARD_E_NOT_TRANSACTED).
    let (apdu, _) = echo(10, false);
    let e = s.transmit(&apdu).unwrap_err();
    assert_eq!(e, ExchangeError::T0(T0Error::Character(CharError::Case4)));
    assert_eq!(e.rv(), Rv::E_NOT_TRANSACTED);
    assert!(e.to_string().contains("case-4"), "{e}");
    // INS 6x / 9x.
    let e = s.transmit(&[0x00, 0x6A, 0x00, 0x00]).unwrap_err();
    assert_eq!(e, ExchangeError::T0(T0Error::Character(CharError::Ins(0x6A))));
    assert_eq!(e.rv(), Rv::E_NOT_TRANSACTED);
    // Extended.
    let (apdu, _) = pattern_ext(10);
    assert_eq!(s.transmit(&apdu).unwrap_err(), ExchangeError::T0(T0Error::Extended));
    // Nothing reached the reader.
    assert_eq!(sim(&mut s).log.commands.len(), before);
    // The card still answers.
    assert_eq!(s.transmit(&SELECT).unwrap(), [0x61, 0x10]);
}

#[test]
fn character_level_t0_nulls_and_one_byte_transfers() {
    for (nulls, ack) in [(2, 0x00), (0, 0x01), (1, 0xFF), (3, 0xFE)] {
        let mut s = character_t0(ExchangeOptions::default(), nulls, ack);
        let mut seen = 0;
        assert_eq!(s.transmit(&SELECT).unwrap(), [0x61, 0x10], "{nulls} {ack:02X}");
        let levels = xfr_levels_since(&mut s, &mut seen);
        let one_by_one = ack & 0xFE == 0xFE;
        // Each NULL costs one more 1-character read; one-by-one sending: one XfrBlock per byte.
        let sends = if one_by_one { SELECT.len() - 5 } else { 1 };
        assert_eq!(levels.len(), 1 + sends + 1 + usize::from(nulls) * (sends + 1), "{nulls} {ack:02X}");
        assert!(levels.iter().all(|&l| l == 1));
        let r = s.transmit(&[0x00, 0xB0, 0x00, 0x10, 0x20]).unwrap();
        assert_eq!(r[..32], (16..48).map(card::file_byte).collect::<Vec<u8>>()[..]);
        assert_eq!(r[32..], [0x90, 0x00]);
        if one_by_one {
            // Procedure byte, data byte, 32 times.
            assert_eq!(xfr_levels_since(&mut s, &mut seen).len(), 1 + 64 + 1 + usize::from(nulls) * 33);
        }
        assert_eq!(s.transmit(&[0x00, 0x20, 0x00, 0x81]).unwrap(), [0x63, 0xC3]);
    }
}

#[test]
fn character_level_t0_follow_ups_shared_with_the_tpdu_level() {
    // T0Mode::Iso and the opt-in follow-ups work the same as at the TPDU level.
    let helpful = ExchangeOptions {
        t0: T0Options { mode: T0Mode::Iso, fix_wrong_length: true, get_response: true },
        ..ExchangeOptions::default()
    };
    let mut s = character_t0(helpful, 1, 0xFF);
    let mut case4 = SELECT.to_vec();
    case4.push(0);
    assert_eq!(s.transmit(&case4).unwrap(), select_ok());
    let (apdu, resp) = echo(200, false);
    assert_eq!(s.transmit(&apdu).unwrap(), resp);
    let r = s.transmit(&[0x80, 0x02, 0x00, 0x05, 0x10]).unwrap();
    assert_eq!(r.len(), 7);
    let r = s.transmit(&[0x80, 0x02, 0x01, 0x2C, 0x00]).unwrap();
    assert_eq!(r.len(), 302);
}

#[test]
fn character_level_t0_bad_replies() {
    let mut s = character_t0(ExchangeOptions::default(), 0, 0);
    // A procedure byte that means nothing.
    sim(&mut s).fault(0, &[Fault::CharReply(vec![0x12])]);
    let e = s.transmit(&[0x00, 0x20, 0x00, 0x81]).unwrap_err();
    assert_eq!(e, ExchangeError::T0(T0Error::Character(CharError::ProcedureByte(0x12))));
    assert_eq!(e.rv(), Rv::E_NOT_TRANSACTED);
    // Nothing where a character was expected.
    let mut s = character_t0(ExchangeOptions::default(), 0, 0);
    sim(&mut s).fault(1, &[Fault::CharReply(vec![])]);
    let e = s.transmit(&[0x00, 0xB0, 0x00, 0x00, 0x08]).unwrap_err();
    assert_eq!(e, ExchangeError::T0(T0Error::Character(CharError::ShortReply { wanted: 8, got: 0 })));
    // Fewer characters than asked for on the line: the reader's ICC_MUTE, SCARD_E_NOT_TRANSACTED.
    let mut s = character_t0(ExchangeOptions::default(), 0, 0);
    let e = s.transmit(&[0x00, 0x23, 0x00, 0x00, 0x08]);
    assert!(e.is_ok(), "{e:?}");
    sim(&mut s).fault(0, &[Fault::CharReply(vec![0x23])]);
    let e = s.transmit(&[0x00, 0x23, 0x00, 0x00, 0x08]).unwrap_err();
    assert!(matches!(&e, ExchangeError::T0(T0Error::Ccid(c)) if c.is_mute()), "{e:?}");
    assert_eq!(e.rv(), Rv::E_NOT_TRANSACTED);
    // The card pulled out mid-command: SCARD_E_NO_SMARTCARD.
    let mut s = character_t0(ExchangeOptions::default(), 0, 0);
    sim(&mut s).fault(1, &[Fault::RemoveCard]);
    assert_eq!(s.transmit(&SELECT).unwrap_err().rv(), Rv::E_NO_SMARTCARD);
}

#[test]
fn character_level_t1_lrc() {
    let mut r = SimReader::new(profiles::character(), vcard(), &card::ATR);
    r.quirks.card_chunk = 40;
    let mut s = slot(r);
    assert_eq!(s.connect(Protocols::ANY).unwrap().1, Protocol::T1);
    let levels = xfr_levels(sim(&mut s));
    // PPS (T=1 is not the default): 4 characters asked; S(IFS) request: prologue, then 1 + LRC.
    assert_eq!(levels, [4, 3, 2]);
    let r = sim(&mut s);
    assert_eq!(r.log.xfr[0], [0xFF, 0x01, 0xFE]);
    assert_eq!(r.log.xfr[1], [0x00, 0xC1, 0x01, 0xFE, 0x3E]);
    let t1 = s.card().unwrap().t1().unwrap();
    assert_eq!((t1.ifsc(), t1.ifsd(), t1.edc()), (32, 254, Edc::Lrc));
    let mut seen = levels.len();
    assert_eq!(s.transmit(&SELECT).unwrap(), select_ok());
    // One I-block each way: 18 bytes of INF + LRC after the prologue.
    assert_eq!(xfr_levels_since(&mut s, &mut seen), [3, 19]);
    // Chaining both ways: 260 bytes out in IFSC-sized blocks, 257 back in 40-byte ones.
    let (apdu, resp) = echo(255, false);
    assert_eq!(s.transmit(&apdu).unwrap(), resp);
    let levels = xfr_levels_since(&mut s, &mut seen);
    assert_eq!(levels.iter().filter(|&&l| l == 3).count(), 9 + 6);
    assert!(levels.contains(&41));
    // A corrupted block is asked for again; a WTX request stretches both reads.
    sim(&mut s).fault(0, &[Fault::CorruptReply]);
    assert_eq!(s.transmit(&SELECT).unwrap(), select_ok());
    sim(&mut s).fault(0, &[Fault::CardWtx(3)]);
    assert_eq!(s.transmit(&SELECT).unwrap(), select_ok());
    let bwi = sim(&mut s).log.bwi.clone();
    assert_eq!(bwi[bwi.len() - 2..], [3, 3]);
    // Garbage from the reader is just a bad block to the engine.
    sim(&mut s).fault(0, &[Fault::CharReply(vec![0x00])]);
    assert_eq!(s.transmit(&SELECT).unwrap(), select_ok());
    sim(&mut s).fault(0, &[Fault::Parity]);
    assert_eq!(s.transmit(&SELECT).unwrap(), select_ok());
    // Case 4 is fine with T=1.
    let (apdu, resp) = echo(10, false);
    assert_eq!(s.transmit(&apdu).unwrap(), resp);
}

#[test]
fn character_level_t1_crc() {
    // TD1 81 (T=1, TD2), TD2 51 (TA3, TC3, T=1), TA3 FE, TC3 01: CRC.
    let mut atr = vec![0x3B, 0x80, 0x81, 0x51, 0xFE, 0x01];
    let tck = atr.iter().skip(1).fold(0, |a, b| a ^ b);
    atr.push(tck);
    let mut s = slot(SimReader::new(profiles::character(), vcard(), &atr));
    assert_eq!(s.connect(Protocols::ANY).unwrap().1, Protocol::T1);
    assert_eq!(s.card().unwrap().t1().unwrap().edc(), Edc::Crc);
    let mut seen = xfr_levels(sim(&mut s)).len();
    assert_eq!(s.transmit(&SELECT).unwrap(), select_ok());
    // LEN + 2 after the prologue (libccid would ask for LEN + 1 and lose the last byte).
    assert_eq!(xfr_levels_since(&mut s, &mut seen), [3, 20]);
    sim(&mut s).fault(1, &[Fault::CorruptReply]);
    let (apdu, resp) = echo(100, false);
    assert_eq!(s.transmit(&apdu).unwrap(), resp);
}

#[test]
fn character_level_random_reader_replies_never_panic() {
    let mut rng = Rng(0x0123_4567_89AB_CDEF);
    let mut next = move || rng.next_u64();
    for round in 0..200 {
        let atr: &[u8] = if round % 2 == 0 { &T0_ONLY_ATR } else { &card::ATR };
        let mut r = SimReader::new(profiles::character(), vcard(), atr);
        r.quirks.char_nulls = (next() % 3) as u8;
        r.quirks.char_ack = [0x00, 0x01, 0xFF, 0xFE][(next() % 4) as usize];
        let mut s = slot(r);
        if s.connect(Protocols::ANY).is_err() {
            continue;
        }
        for _ in 0..5 {
            // Some replies replaced by random characters, some commands random.
            for n in 0..4 {
                if next() % 3 == 0 {
                    let len = (next() % 6) as usize;
                    let chars: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                    sim(&mut s).fault(n, &[Fault::CharReply(chars)]);
                }
            }
            let apdu: Vec<u8> = match next() % 3 {
                0 => SELECT.to_vec(),
                1 => vec![0x00, 0xB0, 0x00, 0x00, (next() % 64) as u8],
                _ => (0..4 + next() % 12).map(|_| next() as u8).collect(),
            };
            if let Err(e) = s.transmit(&apdu) {
                let _ = (e.rv(), e.to_string());
            }
        }
    }
}
