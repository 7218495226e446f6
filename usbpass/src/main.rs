//! `usbpass`: the USB path of pcsc-bridge (proxy and CCID modes).
//!
//! Not implemented yet: the proxy mode is issue 4, the CCID driver issue 5.
//! Until then the binary says so and exits with status 2.

fn main() {
    eprintln!("usbpass: not implemented yet (proxy: issue 4, USB CCID driver: issue 5)");
    std::process::exit(2);
}
