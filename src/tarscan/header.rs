//! One 512-byte tar header block decoded as Go's `archive/tar` decodes it: the format from
//! its magic, numbers in octal or base-256, strings up to their first NUL, kept as bytes.

/// Bytes of one tar block (a header, and the unit data is padded to).
pub const BLOCK_BYTES: u64 = 512;

/// The fields of a header block, before PAX records and GNU long names apply.
#[derive(Debug, Clone, Default)]
pub struct Header {
    pub name: Vec<u8>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: i64,
    pub typeflag: u8,
    pub link: Vec<u8>,
    pub devmajor: u32,
    pub devminor: u32,
}

/// A header field's bytes up to its first NUL.
pub fn cstr(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

/// A numeric field: base-256 when the high bit of its first byte is set (negative when the
/// next bit is too), else octal text trimmed of spaces and NULs (empty is 0). `None` when it
/// is neither.
pub fn numeric(field: &[u8]) -> Option<i64> {
    let first = *field.first()?;
    if first & 0x80 != 0 {
        let negative = first & 0x40 != 0;
        // Two's complement: a negative number's bytes are inverted to give its magnitude - 1.
        let byte = |b: u8| if negative { !b } else { b };
        let mut v: i64 = i64::from(byte(first) & 0x7f);
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(i64::from(byte(b)))?;
        }
        return Some(if negative { -v - 1 } else { v });
    }
    let text = trim(field);
    if text.is_empty() {
        return Some(0);
    }
    let text = std::str::from_utf8(text).ok()?;
    i64::from_str_radix(text, 8).ok().filter(|v| *v >= 0)
}

fn trim(field: &[u8]) -> &[u8] {
    let keep = |b: &u8| *b != b' ' && *b != 0;
    let start = field.iter().position(keep).unwrap_or(field.len());
    let end = field.iter().rposition(keep).map_or(start, |e| e + 1);
    &field[start..end]
}

/// Whether the stored checksum is the sum of the block's bytes (its own field as spaces),
/// counted unsigned or signed (old writers did either).
pub fn checksum_ok(block: &[u8; 512]) -> bool {
    let Some(stored) = numeric(&block[148..156]) else {
        return false;
    };
    let (mut unsigned, mut signed) = (0i64, 0i64);
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += i64::from(b);
        signed += i64::from(b as i8);
    }
    stored == unsigned || stored == signed
}

/// The prefix field a header's magic gives it: POSIX ustar/PAX (155 bytes), star (131), or
/// none (GNU keeps times there, v7 has none).
fn prefix(block: &[u8; 512]) -> &[u8] {
    if &block[257..263] != b"ustar\0" || &block[263..265] != b"00" {
        return &[];
    }
    if &block[508..512] == b"tar\0" {
        cstr(&block[345..476])
    } else {
        cstr(&block[345..500])
    }
}

/// Decodes `block` (checksum already checked); `Err` names the field that is not a number.
pub fn decode(block: &[u8; 512]) -> Result<Header, &'static str> {
    let num =
        |range: std::ops::Range<usize>, what: &'static str| numeric(&block[range]).ok_or(what);
    let unsigned = |range, what| u64::try_from(num(range, what)?).map_err(|_| what);
    let mut name = cstr(&block[..100]).to_vec();
    let prefix = prefix(block);
    if !prefix.is_empty() {
        let mut full = prefix.to_vec();
        full.push(b'/');
        full.extend_from_slice(&name);
        name = full;
    }
    Ok(Header {
        name,
        mode: u32::try_from(unsigned(100..108, "mode")? & 0o7777_7777).map_err(|_| "mode")?,
        uid: unsigned(108..116, "uid")?,
        gid: unsigned(116..124, "gid")?,
        size: unsigned(124..136, "size")?,
        mtime: num(136..148, "mtime")?,
        typeflag: block[156],
        link: cstr(&block[157..257]).to_vec(),
        devmajor: u32::try_from(unsigned(329..337, "devmajor")?).map_err(|_| "devmajor")?,
        devminor: u32::try_from(unsigned(337..345, "devminor")?).map_err(|_| "devminor")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_octal_and_base_256() {
        assert_eq!(numeric(b"0000644\0"), Some(0o644));
        assert_eq!(numeric(b"  17 \0\0"), Some(0o17));
        assert_eq!(numeric(b"\0\0\0\0"), Some(0));
        assert_eq!(numeric(b"12x4\0"), None);
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[11] = 1;
        big[10] = 2;
        assert_eq!(numeric(&big), Some(0x201));
        // -1 in base-256 is all ones.
        assert_eq!(numeric(&[0xff; 12]), Some(-1));
    }
}
