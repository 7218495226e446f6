//! An identification note in the library file, so tools can tell our
//! `libpcsclite.so.1` from upstream's without loading it and without adding an
//! exported symbol: an ELF note in section `.note.pcsc-bridge`, owner
//! `pcsc-bridge`, type [`NOTE_TYPE`], descriptor `libpcscbridge <version>\0`.
//!
//! `readelf -n libpcscbridge.so` shows it; `pcsc-bridge doctor` and `pcsc-bridge
//! flatpak status` find it by scanning the file for [`NEEDLE`] (the owner name
//! and the start of the descriptor are contiguous in the note).

/// The note's owner, NUL included (12 bytes: no padding needed).
const OWNER: &[u8] = b"pcsc-bridge\0";
/// Note type ("PB").
pub const NOTE_TYPE: u32 = 0x5042;
/// What a scanner looks for: owner then the descriptor's fixed start.
pub const NEEDLE: &[u8] = b"pcsc-bridge\0libpcscbridge ";

const DESC: &str = concat!("libpcscbridge ", env!("CARGO_PKG_VERSION"));
const DESC_LEN: usize = DESC.len() + 1;
const DESC_PADDED: usize = (DESC_LEN + 3) & !3;
const SIZE: usize = 12 + OWNER.len() + DESC_PADDED;

const fn build() -> [u8; SIZE] {
    let mut out = [0u8; SIZE];
    let head = [OWNER.len() as u32, DESC_LEN as u32, NOTE_TYPE];
    let mut i = 0;
    while i < 3 {
        let b = head[i].to_ne_bytes();
        let mut j = 0;
        while j < 4 {
            out[i * 4 + j] = b[j];
            j += 1;
        }
        i += 1;
    }
    let mut k = 0;
    while k < OWNER.len() {
        out[12 + k] = OWNER[k];
        k += 1;
    }
    let d = DESC.as_bytes();
    let mut m = 0;
    while m < d.len() {
        out[12 + OWNER.len() + m] = d[m];
        m += 1;
    }
    out
}

#[repr(C, align(4))]
struct Note([u8; SIZE]);

// Kept by `#[used]` and by the linker (allocated SHT_NOTE section); no symbol is
// exported (the version script makes everything but the 22 PC/SC names local).
#[used]
#[link_section = ".note.pcsc-bridge"]
static NOTE: Note = Note(build());

/// The descriptor text (`libpcscbridge <version>`).
pub fn description() -> &'static str {
    DESC
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn note_layout() {
        let n = &NOTE.0;
        assert_eq!(u32::from_ne_bytes(n[0..4].try_into().unwrap()), 12);
        assert_eq!(u32::from_ne_bytes(n[4..8].try_into().unwrap()) as usize, DESC.len() + 1);
        assert_eq!(u32::from_ne_bytes(n[8..12].try_into().unwrap()), NOTE_TYPE);
        assert_eq!(&n[12..12 + NEEDLE.len()], NEEDLE);
        assert_eq!(n.len() % 4, 0);
        assert!(description().starts_with("libpcscbridge "));
    }
}
