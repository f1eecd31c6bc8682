//! Command-line plumbing: the error type that decides the exit code, and a small flag parser
//! (`--flag value`, `--flag=value`, `-w value`, `-w=value`).

use std::fmt;

/// Why a command did not succeed; decides the exit code.
#[derive(Debug)]
pub enum CliError {
    /// Bad command line: exit 2, with a pointer to the usage text.
    Usage(String),
    /// A failed check or an operation that could not be done: exit 1.
    Failed(String),
    /// stdout was closed by the reader (`corekvutl wal dump | head`): stop quietly.
    BrokenPipe,
}

impl CliError {
    pub fn failed(msg: impl Into<String>) -> CliError {
        CliError::Failed(msg.into())
    }

    pub fn usage(msg: impl Into<String>) -> CliError {
        CliError::Usage(msg.into())
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(m) | CliError::Failed(m) => f.write_str(m),
            CliError::BrokenPipe => f.write_str("broken pipe"),
        }
    }
}

impl From<std::io::Error> for CliError {
    /// Only for writes to stdout: a closed pipe ends the command quietly.
    fn from(e: std::io::Error) -> CliError {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            CliError::BrokenPipe
        } else {
            CliError::Failed(format!("writing output: {e}"))
        }
    }
}

/// One flag a command accepts.
#[derive(Clone, Copy, Debug)]
pub struct Flag {
    pub long: &'static str,
    pub short: Option<char>,
    /// Placeholder for the value in messages; `None` for a boolean switch.
    pub value: Option<&'static str>,
}

pub const fn flag(long: &'static str, value: &'static str) -> Flag {
    Flag {
        long,
        short: None,
        value: Some(value),
    }
}

/// A boolean switch (`--flag`, no value).
pub const fn switch(long: &'static str) -> Flag {
    Flag {
        long,
        short: None,
        value: None,
    }
}

pub const WRITE_OUT: Flag = Flag {
    long: "write-out",
    short: Some('w'),
    value: Some("FORMAT"),
};

/// Parsed flags of one command (the last occurrence of a flag wins, as with etcd's tools).
#[derive(Debug, Default)]
pub struct Parsed {
    values: Vec<(&'static str, Option<String>)>,
    /// Arguments that are not flags, in order (only [`parse_with_args`] accepts them).
    pub args: Vec<String>,
}

impl Parsed {
    /// Whether a switch (or any flag) was given.
    pub fn has(&self, long: &str) -> bool {
        self.values.iter().any(|(name, _)| *name == long)
    }

    pub fn get(&self, long: &str) -> Option<&str> {
        self.values
            .iter()
            .rev()
            .find(|(name, _)| *name == long)
            .and_then(|(_, v)| v.as_deref())
    }

    /// A non-negative integer flag.
    pub fn u64(&self, long: &str) -> Result<Option<u64>, CliError> {
        match self.get(long) {
            None => Ok(None),
            Some(v) => v.parse::<u64>().map(Some).map_err(|_| {
                CliError::usage(format!("--{long} needs a non-negative integer, got {v:?}"))
            }),
        }
    }

    /// `-w/--write-out`, checked against the formats the command supports (the first is the
    /// default).
    pub fn write_out(&self, allowed: &[&'static str]) -> Result<&'static str, CliError> {
        match self.get(WRITE_OUT.long) {
            None => Ok(allowed[0]),
            Some(v) => allowed.iter().copied().find(|a| *a == v).ok_or_else(|| {
                CliError::usage(format!(
                    "unsupported output format {v:?} for this command (supported: {})",
                    allowed.join(", ")
                ))
            }),
        }
    }
}

/// Parses `args` (everything after the command words) against `spec`. Positional
/// arguments are refused: for commands that take flags only.
pub fn parse(args: &[String], spec: &[Flag]) -> Result<Parsed, CliError> {
    parse_with_args(args, spec, 0)
}

/// [`parse`] for commands that also take up to `max_args` positional arguments (a file),
/// before, between or after the flags.
pub fn parse_with_args(
    args: &[String],
    spec: &[Flag],
    max_args: usize,
) -> Result<Parsed, CliError> {
    let mut out = Parsed::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        let (flag, inline) = if let Some(rest) = arg.strip_prefix("--") {
            let (name, inline) = split_inline(rest);
            let flag = spec
                .iter()
                .find(|f| f.long == name)
                .ok_or_else(|| CliError::usage(format!("unknown flag --{name}")))?;
            (flag, inline)
        } else if let Some(rest) = arg.strip_prefix('-').filter(|r| !r.is_empty()) {
            let (name, inline) = split_inline(rest);
            let mut chars = name.chars();
            let (Some(c), None) = (chars.next(), chars.next()) else {
                return Err(CliError::usage(format!(
                    "unknown flag {arg} (long flags take two dashes)"
                )));
            };
            let flag = spec
                .iter()
                .find(|f| f.short == Some(c))
                .ok_or_else(|| CliError::usage(format!("unknown flag -{c}")))?;
            (flag, inline)
        } else if out.args.len() < max_args {
            out.args.push(arg.clone());
            continue;
        } else {
            return Err(CliError::usage(format!("unexpected argument {arg:?}")));
        };
        let value = match (flag.value, inline) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(CliError::usage(format!("--{} takes no value", flag.long)))
            }
            (Some(_), Some(v)) => Some(v.to_string()),
            (Some(placeholder), None) => {
                let v = args.get(i).ok_or_else(|| {
                    CliError::usage(format!("--{} needs a value ({placeholder})", flag.long))
                })?;
                i += 1;
                Some(v.clone())
            }
        };
        if let Some(v) = &value {
            if v.is_empty() {
                return Err(CliError::usage(format!(
                    "--{} needs a non-empty value",
                    flag.long
                )));
            }
        }
        out.values.push((flag.long, value));
    }
    Ok(out)
}

fn split_inline(s: &str) -> (&str, Option<&str>) {
    match s.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (s, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    const SPEC: &[Flag] = &[flag("data-dir", "DIR"), flag("limit", "N"), WRITE_OUT];

    #[test]
    fn parses_long_short_and_inline_values() {
        let p = parse(&args(&["--data-dir", "d", "-w", "json", "--limit=5"]), SPEC).unwrap();
        assert_eq!(p.get("data-dir"), Some("d"));
        assert_eq!(p.write_out(&["table", "json"]).unwrap(), "json");
        assert_eq!(p.u64("limit").unwrap(), Some(5));
        let p = parse(&args(&["-w=table", "--data-dir=x", "--data-dir=y"]), SPEC).unwrap();
        assert_eq!(p.get("data-dir"), Some("y"), "last one wins");
        assert_eq!(p.write_out(&["table", "json"]).unwrap(), "table");
        assert_eq!(
            parse(&[], SPEC)
                .unwrap()
                .write_out(&["simple", "json"])
                .unwrap(),
            "simple"
        );
    }

    #[test]
    fn refuses_bad_command_lines() {
        for bad in [
            &["--nope"][..],
            &["--data-dir"],
            &["--data-dir="],
            &["stray"],
            &["-x", "1"],
            &["-ww"],
        ] {
            assert!(
                matches!(parse(&args(bad), SPEC), Err(CliError::Usage(_))),
                "{bad:?}"
            );
        }
        let p = parse(&args(&["--limit", "-3", "-w", "yaml"]), SPEC).unwrap();
        assert!(matches!(p.u64("limit"), Err(CliError::Usage(_))));
        assert!(matches!(
            p.write_out(&["table", "json"]),
            Err(CliError::Usage(_))
        ));
    }

    #[test]
    fn positional_arguments_and_switches() {
        const SNAP: &[Flag] = &[
            flag("data-dir", "DIR"),
            switch("skip-hash-check"),
            WRITE_OUT,
        ];
        let p = parse_with_args(
            &args(&["--skip-hash-check", "f.db", "--data-dir", "d"]),
            SNAP,
            1,
        )
        .unwrap();
        assert_eq!(p.args, vec!["f.db".to_string()]);
        assert!(p.has("skip-hash-check"));
        assert_eq!(p.get("skip-hash-check"), None);
        assert_eq!(p.get("data-dir"), Some("d"));
        let p = parse_with_args(&args(&["f.db"]), SNAP, 1).unwrap();
        assert!(!p.has("skip-hash-check"));
        for bad in [&["a", "b"][..], &["--skip-hash-check=true"]] {
            assert!(
                matches!(
                    parse_with_args(&args(bad), SNAP, 1),
                    Err(CliError::Usage(_))
                ),
                "{bad:?}"
            );
        }
    }
}
