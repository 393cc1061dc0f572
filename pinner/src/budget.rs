//! Sizes as people write them for a disk budget: `50G`, `512M`, `1.5GiB`, `10000`.
//!
//! The syntax is the one `cidmirror serve --cache-budget` has always taken (the resolver's
//! `follow::cache::parse_size`); this is the canonical implementation, exact in integer
//! arithmetic rather than through `f64`.

use crate::{Error, Result};

/// Parses a size: a decimal number (`10000`, `1.5`, `.5`) and an optional unit, with or
/// without a space between, case-insensitive. `K`, `M`, `G` and `T` (also spelled `KB`,
/// `KiB`, ...) are powers of 1024, as disk budgets usually are; `B` or nothing means bytes.
/// A fraction of a byte is rounded down. At most 19 decimal places.
pub fn parse_size(s: &str) -> Result<u64> {
    let err = |reason: String| Error::Size {
        input: s.to_string(),
        reason,
    };
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
        return Err(err("not a size (use e.g. 20G, 512M or bytes)".to_string()));
    }
    let mult: u128 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        other => return Err(err(format!("unknown unit {other:?} (use K, M, G or T)"))),
    };
    if frac.len() > 19 {
        return Err(err("too many decimal places (at most 19)".to_string()));
    }
    let out_of_range = || err("out of range (at most 16 EiB)".to_string());
    // Only ASCII digits are left, so parsing fails only on overflow.
    let int: u128 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| out_of_range())?
    };
    let frac_value: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|_| out_of_range())?
    };
    // frac_value < 10^19 and mult <= 2^40: the product fits easily in u128.
    let frac_bytes = frac_value * mult / 10u128.pow(frac.len() as u32);
    int.checked_mul(mult)
        .and_then(|whole| whole.checked_add(frac_bytes))
        .and_then(|total| u64::try_from(total).ok())
        .ok_or_else(out_of_range)
}

/// Formats bytes for people: `512 B`, `1.5 KiB`, `50.0 GiB` (one decimal, powers of 1024,
/// at most TiB), which [`parse_size`] reads back (to within the rounding).
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    // Move up while the value would print as 1024.0 or more.
    while unit + 1 < UNITS.len() && (value * 10.0).round() >= 10240.0 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let table: &[(&str, u64)] = &[
            ("0", 0),
            ("10000", 10_000),
            ("  10000  ", 10_000),
            ("18446744073709551615", u64::MAX),
            ("1B", 1),
            ("1k", 1 << 10),
            ("1KB", 1 << 10),
            ("1KiB", 1 << 10),
            ("512M", 512 << 20),
            ("512 MiB", 512 << 20),
            ("50G", 50 << 30),
            ("20g", 20 << 30),
            ("1.5G", 3 << 29),
            ("1.5GiB", 3 << 29),
            ("1.5 gib", 3 << 29),
            (".5K", 512),
            ("2.K", 2048),
            ("1.0001K", 1024),
            ("0.1", 0),
            ("3T", 3 << 40),
            ("16777215.999999T", 18_446_744_073_708_452_104),
            ("0.0000000000000000001T", 0),
        ];
        for (input, want) in table {
            assert_eq!(parse_size(input), Ok(*want), "{input:?}");
        }
    }

    #[test]
    fn bad_sizes() {
        let table: &[(&str, &str)] = &[
            ("", "not a size"),
            ("   ", "not a size"),
            (".", "not a size"),
            ("G", "not a size"),
            ("lots", "not a size"),
            ("-5G", "not a size"),
            ("+5G", "not a size"),
            ("1.2.3", "not a size"),
            ("5X", "unknown unit \"X\""),
            ("5 PB", "unknown unit \"PB\""),
            ("1e3", "unknown unit"),
            ("5G5", "unknown unit"),
            ("0.00000000000000000001", "too many decimal places"),
            ("18446744073709551616", "out of range"),
            ("16777216T", "out of range"),
            ("99999999999999999999999999999999999999999", "out of range"),
        ];
        for (input, want) in table {
            let e = parse_size(input).expect_err(input);
            let msg = e.to_string();
            assert!(msg.contains(want), "{input:?}: {msg}");
            assert!(msg.starts_with(&format!("{input:?}")), "{input:?}: {msg}");
        }
    }

    #[test]
    fn formatted_sizes() {
        let table: &[(u64, &str)] = &[
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (1536, "1.5 KiB"),
            ((1 << 20) - 1, "1.0 MiB"),
            (512 << 20, "512.0 MiB"),
            (50 << 30, "50.0 GiB"),
            (3 << 40, "3.0 TiB"),
            (u64::MAX, "16777216.0 TiB"),
        ];
        for (bytes, want) in table {
            assert_eq!(format_size(*bytes), *want, "{bytes}");
        }
    }

    #[test]
    fn formatted_sizes_read_back() {
        for bytes in [0, 1, 1023, 1024, 10_000, 123_456_789, 50 << 30, 7 << 40] {
            let back = parse_size(&format_size(bytes)).expect("readable");
            let err = back.abs_diff(bytes) as f64;
            assert!(
                err <= bytes as f64 * 0.05,
                "{bytes} -> {} -> {back}",
                format_size(bytes)
            );
        }
    }
}
