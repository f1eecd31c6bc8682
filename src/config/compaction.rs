//! `--auto-compaction-mode` and `--auto-compaction-retention`, read as etcd 3.4 reads them
//! (`embed.parseCompactionRetention`): a retention that is a whole non-negative number means
//! hours in periodic mode and revisions in revision mode; anything else is a Go duration
//! (`5m`, `1.5h`, `90s`), which revision mode takes as a count of nanoseconds, as etcd
//! does. A retention of 0 turns auto-compaction off.

use std::time::Duration;

/// etcd's modes.
pub(super) const MODE_PERIODIC: &str = "periodic";
pub(super) const MODE_REVISION: &str = "revision";

/// What the two flags ask for: `Ok(None)` when auto-compaction is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Retention {
    Periodic(Duration),
    Revisions(i64),
}

/// Checks `--auto-compaction-mode` (etcd accepts "", periodic and revision).
pub(super) fn parse_mode(text: &str) -> Result<String, String> {
    match text {
        "" | MODE_PERIODIC | MODE_REVISION => Ok(text.to_string()),
        _ => Err(format!(
            "unknown auto-compaction-mode {text:?} (expected {MODE_PERIODIC} or {MODE_REVISION})"
        )),
    }
}

/// etcd's reading of `--auto-compaction-retention` under `mode`.
pub(super) fn parse_retention(mode: &str, text: &str) -> Result<Option<Retention>, String> {
    let retention = match go_atoi(text) {
        Some(n) if n >= 0 => match mode {
            MODE_REVISION => Retention::Revisions(n),
            MODE_PERIODIC => {
                let secs = u64::try_from(n)
                    .ok()
                    .and_then(|h| h.checked_mul(3600))
                    .ok_or("too many hours")?;
                Retention::Periodic(Duration::from_secs(secs))
            }
            // etcd: a number under an empty mode leaves compaction off.
            _ => return Ok(None),
        },
        _ => {
            let nanos = parse_go_duration(text)?;
            if nanos < 0 {
                return Err("a negative retention is not supported".into());
            }
            match mode {
                // etcd converts the duration to a revision count, nanosecond by nanosecond.
                MODE_REVISION => Retention::Revisions(nanos),
                MODE_PERIODIC => Retention::Periodic(Duration::from_nanos(nanos as u64)),
                _ => {
                    if nanos == 0 {
                        return Ok(None);
                    }
                    return Err("unsupported compaction mode \"\": set --auto-compaction-mode to periodic or revision".into());
                }
            }
        }
    };
    let off = matches!(retention, Retention::Periodic(d) if d.is_zero())
        || retention == Retention::Revisions(0);
    Ok(if off { None } else { Some(retention) })
}

/// Go's `strconv.Atoi`: optional sign, decimal digits, fits in an i64.
fn go_atoi(text: &str) -> Option<i64> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Go's `time.ParseDuration`, in nanoseconds: `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+` with units
/// ns, us (µs, μs), ms, s, m, h; "0" alone needs no unit. Errors read as Go's.
pub(super) fn parse_go_duration(text: &str) -> Result<i64, String> {
    let invalid = || format!("time: invalid duration {text:?}");
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(a) => {
                let n = a.bytes().take_while(u8::is_ascii_digit).count();
                a.split_at(n)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid());
        }
        let unit_len = after
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(format!("time: missing unit in duration {text:?}"));
        }
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(format!("time: unknown unit {unit:?} in duration {text:?}")),
        };
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| invalid())?
        };
        let mut value = int.checked_mul(scale).ok_or_else(invalid)?;
        // The fraction, truncated to whole nanoseconds as Go does.
        let mut frac_scale = scale;
        for digit in frac_part.bytes().take(30) {
            frac_scale /= 10;
            value += u128::from(digit - b'0') * frac_scale;
        }
        total = total.checked_add(value).ok_or_else(invalid)?;
        if total > i64::MAX as u128 {
            return Err(invalid());
        }
        rest = after;
    }
    let total = total as i64;
    Ok(if negative { -total } else { total })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let cases: &[(&str, i64)] = &[
            ("0", 0),
            ("5s", 5_000_000_000),
            ("1h", 3_600_000_000_000),
            ("1.5h", 5_400_000_000_000),
            ("1h30m", 5_400_000_000_000),
            ("2m3.5s", 123_500_000_000),
            (".5s", 500_000_000),
            ("1.s", 1_000_000_000),
            ("100ms", 100_000_000),
            ("7us", 7_000),
            ("7\u{b5}s", 7_000),
            ("7\u{3bc}s", 7_000),
            ("3ns", 3),
            ("+2s", 2_000_000_000),
            ("-2s", -2_000_000_000),
            ("1.0000000001s", 1_000_000_000),
        ];
        for (text, nanos) in cases {
            assert_eq!(parse_go_duration(text), Ok(*nanos), "{text}");
        }
        for (text, error) in [
            ("", "time: invalid duration \"\""),
            ("s", "time: invalid duration \"s\""),
            ("1", "time: missing unit in duration \"1\""),
            ("1x", "time: unknown unit \"x\" in duration \"1x\""),
            ("1h2", "time: missing unit in duration \"1h2\""),
            (".s", "time: invalid duration \".s\""),
            ("3000000h", "time: invalid duration \"3000000h\""),
        ] {
            assert_eq!(parse_go_duration(text), Err(error.to_string()), "{text}");
        }
    }

    #[test]
    fn retention_as_etcd_reads_it() {
        let hour = Duration::from_secs(3600);
        let cases: &[(&str, &str, Option<Retention>)] = &[
            ("periodic", "0", None),
            ("periodic", "1", Some(Retention::Periodic(hour))),
            ("periodic", "24", Some(Retention::Periodic(24 * hour))),
            (
                "periodic",
                "5m",
                Some(Retention::Periodic(Duration::from_secs(300))),
            ),
            ("periodic", "1.5h", Some(Retention::Periodic(hour * 3 / 2))),
            ("periodic", "0s", None),
            ("revision", "0", None),
            ("revision", "1000", Some(Retention::Revisions(1000))),
            // etcd's quirk: a duration in revision mode is a count of nanoseconds.
            ("revision", "1s", Some(Retention::Revisions(1_000_000_000))),
            // etcd: a number with no mode leaves compaction off.
            ("", "5", None),
            ("", "0", None),
        ];
        for (mode, text, want) in cases {
            assert_eq!(parse_retention(mode, text), Ok(*want), "{mode} {text}");
        }
        assert!(parse_retention("", "5m")
            .unwrap_err()
            .contains("unsupported compaction mode"));
        assert!(parse_retention("periodic", "-1")
            .unwrap_err()
            .contains("missing unit"));
        assert!(parse_retention("periodic", "-1h")
            .unwrap_err()
            .contains("negative"));
        assert!(parse_retention("periodic", "abc")
            .unwrap_err()
            .contains("invalid duration"));
        assert!(parse_mode("daily")
            .unwrap_err()
            .contains("unknown auto-compaction-mode \"daily\""));
        for mode in ["", "periodic", "revision"] {
            assert_eq!(parse_mode(mode).as_deref(), Ok(mode));
        }
    }
}
