//! `pcscbridge`: a drop-in `libpcsclite.so.1` (SONAME and all 22 symbols of
//! Debian's 1.9.9) whose PC/SC calls go through pcsc-bridge's own client engine
//! ([`pcsc_proto::client`]), which speaks every pcscd protocol from 4:0 to 4:6.
//!
//! Layers, top down:
//!
//! ```text
//!  C application ──> ffi        the 22 exports: boundary, pointer checks, out-params
//!                    buffers    NULL / SCARD_AUTOALLOCATE / short-buffer rules
//!                    api        the calls in safe Rust, on handles and slices
//!                    handles    SCARDCONTEXT / SCARDHANDLE tables (fork-aware)
//!                    pcsc_proto::client::Context  (one daemon connection each)
//! ```
//!
//! Cross-cutting: [`panic`] (no unwinding into C), [`log`] (off unless
//! `PCSC_BRIDGE_LOG` is set; never logs PIN data), [`types`] (the C types),
//! [`strerror`] (`pcsc_stringify_error`).
//!
//! Nothing happens at load time: no constructor, thread, socket, file or
//! environment read until the first PC/SC call. The cdylib is linked with
//! SONAME `libpcsclite.so.1`, `-z nodelete`, and a version script exporting only
//! the 22 symbols (`build.rs`, `exports.map`).
//!
//! Ways to use it: `LD_PRELOAD=libpcscbridge.so app`, or a directory holding
//! `libpcsclite.so.1 -> libpcscbridge.so` on `LD_LIBRARY_PATH`, or
//! `LIBPCSCLITE_DELEGATE=…/libpcscbridge.so` with pcsc-lite 2.1+.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, unreachable_pub)]

pub mod api;
pub mod buffers;
pub mod dlopen;
pub mod fallback;
pub mod ffi;
pub mod handles;
pub mod log;
pub mod marker;
pub mod panic;
pub mod strerror;
pub mod types;

pub use api::set_config_for_tests;
