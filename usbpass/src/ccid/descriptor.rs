//! The CCID class-specific descriptor (CCID Rev 1.1 §5.1; ccid.md §1.2-1.4).
//!
//! 54 bytes, type `0x21` (or `0xFF` on a few pre-standard readers), found in the interface's
//! "extra" bytes, or after the last endpoint on some O2Micro / REINER SCT readers. All multi-byte
//! fields are little-endian. Parsing uses checked reads only: a short or odd buffer is an error,
//! never a panic.

use super::bytes::Cursor;
use std::fmt;

/// Length of the class descriptor.
pub const DESCRIPTOR_LEN: usize = 54;
/// `bDescriptorType` of the CCID functional descriptor.
pub const DESCRIPTOR_TYPE: u8 = 0x21;
/// `bDescriptorType` some pre-1.0 readers use.
pub const DESCRIPTOR_TYPE_PROPRIETARY: u8 = 0xFF;

/// How the reader wants card data exchanged (`dwFeatures & 0x70000`, ccid.md §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExchangeLevel {
    /// `0x00000`: single characters; the host runs T=0 procedure bytes / T=1 framing itself.
    Character,
    /// `0x10000`: one T=0 TPDU or one T=1 block per XfrBlock.
    Tpdu,
    /// `0x20000`: one short APDU per XfrBlock.
    ShortApdu,
    /// `0x40000`: short and extended APDUs, chained with `wLevelParameter`/`bChainParameter`.
    ExtendedApdu,
}

impl ExchangeLevel {
    /// The level encoded in `dwFeatures`, `None` for the undefined values of the 3-bit field.
    pub fn from_features(features: u32) -> Option<Self> {
        match features & Features::LEVEL_MASK {
            0 => Some(ExchangeLevel::Character),
            0x1_0000 => Some(ExchangeLevel::Tpdu),
            0x2_0000 => Some(ExchangeLevel::ShortApdu),
            0x4_0000 => Some(ExchangeLevel::ExtendedApdu),
            _ => None,
        }
    }

    /// The `dwFeatures` bits for this level.
    pub fn bits(self) -> u32 {
        match self {
            ExchangeLevel::Character => 0,
            ExchangeLevel::Tpdu => 0x1_0000,
            ExchangeLevel::ShortApdu => 0x2_0000,
            ExchangeLevel::ExtendedApdu => 0x4_0000,
        }
    }
}

impl fmt::Display for ExchangeLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExchangeLevel::Character => "character",
            ExchangeLevel::Tpdu => "TPDU",
            ExchangeLevel::ShortApdu => "short APDU",
            ExchangeLevel::ExtendedApdu => "extended APDU",
        })
    }
}

/// `dwFeatures` (ccid.md §1.3). An open newtype: unknown bits are kept.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Features(pub u32);

impl Features {
    /// Reader configures parameters from the ATR by itself.
    pub const AUTO_CONFIG_ATR: u32 = 0x0000_0002;
    /// Reader activates (powers) the card on insertion.
    pub const AUTO_ACTIVATION: u32 = 0x0000_0004;
    /// Automatic voltage selection.
    pub const AUTO_VOLTAGE: u32 = 0x0000_0008;
    /// Automatic clock change according to the parameters.
    pub const AUTO_CLOCK: u32 = 0x0000_0010;
    /// Automatic baud-rate change according to Fi/Di.
    pub const AUTO_BAUD: u32 = 0x0000_0020;
    /// Automatic parameter negotiation by the reader: the host sends neither PPS nor SetParameters.
    pub const AUTO_PARAM_NEGOTIATION: u32 = 0x0000_0040;
    /// Automatic PPS by the reader: the host sends SetParameters but no PPS.
    pub const AUTO_PPS: u32 = 0x0000_0080;
    /// The reader can stop the card clock.
    pub const CLOCK_STOP: u32 = 0x0000_0100;
    /// T=1 NAD other than 00 accepted.
    pub const NAD: u32 = 0x0000_0200;
    /// Automatic IFSD exchange as the first T=1 exchange: the host sends no S(IFS request).
    pub const AUTO_IFSD: u32 = 0x0000_0400;
    /// ICCD token.
    pub const ICCD_TOKEN: u32 = 0x0000_0800;
    /// Exchange-level field.
    pub const LEVEL_MASK: u32 = 0x0007_0000;
    /// USB remote wake-up on card insertion/removal.
    pub const REMOTE_WAKEUP: u32 = 0x0010_0000;

    pub fn has(self, bits: u32) -> bool {
        self.0 & bits == bits
    }

    /// The exchange level, `None` if the field holds an undefined value.
    pub fn level(self) -> Option<ExchangeLevel> {
        ExchangeLevel::from_features(self.0)
    }

    /// Power on with `bPowerSelect = 0` (automatic voltage or automatic activation).
    pub fn auto_voltage(self) -> bool {
        self.0 & (Self::AUTO_VOLTAGE | Self::AUTO_ACTIVATION) != 0
    }

    /// The host must not send SetParameters nor a PPS.
    pub fn auto_parameters(self) -> bool {
        self.has(Self::AUTO_PARAM_NEGOTIATION)
    }

    /// The host must not send a PPS (the reader does it, or negotiates everything).
    pub fn auto_pps(self) -> bool {
        self.0 & (Self::AUTO_PPS | Self::AUTO_PARAM_NEGOTIATION) != 0
    }

    /// The host must not send S(IFS request).
    pub fn auto_ifsd(self) -> bool {
        self.has(Self::AUTO_IFSD)
    }
}

impl fmt::Debug for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Features({:#010x}", self.0)?;
        match self.level() {
            Some(l) => write!(f, ", {l}")?,
            None => write!(f, ", undefined level")?,
        }
        f.write_str(")")
    }
}

/// `bVoltageSupport`: bit0 5.0 V, bit1 3.0 V, bit2 1.8 V.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct VoltageSupport(pub u8);

impl VoltageSupport {
    pub const V5: u8 = 0x01;
    pub const V3: u8 = 0x02;
    pub const V1_8: u8 = 0x04;

    pub fn v5(self) -> bool {
        self.0 & Self::V5 != 0
    }
    pub fn v3(self) -> bool {
        self.0 & Self::V3 != 0
    }
    pub fn v1_8(self) -> bool {
        self.0 & Self::V1_8 != 0
    }
}

/// `dwProtocols`: bit0 T=0, bit1 T=1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ReaderProtocols(pub u32);

impl ReaderProtocols {
    pub fn t0(self) -> bool {
        self.0 & 1 != 0
    }
    pub fn t1(self) -> bool {
        self.0 & 2 != 0
    }
}

/// `bPINSupport`: bit0 verification, bit1 modification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PinSupport(pub u8);

impl PinSupport {
    pub fn verify(self) -> bool {
        self.0 & 1 != 0
    }
    pub fn modify(self) -> bool {
        self.0 & 2 != 0
    }
}

/// The parsed class descriptor. Field names follow the specification.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CcidDescriptor {
    pub descriptor_type: u8,
    pub bcd_ccid: u16,
    pub max_slot_index: u8,
    pub voltage_support: VoltageSupport,
    pub protocols: ReaderProtocols,
    /// kHz.
    pub default_clock: u32,
    /// kHz.
    pub maximum_clock: u32,
    pub num_clock_supported: u8,
    /// bps.
    pub data_rate: u32,
    /// bps.
    pub max_data_rate: u32,
    pub num_data_rates_supported: u8,
    pub max_ifsd: u32,
    pub synch_protocols: u32,
    pub mechanical: u32,
    pub features: Features,
    /// Largest bulk message including the 10-byte header.
    pub max_ccid_message_length: u32,
    pub class_get_response: u8,
    pub class_envelope: u8,
    pub lcd_layout: u16,
    pub pin_support: PinSupport,
    pub max_ccid_busy_slots: u8,
}

/// Why a class descriptor could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DescriptorError {
    /// Fewer than 54 bytes.
    TooShort(usize),
    /// `bDescriptorType` is neither `0x21` nor `0xFF`.
    WrongType(u8),
    /// No 54-byte CCID descriptor in any of the places searched.
    NotFound,
}

impl fmt::Display for DescriptorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DescriptorError::TooShort(n) => write!(f, "CCID class descriptor too short ({n} bytes, need 54)"),
            DescriptorError::WrongType(t) => write!(f, "not a CCID class descriptor (type {t:#04x})"),
            DescriptorError::NotFound => f.write_str("no CCID class descriptor found"),
        }
    }
}

impl std::error::Error for DescriptorError {}

impl CcidDescriptor {
    /// Parse one descriptor starting at `b[0]` (its `bLength`). Like libccid, `bLength` itself
    /// is not trusted beyond the 54 bytes needed; extra bytes are ignored.
    pub fn parse(b: &[u8]) -> Result<Self, DescriptorError> {
        if b.len() < DESCRIPTOR_LEN {
            return Err(DescriptorError::TooShort(b.len()));
        }
        let mut c = Cursor::new(b);
        let short = || DescriptorError::TooShort(b.len());
        let _len = c.u8().ok_or_else(short)?;
        let descriptor_type = c.u8().ok_or_else(short)?;
        if descriptor_type != DESCRIPTOR_TYPE && descriptor_type != DESCRIPTOR_TYPE_PROPRIETARY {
            return Err(DescriptorError::WrongType(descriptor_type));
        }
        let d = CcidDescriptor {
            descriptor_type,
            bcd_ccid: c.u16le().ok_or_else(short)?,
            max_slot_index: c.u8().ok_or_else(short)?,
            voltage_support: VoltageSupport(c.u8().ok_or_else(short)?),
            protocols: ReaderProtocols(c.u32le().ok_or_else(short)?),
            default_clock: c.u32le().ok_or_else(short)?,
            maximum_clock: c.u32le().ok_or_else(short)?,
            num_clock_supported: c.u8().ok_or_else(short)?,
            data_rate: c.u32le().ok_or_else(short)?,
            max_data_rate: c.u32le().ok_or_else(short)?,
            num_data_rates_supported: c.u8().ok_or_else(short)?,
            max_ifsd: c.u32le().ok_or_else(short)?,
            synch_protocols: c.u32le().ok_or_else(short)?,
            mechanical: c.u32le().ok_or_else(short)?,
            features: Features(c.u32le().ok_or_else(short)?),
            max_ccid_message_length: c.u32le().ok_or_else(short)?,
            class_get_response: c.u8().ok_or_else(short)?,
            class_envelope: c.u8().ok_or_else(short)?,
            lcd_layout: c.u16le().ok_or_else(short)?,
            pin_support: PinSupport(c.u8().ok_or_else(short)?),
            max_ccid_busy_slots: c.u8().ok_or_else(short)?,
        };
        Ok(d)
    }

    /// Walk `extra` (an interface's or endpoint's class-specific bytes) as `[bLength, type, ...]`
    /// descriptors and parse the first 54-byte one of type `0x21` or `0xFF`. `None` if there is
    /// none; a zero `bLength` or one running past the end stops the walk.
    pub fn find_in(extra: &[u8]) -> Option<Result<Self, DescriptorError>> {
        let mut rest = extra;
        while rest.len() >= 2 {
            let len = rest[0] as usize;
            let ty = rest[1];
            if len < 2 || len > rest.len() {
                break;
            }
            if len == DESCRIPTOR_LEN && (ty == DESCRIPTOR_TYPE || ty == DESCRIPTOR_TYPE_PROPRIETARY) {
                return Some(Self::parse(&rest[..len]));
            }
            rest = &rest[len..];
        }
        // libccid's rule: "extra" of exactly 54 bytes is the descriptor, whatever bLength says.
        if extra.len() == DESCRIPTOR_LEN {
            return Some(Self::parse(extra));
        }
        None
    }

    /// Search the interface's extra bytes, then each endpoint's (O2Micro OZ776, REINER SCT
    /// cyberJack, BluDrive II put it after the last endpoint), last endpoint first.
    pub fn locate<'a>(
        interface_extra: &[u8],
        endpoint_extras: impl DoubleEndedIterator<Item = &'a [u8]>,
    ) -> Result<Self, DescriptorError> {
        if let Some(r) = Self::find_in(interface_extra) {
            return r;
        }
        for e in endpoint_extras.rev() {
            if let Some(r) = Self::find_in(e) {
                return r;
            }
        }
        Err(DescriptorError::NotFound)
    }

    /// The 54 bytes of this descriptor (for simulated readers and round-trip tests).
    pub fn to_bytes(&self) -> [u8; DESCRIPTOR_LEN] {
        let mut v = Vec::with_capacity(DESCRIPTOR_LEN);
        v.push(DESCRIPTOR_LEN as u8);
        v.push(self.descriptor_type);
        v.extend_from_slice(&self.bcd_ccid.to_le_bytes());
        v.push(self.max_slot_index);
        v.push(self.voltage_support.0);
        v.extend_from_slice(&self.protocols.0.to_le_bytes());
        v.extend_from_slice(&self.default_clock.to_le_bytes());
        v.extend_from_slice(&self.maximum_clock.to_le_bytes());
        v.push(self.num_clock_supported);
        v.extend_from_slice(&self.data_rate.to_le_bytes());
        v.extend_from_slice(&self.max_data_rate.to_le_bytes());
        v.push(self.num_data_rates_supported);
        v.extend_from_slice(&self.max_ifsd.to_le_bytes());
        v.extend_from_slice(&self.synch_protocols.to_le_bytes());
        v.extend_from_slice(&self.mechanical.to_le_bytes());
        v.extend_from_slice(&self.features.0.to_le_bytes());
        v.extend_from_slice(&self.max_ccid_message_length.to_le_bytes());
        v.push(self.class_get_response);
        v.push(self.class_envelope);
        v.extend_from_slice(&self.lcd_layout.to_le_bytes());
        v.push(self.pin_support.0);
        v.push(self.max_ccid_busy_slots);
        let mut out = [0u8; DESCRIPTOR_LEN];
        out.copy_from_slice(&v);
        out
    }

    /// The exchange level (`None`: undefined value in `dwFeatures`).
    pub fn level(&self) -> Option<ExchangeLevel> {
        self.features.level()
    }

    /// Number of slots (`bMaxSlotIndex + 1`).
    pub fn slots(&self) -> usize {
        self.max_slot_index as usize + 1
    }

    /// The largest message the host may send or must be ready to receive, header included.
    /// Values below the smallest sensible message (10-byte header + a 5-byte TPDU) are raised to
    /// 271 (short APDU + 256 data, what nearly every reader declares); values above the
    /// specification's maximum are capped at 65 554.
    pub fn max_message_len(&self) -> usize {
        let v = self.max_ccid_message_length as usize;
        if v < 10 + 5 {
            271
        } else {
            v.min(65_554)
        }
    }

    /// IFSD to announce in S(IFS request): `dwMaxIFSD` clamped to 1..=254 (0 → 254: a reader
    /// that declares no limit).
    pub fn ifsd(&self) -> u8 {
        match self.max_ifsd {
            0 => 254,
            v => v.min(254) as u8,
        }
    }

    /// `SCARD_ATTR_MAXINPUT`: `dwMaxCCIDMessageLength − 10`.
    pub fn max_input(&self) -> u32 {
        self.max_ccid_message_length.saturating_sub(10)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ccid::sim::profiles::made;

    /// QEMU 7.2's `usb-ccid` class descriptor (test-environments.md, ccid.md §10.1).
    pub const QEMU: [u8; 54] = [
        0x36, 0x21, 0x10, 0x01, 0x00, 0x07, 0x01, 0x00, 0x00, 0x00, 0xA0, 0x0F, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00,
        0x00, 0x80, 0x25, 0x00, 0x00, 0x00, 0xC2, 0x01, 0x00, 0x00, 0xFE, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0xFE, 0x04, 0x01, 0x00, 0x12, 0x00, 0x01, 0x00, 0xFF, 0xFF, 0x00, 0x00, 0x01, 0x01,
    ];

    #[test]
    fn qemu_descriptor() {
        let d = CcidDescriptor::parse(&QEMU).unwrap();
        assert_eq!(d.bcd_ccid, 0x0110);
        assert_eq!(d.max_slot_index, 0);
        assert_eq!(d.slots(), 1);
        assert_eq!(d.voltage_support, VoltageSupport(7));
        assert!(d.voltage_support.v5() && d.voltage_support.v3() && d.voltage_support.v1_8());
        assert!(d.protocols.t0() && !d.protocols.t1());
        assert_eq!(d.default_clock, 4000);
        assert_eq!(d.maximum_clock, 65536);
        assert_eq!(d.num_clock_supported, 0);
        assert_eq!(d.data_rate, 9600);
        assert_eq!(d.max_data_rate, 115_200);
        assert_eq!(d.num_data_rates_supported, 0);
        assert_eq!(d.max_ifsd, 254);
        assert_eq!(d.features, Features(0x0001_04FE));
        assert_eq!(d.level(), Some(ExchangeLevel::Tpdu));
        assert!(d.features.auto_voltage());
        assert!(d.features.auto_parameters());
        assert!(d.features.auto_pps());
        assert!(d.features.auto_ifsd());
        assert!(d.features.has(Features::AUTO_CONFIG_ATR | Features::AUTO_CLOCK | Features::AUTO_BAUD));
        assert!(!d.features.has(Features::NAD));
        assert_eq!(d.max_ccid_message_length, 65_554);
        assert_eq!(d.max_message_len(), 65_554);
        assert_eq!(d.max_input(), 65_544);
        assert_eq!(d.class_get_response, 0xFF);
        assert_eq!(d.class_envelope, 0xFF);
        assert_eq!(d.lcd_layout, 0);
        assert!(d.pin_support.verify() && !d.pin_support.modify());
        assert_eq!(d.max_ccid_busy_slots, 1);
        assert_eq!(d.ifsd(), 254);
        assert_eq!(d.to_bytes(), QEMU);
    }

    #[test]
    fn real_readers_per_spec() {
        // YubiKey 5: extended APDU, everything automatic, T=1 only, 3072.
        let yk = made(0x0004_00FE, 3072, 2, 7, 254, 0);
        // Gemalto PC Twin: TPDU, only auto clock/baud and NAD, 271.
        let twin = made(0x0001_0230, 271, 3, 7, 254, 0);
        // OMNIKEY 3x21: extended APDU, host SetParameters, reader PPS.
        let omni = made(0x0004_07BA, 271, 3, 7, 254, 0);
        // ACS ACR38U: TPDU, 5 V only.
        let acr38 = made(0x0001_0030, 271, 3, 1, 254, 0);
        // Cherry XX44: short APDU.
        let cherry = made(0x0002_07B8, 271, 3, 7, 254, 3);
        // A character-level reader.
        let chr = made(0x0000_0030, 271, 3, 7, 254, 0);
        for (d, level) in [
            (&yk, ExchangeLevel::ExtendedApdu),
            (&twin, ExchangeLevel::Tpdu),
            (&omni, ExchangeLevel::ExtendedApdu),
            (&acr38, ExchangeLevel::Tpdu),
            (&cherry, ExchangeLevel::ShortApdu),
            (&chr, ExchangeLevel::Character),
        ] {
            let bytes = d.to_bytes();
            assert_eq!(bytes[0], 54);
            let back = CcidDescriptor::parse(&bytes).unwrap();
            assert_eq!(&back, d);
            assert_eq!(back.level(), Some(level));
        }
        assert!(
            yk.features.auto_parameters() && yk.features.auto_pps() && !yk.features.auto_ifsd() && !yk.protocols.t0()
        );
        assert!(!twin.features.auto_voltage() && !twin.features.auto_pps() && !twin.features.auto_ifsd());
        assert!(omni.features.auto_pps() && !omni.features.auto_parameters());
        assert!(acr38.voltage_support.v5() && !acr38.voltage_support.v3());
        assert!(cherry.pin_support.verify() && cherry.pin_support.modify());
    }

    #[test]
    fn undefined_level() {
        assert_eq!(ExchangeLevel::from_features(0x3_0000), None);
        assert_eq!(ExchangeLevel::from_features(0x7_0000), None);
        for l in [ExchangeLevel::Character, ExchangeLevel::Tpdu, ExchangeLevel::ShortApdu, ExchangeLevel::ExtendedApdu]
        {
            assert_eq!(ExchangeLevel::from_features(l.bits() | 0xFF), Some(l));
        }
    }

    #[test]
    fn short_and_wrong() {
        for n in 0..54 {
            assert_eq!(CcidDescriptor::parse(&QEMU[..n]), Err(DescriptorError::TooShort(n)));
        }
        let mut b = QEMU;
        b[1] = 0x24;
        assert_eq!(CcidDescriptor::parse(&b), Err(DescriptorError::WrongType(0x24)));
        b[1] = 0xFF;
        assert_eq!(CcidDescriptor::parse(&b).unwrap().descriptor_type, 0xFF);
    }

    #[test]
    fn located_in_extra_and_endpoints() {
        // Interface extra: some other descriptor first, then the CCID one.
        let mut extra = vec![0x05, 0x24, 0x00, 0x10, 0x01];
        extra.extend_from_slice(&QEMU);
        assert_eq!(CcidDescriptor::find_in(&extra).unwrap().unwrap().features.0, 0x0001_04FE);
        // Bogus bLength but exactly 54 bytes: libccid's rule still takes it.
        let mut odd = QEMU;
        odd[0] = 0;
        assert!(CcidDescriptor::find_in(&odd).unwrap().is_ok());
        // Nothing in the interface: the last endpoint's extra.
        let eps: Vec<&[u8]> = vec![&[], &QEMU[..], &[]];
        assert!(CcidDescriptor::locate(&[], eps.iter().copied()).is_ok());
        assert_eq!(CcidDescriptor::locate(&[1, 2, 3], std::iter::empty()), Err(DescriptorError::NotFound));
        // A walk that runs off the end stops without panicking.
        assert!(CcidDescriptor::find_in(&[0xFF, 0x21, 0]).is_none());
        assert!(CcidDescriptor::find_in(&[0x00, 0x21]).is_none());
    }

    #[test]
    fn limits() {
        let mut d = made(0x0004_00FE, 3, 2, 7, 0, 0);
        assert_eq!(d.max_message_len(), 271);
        assert_eq!(d.ifsd(), 254);
        d.max_ccid_message_length = 1 << 30;
        assert_eq!(d.max_message_len(), 65_554);
        d.max_ifsd = 247;
        assert_eq!(d.ifsd(), 247);
        d.max_ifsd = 100_000;
        assert_eq!(d.ifsd(), 254);
    }
}
