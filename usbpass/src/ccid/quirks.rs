//! Per-reader special cases ("quirks") of libccid that matter on Linux, in one table
//! (ccid.md §9.2; groups A-J there are the groups here).
//!
//! libccid has no table: its special cases are `switch`/`if` tests on `VID << 16 | PID` (and
//! sometimes `bcdDevice`) spread over the driver. Here every one of them is a row of [`TABLE`]
//! naming the reader, the firmware it applies to and one [`Quirk`]; [`Quirks::for_device`] folds
//! the rows that match a device into a [`Quirks`] value (plain data), and the driver asks that
//! value at the step where libccid does the same thing:
//!
//! | group | what | where the driver asks |
//! |---|---|---|
//! | A | firmware known to be broken: the reader is refused | [`Quirks::check_firmware`], at open (`serve::backend` `add_device`) |
//! | B, C | descriptor overrides (`bPINSupport`, level, `dwMaxIFSD`, `dwMaxDataRate`, auto IFSD) | [`Quirks::fix_descriptor`], right after the descriptor is parsed, so the feature list, TLV properties and level clients see reflect them |
//! | B | timeouts during / from open on, a pause before the first command, data-rate tables | [`Quirks::open_timeout`], [`Quirks::command_timeout`], [`Quirks::open_delay`], [`Quirks::for_slot`] |
//! | C | Escapes after the first GetSlotStatus (Gemalto firmware features `6A`, pinpad prompts) | [`Quirks::after_first_status`] |
//! | D | power-on: power off first, bError `BB` → Escape `1F 01` and retry | `exchange::Slot::power_on` |
//! | E | protocol setup: no PPS (O2Micro), reset after a refused SetParameters (Alcor), longer T=1 timeout (Thales) | `exchange::Slot::set_protocol` |
//! | F | PIN structure fixes before `PC_to_RDR_Secure` | [`Quirks::fix_verify`], [`Quirks::fix_modify`] (from `serve::features`) |
//! | G | APDUs the driver answers itself (Kobil IDToken), 90 s for `FF C2 01` | [`Quirks::driver_answer`], [`transmit_timeout`] (from `exchange::Slot::transmit`) |
//! | H | escapes allowed through `SCardControl`, MCT feature, PIN sizes in the TLV properties, PIN properties | [`Quirks::escape_allowed`], [`mct_command_ok`], [`Quirks::tlv_pin_records`], [`Quirks::pin_properties_validation`] |
//! | I | presence = result of the last power-on | `exchange::Slot::presence` |
//! | J | data rates of the secondary slots | [`Quirks::for_slot`] |
//!
//! Driver options (ccid.md §9.3) are [`DriverOptions`]; Debian ships `0x0000`
//! ([`DriverOptions::DEBIAN`], the default), under which the option-dependent cases stay off.
//!
//! Special cases that do not depend on the reader live next to the code they change:
//! * the OpenPGP card's ATR gets BWI 7 (`atr::Atr::t1_waiting_integers`, ccid.md §4.7);
//! * a `dwMaxCCIDMessageLength` of 263 (SCM firmware) is taken as 271
//!   (`exchange::Slot::message_limit`);
//! * the class descriptor after the last endpoint (O2Micro OZ776, REINER SCT cyberJack, BluDrive II)
//!   is found by `descriptor::CcidDescriptor::locate`;
//! * `bEntryValidationCondition` 0 or > 7 becomes 2 for every reader (`serve::features`);
//! * the `FF C2 01` pseudo-APDU timeout is [`transmit_timeout`] here.
//! * O2Micro OZ776's lost 64-byte replies: no character-level read asks for `n` characters with
//!   `10 + n` a multiple of 64 (`character`); libccid compiles this in for every character-level
//!   reader, not only the OZ776 IDs, so it is not a row here.
//! * `IOCTL_FEATURE_MCT_READER_DIRECT` is answered for every reader, as libccid's code does
//!   ([`mct_command_ok`]); only its entry in the feature list is Kobil's ([`Quirk::Mct`]).
//!
//! Not implemented: the ZLP fix of GemPC Twin/Key and the Dell keyboard with firmware 2.00
//! (libccid build option `zlp`, off by default), ICCD devices (their own transport), driver
//! options `0x02` (GemPC Twin/Key in APDU mode) and `0x30` (power-on voltage; the equivalent is
//! `ExchangeOptions::start_voltage`), the macOS-only "composite as multi-slot" list, and the
//! cases libccid compiles out (SCR331-DI contactless slot, SEC1210 two-interface sync).

use std::fmt;
use std::time::Duration;

use super::descriptor::{CcidDescriptor, ExchangeLevel, Features, PinSupport};
use super::device::{self, CcidError};
use super::exchange::{ExchangeError, ExchangeOptions, Slot};
use super::transport::Transport;

/// Gemalto's vendor ID: every reader with it gets the Gemalto handling (firmware features,
/// firmware version escape, the PIN-modify structure bug).
pub const GEMALTO_VID: u16 = 0x08E6;

/// Escape "get firmware features" of Gemalto readers.
pub const GET_FIRMWARE_FEATURES: [u8; 1] = [0x6A];
/// Escape "get firmware version" of Gemalto readers (TLV `sFirmwareID`, and allowed through
/// `IOCTL_SMARTCARD_VENDOR_IFD_EXCHANGE`).
pub const GET_FIRMWARE_VERSION: [u8; 1] = [0x02];
/// Escape switching a GemPC 433 / Cherry XX33 from EMV to ISO mode.
pub const ISO_MODE: [u8; 2] = [0x1F, 0x01];
/// bError of a power-on refused because the reader is in EMV mode.
pub const EMV_MODE_ERROR: u8 = 0xBB;
/// Escape the SPR532 needs before a verification whose case-1 APDU gets no PIN length.
pub const SPR532_APPEND_PIN: [u8; 3] = [0x80, 0x02, 0x00];
/// Header of the Escape loading the pinpad prompts (GemPC Pinpad, Véga-Alpha).
pub const LOAD_PROMPTS: [u8; 5] = [0xB2, 0xA0, 0x00, 0x4D, 0x4C];
/// Escape disabling the pinpad's own PIN retry counter (driver option `0x40`).
pub const DISABLE_PIN_RETRIES: [u8; 2] = [0xB5, 0x00];
/// The GemProx-DU interface switch: these 5 bytes and one byte naming the interface.
pub const PROX_DU_SWITCH: [u8; 5] = [0x52, 0xF8, 0x04, 0x01, 0x00];

/// The prompts loaded into the GemPC Pinpad and Véga-Alpha, 16 characters each, in the order
/// the readers expect (the `*` of the retries prompt is replaced by the count). Our wording;
/// English only (libccid picks a language from `LANG`).
pub const PROMPTS: [&str; 10] = [
    "Enter PIN",
    "New PIN",
    "Confirm PIN",
    "PIN OK",
    "Wrong PIN",
    "Time out",
    "* tries left",
    "Insert card",
    "Card error",
    "PIN blocked",
];
/// Characters per prompt.
pub const PROMPT_LEN: usize = 16;

/// Answers of the Kobil IDToken's driver-answered APDUs, and the driver version they report.
pub const IDTOKEN_MANUFACTURER: &str = "KOBIL systems";
pub const IDTOKEN_PRODUCT: &str = "IDToken";
pub const IDTOKEN_DRIVER_VERSION: &str = "2012.2.7";

/// Data rates of the secondary slots of the GemCore POS Pro and SIM Pro (firmware < 2.00).
pub const GEMCORE_SECONDARY_RATES: [u32; 4] = [10_753, 21_505, 43_011, 125_000];

/// The pseudo-APDU prefix of PC/SC part 10 PIN commands over `SCardTransmit`, and its timeout.
pub const PIN_PSEUDO_APDU: [u8; 3] = [0xFF, 0xC2, 0x01];
pub const PIN_PSEUDO_APDU_TIMEOUT: Duration = Duration::from_secs(90);

/// `ifdDriverOptions` (ccid.md §9.3). Only the bits below change anything here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DriverOptions(pub u32);

impl DriverOptions {
    /// What Debian's libccid ships: every option off.
    pub const DEBIAN: DriverOptions = DriverOptions(0);
    /// Raw escapes for every reader, `FEATURE_CCID_ESC_COMMAND` listed, `bPPDUSupport` = 1.
    pub const ALLOW_ESCAPE: u32 = 0x01;
    /// Accept readers whose firmware is known to be broken (group A).
    pub const ACCEPT_BOGUS_FIRMWARE: u32 = 0x04;
    /// GemPC Pinpad / Véga-Alpha: disable the reader's own PIN retry counter at open.
    pub const DISABLE_PIN_RETRIES: u32 = 0x40;

    pub fn has(self, bit: u32) -> bool {
        self.0 & bit != 0
    }
}

/// Which `bcdDevice` values a row applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    Any,
    /// Firmware older than this.
    Below(u16),
    Exactly(u16),
    OneOf(&'static [u16]),
}

impl Firmware {
    pub fn matches(self, bcd: u16) -> bool {
        match self {
            Firmware::Any => true,
            Firmware::Below(v) => bcd < v,
            Firmware::Exactly(v) => bcd == v,
            Firmware::OneOf(vs) => vs.contains(&bcd),
        }
    }
}

/// PIN sizes (and entry validation condition) a reader reports in the TLV properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PinSizes {
    pub min: u8,
    pub max: u8,
    /// `None`: no `bEntryValidationCondition` record.
    pub validation: Option<u8>,
}

/// One special case. The table rows say which reader and firmware each applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quirk {
    // --- A. Refused firmware
    /// The firmware the row matches (`Firmware::Below`) is known to be broken: refuse the reader.
    RefusedFirmware,
    // --- B. At open, before the first command
    /// `dwMaxIFSD` := value.
    MaxIfsd(u32),
    /// `dwMaxDataRate` := value.
    MaxDataRate(u32),
    /// Data rates above the value are dropped from the reader's table; `dwMaxDataRate` := value.
    DataRateCap(u32),
    /// Pause before the first command.
    OpenDelay(Duration),
    /// Read timeout of the commands sent while opening (the first GetSlotStatus).
    OpenTimeout(Duration),
    /// Read timeout of every command that uses the default one, from open on (presence checks
    /// keep 3 s).
    Timeout(Duration),
    // --- C. At open, after the first GetSlotStatus
    /// `bPINSupport` := 0: the advertised pinpad does not exist, or leaks the PIN to the host.
    NoPinpad,
    /// Exchange level := value.
    Level(ExchangeLevel),
    /// A short-APDU level becomes extended APDU.
    ShortToExtended,
    /// Behave as if `dwFeatures` had `0x400` (no S(IFS request)).
    AutoIfsd,
    /// Gemalto: Escape `6A` at open (firmware features), `sFirmwareID` from Escape `02`, escape
    /// `02` allowed, the PIN-modify `bNumberMessage` bug unless the firmware says it is fixed.
    Gemalto,
    /// Load [`PROMPTS`] into the pinpad at open (after a 1 s pause); failure fails the open.
    PinpadPrompts,
    // --- D. Power-on
    /// IccPowerOff before every IccPowerOn.
    PowerOffFirst,
    /// Power-on refused with bError `BB` (EMV mode): Escape `1F 01` (ISO mode) and retry once.
    IsoModeEscape,
    // --- E. Protocol setup
    /// The reader cannot do a PPS: no PPS, the card stays in its default protocol.
    NoPps,
    /// A refused T=1 SetParameters: reset the card twice and carry on without it.
    ResetAfterRefusedSetParameters,
    /// Added to the T=1 read timeout.
    ExtraT1Timeout(Duration),
    // --- F. PIN commands
    /// Verify: `bNumberMessage` := 1; verify and modify: `bEntryValidationCondition` := 2.
    PinpadOneMessageKeyOnly,
    /// Verify: `bNumberMessage` := 0 and a 250 ms pause first (the Enter key is still pressed).
    DellVerify,
    /// Verify: the two bytes of `wPINMaxExtraDigit` are swapped.
    SwapMaxExtraDigit,
    /// Verify with a case-1 APDU and no PIN length inserted: Escape `80 02 00` first.
    Spr532Case1Escape,
    /// Modify: `bNumberMessage` 3 with `bMsgIndex1-3` = 0 in the structure, 0 in the message.
    ModifyAllIndexesNoMessage,
    /// Modify: `bNumberMessage` := 3.
    ModifyThreeMessages,
    /// Modify: build with `bNumberMessage` 3 (all three indexes present), send the caller's value.
    ModifyGemaltoBug,
    /// Modify: `bNumberMessage` 0 → `FF`.
    ModifyNoZeroMessages,
    // --- G. Transmit
    /// The driver answers the IDToken's `FF 9A 01 01/03/06/07 00` APDUs itself.
    IdTokenApdus,
    // --- H. Control and attributes
    /// `FEATURE_MCT_READER_DIRECT` in the feature list.
    Mct,
    /// Raw escapes always allowed.
    EscapeAlways,
    /// The GemProx-DU interface switch escape allowed.
    EscapeProxDuSwitch,
    /// `bEntryValidationCondition` of `IFD_PIN_PROPERTIES`.
    PinPropertiesValidation(u8),
    /// PIN sizes in the TLV properties.
    TlvPinSizes(PinSizes),
    // --- I. Presence
    /// The reader always says "card present": presence is the result of the last power-on.
    PresenceFromPowerOn,
    // --- J. Multi-slot data rates
    /// Slots after the first support only [`GEMCORE_SECONDARY_RATES`].
    SecondarySlotRates,
}

/// One row of [`TABLE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub vendor: u16,
    /// `None`: every product of the vendor.
    pub product: Option<u16>,
    pub firmware: Firmware,
    pub reader: &'static str,
    pub quirk: Quirk,
}

const fn row(vendor: u16, product: u16, firmware: Firmware, reader: &'static str, quirk: Quirk) -> Entry {
    Entry { vendor, product: Some(product), firmware, reader, quirk }
}

const fn any(vendor: u16, product: u16, reader: &'static str, quirk: Quirk) -> Entry {
    row(vendor, product, Firmware::Any, reader, quirk)
}

const fn refused(vendor: u16, product: u16, below: u16, reader: &'static str) -> Entry {
    row(vendor, product, Firmware::Below(below), reader, Quirk::RefusedFirmware)
}

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

use Quirk::*;

/// Every special case, by group (ccid.md §9.2). The comment on each row says why.
pub static TABLE: &[Entry] = &[
    // ---- A. Refused firmware: earlier firmware has bugs libccid does not work around.
    refused(0x04E6, 0xE001, 0x0516, "SCM SCR331"),
    refused(0x04E6, 0x5111, 0x0620, "SCM SCR331-DI"),
    refused(0x04E6, 0xE003, 0x0510, "SCM SPR532"),
    refused(0x0D46, 0x3001, 0x0037, "KOBIL KAAN Base"),
    refused(0x0D46, 0x3002, 0x0037, "KOBIL KAAN Advanced"),
    refused(0x09C3, 0x0008, 0x0203, "ActivCard USB reader V2"),
    refused(0x0DC3, 0x1004, 0x0502, "Athena ASE IIIe"),
    refused(0x0DC3, 0x1102, 0x0607, "Athena ASE IIIe KB"),
    refused(0x058F, 0x9520, 0x0102, "Alcor AU9520"),
    refused(0x072F, 0x2200, 0x0206, "ACS ACR122U"),
    refused(0x08C3, 0x0402, 0x5000, "Precise Biometrics Precise 200 MC"),
    refused(0x08C3, 0x0401, 0x5000, "Precise Biometrics Precise 250 MC"),
    refused(0x0B0C, 0x0050, 0x0101, "Todos Argos Mini II"),
    refused(0x0DC3, 0x0900, 0x0200, "Athena IDProtect Key v2"),
    refused(0x03F0, 0x0036, 0x0124, "HP USB CCID smart-card keyboard"),
    refused(0x062D, 0x0001, 0x0102, "THRC smart-card reader"),
    refused(0x04E6, 0x5291, 0x0112, "SCM SCL010"),
    // ---- B. At open, before the first command.
    // Declares a dwMaxIFSD its T=1 engine does not live up to.
    any(0x09BE, 0x0002, "MySmartPad", MaxIfsd(254)),
    // The firmware needs time to initialise, then answers slowly.
    any(0x0B81, 0x0200, "SpringCard CL1356D", OpenDelay(secs(1))),
    any(0x0B81, 0x0200, "SpringCard CL1356D", Timeout(secs(60))),
    // Cannot talk faster than 9600 bps whatever its descriptor says.
    any(0x0B97, 0x7762, "O2Micro OZ776", MaxDataRate(9600)),
    any(0x0B97, 0x7772, "O2Micro OZ776", MaxDataRate(9600)),
    // Answer the first GetSlotStatus after up to 1 s when no tag is in the field.
    any(0x09D8, 0x0427, "Elatec TWN4 (CCID + CDC)", OpenTimeout(secs(30))),
    any(0x09D8, 0x0428, "Elatec TWN4", OpenTimeout(secs(30))),
    any(0x072F, 0x2200, "ACS ACR122U", OpenTimeout(secs(30))),
    // Needs 350 ms to answer while starting.
    any(0x04E6, 0x5293, "SCM SCL011", OpenTimeout(secs(12))),
    // Same chip as the SCL011; libccid never restores the default timeout for these.
    any(0x04E6, 0x5790, "Identiv uTrust 3700 F", Timeout(secs(12))),
    any(0x04E6, 0x5791, "Identiv uTrust 3701 F", Timeout(secs(12))),
    any(0x04E6, 0x5724, "Identiv uTrust 4701 F", Timeout(secs(12))),
    // Fails at rates above 200 000 bps although it lists them.
    any(0x058F, 0x9540, "Alcor AU9540", DataRateCap(200_000)),
    // ---- C. At open, after the first GetSlotStatus.
    // The pinpad shows prompts it holds in memory; the driver loads them.
    any(0x08E6, 0x3478, "Gemalto GemPC Pinpad", PinpadPrompts),
    any(0x0982, 0x0008, "Covadis Vega-Alpha", PinpadPrompts),
    // The pinpad sends the PIN typed to the host too: not a secure pinpad.
    any(0x03F0, 0x1024, "HP USB smart-card keyboard", NoPinpad),
    any(0x03F0, 0x0036, "HP USB CCID smart-card keyboard", NoPinpad),
    any(0x0BF8, 0x1017, "Fujitsu smart-card keyboard", NoPinpad),
    any(0x04F2, 0x1469, "Chicony HP Skylab keyboard", NoPinpad),
    any(0x0783, 0x0006, "C3PO LTC31 v2", NoPinpad),
    // The chip advertises a pinpad the reader does not have, and its firmware chains responses.
    any(0x076B, 0x3A21, "HID Aviator", NoPinpad),
    any(0x076B, 0x3A21, "HID Aviator", Level(ExchangeLevel::ExtendedApdu)),
    any(0x076B, 0x3031, "HID OMNIKEY 3x21", NoPinpad),
    any(0x076B, 0x3031, "HID OMNIKEY 3x21", Level(ExchangeLevel::ExtendedApdu)),
    any(0x076B, 0x6632, "HID OMNIKEY 6121", NoPinpad),
    any(0x076B, 0x6632, "HID OMNIKEY 6121", Level(ExchangeLevel::ExtendedApdu)),
    any(0x046A, 0x00A7, "Cherry SmartTerminal XX44", NoPinpad),
    any(0x046A, 0x00A7, "Cherry SmartTerminal XX44", Level(ExchangeLevel::ExtendedApdu)),
    any(0x0BF8, 0x1024, "Fujitsu D323", NoPinpad),
    any(0x0BF8, 0x1024, "Fujitsu D323", Level(ExchangeLevel::ExtendedApdu)),
    // The firmware does not support extended APDUs.
    any(0x0D46, 0x3010, "KOBIL TriBank", Level(ExchangeLevel::ShortApdu)),
    // The firmware chains responses.
    any(0x2F7C, 0x6007, "Diebold Nixdorf PN7362AU", Level(ExchangeLevel::ExtendedApdu)),
    // Firmware 1.00 chains T=1 responses above 128 bytes while declaring short APDUs.
    row(0x046A, 0x00A1, Firmware::Exactly(0x0100), "Cherry KC 1000 SC", ShortToExtended),
    // Firmware 1.11 advertises a pinpad it does not have.
    any(0x25DD, 0x3111, "Bit4id miniLector", NoPinpad),
    // These firmwares do not like the IFSD negotiation.
    row(0x0529, 0x0620, Firmware::OneOf(&[0x0012, 0x0013]), "SafeNet eToken 5100", AutoIfsd),
    // Gemalto readers describe their pinpad in "firmware features".
    Entry { vendor: GEMALTO_VID, product: None, firmware: Firmware::Any, reader: "Gemalto reader", quirk: Gemalto },
    // ---- D. Power-on.
    // The German eID card behind it must be powered off before a power-on.
    any(0x0D46, 0x301D, "KOBIL IDToken", PowerOffFirst),
    // May start in EMV mode, where the power-on fails with bError BB (QEMU's usb-ccid has these
    // IDs but never answers BB: nothing changes for it).
    any(0x08E6, 0x4433, "Gemalto GemPC 433", IsoModeEscape),
    any(0x046A, 0x0005, "Cherry SmartBoard XX33", IsoModeEscape),
    // ---- E. Protocol setup.
    // O2Micro readers cannot do a PPS.
    any(0x0B97, 0x7762, "O2Micro OZ776", NoPps),
    any(0x0B97, 0x7772, "O2Micro OZ776", NoPps),
    // SetParameters may fail; two resets bring the card back.
    any(0x058F, 0x9540, "Alcor AU9540", ResetAfterRefusedSetParameters),
    // On-board key generation takes minutes.
    any(0x08E6, 0x34D2, "Thales eToken Fusion NFC", ExtraT1Timeout(secs(5 * 60))),
    // ---- F. PIN commands.
    // The firmware only accepts one message and "validation key pressed".
    any(0x08E6, 0x3478, "Gemalto GemPC Pinpad", PinpadOneMessageKeyOnly),
    any(0x0982, 0x0008, "Covadis Vega-Alpha", PinpadOneMessageKeyOnly),
    // Gemalto firmware inside: the PIN-modify structure bug.
    any(0x0982, 0x0008, "Covadis Vega-Alpha", ModifyGemaltoBug),
    // The firmware only accepts no message, and rejects a command while Enter is still down.
    any(0x413C, 0x2100, "Dell SK-3106 keyboard", DellVerify),
    any(0x413C, 0x2101, "Dell smart-card keyboard", DellVerify),
    // wPINMaxExtraDigit arrives byte-swapped.
    any(0x413C, 0x2100, "Dell SK-3106 keyboard", SwapMaxExtraDigit),
    // Appends the PIN without padding unless told to.
    any(0x04E6, 0xE003, "SCM SPR532", Spr532Case1Escape),
    // No display, yet all bMsgIndex fields must be there with bNumberMessage 0.
    any(0x04E6, 0xE003, "SCM SPR532", ModifyAllIndexesNoMessage),
    any(0x046A, 0x003E, "Cherry ST-2xxx", ModifyAllIndexesNoMessage),
    // With fewer than 3 messages the card gets a command it answers 6B 80.
    any(0x046A, 0x0010, "Cherry SmartBoard XX44", ModifyThreeMessages),
    // Rejects bNumberMessage 0 in a modification, accepts FF.
    any(0x046A, 0x00A1, "Cherry KC 1000 SC", ModifyNoZeroMessages),
    // ---- G. Transmit.
    // Applications ask the driver (not the card) who made the token.
    any(0x0D46, 0x301D, "KOBIL IDToken", IdTokenApdus),
    // ---- H. Control and attributes.
    // Secoder readers: the MCT interface.
    any(0x0D46, 0x3010, "KOBIL TriBank", Mct),
    any(0x0D46, 0x4289, "KOBIL mIDentity visual", Mct),
    // APDUs to the reader without a card in the field.
    any(0x076B, 0x5427, "HID OMNIKEY 5427 CK", EscapeAlways),
    // Switching between the contact and contactless interface.
    any(0x08E6, 0x5503, "Gemalto Prox-DU", EscapeProxDuSwitch),
    // Only "validation key pressed" is supported.
    any(0x08E6, 0x3478, "Gemalto GemPC Pinpad", PinPropertiesValidation(0x02)),
    any(0x0982, 0x0008, "Covadis Vega-Alpha", PinPropertiesValidation(0x02)),
    any(0x046A, 0x003E, "Cherry ST-2xxx", PinPropertiesValidation(0x02)),
    // PIN sizes the pinpads accept.
    row(
        0x08E6,
        0x3478,
        Firmware::Exactly(0x0100),
        "Gemalto GemPC Pinpad v1",
        TlvPinSizes(PinSizes { min: 4, max: 8, validation: Some(0x02) }),
    ),
    any(0x0982, 0x0008, "Covadis Vega-Alpha", TlvPinSizes(PinSizes { min: 4, max: 8, validation: Some(0x02) })),
    any(0x046A, 0x003E, "Cherry ST-2xxx", TlvPinSizes(PinSizes { min: 0, max: 25, validation: Some(0x02) })),
    any(0x046A, 0x00A1, "Cherry KC 1000 SC", TlvPinSizes(PinSizes { min: 0, max: 32, validation: None })),
    any(0x076B, 0x3821, "HID OMNIKEY 3821", TlvPinSizes(PinSizes { min: 1, max: 31, validation: None })),
    // ---- I. Presence.
    // Firmware before 2.00 reports a card in every slot; a failed power-on means "no card".
    row(0x08E6, 0x3480, Firmware::Below(0x0200), "Gemalto GemCore SIM Pro", PresenceFromPowerOn),
    // ---- J. Multi-slot data rates.
    // The secondary slots are slower than the main one.
    any(0x08E6, 0x3479, "Gemalto GemCore POS Pro", SecondarySlotRates),
    row(0x08E6, 0x3480, Firmware::Below(0x0200), "Gemalto GemCore SIM Pro", SecondarySlotRates),
];

/// What Escape `6A` tells about a Gemalto reader (21 bytes; kept only when exactly 21).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GemaltoFeatures {
    pub lcd_lines: u8,
    pub lcd_characters: u8,
    pub lcd_info: u8,
    /// The `bEntryValidationCondition` bits the pinpad supports.
    pub entry_validation: u8,
    /// PC/SC features: bit0 verify-start … bit5 verify-direct, bit6 modify-direct, bit7 abort.
    pub pcsc_features: u8,
    /// bit0 get-key, bit1 write-display, bit2 set-SPE-message.
    pub more_features: u8,
    /// bit0 bTimeOut2, bit1 language list, bit2 `bNumberMessage` bug fixed, bit3 PPDU over
    /// XfrBlock, bit4 PPDU over Escape.
    pub flags: u8,
    pub version: u8,
    pub min_pin: u8,
    pub max_pin: u8,
    pub firewall: bool,
    pub firewall_sw: [u8; 2],
}

impl GemaltoFeatures {
    pub const LEN: usize = 21;
    /// `flags` bit: the reader handles `bNumberMessage` in the PIN-modify structure correctly.
    pub const NUMBER_MESSAGE_FIXED: u8 = 0x04;

    /// The answer to Escape `6A`; anything but 21 bytes means "not supported".
    pub fn parse(b: &[u8]) -> Option<Self> {
        let b: &[u8; Self::LEN] = b.try_into().ok()?;
        Some(GemaltoFeatures {
            lcd_lines: b[0],
            lcd_characters: b[1],
            lcd_info: b[2],
            entry_validation: b[3],
            pcsc_features: b[4],
            more_features: b[5],
            flags: b[8],
            version: b[12],
            min_pin: b[13],
            max_pin: b[14],
            firewall: b[15] & 1 != 0,
            firewall_sw: [b[16], b[17]],
        })
    }

    pub fn number_message_fixed(&self) -> bool {
        self.flags & Self::NUMBER_MESSAGE_FIXED != 0
    }
}

/// A reader refused because of its firmware (group A).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Refusal {
    pub reader: &'static str,
    /// The first firmware that works.
    pub minimum: u16,
}

/// Steps before sending a `PC_to_RDR_Secure` (group F).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BeforeSecure {
    /// An Escape to send first (its answer is not used; its failure fails the PIN command).
    pub escape: Option<&'static [u8]>,
    /// A pause first.
    pub pause: Duration,
}

/// Why the quirks refuse a reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuirkError {
    /// Group A: the firmware is known to be broken.
    RefusedFirmware { reader: &'static str, vendor_id: u16, product_id: u16, firmware: u16, minimum: u16 },
    /// Group C: the pinpad prompts could not be loaded (libccid fails the open too).
    Prompts(ExchangeError),
}

impl fmt::Display for QuirkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuirkError::RefusedFirmware { reader, vendor_id, product_id, firmware, minimum } => write!(
                f,
                "{reader} ({vendor_id:04X}:{product_id:04X}) firmware {} is known to be broken; \
                 like libccid, readers with firmware older than {} are refused (update the reader's firmware)",
                bcd(*firmware),
                bcd(*minimum)
            ),
            QuirkError::Prompts(e) => write!(f, "loading the prompts into the pinpad failed: {e}"),
        }
    }
}

impl std::error::Error for QuirkError {}

/// `bcdDevice` as libccid prints it: `5.16`, `50.00`.
pub fn bcd(v: u16) -> String {
    format!("{:X}.{:02X}", v >> 8, v & 0xFF)
}

/// The special cases of one device: [`TABLE`] folded for (idVendor, idProduct, bcdDevice).
/// Plain data; `Quirks::default()` is a reader without any.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Quirks {
    pub vendor_id: u16,
    pub product_id: u16,
    pub bcd_device: u16,
    pub options: DriverOptions,
    // A
    pub refused: Option<Refusal>,
    // B, C: descriptor
    pub max_ifsd: Option<u32>,
    pub max_data_rate: Option<u32>,
    pub data_rate_cap: Option<u32>,
    pub no_pinpad: bool,
    pub level: Option<ExchangeLevel>,
    pub short_to_extended: bool,
    pub auto_ifsd: bool,
    // B: timing
    pub open_delay: Option<Duration>,
    pub open_timeout: Option<Duration>,
    pub timeout: Option<Duration>,
    // C
    pub gemalto: bool,
    /// Filled at open by [`Quirks::after_first_status`] (Gemalto readers that answer Escape `6A`).
    pub firmware_features: Option<GemaltoFeatures>,
    /// Pause before loading the pinpad prompts (`None`: no prompts to load).
    pub prompts_delay: Option<Duration>,
    // D
    pub power_off_first: bool,
    pub iso_mode_escape: bool,
    // E
    pub no_pps: bool,
    pub reset_after_refused_set_parameters: bool,
    pub extra_t1_timeout: Duration,
    // F
    pub pinpad_one_message_key_only: bool,
    pub dell_verify: bool,
    pub swap_max_extra_digit: bool,
    pub spr532_case1_escape: bool,
    pub modify_all_indexes_no_message: bool,
    pub modify_three_messages: bool,
    pub modify_gemalto_bug: bool,
    pub modify_no_zero_messages: bool,
    // G
    pub idtoken_apdus: bool,
    // H
    pub mct: bool,
    pub escape_always: bool,
    pub escape_prox_du_switch: bool,
    pub pin_entry_validation: Option<u8>,
    pub tlv_pin_sizes: Option<PinSizes>,
    // I
    pub presence_from_power_on: bool,
    // J
    pub secondary_slot_rates: bool,
}

impl Quirks {
    /// The rows of [`TABLE`] that apply to a device, in table order.
    pub fn rows(vendor_id: u16, product_id: u16, bcd_device: u16) -> impl Iterator<Item = &'static Entry> {
        TABLE.iter().filter(move |e| {
            e.vendor == vendor_id
                && (e.product.is_none() || e.product == Some(product_id))
                && e.firmware.matches(bcd_device)
        })
    }

    /// The special cases of the device (idVendor, idProduct, bcdDevice), with the Debian
    /// driver options.
    pub fn for_device(vendor_id: u16, product_id: u16, bcd_device: u16) -> Quirks {
        let mut q = Quirks { vendor_id, product_id, bcd_device, ..Quirks::default() };
        for e in Self::rows(vendor_id, product_id, bcd_device) {
            match e.quirk {
                RefusedFirmware => {
                    if let Firmware::Below(minimum) = e.firmware {
                        q.refused = Some(Refusal { reader: e.reader, minimum });
                    }
                }
                MaxIfsd(v) => q.max_ifsd = Some(v),
                MaxDataRate(v) => q.max_data_rate = Some(v),
                DataRateCap(v) => q.data_rate_cap = Some(v),
                OpenDelay(d) => q.open_delay = Some(d),
                OpenTimeout(d) => q.open_timeout = Some(d),
                Timeout(d) => q.timeout = Some(d),
                NoPinpad => q.no_pinpad = true,
                Level(l) => q.level = Some(l),
                ShortToExtended => q.short_to_extended = true,
                AutoIfsd => q.auto_ifsd = true,
                Gemalto => q.gemalto = true,
                PinpadPrompts => q.prompts_delay = Some(secs(1)),
                PowerOffFirst => q.power_off_first = true,
                IsoModeEscape => q.iso_mode_escape = true,
                NoPps => q.no_pps = true,
                ResetAfterRefusedSetParameters => q.reset_after_refused_set_parameters = true,
                ExtraT1Timeout(d) => q.extra_t1_timeout = d,
                PinpadOneMessageKeyOnly => q.pinpad_one_message_key_only = true,
                DellVerify => q.dell_verify = true,
                SwapMaxExtraDigit => q.swap_max_extra_digit = true,
                Spr532Case1Escape => q.spr532_case1_escape = true,
                ModifyAllIndexesNoMessage => q.modify_all_indexes_no_message = true,
                ModifyThreeMessages => q.modify_three_messages = true,
                ModifyGemaltoBug => q.modify_gemalto_bug = true,
                ModifyNoZeroMessages => q.modify_no_zero_messages = true,
                IdTokenApdus => q.idtoken_apdus = true,
                Mct => q.mct = true,
                EscapeAlways => q.escape_always = true,
                EscapeProxDuSwitch => q.escape_prox_du_switch = true,
                PinPropertiesValidation(v) => q.pin_entry_validation = Some(v),
                TlvPinSizes(s) => q.tlv_pin_sizes = Some(s),
                PresenceFromPowerOn => q.presence_from_power_on = true,
                SecondarySlotRates => q.secondary_slot_rates = true,
            }
        }
        q
    }

    /// The same with other driver options.
    pub fn with_options(self, options: DriverOptions) -> Quirks {
        Quirks { options, ..self }
    }

    // ---- A

    /// Group A: `Err` for a firmware known to be broken (unless driver option `0x04`).
    pub fn check_firmware(&self) -> Result<(), QuirkError> {
        match self.refused {
            Some(r) if !self.options.has(DriverOptions::ACCEPT_BOGUS_FIRMWARE) => Err(QuirkError::RefusedFirmware {
                reader: r.reader,
                vendor_id: self.vendor_id,
                product_id: self.product_id,
                firmware: self.bcd_device,
                minimum: r.minimum,
            }),
            _ => Ok(()),
        }
    }

    // ---- B, C: the descriptor

    /// The descriptor as libccid uses it after its open-time fixes (`bPINSupport`, exchange
    /// level, `dwMaxIFSD`, `dwMaxDataRate`, automatic IFSD).
    pub fn fix_descriptor(&self, d: &mut CcidDescriptor) {
        if let Some(v) = self.max_ifsd {
            d.max_ifsd = v;
        }
        if let Some(v) = self.max_data_rate.or(self.data_rate_cap) {
            d.max_data_rate = v;
        }
        if self.no_pinpad {
            d.pin_support = PinSupport(0);
        }
        let mut level = self.level;
        if self.short_to_extended && d.level() == Some(ExchangeLevel::ShortApdu) {
            level = Some(ExchangeLevel::ExtendedApdu);
        }
        if let Some(l) = level {
            d.features = Features((d.features.0 & !Features::LEVEL_MASK) | l.bits());
        }
        if self.auto_ifsd {
            d.features.0 |= Features::AUTO_IFSD;
        }
    }

    /// The descriptor and options slot `slot` is built with: these quirks in the options, the
    /// data-rate table capped (Alcor AU9540), the secondary slots' rates (GemCore POS/SIM Pro).
    pub fn for_slot(
        &self,
        slot: u8,
        desc: &CcidDescriptor,
        opts: &ExchangeOptions,
    ) -> (CcidDescriptor, ExchangeOptions) {
        let mut desc = desc.clone();
        let mut opts = ExchangeOptions { quirks: self.clone(), ..opts.clone() };
        if let Some(cap) = self.data_rate_cap {
            opts.data_rates.retain(|&r| r <= cap);
        }
        if slot > 0 && self.secondary_slot_rates {
            opts.data_rates = GEMCORE_SECONDARY_RATES.to_vec();
            desc.max_data_rate = 125_000;
        }
        (desc, opts)
    }

    // ---- B: timing

    /// The pause before the first command (SpringCard CL1356D).
    pub fn open_delay(&self) -> Duration {
        self.open_delay.unwrap_or_default()
    }

    /// Read timeout of the first GetSlotStatus at open.
    pub fn open_timeout(&self) -> Duration {
        self.open_timeout.or(self.timeout).unwrap_or(device::DEFAULT_TIMEOUT)
    }

    /// Read timeout of the commands that use libccid's default (power-off, PPS, SetParameters,
    /// escapes the driver sends); presence checks keep [`device::DEFAULT_TIMEOUT`].
    pub fn command_timeout(&self) -> Duration {
        self.timeout.unwrap_or(device::DEFAULT_TIMEOUT)
    }

    // ---- C: after the first GetSlotStatus

    /// The escapes libccid sends at open once the reader answered its first GetSlotStatus:
    /// the pinpad prompts (GemPC Pinpad, Véga-Alpha; failure fails the open), then Gemalto's
    /// "get firmware features" (kept in [`Quirks::firmware_features`] when the answer has
    /// exactly 21 bytes; QEMU refuses it, which changes nothing).
    pub fn after_first_status<T: Transport>(&mut self, slot: &mut Slot<T>) -> Result<(), QuirkError> {
        let timeout = self.command_timeout();
        if let Some(delay) = self.prompts_delay {
            std::thread::sleep(delay);
            slot.escape(&prompts_escape(), timeout).map_err(QuirkError::Prompts)?;
            if self.options.has(DriverOptions::DISABLE_PIN_RETRIES) {
                if let Err(e) = slot.escape(&DISABLE_PIN_RETRIES, timeout) {
                    tracing::warn!("could not disable the pinpad's PIN retry counter: {e}");
                }
            }
        }
        if self.gemalto {
            self.firmware_features = match slot.escape(&GET_FIRMWARE_FEATURES, timeout) {
                Ok(answer) => GemaltoFeatures::parse(&answer),
                Err(e) => {
                    tracing::debug!("Gemalto firmware features not available: {e}");
                    None
                }
            };
        }
        Ok(())
    }

    // ---- D: power-on

    /// Whether a failed power-on calls for Escape [`ISO_MODE`] and one more try.
    pub fn wants_iso_mode(&self, e: &CcidError) -> bool {
        self.iso_mode_escape && e.status().is_some_and(|s| s.error == EMV_MODE_ERROR)
    }

    // ---- G: transmit

    /// The answer the driver gives itself, without the card (Kobil IDToken).
    pub fn driver_answer(&self, apdu: &[u8]) -> Option<Vec<u8>> {
        if !self.idtoken_apdus {
            return None;
        }
        let text = match apdu {
            [0xFF, 0x9A, 0x01, 0x01, 0x00] => IDTOKEN_MANUFACTURER.to_string(),
            [0xFF, 0x9A, 0x01, 0x03, 0x00] => IDTOKEN_PRODUCT.to_string(),
            [0xFF, 0x9A, 0x01, 0x06, 0x00] => bcd(self.bcd_device),
            [0xFF, 0x9A, 0x01, 0x07, 0x00] => IDTOKEN_DRIVER_VERSION.to_string(),
            _ => return None,
        };
        let mut v = text.into_bytes();
        v.extend_from_slice(&[0x90, 0x00]);
        Some(v)
    }

    // ---- H: control and attributes

    /// Whether `IOCTL_SMARTCARD_VENDOR_IFD_EXCHANGE` may send `data` as an Escape (refused by
    /// default; Gemalto firmware version, GemProx-DU interface switch, OMNIKEY 5427 CK, option
    /// `0x01`).
    pub fn escape_allowed(&self, data: &[u8]) -> bool {
        self.options.has(DriverOptions::ALLOW_ESCAPE)
            || self.escape_always
            || (self.gemalto && data == GET_FIRMWARE_VERSION)
            || (self.escape_prox_du_switch
                && data.len() == PROX_DU_SWITCH.len() + 1
                && data.starts_with(&PROX_DU_SWITCH))
    }

    /// The Escape whose answer is the TLV `sFirmwareID` (Gemalto readers).
    pub fn firmware_id_escape(&self) -> Option<&'static [u8]> {
        self.gemalto.then_some(&GET_FIRMWARE_VERSION[..])
    }

    /// `bEntryValidationCondition` of `IOCTL_FEATURE_IFD_PIN_PROPERTIES`.
    pub fn pin_properties_validation(&self) -> u8 {
        match (self.firmware_features, self.pin_entry_validation) {
            (Some(f), _) => f.entry_validation,
            (None, Some(v)) => v,
            (None, None) => 0x07,
        }
    }

    /// The PIN-size records of the TLV properties, `(tag, value)` in order: the reader's fixed
    /// sizes, then those of Gemalto firmware features (tags may repeat, as in libccid).
    pub fn tlv_pin_records(&self) -> Vec<(u8, u8)> {
        const MIN: u8 = 0x06;
        const MAX: u8 = 0x07;
        const VALIDATION: u8 = 0x02;
        let mut v = Vec::new();
        if let Some(s) = self.tlv_pin_sizes {
            v.extend_from_slice(&[(MIN, s.min), (MAX, s.max)]);
            if let Some(c) = s.validation {
                v.push((VALIDATION, c));
            }
        }
        if let Some(f) = self.firmware_features {
            v.extend_from_slice(&[(MIN, f.min_pin), (MAX, f.max_pin), (VALIDATION, f.entry_validation)]);
        }
        v
    }

    // ---- F: PIN commands (offsets in the PC/SC part 10 structures, ccid.md §7.3)

    /// Per-reader fixes of a `PIN_VERIFY_STRUCTURE` (`s`, byte order already fixed, validation
    /// already made valid), and what to do before sending it.
    pub fn fix_verify(&self, s: &mut [u8]) -> BeforeSecure {
        const PIN_BLOCK_STRING: usize = 3;
        const MAX_EXTRA_DIGIT: usize = 5;
        const VALIDATION: usize = 7;
        const MESSAGES: usize = 8;
        const DATA_LENGTH: usize = 15;
        let mut before = BeforeSecure::default();
        if s.len() <= DATA_LENGTH {
            return before;
        }
        if self.pinpad_one_message_key_only {
            s[MESSAGES] = 0x01;
            s[VALIDATION] = 0x02;
        }
        if let Some(f) = self.firmware_features {
            s[VALIDATION] &= f.entry_validation;
        }
        if self.dell_verify {
            s[MESSAGES] = 0x00;
            before.pause = Duration::from_millis(250);
        }
        if self.swap_max_extra_digit {
            s.swap(MAX_EXTRA_DIGIT, MAX_EXTRA_DIGIT + 1);
        }
        // A 4-byte (case 1) APDU and no PIN length to insert.
        if self.spr532_case1_escape && s[PIN_BLOCK_STRING] == 0 && s[DATA_LENGTH] == 4 {
            before.escape = Some(&SPR532_APPEND_PIN);
        }
        before
    }

    /// Per-reader fixes of a `PIN_MODIFY_STRUCTURE` (`s`, byte order fixed, validation made
    /// valid, `bNumberMessage` checked). The structure's `bNumberMessage` decides which
    /// `bMsgIndex` fields go into the CCID message; the returned value, if any, is what the
    /// message itself must carry in `bNumberMessage`.
    pub fn fix_modify(&self, s: &mut [u8]) -> Option<u8> {
        const VALIDATION: usize = 10;
        const MESSAGES: usize = 11;
        const MSG_INDEXES: std::ops::Range<usize> = 14..17;
        if s.len() < MSG_INDEXES.end {
            return None;
        }
        let mut in_message = None;
        if self.modify_all_indexes_no_message {
            s[MESSAGES] = 3;
            s[MSG_INDEXES].fill(0);
            in_message = Some(0);
        }
        if self.modify_three_messages {
            s[MESSAGES] = 3;
        }
        if self.pinpad_one_message_key_only {
            s[VALIDATION] = 0x02;
        }
        if let Some(f) = self.firmware_features {
            s[VALIDATION] &= f.entry_validation;
        }
        let fixed = self.firmware_features.is_some_and(|f| f.number_message_fixed());
        if self.modify_gemalto_bug || (self.gemalto && !fixed) {
            in_message = Some(s[MESSAGES]);
            s[MESSAGES] = 3;
        }
        if self.modify_no_zero_messages && s[MESSAGES] == 0 {
            s[MESSAGES] = 0xFF;
        }
        in_message
    }
}

/// Whether `data` is an MCT command libccid passes to the reader as an Escape
/// (`IOCTL_FEATURE_MCT_READER_DIRECT`: `20 7x 00 00 00 …` with x ≤ 4, the Secoder commands).
pub fn mct_command_ok(data: &[u8]) -> bool {
    matches!(data, [0x20, ins, 0x00, 0x00, 0x00, ..] if ins & 0xF0 == 0x70 && ins & 0x0F <= 4)
}

/// Read timeout of an APDU: 90 s for the PC/SC part 10 PIN pseudo-APDU `FF C2 01 …` (the
/// pinpad waits for the user, as with `SCardControl`), else `normal`.
pub fn transmit_timeout(apdu: &[u8], normal: Duration) -> Duration {
    if apdu.starts_with(&PIN_PSEUDO_APDU) {
        PIN_PSEUDO_APDU_TIMEOUT
    } else {
        normal
    }
}

/// The Escape loading [`PROMPTS`]: header, then each prompt padded with spaces to 16 bytes.
pub fn prompts_escape() -> Vec<u8> {
    let mut v = LOAD_PROMPTS.to_vec();
    for p in PROMPTS {
        let mut b = p.as_bytes().to_vec();
        b.resize(PROMPT_LEN, b' ');
        v.extend_from_slice(&b[..PROMPT_LEN]);
    }
    v
}

/// Behaviour with the simulated readers (power-on, protocol setup, transmit, presence, open).
#[cfg(test)]
mod sim_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ccid::sim::profiles::made;

    #[test]
    fn refused_firmware_thresholds() {
        // SCR331: refused below 5.16, accepted from 5.16 on.
        let old = Quirks::for_device(0x04E6, 0xE001, 0x0515);
        let e = old.check_firmware().unwrap_err();
        assert_eq!(
            e,
            QuirkError::RefusedFirmware {
                reader: "SCM SCR331",
                vendor_id: 0x04E6,
                product_id: 0xE001,
                firmware: 0x0515,
                minimum: 0x0516
            }
        );
        let msg = e.to_string();
        assert!(msg.contains("SCM SCR331 (04E6:E001) firmware 5.15"), "{msg}");
        assert!(msg.contains("older than 5.16"), "{msg}");
        assert!(Quirks::for_device(0x04E6, 0xE001, 0x0516).check_firmware().is_ok());
        assert!(Quirks::for_device(0x04E6, 0xE001, 0x0600).check_firmware().is_ok());
        // Precise 200 MC: 50.00.
        assert_eq!(bcd(0x5000), "50.00");
        assert!(Quirks::for_device(0x08C3, 0x0402, 0x4999).check_firmware().is_err());
        assert!(Quirks::for_device(0x08C3, 0x0402, 0x5000).check_firmware().is_ok());
        // Driver option 0x04 accepts them.
        let accept = DriverOptions(DriverOptions::ACCEPT_BOGUS_FIRMWARE);
        assert!(old.with_options(accept).check_firmware().is_ok());
        // Every refusal row has a threshold.
        for e in TABLE.iter().filter(|e| e.quirk == RefusedFirmware) {
            assert!(matches!(e.firmware, Firmware::Below(_)), "{e:?}");
        }
        assert_eq!(TABLE.iter().filter(|e| e.quirk == RefusedFirmware).count(), 17);
    }

    #[test]
    fn unknown_reader_has_no_quirks() {
        let q = Quirks::for_device(0x1050, 0x0407, 0x0543);
        assert_eq!(q, Quirks { vendor_id: 0x1050, product_id: 0x0407, bcd_device: 0x0543, ..Quirks::default() });
        let mut d = made(0x0004_00FE, 3072, 2, 7, 254, 0);
        let before = d.clone();
        q.fix_descriptor(&mut d);
        assert_eq!(d, before);
        assert_eq!(q.open_timeout(), device::DEFAULT_TIMEOUT);
        assert_eq!(q.command_timeout(), device::DEFAULT_TIMEOUT);
        assert_eq!(q.pin_properties_validation(), 0x07);
        assert!(q.tlv_pin_records().is_empty());
        assert!(!q.escape_allowed(&[0x02]));
        assert_eq!(q.driver_answer(&[0xFF, 0x9A, 0x01, 0x01, 0x00]), None);
    }

    #[test]
    fn omnikey_3x21_has_no_pinpad_and_chains() {
        let q = Quirks::for_device(0x076B, 0x3031, 0x0101);
        assert!(q.no_pinpad);
        assert_eq!(q.level, Some(ExchangeLevel::ExtendedApdu));
        let mut d = made(0x0002_05B2, 271, 3, 7, 254, 3);
        q.fix_descriptor(&mut d);
        assert_eq!(d.pin_support, PinSupport(0));
        assert_eq!(d.level(), Some(ExchangeLevel::ExtendedApdu));
        // The other dwFeatures bits stay.
        assert_eq!(d.features.0, 0x0004_05B2);
        // The older CardMan 3121 (076B:3021) has no quirk.
        assert_eq!(Quirks::for_device(0x076B, 0x3021, 0x0101).level, None);
    }

    #[test]
    fn descriptor_overrides() {
        let mut d = made(0x0001_0230, 271, 3, 7, 32, 0);
        Quirks::for_device(0x09BE, 0x0002, 0).fix_descriptor(&mut d);
        assert_eq!(d.max_ifsd, 254);
        Quirks::for_device(0x0B97, 0x7772, 0).fix_descriptor(&mut d);
        assert_eq!(d.max_data_rate, 9600);
        Quirks::for_device(0x058F, 0x9540, 0).fix_descriptor(&mut d);
        assert_eq!(d.max_data_rate, 200_000);
        // Kobil TriBank: short APDU whatever it declares.
        let mut e = made(0x0004_07BA, 271, 3, 7, 254, 3);
        Quirks::for_device(0x0D46, 0x3010, 0).fix_descriptor(&mut e);
        assert_eq!(e.level(), Some(ExchangeLevel::ShortApdu));
        assert_eq!(e.pin_support, PinSupport(3));
        // HP keyboard: pinpad gone, level kept.
        let mut k = made(0x0001_0230, 271, 3, 7, 254, 3);
        Quirks::for_device(0x03F0, 0x1024, 0x0100).fix_descriptor(&mut k);
        assert_eq!((k.pin_support, k.level()), (PinSupport(0), Some(ExchangeLevel::Tpdu)));
    }

    #[test]
    fn firmware_dependent_rows() {
        // Cherry KC 1000 SC: firmware 1.00 declaring short APDU only.
        let mut short = made(0x0002_07B8, 271, 3, 7, 254, 3);
        Quirks::for_device(0x046A, 0x00A1, 0x0100).fix_descriptor(&mut short);
        assert_eq!(short.level(), Some(ExchangeLevel::ExtendedApdu));
        let mut tpdu = made(0x0001_0230, 271, 3, 7, 254, 3);
        Quirks::for_device(0x046A, 0x00A1, 0x0100).fix_descriptor(&mut tpdu);
        assert_eq!(tpdu.level(), Some(ExchangeLevel::Tpdu));
        let mut newer = made(0x0002_07B8, 271, 3, 7, 254, 3);
        Quirks::for_device(0x046A, 0x00A1, 0x0101).fix_descriptor(&mut newer);
        assert_eq!(newer.level(), Some(ExchangeLevel::ShortApdu));
        // SafeNet eToken 5100: firmware 0.12 and 0.13 only.
        for (fw, auto) in [(0x0011, false), (0x0012, true), (0x0013, true), (0x0014, false)] {
            let mut d = made(0x0001_0230, 271, 3, 7, 254, 0);
            Quirks::for_device(0x0529, 0x0620, fw).fix_descriptor(&mut d);
            assert_eq!(d.features.auto_ifsd(), auto, "firmware {fw:#06x}");
        }
        // GemCore SIM Pro: firmware < 2.00.
        assert!(Quirks::for_device(0x08E6, 0x3480, 0x0199).presence_from_power_on);
        assert!(Quirks::for_device(0x08E6, 0x3480, 0x0199).secondary_slot_rates);
        assert!(!Quirks::for_device(0x08E6, 0x3480, 0x0200).presence_from_power_on);
        assert!(!Quirks::for_device(0x08E6, 0x3480, 0x0200).secondary_slot_rates);
        // GemPC Pinpad: fixed TLV sizes for v1 only; PIN properties validation for all.
        let v1 = Quirks::for_device(0x08E6, 0x3478, 0x0100);
        assert_eq!(v1.tlv_pin_records(), [(6, 4), (7, 8), (2, 2)]);
        let v2 = Quirks::for_device(0x08E6, 0x3478, 0x0200);
        assert!(v2.tlv_pin_records().is_empty());
        assert_eq!((v1.pin_properties_validation(), v2.pin_properties_validation()), (2, 2));
    }

    #[test]
    fn timeouts() {
        let s = |v| Duration::from_secs(v);
        let elatec = Quirks::for_device(0x09D8, 0x0428, 0);
        assert_eq!((elatec.open_timeout(), elatec.command_timeout()), (s(30), s(3)));
        let scl011 = Quirks::for_device(0x04E6, 0x5293, 0);
        assert_eq!((scl011.open_timeout(), scl011.command_timeout()), (s(12), s(3)));
        let utrust = Quirks::for_device(0x04E6, 0x5790, 0);
        assert_eq!((utrust.open_timeout(), utrust.command_timeout()), (s(12), s(12)));
        let cl1356 = Quirks::for_device(0x0B81, 0x0200, 0);
        assert_eq!((cl1356.open_delay(), cl1356.open_timeout(), cl1356.command_timeout()), (s(1), s(60), s(60)));
        // ACR122U: refused below 2.06, 30 s at open otherwise.
        let acr = Quirks::for_device(0x072F, 0x2200, 0x0207);
        assert!(acr.check_firmware().is_ok());
        assert_eq!(acr.open_timeout(), s(30));
        assert_eq!(Quirks::for_device(0x08E6, 0x34D2, 0).extra_t1_timeout, s(300));
        // FF C2 01: 90 s for every reader.
        assert_eq!(transmit_timeout(&[0xFF, 0xC2, 0x01, 0x00, 0x00], s(2)), s(90));
        assert_eq!(transmit_timeout(&[0xFF, 0xC2, 0x02, 0x00], s(2)), s(2));
        assert_eq!(transmit_timeout(&[0x00, 0xA4, 0x04, 0x00], s(200)), s(200));
    }

    #[test]
    fn gemalto_vendor_and_qemu() {
        // QEMU's usb-ccid borrows the GemPC 433 IDs: Gemalto handling and the ISO-mode escape.
        let q = Quirks::for_device(0x08E6, 0x4433, 0x0000);
        assert!(q.gemalto && q.iso_mode_escape);
        assert_eq!(
            q,
            Quirks { vendor_id: 0x08E6, product_id: 0x4433, gemalto: true, iso_mode_escape: true, ..Quirks::default() }
        );
        assert!(q.escape_allowed(&[0x02]));
        assert!(!q.escape_allowed(&[0x02, 0x00]));
        assert!(!q.escape_allowed(&[0x6A]));
        assert_eq!(q.firmware_id_escape(), Some(&[0x02][..]));
        // GemProx-DU interface switch; OMNIKEY 5427 CK; option 0x01.
        let du = Quirks::for_device(0x08E6, 0x5503, 0);
        assert!(du.escape_allowed(&[0x52, 0xF8, 0x04, 0x01, 0x00, 0x01]));
        assert!(!du.escape_allowed(&[0x52, 0xF8, 0x04, 0x01, 0x00]));
        assert!(Quirks::for_device(0x076B, 0x5427, 0).escape_allowed(&[1, 2, 3]));
        let opt = Quirks::for_device(0x1050, 0x0407, 0).with_options(DriverOptions(DriverOptions::ALLOW_ESCAPE));
        assert!(opt.escape_allowed(&[1, 2, 3]));
    }

    #[test]
    fn gemalto_firmware_features_parse() {
        let mut b = [0u8; 21];
        b[3] = 0x02;
        b[8] = GemaltoFeatures::NUMBER_MESSAGE_FIXED;
        b[13] = 4;
        b[14] = 12;
        let f = GemaltoFeatures::parse(&b).unwrap();
        assert_eq!((f.entry_validation, f.min_pin, f.max_pin), (2, 4, 12));
        assert!(f.number_message_fixed() && !f.firewall);
        assert_eq!(GemaltoFeatures::parse(&b[..20]), None);
        assert_eq!(GemaltoFeatures::parse(&[0; 22]), None);
        let q = Quirks { firmware_features: Some(f), ..Quirks::for_device(0x08E6, 0x34C3, 0) };
        assert_eq!(q.pin_properties_validation(), 2);
        assert_eq!(q.tlv_pin_records(), [(6, 4), (7, 12), (2, 2)]);
    }

    fn verify_structure() -> Vec<u8> {
        // bTimerOut 30, format 82, block 04, length 00, max/min 08 04, validation 07,
        // 2 messages, lang 0409, index 0, prologue 0, ulDataLength 4, case-1 APDU.
        let mut v = vec![30, 0, 0x82, 0x04, 0x00, 0x08, 0x04, 0x07, 0x02, 0x09, 0x04, 0x00, 0, 0, 0];
        v.extend_from_slice(&4u32.to_le_bytes());
        v.extend_from_slice(&[0x00, 0x20, 0x00, 0x81]);
        v
    }

    #[test]
    fn verify_fixes() {
        let plain = verify_structure();
        let mut s = plain.clone();
        assert_eq!(Quirks::default().fix_verify(&mut s), BeforeSecure::default());
        assert_eq!(s, plain);
        // GemPC Pinpad: one message, validation key.
        let mut s = plain.clone();
        Quirks::for_device(0x08E6, 0x3478, 0x0100).fix_verify(&mut s);
        assert_eq!((s[7], s[8]), (0x02, 0x01));
        // Dell SK-3106: no message, pause, swapped wPINMaxExtraDigit.
        let mut s = plain.clone();
        let b = Quirks::for_device(0x413C, 0x2100, 0).fix_verify(&mut s);
        assert_eq!((s[5], s[6], s[8]), (0x04, 0x08, 0x00));
        assert_eq!(b, BeforeSecure { escape: None, pause: Duration::from_millis(250) });
        // The other Dell keyboard does not swap.
        let mut s = plain.clone();
        Quirks::for_device(0x413C, 0x2101, 0).fix_verify(&mut s);
        assert_eq!((s[5], s[6], s[8]), (0x08, 0x04, 0x00));
        // SPR532: escape first only for a case-1 APDU without PIN length insertion.
        let spr = Quirks::for_device(0x04E6, 0xE003, 0x0510);
        let mut s = plain.clone();
        s[3] = 0;
        assert_eq!(spr.fix_verify(&mut s).escape, Some(&SPR532_APPEND_PIN[..]));
        let mut s = plain.clone();
        assert_eq!(spr.fix_verify(&mut s).escape, None);
        // Gemalto firmware features: validation masked.
        let mut f = [0u8; 21];
        f[3] = 0x02;
        let g = Quirks { firmware_features: GemaltoFeatures::parse(&f), ..Quirks::for_device(0x08E6, 0x34C3, 0) };
        let mut s = plain.clone();
        g.fix_verify(&mut s);
        assert_eq!(s[7], 0x02);
    }

    fn modify_structure(messages: u8) -> Vec<u8> {
        let mut m =
            vec![30, 0, 0x82, 0x04, 0x00, 0x00, 0x08, 0x08, 0x04, 0x03, 0x07, messages, 0x09, 0x04, 0xA1, 0xA2, 0xA3];
        m.extend_from_slice(&[0, 0, 0]);
        m.extend_from_slice(&5u32.to_le_bytes());
        m.extend_from_slice(&[0x00, 0x24, 0x00, 0x81, 0x10]);
        m
    }

    #[test]
    fn modify_fixes() {
        // No quirk: nothing changes.
        let mut s = modify_structure(1);
        assert_eq!(Quirks::default().fix_modify(&mut s), None);
        assert_eq!(s, modify_structure(1));
        // SPR532 / Cherry ST-2xxx: all indexes (zeroed), 0 in the message.
        for q in [Quirks::for_device(0x04E6, 0xE003, 0x0510), Quirks::for_device(0x046A, 0x003E, 0)] {
            let mut s = modify_structure(1);
            assert_eq!(q.fix_modify(&mut s), Some(0));
            assert_eq!(&s[11..17], [3, 0x09, 0x04, 0, 0, 0]);
        }
        // Cherry XX44: 3 messages.
        let mut s = modify_structure(1);
        assert_eq!(Quirks::for_device(0x046A, 0x0010, 0).fix_modify(&mut s), None);
        assert_eq!(s[11], 3);
        // Gemalto without "fixed" firmware: built with 3, the caller's value in the message.
        let mut s = modify_structure(1);
        assert_eq!(Quirks::for_device(0x08E6, 0x3478, 0x0100).fix_modify(&mut s), Some(1));
        assert_eq!((s[10], s[11]), (0x02, 3));
        let mut s = modify_structure(0);
        assert_eq!(Quirks::for_device(0x0982, 0x0008, 0).fix_modify(&mut s), Some(0));
        // ... with the fix reported by the firmware: nothing.
        let mut f = [0u8; 21];
        f[3] = 0x07;
        f[8] = GemaltoFeatures::NUMBER_MESSAGE_FIXED;
        let fixed = Quirks { firmware_features: GemaltoFeatures::parse(&f), ..Quirks::for_device(0x08E6, 0x34C3, 0) };
        let mut s = modify_structure(1);
        assert_eq!(fixed.fix_modify(&mut s), None);
        assert_eq!(s, modify_structure(1));
        // Cherry KC 1000 SC: 0 → FF.
        let mut s = modify_structure(0);
        assert_eq!(Quirks::for_device(0x046A, 0x00A1, 0x0101).fix_modify(&mut s), None);
        assert_eq!(s[11], 0xFF);
    }

    #[test]
    fn kobil_idtoken_answers() {
        let q = Quirks::for_device(0x0D46, 0x301D, 0x0123);
        assert!(q.power_off_first);
        let answer = |apdu: &[u8]| q.driver_answer(apdu);
        assert_eq!(answer(&[0xFF, 0x9A, 0x01, 0x01, 0x00]).unwrap(), b"KOBIL systems\x90\x00");
        assert_eq!(answer(&[0xFF, 0x9A, 0x01, 0x03, 0x00]).unwrap(), b"IDToken\x90\x00");
        assert_eq!(answer(&[0xFF, 0x9A, 0x01, 0x06, 0x00]).unwrap(), b"1.23\x90\x00");
        assert_eq!(answer(&[0xFF, 0x9A, 0x01, 0x07, 0x00]).unwrap(), b"2012.2.7\x90\x00");
        assert_eq!(answer(&[0xFF, 0x9A, 0x01, 0x02, 0x00]), None);
        assert_eq!(answer(&[0xFF, 0x9A, 0x01, 0x01, 0x00, 0x00]), None);
        assert_eq!(answer(&[0x00, 0xA4, 0x04, 0x00]), None);
    }

    #[test]
    fn mct_commands() {
        assert!(Quirks::for_device(0x0D46, 0x3010, 0).mct);
        assert!(Quirks::for_device(0x0D46, 0x4289, 0).mct);
        assert!(mct_command_ok(&[0x20, 0x70, 0, 0, 0]));
        assert!(mct_command_ok(&[0x20, 0x74, 0, 0, 0, 0x01, 0x02]));
        assert!(!mct_command_ok(&[0x20, 0x75, 0, 0, 0]));
        assert!(!mct_command_ok(&[0x20, 0x60, 0, 0, 0]));
        assert!(!mct_command_ok(&[0x00, 0x70, 0, 0, 0]));
        assert!(!mct_command_ok(&[0x20, 0x70, 0, 0]));
    }

    #[test]
    fn secondary_slots_and_rate_cap() {
        let desc = made(0x0001_0230, 271, 3, 7, 254, 0);
        let opts = ExchangeOptions { data_rates: vec![9600, 115_200, 230_400], ..ExchangeOptions::default() };
        let pos = Quirks::for_device(0x08E6, 0x3479, 0x0100);
        let (d0, o0) = pos.for_slot(0, &desc, &opts);
        assert_eq!((d0.max_data_rate, &o0.data_rates[..]), (344_086, &[9600, 115_200, 230_400][..]));
        assert_eq!(o0.quirks, pos);
        let (d1, o1) = pos.for_slot(1, &desc, &opts);
        assert_eq!((d1.max_data_rate, &o1.data_rates[..]), (125_000, &GEMCORE_SECONDARY_RATES[..]));
        let (_, o) = Quirks::for_device(0x058F, 0x9540, 0).for_slot(0, &desc, &opts);
        assert_eq!(o.data_rates, [9600, 115_200]);
    }

    #[test]
    fn prompts_escape_layout() {
        let e = prompts_escape();
        assert_eq!(e.len(), 5 + 10 * 16);
        assert_eq!(&e[..5], LOAD_PROMPTS);
        assert_eq!(&e[5..21], b"Enter PIN       ");
        assert!(PROMPTS.iter().all(|p| p.len() <= PROMPT_LEN && p.is_ascii()));
    }

    #[test]
    fn every_row_names_its_reader() {
        for e in TABLE {
            assert!(!e.reader.is_empty(), "{e:?}");
        }
        // The vendor-wide row is Gemalto's only.
        assert_eq!(TABLE.iter().filter(|e| e.product.is_none()).count(), 1);
    }
}
