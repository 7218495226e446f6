//! What `SCardControl` and `SCardGetAttrib` answer for a CCID reader, as libccid does
//! (ccid.md §7): the PC/SC part 10 feature list, the TLV properties, the PIN properties, the
//! conversion of PIN verify/modify structures into `PC_to_RDR_Secure`, and the attribute values.

use std::time::Duration;

use pcsc_proto::consts::{attr, ctl_code, feature, CM_IOCTL_GET_FEATURE_REQUEST};
use pcsc_proto::Rv;

use crate::ccid::descriptor::{CcidDescriptor, ExchangeLevel};
use crate::ccid::exchange::Slot;
use crate::ccid::quirks::{self, BeforeSecure, DriverOptions, Quirks};
use crate::ccid::transport::Transport;

/// `IOCTL_FEATURE_*` codes: `SCARD_CTL_CODE(0x330000 + tag)`.
pub const fn feature_ioctl(tag: u8) -> u32 {
    ctl_code(0x33_0000 + tag as u32)
}

/// Windows' value of the feature request (libccid answers it too, for RDP).
pub const FEATURE_REQUEST_WINDOWS: u32 = 0x0031_3520;
/// `IOCTL_SMARTCARD_VENDOR_IFD_EXCHANGE`.
pub const VENDOR_IFD_EXCHANGE: u32 = ctl_code(1);
pub const VERIFY_PIN_DIRECT: u32 = feature_ioctl(feature::VERIFY_PIN_DIRECT);
pub const MODIFY_PIN_DIRECT: u32 = feature_ioctl(feature::MODIFY_PIN_DIRECT);
pub const IFD_PIN_PROPERTIES: u32 = feature_ioctl(feature::IFD_PIN_PROPERTIES);
pub const GET_TLV_PROPERTIES: u32 = feature_ioctl(feature::GET_TLV_PROPERTIES);
pub const MCT_READER_DIRECT: u32 = feature_ioctl(feature::MCT_READER_DIRECT);
/// Gemalto's vendor ID (escape `02` = firmware version is allowed through the IFD exchange).
pub const GEMALTO_VID: u16 = quirks::GEMALTO_VID;

/// Whether `code` asks for the feature list.
pub fn is_feature_request(code: u32) -> bool {
    code == CM_IOCTL_GET_FEATURE_REQUEST || code == FEATURE_REQUEST_WINDOWS
}

/// `CM_IOCTL_GET_FEATURE_REQUEST`: `tag 04 code(big-endian)` records (ccid.md §7.2), from
/// the descriptor as the quirks left it (a fake pinpad is not listed) and the quirks (Kobil's
/// MCT interface, driver option `0x01`).
pub fn feature_list(desc: &CcidDescriptor, quirks: &Quirks) -> Vec<u8> {
    let mut records = Vec::new();
    let mut feature = |tag: u8| records.push((tag, feature_ioctl(tag)));
    if desc.pin_support.verify() {
        feature(feature::VERIFY_PIN_DIRECT);
    }
    if desc.pin_support.modify() {
        feature(feature::MODIFY_PIN_DIRECT);
    }
    if desc.pin_support.0 != 0 {
        feature(feature::IFD_PIN_PROPERTIES);
    }
    if quirks.mct {
        feature(feature::MCT_READER_DIRECT);
    }
    feature(feature::GET_TLV_PROPERTIES);
    if quirks.options.has(DriverOptions::ALLOW_ESCAPE) {
        records.push((feature::CCID_ESC_COMMAND, VENDOR_IFD_EXCHANGE));
    }
    let mut out = Vec::with_capacity(6 * records.len());
    for (tag, code) in records {
        out.extend_from_slice(&[tag, 4]);
        out.extend_from_slice(&code.to_be_bytes());
    }
    out
}

/// `IOCTL_FEATURE_IFD_PIN_PROPERTIES`: wLcdLayout, bEntryValidationCondition (7 unless the
/// reader says otherwise), bTimeOut2 (0).
pub fn pin_properties(desc: &CcidDescriptor, quirks: &Quirks) -> Vec<u8> {
    let mut out = desc.lcd_layout.to_le_bytes().to_vec();
    out.extend_from_slice(&[quirks.pin_properties_validation(), 0x00]);
    out
}

/// `IOCTL_FEATURE_GET_TLV_PROPERTIES` (ccid.md §7.4). `firmware_id`: the answer of the
/// reader's firmware-version Escape ([`Quirks::firmware_id_escape`]), if it has one and it
/// worked; the PIN sizes come from the quirks.
pub fn tlv_properties(desc: &CcidDescriptor, quirks: &Quirks, firmware_id: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut tlv = |tag: u8, value: &[u8]| {
        out.push(tag);
        out.push(value.len() as u8);
        out.extend_from_slice(value);
    };
    tlv(0x01, &desc.lcd_layout.to_le_bytes());
    if desc.lcd_layout != 0 {
        tlv(0x04, &(desc.lcd_layout & 0xFF).to_le_bytes());
        tlv(0x05, &(desc.lcd_layout >> 8).to_le_bytes());
    }
    tlv(0x03, &[0]);
    if let Some(id) = firmware_id {
        tlv(0x08, &id[..id.len().min(255)]);
    }
    for (tag, value) in quirks.tlv_pin_records() {
        tlv(tag, &[value]);
    }
    tlv(0x09, &[u8::from(quirks.options.has(DriverOptions::ALLOW_ESCAPE))]);
    tlv(0x0B, &quirks.vendor_id.to_le_bytes());
    tlv(0x0C, &quirks.product_id.to_le_bytes());
    let max_apdu: u32 = match desc.level() {
        Some(ExchangeLevel::Tpdu | ExchangeLevel::ExtendedApdu) => 0x0001_0000,
        _ => 0,
    };
    tlv(0x0A, &max_apdu.to_le_bytes());
    out
}

/// A PIN structure converted to the `PC_to_RDR_Secure` payload, with its read timeout and what
/// the reader needs first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecureCommand {
    pub payload: Vec<u8>,
    pub timeout: Duration,
    /// Per-reader steps before the Secure (ccid/quirks.rs group F).
    pub before: BeforeSecure,
}

impl SecureCommand {
    /// The per-reader steps before the Secure: a pause, an Escape (whose failure fails the
    /// PIN command, as in libccid).
    pub fn prepare<T: Transport>(&self, slot: &mut Slot<T>) -> Result<(), Rv> {
        if !self.before.pause.is_zero() {
            std::thread::sleep(self.before.pause);
        }
        if let Some(escape) = self.before.escape {
            slot.escape(escape, crate::ccid::device::DEFAULT_TIMEOUT).map_err(|e| e.rv())?;
        }
        Ok(())
    }
}

fn secure_timeout(timer_out: u8) -> Duration {
    Duration::from_secs(u64::from(timer_out).saturating_add(10).max(90))
}

fn fix_validation(b: &mut u8) {
    if *b == 0 || *b > 7 {
        *b = 0x02;
    }
}

/// Checks `ulDataLength` at `len_at` against the structure size (`header` + data); if it only
/// matches read big-endian, the multi-byte fields (`words`, `len_at`) are byte-swapped.
fn check_length(input: &mut [u8], header: usize, len_at: usize, words: &[usize]) -> Result<(), Rv> {
    let field: [u8; 4] = input[len_at..len_at + 4].try_into().map_err(|_| Rv::E_UNSUPPORTED_FEATURE)?;
    let want = (input.len() - header) as u32;
    if u32::from_le_bytes(field) == want {
        return Ok(());
    }
    if u32::from_be_bytes(field) != want {
        return Err(Rv::E_UNSUPPORTED_FEATURE);
    }
    for &w in words {
        input.swap(w, w + 1);
    }
    input[len_at..len_at + 4].reverse();
    Ok(())
}

/// `PIN_VERIFY_STRUCTURE` (19 bytes + APDU) → bPINOperation 0 + the structure without
/// bTimerOut2 and ulDataLength, after the reader's fixes ([`Quirks::fix_verify`]).
pub fn verify_pin(input: &[u8], quirks: &Quirks) -> Result<SecureCommand, Rv> {
    if input.len() < 23 {
        return Err(Rv::E_UNSUPPORTED_FEATURE);
    }
    let mut s = input.to_vec();
    check_length(&mut s, 19, 15, &[5, 9])?;
    fix_validation(&mut s[7]);
    let before = quirks.fix_verify(&mut s);
    let mut payload = vec![0x00, s[0]];
    payload.extend_from_slice(&s[2..15]);
    payload.extend_from_slice(&s[19..]);
    Ok(SecureCommand { payload, timeout: secure_timeout(s[0]), before })
}

/// `PIN_MODIFY_STRUCTURE` (24 bytes + APDU) → bPINOperation 1 + the structure without
/// bTimerOut2 and ulDataLength, bMsgIndex2/3 only when bNumberMessage asks for them, after the
/// reader's fixes ([`Quirks::fix_modify`]).
pub fn modify_pin(input: &[u8], quirks: &Quirks) -> Result<SecureCommand, Rv> {
    if input.len() < 28 {
        return Err(Rv::E_UNSUPPORTED_FEATURE);
    }
    let mut s = input.to_vec();
    check_length(&mut s, 24, 20, &[7, 12])?;
    let messages = s[11];
    if messages > 3 && messages != 0xFF {
        return Err(Rv::E_UNSUPPORTED_FEATURE);
    }
    fix_validation(&mut s[10]);
    let sent_messages = quirks.fix_modify(&mut s);
    let messages = s[11];
    let mut payload = vec![0x01, s[0]];
    payload.extend_from_slice(&s[2..15]);
    if messages != 0 {
        payload.push(s[15]);
    }
    if messages >= 3 {
        payload.push(s[16]);
    }
    payload.extend_from_slice(&s[17..20]);
    payload.extend_from_slice(&s[24..]);
    if let Some(n) = sent_messages {
        // bNumberMessage (payload offset 11) as the reader wants it in the message itself.
        payload[11] = n;
    }
    Ok(SecureCommand { payload, timeout: secure_timeout(s[0]), before: BeforeSecure::default() })
}

/// The attributes libccid answers without talking to the reader (ccid.md §7.5). `None`: not
/// one of them (presence, ATR and names are the caller's).
pub fn static_attribute(attr_id: u32, desc: &CcidDescriptor, info: &super::discovery::DeviceInfo) -> Option<Vec<u8>> {
    let string = |s: &Option<String>| match s {
        Some(s) => {
            let mut v = s.as_bytes().to_vec();
            v.push(0);
            v
        }
        None => Vec::new(),
    };
    Some(match attr_id {
        attr::VENDOR_NAME => string(&info.manufacturer),
        attr::VENDOR_IFD_VERSION => (u32::from(info.bcd_device) << 16).to_ne_bytes().to_vec(),
        attr::VENDOR_IFD_SERIAL_NO => string(&info.serial),
        attr::CHANNEL_ID => {
            (0x0020_0000u32 | u32::from(info.bus) << 8 | u32::from(info.address)).to_ne_bytes().to_vec()
        }
        attr::MAXINPUT => desc.max_input().to_ne_bytes().to_vec(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ccid::sim::profiles;

    #[test]
    fn qemu_features_and_properties() {
        let q = profiles::qemu();
        let qemu = Quirks::for_device(0x08E6, 0x4433, 0);
        // ccid.md §10.3: verify PIN advertised (bPINSupport 1), PIN properties, TLV (the
        // firmware-version Escape fails on QEMU: no sFirmwareID).
        assert_eq!(
            feature_list(&q, &qemu),
            [0x06, 4, 0x42, 0x33, 0x00, 0x06, 0x0A, 4, 0x42, 0x33, 0x00, 0x0A, 0x12, 4, 0x42, 0x33, 0x00, 0x12]
        );
        assert_eq!(pin_properties(&q, &qemu), [0, 0, 7, 0]);
        assert_eq!(
            tlv_properties(&q, &qemu, None),
            [0x01, 2, 0, 0, 0x03, 1, 0, 0x09, 1, 0, 0x0B, 2, 0xE6, 0x08, 0x0C, 2, 0x33, 0x44, 0x0A, 4, 0, 0, 1, 0]
        );
        // A reader without a pinpad lists only the TLV properties; short APDU: no extended APDUs.
        let s = profiles::short_apdu();
        let none = Quirks::for_device(1, 2, 0);
        assert_eq!(feature_list(&s, &none), [0x12, 4, 0x42, 0x33, 0x00, 0x12]);
        assert_eq!(&tlv_properties(&s, &none, None)[18..], [0x0A, 4, 0, 0, 0, 0]);
        assert!(is_feature_request(0x4200_0D48) && is_feature_request(0x0031_3520));
    }

    #[test]
    fn pin_structures() {
        // VERIFY: timeout 30, format 0x82, block 0x04, length 0x00, max/min 0x0408,
        // validation 0x00 (→ 2), 1 message, lang 0x0409, index 0, prologue 0, APDU 00 20 00 81 08 + 8×FF.
        let apdu = [0x00, 0x20, 0x00, 0x81, 0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
        let mut v = vec![30, 0, 0x82, 0x04, 0x00, 0x08, 0x04, 0x00, 0x01, 0x09, 0x04, 0x00, 0, 0, 0];
        v.extend_from_slice(&(apdu.len() as u32).to_le_bytes());
        v.extend_from_slice(&apdu);
        let c = verify_pin(&v, &Quirks::default()).unwrap();
        assert_eq!(c.payload[..15], [0x00, 30, 0x82, 0x04, 0x00, 0x08, 0x04, 0x02, 0x01, 0x09, 0x04, 0x00, 0, 0, 0]);
        assert_eq!(c.payload[15..], apdu);
        assert_eq!(c.timeout, Duration::from_secs(90));
        // Big-endian ulDataLength: the words are swapped back.
        let mut be = v.clone();
        be[15..19].copy_from_slice(&(apdu.len() as u32).to_be_bytes());
        be.swap(5, 6);
        be.swap(9, 10);
        assert_eq!(verify_pin(&be, &Quirks::default()).unwrap(), c);
        assert_eq!(verify_pin(&v[..22], &Quirks::default()), Err(Rv::E_UNSUPPORTED_FEATURE));
        let mut bad = v.clone();
        bad[15] = 99;
        assert_eq!(verify_pin(&bad, &Quirks::default()), Err(Rv::E_UNSUPPORTED_FEATURE));

        // MODIFY with bNumberMessage 0, 2 and 3.
        let apdu = [0x00, 0x24, 0x00, 0x81, 0x10];
        let modify = |n: u8| {
            let mut m = vec![
                200, 0, 0x82, 0x04, 0x00, 0x00, 0x08, 0x08, 0x04, 0x03, 0x02, n, 0x09, 0x04, 0xA1, 0xA2, 0xA3, 0, 0, 0,
            ];
            m.extend_from_slice(&(apdu.len() as u32).to_le_bytes());
            m.extend_from_slice(&apdu);
            modify_pin(&m, &Quirks::default()).unwrap()
        };
        let m0 = modify(0);
        assert_eq!(m0.payload[..14], [0x01, 200, 0x82, 0x04, 0x00, 0x00, 0x08, 0x08, 0x04, 0x03, 0x02, 0, 0x09, 0x04]);
        assert_eq!(m0.payload[14..], [0xA1, 0, 0, 0, 0x00, 0x24, 0x00, 0x81, 0x10]);
        assert_eq!(m0.timeout, Duration::from_secs(210));
        assert_eq!(modify(2).payload[14..16], [0xA1, 0xA2]);
        assert_eq!(modify(3).payload[14..17], [0xA1, 0xA2, 0xA3]);
    }

    #[test]
    fn per_reader_features_and_properties() {
        let d = profiles::short_apdu();
        let pinpad = CcidDescriptor { pin_support: crate::ccid::descriptor::PinSupport(3), ..profiles::tpdu() };
        // Kobil TriBank: the MCT feature, before the TLV properties.
        let tribank = Quirks::for_device(0x0D46, 0x3010, 0);
        assert_eq!(feature_list(&d, &tribank), [0x08, 4, 0x42, 0x33, 0x00, 0x08, 0x12, 4, 0x42, 0x33, 0x00, 0x12]);
        // Driver option 0x01: FEATURE_CCID_ESC_COMMAND (the vendor IFD exchange code) and
        // bPPDUSupport 1.
        let any = Quirks::for_device(1, 2, 0).with_options(DriverOptions(DriverOptions::ALLOW_ESCAPE));
        assert_eq!(feature_list(&d, &any), [0x12, 4, 0x42, 0x33, 0x00, 0x12, 0x13, 4, 0x42, 0x00, 0x00, 0x01]);
        assert_eq!(tlv_properties(&d, &any, None)[7..10], [0x09, 1, 1]);
        // Cherry ST-2xxx: fixed PIN sizes and validation; PIN properties say "validation key".
        let cherry = Quirks::for_device(0x046A, 0x003E, 0);
        assert_eq!(tlv_properties(&pinpad, &cherry, None)[7..16], [0x06, 1, 0, 0x07, 1, 25, 0x02, 1, 2]);
        assert_eq!(pin_properties(&pinpad, &cherry), [0, 0, 2, 0]);
        // OMNIKEY 3821: sizes only; a firmware ID goes before them.
        let o3821 = Quirks::for_device(0x076B, 0x3821, 0);
        assert_eq!(tlv_properties(&pinpad, &o3821, Some(b"V1"))[7..17], [0x08, 2, b'V', b'1', 0x06, 1, 1, 0x07, 1, 31]);
    }

    #[test]
    fn per_reader_pin_structures() {
        let apdu = [0x00, 0x24, 0x00, 0x81, 0x10];
        let modify = |n: u8, q: &Quirks| {
            let mut m = vec![
                200, 0, 0x82, 0x04, 0x00, 0x00, 0x08, 0x08, 0x04, 0x03, 0x07, n, 0x09, 0x04, 0xA1, 0xA2, 0xA3, 0, 0, 0,
            ];
            m.extend_from_slice(&(apdu.len() as u32).to_le_bytes());
            m.extend_from_slice(&apdu);
            modify_pin(&m, q).unwrap()
        };
        // GemPC Pinpad (Gemalto firmware without the fix): all three indexes are sent, the
        // message says 1; validation key only.
        let gempc = Quirks::for_device(0x08E6, 0x3478, 0x0100);
        let m = modify(1, &gempc);
        assert_eq!((m.payload[10], m.payload[11]), (0x02, 1));
        assert_eq!(m.payload[14..20], [0xA1, 0xA2, 0xA3, 0, 0, 0]);
        // SPR532: three zero indexes, 0 messages.
        let m = modify(2, &Quirks::for_device(0x04E6, 0xE003, 0x0600));
        assert_eq!(m.payload[11], 0);
        assert_eq!(m.payload[14..20], [0, 0, 0, 0, 0, 0]);
        // Cherry KC 1000 SC: 0 → FF, which brings in bMsgIndex2 and 3.
        let m = modify(0, &Quirks::for_device(0x046A, 0x00A1, 0x0101));
        assert_eq!(m.payload[11], 0xFF);
        assert_eq!(m.payload[14..17], [0xA1, 0xA2, 0xA3]);
        // SPR532 verify of a case-1 APDU without PIN length: Escape 80 02 00 first.
        let mut v = vec![30, 0, 0x82, 0x00, 0x00, 0x08, 0x04, 0x02, 0x01, 0x09, 0x04, 0x00, 0, 0, 0];
        v.extend_from_slice(&4u32.to_le_bytes());
        v.extend_from_slice(&[0x00, 0x20, 0x00, 0x81]);
        let c = verify_pin(&v, &Quirks::for_device(0x04E6, 0xE003, 0x0600)).unwrap();
        assert_eq!(c.before.escape, Some(&quirks::SPR532_APPEND_PIN[..]));
        assert_eq!(verify_pin(&v, &Quirks::default()).unwrap().before, BeforeSecure::default());
    }
}
