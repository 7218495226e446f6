//! ATR parsing on arbitrary bytes: no panic; whatever parses keeps its bytes, K historical bytes,
//! sane derived values; timeouts and PPS helpers never panic.
//!
//! Run: `cd usbpass && RUSTC_BOOTSTRAP=1 cargo fuzz run atr -- -max_total_time=60`
//! (seeds: add `fuzz/seeds/atr` after the corpus directory).
#![no_main]
use libfuzzer_sys::fuzz_target;
use usbpass::ccid::atr::{bit_rate, pps_accepted, pps_request, Atr, Protocol};

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = Atr::parse(data) {
        assert_eq!(a.bytes(), data);
        assert_eq!(a.historical().len(), (data[1] & 0x0F) as usize);
        let _ = (
            a.tck_ok(),
            a.check_tck(),
            a.protocols(),
            a.default_protocol(),
            a.specific_mode(),
            a.clock_stop_and_class(),
        );
        let _ = (a.fi(), a.di(), a.wi(), a.extra_guard_time(), a.t1_uses_crc(), a.bwi(), a.cwi());
        assert!((1..=254).contains(&a.ifsc()));
        assert!(a.wi() != 0);
        for clk in [0, 1, 3_570, 4_000, 20_000, u32::MAX] {
            let _ = a.t0_timeout(clk);
            let _ = a.t1_timeout(clk);
            let _ = bit_rate(a.fi_di(), clk);
        }
    }
    let p1 = data.first().copied();
    for t in [Protocol::T0, Protocol::T1] {
        let req = pps_request(t, p1);
        if let Some(fi_di) = pps_accepted(&req, data) {
            assert!(fi_di == 0x11 || Some(fi_di) == p1);
        }
        assert_eq!(pps_accepted(&req, &req), Some(p1.unwrap_or(0x11)));
    }
});
