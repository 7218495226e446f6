//! The pcscd wire protocol: typed parse/emit pairs for every message of every
//! protocol version from 4:0 to 4:6.
//!
//! Contract (after smoltcp's `wire`): every `parse` takes untrusted bytes and returns
//! a [`WireError`] on short, oversize or inconsistent input, never panics; every
//! `emit` appends exactly `size()` bytes. Integers travel in host byte order, 32 bits
//! each, with no padding except inside the reader-state record.
//!
//! - [`codec`]: the bounded cursor and the error type.
//! - [`version`]: protocol versions and what differs between them.
//! - [`header`]: the 8-byte request header and the command codes.
//! - [`msg`]: the request/reply structs of every command.
//! - [`reader_state`]: the `READER_STATE` record (three layouts) and arrays of it.

pub mod codec;
pub mod header;
pub mod msg;
pub mod reader_state;
pub mod version;

pub use codec::{Reader, WireError};
pub use header::{Command, Header};
pub use reader_state::{ReaderState, RsLayout};
pub use version::Version;
