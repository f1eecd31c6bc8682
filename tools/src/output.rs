//! Output helpers: the two-column table of `-w table`, byte sizes, escaping of keys and values.

use std::io::Write;

use crate::cli::CliError;

/// Writes a FIELD | VALUE table in the style of etcdctl's `-w table`.
pub fn write_table(out: &mut dyn Write, rows: &[(String, String)]) -> Result<(), CliError> {
    let w0 = rows
        .iter()
        .map(|r| r.0.chars().count())
        .max()
        .unwrap_or(0)
        .max(5);
    let w1 = rows
        .iter()
        .map(|r| r.1.chars().count())
        .max()
        .unwrap_or(0)
        .max(5);
    let line = format!("+{}+{}+", "-".repeat(w0 + 2), "-".repeat(w1 + 2));
    writeln!(out, "{line}")?;
    writeln!(out, "| {:<w0$} | {:<w1$} |", "FIELD", "VALUE")?;
    writeln!(out, "{line}")?;
    for (k, v) in rows {
        writeln!(out, "| {k:<w0$} | {v:<w1$} |")?;
    }
    writeln!(out, "{line}")?;
    Ok(())
}

/// Writes a table with a header row and any number of columns, in the style of etcdctl's
/// `-w table` (`snapshot status`: HASH | REVISION | ...): headers centred, cells left-aligned.
pub fn write_grid(
    out: &mut dyn Write,
    headers: &[&str],
    rows: &[Vec<String>],
) -> Result<(), CliError> {
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .chain([h.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line: String = widths
        .iter()
        .map(|w| format!("+{}", "-".repeat(w + 2)))
        .collect::<String>()
        + "+";
    writeln!(out, "{line}")?;
    let head: String = headers
        .iter()
        .zip(&widths)
        .map(|(h, w)| format!("| {h:^w$} "))
        .collect();
    writeln!(out, "{head}|")?;
    writeln!(out, "{line}")?;
    for r in rows {
        let cells: String = widths
            .iter()
            .enumerate()
            .map(|(i, w)| format!("| {:<w$} ", r.get(i).map_or("", String::as_str)))
            .collect();
        writeln!(out, "{cells}|")?;
    }
    writeln!(out, "{line}")?;
    Ok(())
}

/// `1234567` -> `1.2 MiB (1234567 bytes)`.
pub fn bytes(n: u64) -> String {
    if n < 1024 {
        return format!("{n} bytes");
    }
    format!("{} ({n} bytes)", human(n))
}

/// `1 record`, `2 records`.
pub fn count(n: impl Into<u64>, word: &str) -> String {
    let n = n.into();
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

/// `1234567` -> `1.2 MiB`.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Values longer than this are cut in dumps (the full length is shown).
pub const VALUE_PREVIEW_BYTES: usize = 64;

/// Bytes as text: printable ASCII as is, `\` as `\\`, everything else `\xNN`; with `quote`
/// also `"` as `\"` (for text wrapped in double quotes; JSON does its own quoting).
pub fn escape(bytes: &[u8], quote: bool) -> String {
    let mut s = String::with_capacity(bytes.len() + 2);
    for &b in bytes {
        match b {
            b'\\' => s.push_str("\\\\"),
            b'"' if quote => s.push_str("\\\""),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s
}

/// `"key"`: a key in double quotes, escaped.
pub fn quoted(bytes: &[u8]) -> String {
    format!("\"{}\"", escape(bytes, true))
}

/// A value in double quotes, cut after [`VALUE_PREVIEW_BYTES`] with the full length shown:
/// `"abc"` or `"aaaa..."...(1000 bytes)`.
pub fn quoted_value(bytes: &[u8]) -> String {
    if bytes.len() <= VALUE_PREVIEW_BYTES {
        quoted(bytes)
    } else {
        format!(
            "{}...({} bytes)",
            quoted(&bytes[..VALUE_PREVIEW_BYTES]),
            bytes.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_bytes() {
        assert_eq!(quoted(b"foo"), "\"foo\"");
        assert_eq!(quoted(b"a\"b\\c\x00\xff\n"), r#""a\"b\\c\x00\xff\x0a""#);
        assert_eq!(escape(b"a\"b\\", false), r#"a"b\\"#);
        assert_eq!(quoted_value(&[b'x'; 64]), format!("\"{}\"", "x".repeat(64)));
        assert_eq!(
            quoted_value(&[b'x'; 65]),
            format!("\"{}\"...(65 bytes)", "x".repeat(64))
        );
    }

    #[test]
    fn grids() {
        let mut out = Vec::new();
        write_grid(
            &mut out,
            &["HASH", "REVISION"],
            &[vec!["abc".into(), "12345678901".into()]],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "+------+-------------+\n\
             | HASH |  REVISION   |\n\
             +------+-------------+\n\
             | abc  | 12345678901 |\n\
             +------+-------------+\n"
        );
    }

    #[test]
    fn sizes_and_tables() {
        assert_eq!(human(10), "10 B");
        assert_eq!(bytes(10), "10 bytes");
        assert_eq!(count(1u64, "record"), "1 record");
        assert_eq!(count(2u64, "record"), "2 records");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 20), "3.0 MiB (3145728 bytes)");
        let mut out = Vec::new();
        write_table(
            &mut out,
            &[("a".into(), "b".into()), ("long field".into(), "v".into())],
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "+------------+-------+\n\
             | FIELD      | VALUE |\n\
             +------------+-------+\n\
             | a          | b     |\n\
             | long field | v     |\n\
             +------------+-------+\n"
        );
    }
}
