//! The client engine: talks to any pcscd (protocol 4:0 to 4:6) and offers a safe
//! Rust API for every PC/SC call.
//!
//! - [`config`]: socket path and options from the environment.
//! - [`transport`]: one Unix stream connection, whole-message sends, cancellable waits.
//! - [`handshake`]: `CMD_VERSION` negotiation (newest first, step down on refusal).
//! - [`context`]: [`Context`], one daemon connection per PC/SC context, with
//!   transparent reconnection after a daemon restart.
//! - [`status_change`]: `SCardGetStatusChange` and `SCardCancel`.

pub mod config;
pub mod context;
pub mod handshake;
pub mod status_change;
pub mod transport;

pub use config::ClientConfig;
pub use context::{
    fork_generation, AttrResult, CardId, CardStatus, ConnectReply, Context, ControlResult, TransmitResult,
};
pub use status_change::ReaderStateQuery;
