//! The special cases at work: `Slot` (exchange.rs) with a device's [`Quirks`] over the
//! simulated readers of `sim.rs`, with the project's virtual card behind them.

use super::*;
use crate::ccid::atr::{Protocol, Protocols};
use crate::ccid::device::Op;
use crate::ccid::exchange::{ExchangeError, ExchangeOptions, Slot};
use crate::ccid::message::msg_type;
use crate::ccid::sim::{profiles, SimCard, SimReader, T1_ONLY_ATR};
use pcsc_bridge_tests::card::cmd::{select_ok, SELECT};
use pcsc_bridge_tests::card::{self, Card};

fn vcard() -> Box<dyn SimCard> {
    Box::new(Card::new())
}

/// A slot over `r` opened the way `serve` opens one: descriptor fixed, quirks in the options.
fn slot_for(r: SimReader, quirks: &Quirks) -> Slot<SimReader> {
    let mut desc = r.desc.clone();
    quirks.fix_descriptor(&mut desc);
    let (desc, opts) = quirks.for_slot(0, &desc, &ExchangeOptions::default());
    Slot::new(r, desc, 0, opts).expect("supported level")
}

fn sim(s: &mut Slot<SimReader>) -> &mut SimReader {
    s.ccid().transport()
}

fn sent_types(s: &mut Slot<SimReader>) -> Vec<u8> {
    sim(s).log.commands.iter().map(|c| c[0]).collect()
}

/// The data of the Escapes sent.
fn escapes(s: &mut Slot<SimReader>) -> Vec<Vec<u8>> {
    sim(s).log.commands.iter().filter(|c| c[0] == msg_type::ESCAPE).map(|c| c[10..].to_vec()).collect()
}

#[test]
fn emv_mode_power_on_gets_iso_mode_escape_and_one_retry() {
    // Cherry SmartBoard XX33 (and GemPC 433): bError BB → Escape 1F 01, the same voltage again.
    let q = Quirks::for_device(0x046A, 0x0005, 0x0100);
    let mut r = SimReader::new(profiles::tpdu(), vcard(), &card::ATR);
    r.quirks.power_on_errors = vec![EMV_MODE_ERROR];
    let mut s = slot_for(r, &q);
    assert_eq!(s.power_on().unwrap(), card::ATR);
    assert_eq!(sent_types(&mut s), [msg_type::ICC_POWER_ON, msg_type::ESCAPE, msg_type::ICC_POWER_ON]);
    assert_eq!(escapes(&mut s), [ISO_MODE.to_vec()]);
    assert_eq!(sim(&mut s).log.voltages, [1, 1]);

    // Only once: a second BB goes on with the next voltage, as any failed power-on.
    let mut r = SimReader::new(profiles::tpdu(), vcard(), &card::ATR);
    r.quirks.power_on_errors = vec![EMV_MODE_ERROR, EMV_MODE_ERROR];
    let mut s = slot_for(r, &q);
    s.power_on().unwrap();
    assert_eq!(sim(&mut s).log.voltages, [1, 1, 3]);
    assert_eq!(escapes(&mut s).len(), 1);

    // Without the quirk a BB is just a failed voltage.
    let mut r = SimReader::new(profiles::tpdu(), vcard(), &card::ATR);
    r.quirks.power_on_errors = vec![EMV_MODE_ERROR];
    let mut s = slot_for(r, &Quirks::default());
    s.power_on().unwrap();
    assert_eq!(sim(&mut s).log.voltages, [1, 3]);
    assert!(escapes(&mut s).is_empty());

    // Another bError on the GemPC 433: no escape.
    let mut r = SimReader::new(profiles::tpdu(), vcard(), &card::ATR);
    r.quirks.power_on_errors = vec![0xFB];
    let mut s = slot_for(r, &Quirks::for_device(0x08E6, 0x4433, 0));
    s.power_on().unwrap();
    assert!(escapes(&mut s).is_empty());
}

#[test]
fn qemu_reader_behaves_as_before() {
    // QEMU's usb-ccid has the GemPC 433 IDs: its quirks are armed but never fire (it answers
    // no BB), and its refusal of Escape 6A leaves the firmware features unknown.
    let mut q = Quirks::for_device(0x08E6, 0x4433, 0);
    let r = SimReader::qemu(vcard(), &crate::ccid::sim::T0_ONLY_ATR);
    let mut s = slot_for(r, &q);
    assert_eq!(s.presence_at_open(), Ok(true));
    q.after_first_status(&mut s).unwrap();
    assert_eq!(q.firmware_features, None);
    assert_eq!(escapes(&mut s), [GET_FIRMWARE_FEATURES.to_vec()]);
    let (_, p) = s.connect(Protocols::ANY).unwrap();
    assert_eq!(p, Protocol::T0);
    assert_eq!(s.transmit(&SELECT).unwrap(), select_ok());
    assert_eq!(
        sent_types(&mut s),
        [msg_type::GET_SLOT_STATUS, msg_type::ESCAPE, msg_type::ICC_POWER_ON, msg_type::XFR_BLOCK]
    );
}

#[test]
fn gemalto_firmware_features_at_open() {
    let mut features = [0u8; GemaltoFeatures::LEN];
    features[3] = 0x02;
    features[13] = 4;
    features[14] = 12;
    let mut r = SimReader::new(profiles::short_apdu(), vcard(), &card::ATR);
    r.quirks.escape_answers = vec![(GET_FIRMWARE_FEATURES.to_vec(), features.to_vec())];
    let mut q = Quirks::for_device(GEMALTO_VID, 0x34C3, 0x0100);
    let mut s = slot_for(r, &q);
    q.after_first_status(&mut s).unwrap();
    let f = q.firmware_features.unwrap();
    assert_eq!((f.entry_validation, f.min_pin, f.max_pin), (0x02, 4, 12));
    // An answer of another size is not kept (here: the simulator echoes the command).
    let mut q = Quirks::for_device(GEMALTO_VID, 0x34C3, 0x0100);
    let mut s = slot_for(SimReader::new(profiles::short_apdu(), vcard(), &card::ATR), &q);
    q.after_first_status(&mut s).unwrap();
    assert_eq!(q.firmware_features, None);
    // Not a Gemalto reader: nothing sent.
    let mut q = Quirks::for_device(0x1050, 0x0407, 0);
    let mut s = slot_for(SimReader::new(profiles::short_apdu(), vcard(), &card::ATR), &q);
    q.after_first_status(&mut s).unwrap();
    assert!(sent_types(&mut s).is_empty());
}

#[test]
fn pinpad_prompts_at_open() {
    let mut q = Quirks::for_device(0x08E6, 0x3478, 0x0100);
    assert_eq!(q.prompts_delay, Some(Duration::from_secs(1)));
    q.prompts_delay = Some(Duration::ZERO);
    let mut s = slot_for(SimReader::new(profiles::tpdu(), vcard(), &card::ATR), &q);
    q.after_first_status(&mut s).unwrap();
    assert_eq!(escapes(&mut s), [prompts_escape(), GET_FIRMWARE_FEATURES.to_vec()]);
    // Option 0x40: the retry counter is switched off too.
    let mut q = q.with_options(DriverOptions(DriverOptions::DISABLE_PIN_RETRIES));
    let mut s = slot_for(SimReader::new(profiles::tpdu(), vcard(), &card::ATR), &q);
    q.after_first_status(&mut s).unwrap();
    assert_eq!(escapes(&mut s)[1], DISABLE_PIN_RETRIES);
    // A reader that refuses them is not used (libccid fails the open).
    let mut s = slot_for(SimReader::qemu(vcard(), &card::ATR), &q);
    assert!(matches!(q.after_first_status(&mut s), Err(QuirkError::Prompts(_))));
}

#[test]
fn kobil_idtoken_power_off_first_and_driver_answers() {
    let q = Quirks::for_device(0x0D46, 0x301D, 0x0123);
    let mut s = slot_for(SimReader::new(profiles::tpdu(), vcard(), &card::ATR), &q);
    s.connect(Protocols::ANY).unwrap();
    assert_eq!(&sent_types(&mut s)[..2], [msg_type::ICC_POWER_OFF, msg_type::ICC_POWER_ON]);
    assert_eq!(s.transmit(&[0xFF, 0x9A, 0x01, 0x01, 0x00]).unwrap(), b"KOBIL systems\x90\x00");
    assert_eq!(s.transmit(&[0xFF, 0x9A, 0x01, 0x03, 0x00]).unwrap(), b"IDToken\x90\x00");
    assert_eq!(s.transmit(&[0xFF, 0x9A, 0x01, 0x06, 0x00]).unwrap(), b"1.23\x90\x00");
    assert_eq!(s.transmit(&[0xFF, 0x9A, 0x01, 0x07, 0x00]).unwrap(), b"2012.2.7\x90\x00");
    // None of them reached the card; other APDUs do.
    assert!(sim(&mut s).log.apdus.is_empty());
    assert_eq!(s.transmit(&SELECT).unwrap(), select_ok());
    assert_eq!(sim(&mut s).log.apdus, [SELECT.to_vec()]);
    // A reset powers off first again.
    let before = sent_types(&mut s).len();
    s.power_on().unwrap();
    assert_eq!(sent_types(&mut s)[before..], [msg_type::ICC_POWER_OFF, msg_type::ICC_POWER_ON]);
    // Another reader passes the same APDU to the card.
    let mut s = slot_for(SimReader::new(profiles::tpdu(), vcard(), &card::ATR), &Quirks::default());
    s.connect(Protocols::ANY).unwrap();
    let _ = s.transmit(&[0xFF, 0x9A, 0x01, 0x01, 0x00]);
    assert_eq!(sim(&mut s).log.apdus, [vec![0xFF, 0x9A, 0x01, 0x01, 0x00]]);
}

#[test]
fn o2micro_makes_no_pps_and_keeps_the_default_protocol() {
    // The card's default is T=0, it offers T=1: pcscd asks T=1 first, which needs a PPS.
    let q = Quirks::for_device(0x0B97, 0x7762, 0x0100);
    let mut s = slot_for(SimReader::new(profiles::tpdu(), vcard(), &card::ATR), &q);
    let (_, p) = s.connect(Protocols::ANY).unwrap();
    assert_eq!(p, Protocol::T0);
    assert_eq!(sent_types(&mut s), [msg_type::ICC_POWER_ON, msg_type::SET_PARAMETERS]);
    assert_eq!(s.descriptor().max_data_rate, 9600);
    // T=0 pass-through: the card answers 61xx, its data comes with a GET RESPONSE.
    assert_eq!(s.transmit(&SELECT).unwrap(), [0x61, card::FCI.len() as u8]);
    assert_eq!(sim(&mut s).log.apdus, [SELECT.to_vec()]);
}

#[test]
fn alcor_au9540_resets_after_a_refused_set_parameters() {
    let refusing = || {
        let mut r = SimReader::new(profiles::tpdu(), vcard(), &T1_ONLY_ATR);
        r.quirks.set_parameters_error = Some(0xFB);
        r
    };
    let q = Quirks::for_device(0x058F, 0x9540, 0x0100);
    let mut s = slot_for(refusing(), &q);
    let (_, p) = s.connect(Protocols::T1).unwrap();
    assert_eq!(p, Protocol::T1);
    let types = sent_types(&mut s);
    let setp = types.iter().position(|&t| t == msg_type::SET_PARAMETERS).unwrap();
    assert_eq!(types[setp + 1..setp + 3], [msg_type::ICC_POWER_ON, msg_type::ICC_POWER_ON]);
    assert_eq!(s.transmit(&SELECT).unwrap(), select_ok());
    // Any other reader fails the connect.
    let mut s = slot_for(refusing(), &Quirks::default());
    assert!(matches!(s.connect(Protocols::T1), Err(ExchangeError::SetParameters(_))));
}

#[test]
fn thales_fusion_gets_five_more_minutes_with_t1() {
    let timeout = |q: &Quirks| {
        let mut s = slot_for(SimReader::new(profiles::extended(3072), vcard(), &T1_ONLY_ATR), q);
        s.connect(Protocols::T1).unwrap();
        s.card().unwrap().timeout
    };
    let plain = timeout(&Quirks::default());
    assert_eq!(timeout(&Quirks::for_device(0x08E6, 0x34D2, 0)), plain + Duration::from_secs(300));
}

#[test]
fn gemcore_sim_pro_presence_is_the_last_power_on() {
    let q = Quirks::for_device(0x08E6, 0x3480, 0x0100);
    let mut r = SimReader::new(profiles::extended(271), vcard(), &card::ATR);
    r.quirks.power_on_errors = vec![0xFE];
    let mut s = slot_for(r, &q);
    // "Present" without asking the reader, until a power-on fails.
    assert_eq!(s.presence_at_open(), Ok(true));
    assert_eq!(s.presence(), Ok(true));
    assert!(s.power_on().is_err());
    assert_eq!(s.presence(), Ok(false));
    assert!(s.power_on().is_ok());
    assert_eq!(s.presence(), Ok(true));
    assert!(!sent_types(&mut s).contains(&msg_type::GET_SLOT_STATUS));
    // Firmware 2.00 asks the reader.
    let mut s = slot_for(
        SimReader::new(profiles::extended(271), vcard(), &card::ATR),
        &Quirks::for_device(0x08E6, 0x3480, 0x0200),
    );
    assert_eq!(s.presence(), Ok(true));
    assert_eq!(sent_types(&mut s), [msg_type::GET_SLOT_STATUS]);
}

#[test]
fn kobil_power_off_failure_fails_the_power_on() {
    let q = Quirks::for_device(0x0D46, 0x301D, 0x0100);
    let mut r = SimReader::new(profiles::tpdu(), vcard(), &card::ATR);
    r.unplug();
    let mut s = slot_for(r, &q);
    match s.power_on() {
        Err(ExchangeError::Ccid { op: Op::PowerOn, source }) => assert!(source.is_reader_gone()),
        other => panic!("{other:?}"),
    }
}
