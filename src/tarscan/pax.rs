//! PAX extended header records (`LEN key=value\n`), read as Go's `archive/tar` reads them: a
//! malformed record is an error, values are bytes, and GNU's sparse 0.0 offset/numbytes
//! pairs are gathered into one `GNU.sparse.map`.

use std::collections::HashMap;

/// The records of one PAX header, by key.
#[derive(Debug, Clone, Default)]
pub struct Records(pub HashMap<String, Vec<u8>>);

impl Records {
    /// Parses a PAX header's data; `Err` says what is malformed.
    pub fn parse(mut data: &[u8]) -> Result<Records, &'static str> {
        let mut out = HashMap::new();
        let mut sparse_map: Vec<u8> = Vec::new();
        // GNU tar pads some headers with NULs after the last record.
        while !data.is_empty() && data.iter().any(|&b| b != 0) {
            let space = data.iter().position(|&b| b == b' ').ok_or("no length")?;
            let len: usize = std::str::from_utf8(&data[..space])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or("a bad length")?;
            if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
                return Err("a record that does not end where its length says");
            }
            let record = &data[space + 1..len - 1];
            let eq = record
                .iter()
                .position(|&b| b == b'=')
                .ok_or("a record with no '='")?;
            let key = std::str::from_utf8(&record[..eq]).map_err(|_| "a key that is not UTF-8")?;
            if key.is_empty() {
                return Err("an empty key");
            }
            let value = &record[eq + 1..];
            if key == "GNU.sparse.offset" || key == "GNU.sparse.numbytes" {
                if !sparse_map.is_empty() {
                    sparse_map.push(b',');
                }
                sparse_map.extend_from_slice(value);
            } else {
                out.insert(key.to_string(), value.to_vec());
            }
            data = &data[len..];
        }
        if !sparse_map.is_empty() {
            out.insert("GNU.sparse.map".into(), sparse_map);
        }
        Ok(Records(out))
    }

    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.0.get(key).map(Vec::as_slice)
    }

    /// A decimal record; `Err` when present and not a number.
    pub fn number(&self, key: &str) -> Result<Option<i64>, &'static str> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse().ok())
                .map(Some)
                .ok_or("a PAX number that is not one"),
        }
    }

    /// `mtime` (seconds with an optional fraction): the whole seconds and the nanoseconds.
    pub fn time(&self, key: &str) -> Result<Option<(i64, u32)>, &'static str> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let bad = "a PAX time that is not one";
        let text = std::str::from_utf8(v).map_err(|_| bad)?;
        let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
        let secs: i64 = whole.parse().map_err(|_| bad)?;
        if !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad);
        }
        let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
        let mut nanos: u32 = digits.parse().map_err(|_| bad)?;
        // A negative time's fraction counts down from its whole seconds.
        if whole.starts_with('-') && nanos > 0 {
            nanos = 1_000_000_000 - nanos;
            return Ok(Some((secs - 1, nanos)));
        }
        Ok(Some((secs, nanos)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_malformed_ones() {
        let r = Records::parse(b"18 path=a/\xffb/name\n16 mtime=12.345\n").unwrap();
        assert_eq!(r.get("path"), Some(&b"a/\xffb/name"[..]));
        assert_eq!(r.time("mtime").unwrap(), Some((12, 345_000_000)));
        assert!(Records::parse(b"21 path=a/\xffb/name\n").is_err());
        assert!(Records::parse(b"x path=a\n").is_err());
        let r = Records::parse(b"23 GNU.sparse.offset=0\n26 GNU.sparse.numbytes=10\n").unwrap();
        assert_eq!(r.get("GNU.sparse.map"), Some(&b"0,10"[..]));
        assert_eq!(
            r.number("GNU.sparse.map"),
            Err("a PAX number that is not one")
        );
    }
}
