//! Test support for pcsc-bridge.
//!
//! * [`card`]: the logic of the project's virtual smart card (pure, no I/O).
//! * [`cli`]: the command line, sockets and signal handling the virtual card binaries share.
//! * [`vpcd`]: the transport between that card and vsmartcard-vpcd (used by the `vcard` binary).
//! * [`host`]: a harness around `scripts/testhost.sh` (a real pcscd in its own mount namespace
//!   with a vpcd reader and the virtual card).

pub mod card;
pub mod cli;
pub mod ctl;
pub mod host;
pub mod vpcd;
