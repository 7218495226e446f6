//! The user-space CCID driver core (issue 5), transport-agnostic.
//!
//! Layers, bottom up (each file knows one thing):
//!
//! ```text
//!  exchange.rs   Slot: power-up, ATR, protocol choice, PPS, SetParameters, IFSD,
//!                transmit(apdu) by exchange level  ─┬─ t1.rs  T=1 block state machine
//!                                                   ├─ t0.rs  T=0 APDU → TPDU mapping
//!                                                   ├─ character.rs  T=0 procedure bytes,
//!                                                   │    T=1 blocks read prologue first
//!                                                   └─ APDU levels: wLevelParameter chaining
//!  atr.rs        ATR parsing, Fi/Di, IFSC, BWI/CWI, timeouts, PPS     apdu.rs  APDU cases
//!  device.rs     Ccid<T>: bSeq, reassembly, ZLPs, time extensions, stale replies, abort,
//!                stalls, failures → pcsc_proto::Rv
//!  message.rs    one type per PC_to_RDR / RDR_to_PC / interrupt message, parse + emit
//!  descriptor.rs the 54-byte class descriptor, dwFeatures → exchange level
//!  transport.rs  trait Transport (bulk OUT/IN, interrupt IN, class requests, clear halt)
//!                ├─ sim.rs  simulated readers + cards + fault injection (tests, feature "sim")
//!                ├─ usb.rs  rusb (vendored libusb): discovery of class-0x0B interfaces, claim
//!                └─ iccd.rs ICCD tokens (control pipe): an adapter that answers the driver's
//!                           CCID messages with class requests (+ iccd/sim.rs, a simulated token)
//! ```
//!
//! Everything that reads device bytes uses checked reads; nothing here panics on input.
//! Behaviour follows pcscd + libccid as described in `shared/docs/ccid.md`; where this driver
//! deliberately differs (it checks bSeq on every reply, handles time extensions for every
//! command, ignores zero-length packets) the difference only turns a libccid failure into a
//! success.

pub mod apdu;
pub mod atr;
mod bytes;
pub mod character;
pub mod descriptor;
pub mod device;
pub mod exchange;
pub mod iccd;
pub mod message;
pub mod quirks;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod t0;
pub mod t1;
pub mod transport;
pub mod usb;

#[cfg(test)]
mod tests;
