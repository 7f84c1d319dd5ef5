//! Parsing the quantities people type: sizes, durations and rates. Neutral ground: both
//! binaries and the CLI use it, and it uses nothing of hoist.

use std::time::Duration;

/// Parses `16MiB`, `16M`, `512KiB`, `5242880`: binary units.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (n, unit) = number_and_unit(s.trim())
        .ok_or_else(|| format!("{s:?} is not a size: write e.g. 16MiB or 16777216"))?;
    let mult: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?}: use KiB, MiB or GiB")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// `16MiB` as `(16, "mib")`: the leading digits, and the rest trimmed and lowercased. `None`
/// when there are no leading digits.
fn number_and_unit(t: &str) -> Option<(u64, String)> {
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    Some((num.parse().ok()?, unit.trim().to_ascii_lowercase()))
}

/// Parses `2h`, `30m`, `90s`, `1d`, `1h30m`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if let Ok(n) = t.parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    let bad = || format!("{s:?} is not a duration: write e.g. 2h, 30m, 90s or 1h30m");
    let mut total: u64 = 0;
    let mut num = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().map_err(|_| bad())?;
        num.clear();
        let mult = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(mult)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if !num.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// Parses a retention period: a duration as [`parse_duration`] reads it, or `off` (also
/// `never`) for no limit (`None`). Zero is refused: it would remove a job the moment it ends,
/// before anyone has read its result.
pub fn parse_retention(s: &str) -> Result<Option<Duration>, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("off") || t.eq_ignore_ascii_case("never") {
        return Ok(None);
    }
    match parse_duration(t)? {
        d if d.is_zero() => Err(format!(
            "{s:?} would remove jobs as they end: give a duration such as 7d, or off to keep them"
        )),
        d => Ok(Some(d)),
    }
}

/// Parses `10MiB/s`, `500KiB`, `2000000` (bytes per second); `0`, `off` and `none` mean
/// unlimited (`None`). Unlike sizes, `M` is decimal here: network rates are quoted in MB/s
/// and Mbit/s.
pub fn parse_rate(s: &str) -> Result<Option<u64>, String> {
    let t = s.trim();
    if matches!(
        t.to_ascii_lowercase().as_str(),
        "0" | "off" | "none" | "unlimited"
    ) {
        return Ok(None);
    }
    let (n, unit) = number_and_unit(t.strip_suffix("/s").unwrap_or(t))
        .ok_or_else(|| format!("{s:?} is not a rate: write e.g. 10MiB/s, 500KiB/s or off"))?;
    let mult: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "mbit" => 125_000,
        other => {
            return Err(format!(
                "unknown rate unit {other:?} in {s:?}: use KiB/s, MiB/s, MB/s or Mbit/s"
            ));
        }
    };
    n.checked_mul(mult)
        .map(|r| Some(r).filter(|r| *r > 0))
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_is_a_duration_or_off_and_never_zero() {
        assert_eq!(
            parse_retention("7d").unwrap(),
            Some(Duration::from_secs(7 * 86_400))
        );
        assert_eq!(parse_retention("1s").unwrap(), Some(Duration::from_secs(1)));
        assert_eq!(parse_retention("off").unwrap(), None);
        assert_eq!(parse_retention("Never").unwrap(), None);
        for bad in ["0", "0s", "soon", ""] {
            assert!(parse_retention(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16MiB").unwrap(), 16 << 20);
        assert_eq!(parse_size("8M").unwrap(), 8 << 20);
        assert_eq!(parse_size("5242880").unwrap(), 5_242_880);
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
    }

    #[test]
    fn durations() {
        let d = |s| parse_duration(s).map(|d| d.as_secs());
        assert_eq!(d("2h"), Ok(7200));
        assert_eq!(d("1h30m"), Ok(5400));
        assert_eq!(d("90s"), Ok(90));
        assert_eq!(d("45"), Ok(45));
        assert_eq!(d("1d"), Ok(86_400));
        assert!(d("2x").is_err());
        assert!(d("h").is_err());
        assert!(d("5m3").is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("10MiB/s").unwrap(), Some(10 << 20));
        assert_eq!(parse_rate("8Mbit/s").unwrap(), Some(1_000_000));
        assert_eq!(parse_rate("500KiB").unwrap(), Some(500 << 10));
        assert_eq!(parse_rate("2000000").unwrap(), Some(2_000_000));
        assert_eq!(parse_rate("off").unwrap(), None);
        assert_eq!(parse_rate("0").unwrap(), None);
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("10 parsecs").is_err());
    }
}
