//! Parsing of sizes (`512K`, `1G`) and member specs (a path, or `mem:SIZE`).

use std::fmt;
use std::path::PathBuf;

/// A size argument that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeError(pub String);

impl fmt::Display for SizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid size '{}': expected a number with an optional K, M, G or T suffix (powers of 1024)",
            self.0
        )
    }
}

impl std::error::Error for SizeError {}

/// Parses `4096`, `512K`, `64M`, `2G`, `1T` (binary units; an optional trailing `B` or `iB`).
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let err = || SizeError(text.to_string());
    let t = text.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (digits, shift) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 10),
        Some('m' | 'M') => (&t[..t.len() - 1], 20),
        Some('g' | 'G') => (&t[..t.len() - 1], 30),
        Some('t' | 'T') => (&t[..t.len() - 1], 40),
        Some('p' | 'P') => (&t[..t.len() - 1], 50),
        _ => (t, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err());
    }
    let n: u64 = digits.parse().map_err(|_| err())?;
    n.checked_mul(1u64 << shift).ok_or_else(err)
}

/// Formats bytes with a binary unit, as `mdadm --detail` does (`1.00 GiB`).
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

/// Where a member lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberSpec {
    /// An image file or block device.
    Path(PathBuf),
    /// A volatile memory disk of this many bytes.
    Memory(u64),
}

impl MemberSpec {
    pub fn parse(text: &str) -> Result<Self, SizeError> {
        match text.strip_prefix("mem:") {
            Some(size) => parse_size(size).map(MemberSpec::Memory),
            None => Ok(MemberSpec::Path(PathBuf::from(text))),
        }
    }
}

impl fmt::Display for MemberSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemberSpec::Path(p) => write!(f, "{}", p.display()),
            MemberSpec::Memory(bytes) => write!(f, "mem:{bytes}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert_eq!(parse_size("16T"), Ok(16 << 40));
        for bad in [
            "",
            "K",
            "1.5G",
            "-1",
            "12X",
            "99999999999999999999",
            "20000000P",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(format_size(1536), "1.50 KiB");
        assert_eq!(format_size(100), "100 B");
    }

    #[test]
    fn member_specs() {
        assert_eq!(MemberSpec::parse("mem:1G"), Ok(MemberSpec::Memory(1 << 30)));
        assert_eq!(
            MemberSpec::parse("disk0.img"),
            Ok(MemberSpec::Path("disk0.img".into()))
        );
        assert!(MemberSpec::parse("mem:lots").is_err());
    }
}
