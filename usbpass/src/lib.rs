//! `usbpass` as a library: the user-space CCID driver ([`ccid`]), shared by the `usbpass`
//! binary and the fuzz targets in `usbpass/fuzz`.

#![forbid(unsafe_code)]

pub mod ccid;
