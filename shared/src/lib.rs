//! `pcsc-proto`: PC/SC types and the pcscd wire protocol of every version (4:0 to 4:6).
//!
//! Layers, bottom up:
//! - [`error`], [`consts`]: PC/SC result codes and constants (no I/O).
//! - [`wire`]: typed parse/emit pairs for every message of every protocol version.
//!   Parsing never panics on hostile bytes.
//! - [`client`]: the client engine: socket transport, version handshake, and a safe
//!   Rust API for every PC/SC call with each version's semantics.
//! - [`server`]: the server side: a mini-pcscd core serving clients of every
//!   version over a [`server::Backend`], and its Unix socket listener.

pub mod client;
pub mod consts;
pub mod error;
pub mod hash;
pub mod server;
pub mod wire;

pub use error::Rv;
