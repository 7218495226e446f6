//! Logging at trace level with APDU data enabled never shows PIN data: VERIFY,
//! CHANGE REFERENCE DATA and RESET RETRY COUNTER are sent to the virtual card and
//! the log file is searched for the PIN bytes. (A binary of its own: logging
//! reads its environment once per process.)

use std::ffi::CString;
use std::ptr::{null, null_mut};

use pcsc_bridge_tests::host::{skip_reason, TestHost};
use pcsc_proto::client::ClientConfig;
use pcscbridge::ffi::*;
use pcscbridge::types::*;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

#[test]
fn pin_data_never_reaches_the_log() {
    if let Some(why) = skip_reason() {
        println!("SKIP: {why}");
        return;
    }
    let host = TestHost::up().expect("test host");
    let log = host.dir.join("bridge.log");
    // Before the first PC/SC call of this process (this test is alone in its binary).
    std::env::set_var("PCSC_BRIDGE_LOG", "trace");
    std::env::set_var("PCSC_BRIDGE_LOG_FILE", &log);
    std::env::set_var("PCSC_BRIDGE_LOG_APDU", "1");
    pcscbridge::set_config_for_tests(Some(ClientConfig::with_socket(&host.socket)));
    let reader = CString::new(host.reader.clone()).unwrap();
    let pin = b"123456";
    let new_pin = b"654321";
    let puk = pcsc_bridge_tests::card::PUK;
    let mut verify = vec![0x00, 0x20, 0x00, 0x81, pin.len() as u8];
    verify.extend_from_slice(pin);
    let mut change = vec![0x00, 0x24, 0x00, 0x81, 12];
    change.extend_from_slice(pin);
    change.extend_from_slice(new_pin);
    let mut change_back = vec![0x00, 0x24, 0x00, 0x81, 12];
    change_back.extend_from_slice(new_pin);
    change_back.extend_from_slice(pin);
    let mut reset = vec![0x00, 0x2C, 0x00, 0x81, (puk.len() + pin.len()) as u8];
    reset.extend_from_slice(puk);
    reset.extend_from_slice(pin);
    let select = [0x00, 0xA4, 0x04, 0x00, 0x07, 0xA0, 0x00, 0x00, 0x05, 0x27, 0x21, 0x01];
    // SAFETY (block): every pointer is a live local of the right length.
    unsafe {
        let mut c: SCARDCONTEXT = 0;
        assert_eq!(SCardEstablishContext(2, null(), null(), &mut c), 0);
        let (mut h, mut p) = (0, 0);
        assert_eq!(SCardConnect(c, reader.as_ptr(), 2, 3, &mut h, &mut p), 0);
        for cmd in [&select[..], &verify, &change, &change_back, &reset, &verify] {
            let mut r = [0u8; 258];
            let mut rl = r.len() as DWORD;
            assert_eq!(
                SCardTransmit(
                    h,
                    &g_rgSCardT1Pci,
                    cmd.as_ptr(),
                    cmd.len() as DWORD,
                    null_mut(),
                    r.as_mut_ptr(),
                    &mut rl
                ),
                0
            );
            assert_eq!(&r[rl as usize - 2..rl as usize], &[0x90, 0x00], "command {}", hex(&cmd[..4]));
        }
        assert_eq!(SCardReleaseContext(c), 0);
    }
    let text = std::fs::read_to_string(&log).expect("log file written");
    for secret in [&pin[..], new_pin, puk] {
        assert!(!text.contains(&hex(secret)), "secret {} in log:\n{text}", hex(secret));
        assert!(!text.contains(std::str::from_utf8(secret).unwrap()), "secret text in log:\n{text}");
    }
    assert!(text.contains("INS=20") && text.contains("INS=24") && text.contains("INS=2C"), "{text}");
    assert!(text.contains("data=<redacted>"), "{text}");
    assert!(text.contains("data=A0000005272101"), "non-PIN data is logged when asked:\n{text}");
    assert!(text.contains("SCardTransmit -> SCARD_SUCCESS"), "{text}");
}
