//! The server's request decoding: arbitrary bytes from a client into a server
//! connection (mock backend). The server may cut the client off, never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pcsc_proto::server::fuzz::fuzz_one(data);
});
