//! `usbpass` as a library: the user-space CCID driver ([`ccid`]) and the mini-pcscd over it
//! ([`serve`]), shared by the `usbpass` binary and the fuzz targets in `usbpass/fuzz`.

#![forbid(unsafe_code)]

pub mod ccid;
pub mod serve;
