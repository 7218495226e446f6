//! The character level against scripted readers: every XfrBlock checked (data and
//! `wLevelParameter`), every reply chosen.

use super::*;
use crate::ccid::message::{CommandStatus, ErrorCode, IccStatus, Status};
use crate::ccid::sim::Rng;
use crate::ccid::t0::{self, T0Mode, T0Options};
use crate::ccid::t1::{Block, T1Error, T1};
use crate::ccid::transport::TransportError;

/// One scripted XfrBlock: what the host must send, the `wLevelParameter` it must ask, the reply.
type Step = (&'static [u8], u16, &'static [u8]);

fn scripted(steps: Vec<Step>) -> impl FnMut(&[u8], u16, u8) -> Result<Vec<u8>, CcidError> {
    let mut it = steps.into_iter().enumerate();
    move |data, level, _bwi| {
        let (i, (want, want_level, reply)) = it.next().expect("more XfrBlocks than scripted");
        assert_eq!((data, level), (want, want_level), "XfrBlock {i}");
        Ok(reply.to_vec())
    }
}

/// Runs `apdu` through [`t0_tpdu`] and checks the script was used up.
fn run(apdu: &[u8], steps: Vec<Step>) -> Result<Vec<u8>, T0Error> {
    let n = steps.len();
    let mut used = 0;
    let mut x = scripted(steps);
    let mut counting = |d: &[u8], l: u16, b: u8| {
        used += 1;
        x(d, l, b)
    };
    let r = t0_tpdu(&mut counting, apdu);
    if r.is_ok() {
        assert_eq!(used, n, "scripted XfrBlocks left over");
    }
    r
}

fn char_err(e: CharError) -> Result<Vec<u8>, T0Error> {
    Err(T0Error::Character(e))
}

#[test]
fn case1_padded_header() {
    let r = run(&[0x00, 0xA4, 0x00, 0x00], vec![(&[0x00, 0xA4, 0x00, 0x00, 0x00], 1, &[0x90]), (&[], 1, &[0x00])]);
    assert_eq!(r.unwrap(), [0x90, 0x00]);
}

#[test]
fn case2_ack_then_data_then_status() {
    let r = run(
        &[0x00, 0xB0, 0x00, 0x00, 0x04],
        vec![
            (&[0x00, 0xB0, 0x00, 0x00, 0x04], 1, &[0xB0]),
            (&[], 4, &[1, 2, 3, 4]),
            (&[], 1, &[0x90]),
            (&[], 1, &[0x00]),
        ],
    );
    assert_eq!(r.unwrap(), [1, 2, 3, 4, 0x90, 0x00]);
    // INS ⊕ 01 is an ACK too.
    let r = run(
        &[0x00, 0xB0, 0x00, 0x00, 0x01],
        vec![(&[0x00, 0xB0, 0x00, 0x00, 0x01], 1, &[0xB1]), (&[], 1, &[7]), (&[], 1, &[0x90]), (&[], 1, &[0x00])],
    );
    assert_eq!(r.unwrap(), [7, 0x90, 0x00]);
}

#[test]
fn case2_le_0_is_256() {
    let data: &'static [u8] = Box::leak((0..=255u8).collect::<Vec<u8>>().into_boxed_slice());
    let r = run(
        &[0x00, 0xB0, 0x00, 0x00, 0x00],
        vec![(&[0x00, 0xB0, 0x00, 0x00, 0x00], 1, &[0xB0]), (&[], 256, data), (&[], 1, &[0x90]), (&[], 1, &[0x00])],
    );
    assert_eq!(r.unwrap().len(), 258);
}

#[test]
fn oz776_never_asks_for_a_64_byte_reply() {
    // 54 characters would make a 64-byte DataBlock: 1, then 53.
    let data: &'static [u8] = Box::leak(vec![0xAB; 53].into_boxed_slice());
    let r = run(
        &[0x00, 0xB0, 0x00, 0x00, 54],
        vec![
            (&[0x00, 0xB0, 0x00, 0x00, 54], 1, &[0xB0]),
            (&[], 1, &[0xAB]),
            (&[], 53, data),
            (&[], 1, &[0x90]),
            (&[], 1, &[0x00]),
        ],
    );
    assert_eq!(r.unwrap().len(), 56);
    assert_eq!(read_size(54, 261), 1);
    assert_eq!(read_size(118, 261), 1);
    assert_eq!(read_size(55, 261), 55);
    assert_eq!(read_size(300, 261), 261);
}

#[test]
fn case3_data_out_and_61xx_passed_through() {
    let r = run(
        &[0x00, 0xD6, 0x00, 0x00, 0x03, 0xA, 0xB, 0xC],
        vec![(&[0x00, 0xD6, 0x00, 0x00, 0x03], 1, &[0xD6]), (&[0xA, 0xB, 0xC], 1, &[0x61]), (&[], 1, &[0x10])],
    );
    assert_eq!(r.unwrap(), [0x61, 0x10]);
}

#[test]
fn null_bytes_are_waited_out() {
    let r = run(
        &[0x00, 0xB0, 0x00, 0x00, 0x02],
        vec![
            (&[0x00, 0xB0, 0x00, 0x00, 0x02], 1, &[0x60]),
            (&[], 1, &[0x60]),
            (&[], 1, &[0xB0]),
            (&[], 2, &[5, 6]),
            (&[], 1, &[0x60]),
            (&[], 1, &[0x90]),
            (&[], 1, &[0x00]),
        ],
    );
    assert_eq!(r.unwrap(), [5, 6, 0x90, 0x00]);
}

#[test]
fn one_byte_at_a_time_both_ways() {
    // Receiving: INS ⊕ FF, then INS ⊕ FE, then an ACK for the rest.
    let r = run(
        &[0x00, 0xB0, 0x00, 0x00, 0x03],
        vec![
            (&[0x00, 0xB0, 0x00, 0x00, 0x03], 1, &[0x4F]),
            (&[], 1, &[1]),
            (&[], 1, &[0x4E]),
            (&[], 1, &[2]),
            (&[], 1, &[0xB0]),
            (&[], 1, &[3]),
            (&[], 1, &[0x90]),
            (&[], 1, &[0x00]),
        ],
    );
    assert_eq!(r.unwrap(), [1, 2, 3, 0x90, 0x00]);
    // Sending: each data byte asked for separately.
    let r = run(
        &[0x00, 0xD6, 0x00, 0x00, 0x02, 0xA, 0xB],
        vec![
            (&[0x00, 0xD6, 0x00, 0x00, 0x02], 1, &[0x29]),
            (&[0xA], 1, &[0x29]),
            (&[0xB], 1, &[0x90]),
            (&[], 1, &[0x00]),
        ],
    );
    assert_eq!(r.unwrap(), [0x90, 0x00]);
}

#[test]
fn wrong_length_6cxx_passed_through_or_fixed() {
    let steps = || -> Vec<Step> { vec![(&[0x00, 0xB0, 0x00, 0x00, 0x10], 1, &[0x6C]), (&[], 1, &[0x02])] };
    assert_eq!(run(&[0x00, 0xB0, 0x00, 0x00, 0x10], steps()).unwrap(), [0x6C, 0x02]);
    // With the TPDU level's opt-in correction, through the shared t0::transmit.
    let mut all = steps();
    all.extend::<Vec<Step>>(vec![
        (&[0x00, 0xB0, 0x00, 0x00, 0x02], 1, &[0xB0]),
        (&[], 2, &[8, 9]),
        (&[], 1, &[0x90]),
        (&[], 1, &[0x00]),
    ]);
    let o = T0Options { mode: T0Mode::Iso, fix_wrong_length: true, get_response: false };
    let r = t0::transmit(&mut T0OverChars(scripted(all)), &[0x00, 0xB0, 0x00, 0x00, 0x10], &o);
    assert_eq!(r.unwrap(), [8, 9, 0x90, 0x00]);
}

#[test]
fn status_before_all_data() {
    // An error status instead of the data: what came so far + SW.
    let r = run(&[0x00, 0xB0, 0x00, 0x00, 0x04], vec![(&[0x00, 0xB0, 0x00, 0x00, 0x04], 1, &[0x6B, 0x00])]);
    assert_eq!(r.unwrap(), [0x6B, 0x00]);
}

#[test]
fn extra_characters_are_used_before_reading_again() {
    // A reader that delivers everything at once: no further XfrBlock.
    let r = run(&[0x00, 0xB0, 0x00, 0x00, 0x02], vec![(&[0x00, 0xB0, 0x00, 0x00, 0x02], 1, &[0xB0, 1, 2, 0x90, 0])]);
    assert_eq!(r.unwrap(), [1, 2, 0x90, 0x00]);
}

#[test]
fn refused_before_anything_is_sent() {
    let none = || -> Vec<Step> { vec![] };
    // Case 4: libccid's communication error (pcscd: SCARD_E_NOT_TRANSACTED).
    assert_eq!(run(&[0x00, 0xA4, 0x04, 0x00, 0x01, 0xAA, 0x00], none()), char_err(CharError::Case4));
    // INS 6x / 9x would be read as status bytes.
    assert_eq!(run(&[0x00, 0x6A, 0x00, 0x00], none()), char_err(CharError::Ins(0x6A)));
    assert_eq!(run(&[0x00, 0x92, 0x00, 0x00, 0x01], none()), char_err(CharError::Ins(0x92)));
    // Extended and malformed APDUs.
    assert_eq!(run(&[0x00, 0xB0, 0x00, 0x00, 0x00, 0x01, 0x00], none()), Err(T0Error::Extended));
    assert!(matches!(run(&[0x00, 0xB0, 0x00], none()), Err(T0Error::Apdu(_))));
    assert!(matches!(run(&[0x00, 0xB0, 0x00, 0x00, 0x05, 1], none()), Err(T0Error::Apdu(_))));
}

#[test]
fn bad_replies_are_errors() {
    let h: &'static [u8] = &[0x00, 0xB0, 0x00, 0x00, 0x04];
    assert_eq!(run(h, vec![(h, 1, &[0x12])]), char_err(CharError::ProcedureByte(0x12)));
    assert_eq!(run(h, vec![(h, 1, &[])]), char_err(CharError::ShortReply { wanted: 1, got: 0 }));
    assert_eq!(run(h, vec![(h, 1, &[0xB0]), (&[], 4, &[1, 2])]), char_err(CharError::ShortReply { wanted: 4, got: 2 }));
    // An ACK once everything was received.
    let steps: Vec<Step> = vec![(h, 1, &[0xB0]), (&[], 4, &[1, 2, 3, 4]), (&[], 1, &[0xB0])];
    assert_eq!(run(h, steps), char_err(CharError::UnexpectedAck(0xB0)));
    // An ACK to a case-1 command, or one asking for more data than there is.
    let c1: &'static [u8] = &[0x00, 0x20, 0x00, 0x81, 0x00];
    assert_eq!(run(&c1[..4], vec![(c1, 1, &[0x20])]), char_err(CharError::UnexpectedAck(0x20)));
    let c3: &'static [u8] = &[0x00, 0x20, 0x00, 0x81, 0x01];
    let steps: Vec<Step> = vec![(c3, 1, &[0x20]), (&[0x31], 1, &[0xDF])];
    assert_eq!(run(&[0x00, 0x20, 0x00, 0x81, 0x01, 0x31], steps), char_err(CharError::UnexpectedAck(0xDF)));
    // The reader fails: its error, unchanged.
    let gone = CcidError::Transport { cmd: "XfrBlock", source: TransportError::NoDevice };
    let e = gone.clone();
    let mut x = move |_: &[u8], _: u16, _: u8| Err(e.clone());
    assert_eq!(t0_tpdu(&mut x, h), Err(T0Error::Ccid(gone)));
}

#[test]
fn endless_nulls_give_up() {
    let mut n = 0usize;
    let mut x = |_: &[u8], _: u16, _: u8| {
        n += 1;
        Ok(vec![NULL])
    };
    assert_eq!(t0_tpdu(&mut x, &[0x00, 0xB0, 0x00, 0x00, 0x01]), char_err(CharError::TooManyRounds));
    assert_eq!(n, MAX_ROUNDS);
}

#[test]
fn long_data_is_split_by_message_size() {
    struct Small(Vec<(Vec<u8>, u16)>);
    impl CharXfer for Small {
        fn xfr(&mut self, data: &[u8], expect: u16, _: u8) -> Result<Vec<u8>, CcidError> {
            self.0.push((data.to_vec(), expect));
            Ok(match (data.len(), expect) {
                (5, 1) => vec![0xD6],
                (_, 1) => vec![0x90, 0x00],
                _ => vec![],
            })
        }
        fn max_data(&self) -> usize {
            100
        }
    }
    let mut apdu = vec![0x00, 0xD6, 0x00, 0x00, 250];
    apdu.extend(std::iter::repeat_n(7, 250));
    let mut x = Small(vec![]);
    assert_eq!(t0_tpdu(&mut x, &apdu).unwrap(), [0x90, 0x00]);
    let sizes: Vec<(usize, u16)> = x.0.iter().map(|(d, l)| (d.len(), *l)).collect();
    assert_eq!(sizes, [(5, 1), (100, 0), (100, 0), (50, 1)]);
}

// ---------------------------------------------------------------------------------------------
// T=1

fn block(b: Block, edc: Edc) -> Vec<u8> {
    b.encode(0, edc)
}

#[test]
fn t1_prologue_then_rest_lrc_and_crc() {
    for edc in [Edc::Lrc, Edc::Crc] {
        let ours = block(Block::I { ns: false, more: false, inf: vec![0x00, 0xA4, 0x04, 0x00] }, edc);
        let card = block(Block::I { ns: false, more: false, inf: vec![0x90, 0x00] }, edc);
        let mut log = vec![];
        let mut x = |d: &[u8], l: u16, bwi: u8| {
            log.push((d.to_vec(), l, bwi));
            Ok(if log.len() == 1 { card[..3].to_vec() } else { card[3..].to_vec() })
        };
        assert_eq!(t1_block(&mut x, &ours, 0, edc).unwrap(), card);
        assert_eq!(log, [(ours.clone(), 3, 0), (vec![], 2 + edc.len() as u16, 0)]);
    }
}

#[test]
fn t1_wtx_goes_to_both_xfrblocks() {
    let card = block(Block::R { nr: true, error: crate::ccid::t1::RError::None }, Edc::Lrc);
    let mut bwis = vec![];
    let mut x = |_: &[u8], _: u16, bwi: u8| {
        bwis.push(bwi);
        Ok(if bwis.len() == 1 { card[..3].to_vec() } else { card[3..].to_vec() })
    };
    assert_eq!(t1_block(&mut x, &[0, 0x80, 0, 0x80], 9, Edc::Lrc).unwrap(), card);
    assert_eq!(bwis, [9, 9]);
}

#[test]
fn t1_bad_replies_go_to_the_engine() {
    // Too short for a prologue, LEN FF, a body that does not come: returned as they are.
    let mut x = |_: &[u8], _: u16, _: u8| Ok(vec![0x00]);
    assert_eq!(t1_block(&mut x, &[1], 0, Edc::Lrc).unwrap(), [0x00]);
    let mut x = |_: &[u8], _: u16, _: u8| Ok(vec![0x00, 0x00, 0xFF]);
    assert_eq!(t1_block(&mut x, &[1], 0, Edc::Lrc).unwrap(), [0x00, 0x00, 0xFF]);
    let mut x = |_: &[u8], l: u16, _: u8| Ok(if l == 3 { vec![0x00, 0x00, 0x05] } else { vec![] });
    assert_eq!(t1_block(&mut x, &[1], 0, Edc::Lrc).unwrap(), [0x00, 0x00, 0x05]);
    // Reader errors: parity and mute are for the engine to retry, the rest is fatal.
    let failed =
        |e| CcidError::Failed { cmd: "XfrBlock", status: Status::new(IccStatus::Active, CommandStatus::Failed, e) };
    let mut x = |_: &[u8], _: u16, _: u8| Err(failed(ErrorCode::XFR_PARITY_ERROR));
    assert_eq!(t1_block(&mut x, &[1], 0, Edc::Lrc), Err(XferError::Parity));
    let mut x = |_: &[u8], _: u16, _: u8| Err(failed(ErrorCode::ICC_MUTE));
    assert_eq!(t1_block(&mut x, &[1], 0, Edc::Lrc), Err(XferError::Mute));
    let mut x = |_: &[u8], _: u16, _: u8| Err(failed(ErrorCode::HW_ERROR));
    assert!(matches!(t1_block(&mut x, &[1], 0, Edc::Lrc), Err(XferError::Fatal(_))));
}

#[test]
fn t1_engine_recovers_from_a_short_block() {
    // First answer cut short (the engine asks again with an R-block), then a good one.
    let good = block(Block::I { ns: false, more: false, inf: vec![0x90, 0x00] }, Edc::Lrc);
    let mut round = 0;
    let mut x = |d: &[u8], l: u16, _: u8| {
        round += 1;
        Ok(match (round, l) {
            (1, 3) => good[..3].to_vec(),
            (2, _) => vec![],
            (3, 3) => {
                // The R-block asking for the card's I-block again.
                assert_eq!(d[1] & 0xEF, 0x82, "{d:02X?}");
                good[..3].to_vec()
            }
            (_, _) => good[3..].to_vec(),
        })
    };
    let mut t1 = T1::new(32, Edc::Lrc);
    assert_eq!(
        t1.transceive(&mut T1OverChars { chars: &mut x, edc: Edc::Lrc }, &[0, 0xB0, 0, 0, 1]).unwrap(),
        [0x90, 0x00]
    );
}

// ---------------------------------------------------------------------------------------------
// Robustness

/// A reader whose every reply is random: plausible procedure bytes, random characters, short
/// and long replies, failures. Nothing may panic, everything must end.
fn random_reader(rng: &mut Rng, ins: u8) -> Result<Vec<u8>, CcidError> {
    if rng.below(40) == 0 {
        let e = [ErrorCode::ICC_MUTE, ErrorCode::XFR_PARITY_ERROR, ErrorCode::HW_ERROR][rng.below(3)];
        return Err(CcidError::Failed {
            cmd: "XfrBlock",
            status: Status::new(IccStatus::Active, CommandStatus::Failed, e),
        });
    }
    let n = [0, 1, 1, 1, 2, 3, 5, 40][rng.below(8)];
    Ok((0..n)
        .map(|_| match rng.below(10) {
            0 => NULL,
            1 => ins,
            2 => ins ^ 0xFF,
            3 => 0x90,
            4 => 0x61,
            5 => 0x6C,
            _ => rng.byte(),
        })
        .collect())
}

#[test]
fn random_replies_never_panic() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for round in 0..3000 {
        // T=0: random short APDUs (all cases, bad lengths), random options.
        let len = [4, 5, 5, 6, 9, 20, 261, 3][rng.below(8)];
        let mut apdu: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
        if len > 5 && rng.below(2) == 0 {
            apdu[4] = (len - 5) as u8;
        }
        let ins = apdu.get(1).copied().unwrap_or(0);
        let opts = T0Options {
            mode: if rng.below(2) == 0 { T0Mode::PassThrough } else { T0Mode::Iso },
            fix_wrong_length: rng.below(2) == 0,
            get_response: rng.below(2) == 0,
        };
        let mut seed = Rng(rng.next_u64() | 1);
        let mut x = T0OverChars(|_: &[u8], _: u16, _: u8| random_reader(&mut seed, ins));
        let _ = t0::transmit(&mut x, &apdu, &opts);

        // T=1: the engine over random characters; it ends (answer, error or dead channel).
        let edc = if round % 2 == 0 { Edc::Lrc } else { Edc::Crc };
        let mut t1 = T1::new(1 + rng.byte() % 254, edc);
        let mut seed = Rng(rng.next_u64() | 1);
        let mut x = T1OverChars {
            chars: |_: &[u8], l: u16, _: u8| {
                // Now and then a well-formed prologue, so the rest is read too.
                if l == 3 && seed.below(3) == 0 {
                    let len = seed.byte() % 40;
                    Ok(vec![0x00, [0x00, 0x40, 0x20, 0x80, 0x90, 0xC3, 0xC1][seed.below(7)], len])
                } else {
                    random_reader(&mut seed, 0)
                }
            },
            edc,
        };
        let cmd: Vec<u8> = (0..1 + rng.below(300)).map(|_| rng.byte()).collect();
        match t1.transceive(&mut x, &cmd) {
            Ok(r) => assert!(r.len() <= crate::ccid::t1::MAX_RESPONSE),
            Err(T1Error::Dead | T1Error::Fatal(_) | T1Error::ResponseTooLong(_)) => {}
            Err(e) => panic!("unexpected T=1 error {e:?}"),
        }
    }
}
