//! Reader names built the way pcscd builds them for libccid readers (ccid.md §8), so that
//! applications that remember a reader by name find it again:
//!
//! ```text
//! <friendly name>[ [<interface string>]][ (<serial>)] NN SS
//! ```
//!
//! * friendly name: libccid's name for the VID:PID. libccid's list is data we do not ship; it is
//!   read at run time from an `Info.plist` of libccid when one is visible (the host's, or the
//!   Flatpak host's under `/run/host`), else from a small table written for the readers this
//!   project tests ([`KNOWN`]), else `iManufacturer iProduct`;
//! * ` [interface]` when the interface has a string (each non-ASCII byte of its UTF-8 form
//!   becomes `.`, as pcscd does with the sysfs copy);
//! * ` (serial)` when the device has a serial number that the interface string does not already
//!   contain;
//! * the base is cut to 121 bytes, then ` NN SS`: `NN` the lowest two-digit hexadecimal number
//!   no other reader uses, `SS` the slot.

use std::path::Path;

/// Where libccid's `Info.plist` may be.
pub const PLIST_PATHS: &[&str] = &[
    "/usr/lib/pcsc/drivers/ifd-ccid.bundle/Contents/Info.plist",
    "/usr/lib64/pcsc/drivers/ifd-ccid.bundle/Contents/Info.plist",
    "/usr/local/lib/pcsc/drivers/ifd-ccid.bundle/Contents/Info.plist",
    "/etc/libccid_Info.plist",
    "/run/host/usr/lib/pcsc/drivers/ifd-ccid.bundle/Contents/Info.plist",
    "/run/host/etc/libccid_Info.plist",
];

/// Readers this project knows by libccid's name (from ccid.md §9.1 and §10.1).
pub const KNOWN: &[(u16, u16, &str)] = &[
    (0x08E6, 0x4433, "Gemalto Gemplus USB SmartCard Reader 433-Swap"),
    (0x08E6, 0x3437, "Gemalto PC Twin Reader"),
    (0x1050, 0x0404, "Yubico YubiKey CCID"),
    (0x1050, 0x0405, "Yubico YubiKey OTP+CCID"),
    (0x1050, 0x0406, "Yubico YubiKey FIDO+CCID"),
    (0x1050, 0x0407, "Yubico YubiKey OTP+FIDO+CCID"),
    (0x076B, 0x3031, "HID Global OMNIKEY 3x21 Smart Card Reader"),
    (0x04E6, 0x5116, "SCM Microsystems Inc. SCR 3310"),
    (0x04E6, 0x511F, "SCM Microsystems Inc. SCR3310 USB Smart Card Reader"),
    (0x072F, 0x90CC, "ACS ACR 38U-CCID"),
    (0x072F, 0xB100, "ACS ACR39U ICC Reader"),
    (0x096E, 0x061A, "FEITIAN bR301"),
];

/// Longest base name before ` NN SS` (pcscd: `MAX_READERNAME − sizeof(" 00 00")`).
pub const MAX_BASE: usize = 121;

/// Friendly names by VID:PID.
#[derive(Debug, Clone, Default)]
pub struct FriendlyNames {
    entries: Vec<(u16, u16, String)>,
    /// Where they came from (for the log).
    pub source: Option<String>,
}

impl FriendlyNames {
    /// The first readable `Info.plist` of [`PLIST_PATHS`] (none: only [`KNOWN`]).
    pub fn load() -> Self {
        for p in PLIST_PATHS {
            if let Some(n) = Self::from_file(Path::new(p)) {
                return n;
            }
        }
        FriendlyNames::default()
    }

    pub fn from_file(path: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(path).ok()?;
        let mut n = Self::from_plist(&text)?;
        n.source = Some(path.display().to_string());
        Some(n)
    }

    /// Parses the three parallel arrays `ifdVendorID`, `ifdProductID`, `ifdFriendlyName`.
    pub fn from_plist(text: &str) -> Option<Self> {
        let vids = plist_array(text, "ifdVendorID")?;
        let pids = plist_array(text, "ifdProductID")?;
        let names = plist_array(text, "ifdFriendlyName")?;
        let entries: Vec<(u16, u16, String)> = vids
            .iter()
            .zip(&pids)
            .zip(names)
            .filter_map(|((v, p), n)| Some((parse_hex(v)?, parse_hex(p)?, n)))
            .collect();
        (!entries.is_empty()).then_some(FriendlyNames { entries, source: None })
    }

    /// libccid's name for VID:PID (the first entry, as pcscd), or [`KNOWN`]'s.
    pub fn lookup(&self, vid: u16, pid: u16) -> Option<&str> {
        self.entries
            .iter()
            .find(|(v, p, _)| *v == vid && *p == pid)
            .map(|(_, _, n)| n.as_str())
            .or_else(|| KNOWN.iter().find(|(v, p, _)| *v == vid && *p == pid).map(|(_, _, n)| *n))
    }

    /// The friendly name, falling back to `iManufacturer iProduct`.
    pub fn friendly(&self, vid: u16, pid: u16, manufacturer: Option<&str>, product: Option<&str>) -> String {
        if let Some(n) = self.lookup(vid, pid) {
            return n.to_string();
        }
        let parts: Vec<&str> =
            [manufacturer, product].into_iter().flatten().map(str::trim).filter(|s| !s.is_empty()).collect();
        if parts.is_empty() {
            format!("USB CCID reader {vid:04X}:{pid:04X}")
        } else {
            parts.join(" ")
        }
    }
}

fn parse_hex(s: &str) -> Option<u16> {
    let s = s.trim();
    let s = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")).unwrap_or(s);
    u16::from_str_radix(s, 16).ok()
}

/// The `<string>` values of the `<array>` after `<key>KEY</key>`.
fn plist_array(text: &str, key: &str) -> Option<Vec<String>> {
    let k = format!("<key>{key}</key>");
    let start = text.find(&k)? + k.len();
    let rest = &text[start..];
    let open = rest.find("<array>")?;
    // Only whitespace between the key and its array.
    if !rest[..open].trim().is_empty() {
        return None;
    }
    let body = &rest[open + "<array>".len()..];
    let body = &body[..body.find("</array>")?];
    let mut out = Vec::new();
    let mut s = body;
    while let Some(i) = s.find("<string>") {
        let after = &s[i + "<string>".len()..];
        let end = after.find("</string>")?;
        out.push(unescape(&after[..end]));
        s = &after[end + "</string>".len()..];
    }
    Some(out)
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&")
}

/// pcscd's treatment of the sysfs interface string: every non-ASCII byte becomes `.`.
pub fn ascii_dots(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii() { b as char } else { '.' }).collect()
}

/// `<friendly>[ [<interface>]][ (<serial>)]`, cut to [`MAX_BASE`] bytes.
pub fn base_name(friendly: &str, interface: Option<&str>, serial: Option<&str>) -> String {
    let mut name = friendly.to_string();
    let iface = interface.filter(|s| !s.is_empty());
    if let Some(i) = iface {
        name.push_str(" [");
        name.push_str(&ascii_dots(i));
        name.push(']');
    }
    if let Some(s) = serial.filter(|s| !s.is_empty()) {
        if !iface.is_some_and(|i| i.contains(s)) {
            name.push_str(" (");
            name.push_str(s);
            name.push(')');
        }
    }
    truncate(name, MAX_BASE)
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// `base NN SS`.
pub fn reader_name(base: &str, number: u8, slot: u8) -> String {
    format!("{base} {number:02X} {slot:02X}")
}

/// The lowest reader number not in `used`.
pub fn free_number(used: impl IntoIterator<Item = u8>) -> u8 {
    let used: Vec<u8> = used.into_iter().collect();
    (0..=u8::MAX).find(|n| !used.contains(n)).unwrap_or(u8::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLIST: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0">
<dict>
	<key>ifdVendorID</key>
	<array>
		<string>0x08E6</string>
		<string>0x1050</string>
	</array>
	<key>ifdProductID</key>
	<array>
		<string>0x4433</string>
		<string>0x0407</string>
	</array>
	<key>ifdFriendlyName</key>
	<array>
		<string>Test &amp; Reader</string>
		<string>Yubico YubiKey OTP+FIDO+CCID</string>
	</array>
</dict>
</plist>"#;

    #[test]
    fn plist_and_fallbacks() {
        let n = FriendlyNames::from_plist(PLIST).unwrap();
        assert_eq!(n.lookup(0x08E6, 0x4433), Some("Test & Reader"));
        assert_eq!(n.lookup(0x1050, 0x0407), Some("Yubico YubiKey OTP+FIDO+CCID"));
        // Not in the plist: the project's table, then manufacturer + product.
        assert_eq!(n.lookup(0x072F, 0xB100), Some("ACS ACR39U ICC Reader"));
        assert_eq!(n.friendly(0x1234, 0x5678, Some("ACME"), Some("Card Thing")), "ACME Card Thing");
        assert_eq!(n.friendly(0x1234, 0x5678, None, None), "USB CCID reader 1234:5678");
        let empty = FriendlyNames::default();
        assert_eq!(
            empty.friendly(0x08E6, 0x4433, Some("QEMU"), Some("QEMU USB CCID")),
            "Gemalto Gemplus USB SmartCard Reader 433-Swap"
        );
        assert!(FriendlyNames::from_plist("<plist></plist>").is_none());
    }

    #[test]
    fn pcscd_style_names() {
        let f = "Gemalto Gemplus USB SmartCard Reader 433-Swap";
        // QEMU with its default serial and with serial=PCSCBRIDGE01.
        assert_eq!(
            reader_name(&base_name(f, Some("CCID Interface"), Some("1-0000:00:01.0-1")), 0, 0),
            "Gemalto Gemplus USB SmartCard Reader 433-Swap [CCID Interface] (1-0000:00:01.0-1) 00 00"
        );
        assert_eq!(
            reader_name(&base_name(f, Some("CCID Interface"), Some("PCSCBRIDGE01")), 1, 0),
            "Gemalto Gemplus USB SmartCard Reader 433-Swap [CCID Interface] (PCSCBRIDGE01) 01 00"
        );
        // No interface string, no serial (YubiKey); serial inside the interface string.
        assert_eq!(
            reader_name(&base_name("Yubico YubiKey OTP+FIDO+CCID", None, None), 0, 0),
            "Yubico YubiKey OTP+FIDO+CCID 00 00"
        );
        assert_eq!(base_name("R", Some("R 1234"), Some("1234")), "R [R 1234]");
        // Non-ASCII in the interface string.
        assert_eq!(base_name("R", Some("Lecteur é"), None), "R [Lecteur ..]");
        // Slots and numbers in uppercase hex; long names cut before " NN SS".
        assert_eq!(reader_name("R", 10, 11), "R 0A 0B");
        let long = base_name(&"x".repeat(200), None, None);
        assert_eq!(long.len(), MAX_BASE);
        assert_eq!(reader_name(&long, 0, 0).len(), 127);
        assert_eq!(free_number([0, 1, 3]), 2);
        assert_eq!(free_number([]), 0);
    }
}
