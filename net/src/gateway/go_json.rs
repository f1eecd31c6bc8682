//! The syntax errors Go's `encoding/json` reports, for the bodies etcd's gateway would
//! reject: clients and tests see the same text from corekv as from etcd.
//!
//! A state machine after the JSON grammar (the same states Go's scanner has), run over
//! the bytes of one value. Only the first error matters, and it is found in one pass.

/// Deepest nesting Go's scanner accepts.
const DEPTH_MAX: usize = 10_000;

/// Where the scanner is inside a value.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    BeginValue,
    BeginValueOrEmpty,
    BeginStringOrEmpty,
    BeginString,
    EndValue,
    /// A complete top-level value was read.
    EndTop,
    InString,
    InStringEsc,
    /// `n` hex digits of a `\u` escape still to come.
    InStringEscU(u8),
    Neg,
    Zero,
    Digits,
    Dot,
    DotDigits,
    E,
    ESign,
    EDigits,
    /// The rest of a literal (`rue`, `alse`, `ull`), the index reached, and its name.
    Literal(&'static [u8], usize, &'static str),
}

/// What an open object or array expects next.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    ObjectKey,
    ObjectValue,
    ArrayValue,
}

/// How a scan ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// A complete value (what follows it is not looked at).
    Complete,
    /// The input ended inside the value.
    Truncated,
    /// Go's `SyntaxError` text.
    Error(String),
}

/// Scans one JSON value at the start of `data` (after white space), as Go's decoder does.
pub fn scan_value(data: &[u8]) -> Scan {
    let mut state = State::BeginValue;
    let mut open: Vec<Open> = Vec::new();
    for &c in data {
        match step(&mut state, &mut open, c) {
            _ if state == State::EndTop => return Scan::Complete,
            Ok(()) => {}
            Err(e) => return Scan::Error(e),
        }
    }
    // A number ends only at the next byte: give it one.
    if matches!(
        state,
        State::Zero | State::Digits | State::DotDigits | State::EDigits
    ) && open.is_empty()
    {
        return Scan::Complete;
    }
    Scan::Truncated
}

/// The error `json.Unmarshal` gives for `data` as a whole value (`None`: valid JSON).
pub fn check_valid(data: &[u8]) -> Option<String> {
    let mut state = State::BeginValue;
    let mut open: Vec<Open> = Vec::new();
    for &c in data {
        if state == State::EndTop {
            if !is_space(c) {
                return Some(invalid(c, "after top-level value"));
            }
            continue;
        }
        if let Err(e) = step(&mut state, &mut open, c) {
            return Some(e);
        }
    }
    if state == State::EndTop {
        return None;
    }
    // Go's scanner.eof(): one more space through the machine finishes a number, or names
    // what a half-read literal or number lacked.
    if let Err(e) = step(&mut state, &mut open, b' ') {
        return Some(e);
    }
    if state == State::EndTop {
        None
    } else {
        Some("unexpected end of JSON input".into())
    }
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

/// Go's `"invalid character " + quoteChar(c) + " " + context`.
fn invalid(c: u8, context: &str) -> String {
    format!("invalid character {} {context}", quote_char(c))
}

/// Go's `quoteChar`: the byte as a rune (Latin-1), quoted like `strconv.Quote` does, in
/// single quotes.
fn quote_char(c: u8) -> String {
    match c {
        b'\'' => r"'\''".into(),
        b'"' => "'\"'".into(),
        b'\\' => r"'\\'".into(),
        0x07 => r"'\a'".into(),
        0x08 => r"'\b'".into(),
        0x0c => r"'\f'".into(),
        b'\n' => r"'\n'".into(),
        b'\r' => r"'\r'".into(),
        b'\t' => r"'\t'".into(),
        0x0b => r"'\v'".into(),
        0x00..=0x1f | 0x7f => format!(r"'\x{c:02x}'"),
        0x80..=0xa0 | 0xad => format!(r"'\u{c:04x}'"),
        _ => format!("'{}'", char::from(c)),
    }
}

/// One byte through the scanner.
fn step(state: &mut State, open: &mut Vec<Open>, c: u8) -> Result<(), String> {
    match *state {
        State::BeginValueOrEmpty if c == b']' => return end_container(state, open),
        State::BeginValueOrEmpty | State::BeginValue => {
            if is_space(c) {
                return Ok(());
            }
            *state = match c {
                b'{' => return push(state, open, Open::ObjectKey, State::BeginStringOrEmpty),
                b'[' => return push(state, open, Open::ArrayValue, State::BeginValueOrEmpty),
                b'"' => State::InString,
                b'-' => State::Neg,
                b'0' => State::Zero,
                b'1'..=b'9' => State::Digits,
                b't' => State::Literal(b"rue", 0, "true"),
                b'f' => State::Literal(b"alse", 0, "false"),
                b'n' => State::Literal(b"ull", 0, "null"),
                _ => return Err(invalid(c, "looking for beginning of value")),
            };
        }
        State::BeginStringOrEmpty if c == b'}' => {
            open.pop();
            return end_value_done(state, open);
        }
        State::BeginStringOrEmpty | State::BeginString => {
            if is_space(c) {
                return Ok(());
            }
            if c != b'"' {
                return Err(invalid(c, "looking for beginning of object key string"));
            }
            *state = State::InString;
        }
        State::EndValue => return end_value(state, open, c),
        State::EndTop => {}
        State::InString => match c {
            b'"' => return end_value_done(state, open),
            b'\\' => *state = State::InStringEsc,
            0x00..=0x1f => return Err(invalid(c, "in string literal")),
            _ => {}
        },
        State::InStringEsc => match c {
            b'b' | b'f' | b'n' | b'r' | b't' | b'\\' | b'/' | b'"' => *state = State::InString,
            b'u' => *state = State::InStringEscU(4),
            _ => return Err(invalid(c, "in string escape code")),
        },
        State::InStringEscU(left) => {
            if !c.is_ascii_hexdigit() {
                return Err(invalid(c, r"in \u hexadecimal character escape"));
            }
            *state = if left == 1 {
                State::InString
            } else {
                State::InStringEscU(left - 1)
            };
        }
        State::Neg => match c {
            b'0' => *state = State::Zero,
            b'1'..=b'9' => *state = State::Digits,
            _ => return Err(invalid(c, "in numeric literal")),
        },
        State::Digits if c.is_ascii_digit() => {}
        State::Digits | State::Zero => match c {
            b'.' => *state = State::Dot,
            b'e' | b'E' => *state = State::E,
            _ => return end_value(state, open, c),
        },
        State::Dot => {
            if !c.is_ascii_digit() {
                return Err(invalid(c, "after decimal point in numeric literal"));
            }
            *state = State::DotDigits;
        }
        State::DotDigits => match c {
            b'0'..=b'9' => {}
            b'e' | b'E' => *state = State::E,
            _ => return end_value(state, open, c),
        },
        State::E if c == b'+' || c == b'-' => *state = State::ESign,
        State::E | State::ESign => {
            if !c.is_ascii_digit() {
                return Err(invalid(c, "in exponent of numeric literal"));
            }
            *state = State::EDigits;
        }
        State::EDigits if c.is_ascii_digit() => {}
        State::EDigits => return end_value(state, open, c),
        State::Literal(rest, at, name) => {
            if c != rest[at] {
                let want = char::from(rest[at]);
                return Err(invalid(
                    c,
                    &format!("in literal {name} (expecting '{want}')"),
                ));
            }
            if at + 1 == rest.len() {
                return end_value_done(state, open);
            }
            *state = State::Literal(rest, at + 1, name);
        }
    }
    Ok(())
}

fn push(state: &mut State, open: &mut Vec<Open>, what: Open, next: State) -> Result<(), String> {
    if open.len() >= DEPTH_MAX {
        let c = if what == Open::ObjectKey { b'{' } else { b'[' };
        return Err(invalid(c, "exceeded max depth"));
    }
    open.push(what);
    *state = next;
    Ok(())
}

/// A value just ended with its own last byte (a string's quote, a literal, a bracket).
fn end_value_done(state: &mut State, open: &[Open]) -> Result<(), String> {
    *state = if open.is_empty() {
        State::EndTop
    } else {
        State::EndValue
    };
    Ok(())
}

fn end_container(state: &mut State, open: &mut Vec<Open>) -> Result<(), String> {
    open.pop();
    end_value_done(state, open)
}

/// The byte after a value: a separator, a closing bracket, or white space.
fn end_value(state: &mut State, open: &mut Vec<Open>, c: u8) -> Result<(), String> {
    let Some(top) = open.last_mut() else {
        *state = State::EndTop;
        // json.Unmarshal refuses anything but space after the value; a decoder stops at
        // the value and never sees this (scan_value treats it as the value's end).
        if !is_space(c) {
            return Err(invalid(c, "after top-level value"));
        }
        return Ok(());
    };
    if is_space(c) {
        *state = State::EndValue;
        return Ok(());
    }
    match (*top, c) {
        (Open::ObjectKey, b':') => {
            *top = Open::ObjectValue;
            *state = State::BeginValue;
        }
        (Open::ObjectKey, _) => return Err(invalid(c, "after object key")),
        (Open::ObjectValue, b',') => {
            *top = Open::ObjectKey;
            *state = State::BeginString;
        }
        (Open::ObjectValue, b'}') => return end_container(state, open),
        (Open::ObjectValue, _) => return Err(invalid(c, "after object key:value pair")),
        (Open::ArrayValue, b',') => *state = State::BeginValue,
        (Open::ArrayValue, b']') => return end_container(state, open),
        (Open::ArrayValue, _) => return Err(invalid(c, "after array element")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (input, what Go's json.Decoder reports for it). The first rows were read from a real
    /// etcd 3.4's gateway; the others follow Go's scanner messages.
    const DECODER: &[(&str, Option<&str>)] = &[
        (
            "xyz",
            Some("invalid character 'x' looking for beginning of value"),
        ),
        ("{\"key\":", None),
        ("{\"key\":\"a\"", None),
        ("{\"key\":\"a\"}", None),
        ("{\"a\" 1}", Some("invalid character '1' after object key")),
        (
            "{\"a\":1 \"b\"}",
            Some("invalid character '\"' after object key:value pair"),
        ),
        (
            "{1:2}",
            Some("invalid character '1' looking for beginning of object key string"),
        ),
        ("[1 2]", Some("invalid character '2' after array element")),
        (
            "[1,]",
            Some("invalid character ']' looking for beginning of value"),
        ),
        (
            "{\"a\":tru}",
            Some("invalid character '}' in literal true (expecting 'e')"),
        ),
        (
            "{\"a\":nul}",
            Some("invalid character '}' in literal null (expecting 'l')"),
        ),
        (
            "{\"a\":fx}",
            Some("invalid character 'x' in literal false (expecting 'a')"),
        ),
        (
            "{\"a\":-x}",
            Some("invalid character 'x' in numeric literal"),
        ),
        (
            "{\"a\":1.x}",
            Some("invalid character 'x' after decimal point in numeric literal"),
        ),
        (
            "{\"a\":1ex}",
            Some("invalid character 'x' in exponent of numeric literal"),
        ),
        (
            "{\"a\":\"\\x\"}",
            Some("invalid character 'x' in string escape code"),
        ),
        (
            "{\"a\":\"\\u12g4\"}",
            Some("invalid character 'g' in \\u hexadecimal character escape"),
        ),
        (
            "{\"a\":\"\n\"}",
            Some("invalid character '\\n' in string literal"),
        ),
        (
            "{\"a\":'b'}",
            Some("invalid character '\\'' looking for beginning of value"),
        ),
        (
            "{\"a\":\\}",
            Some("invalid character '\\\\' looking for beginning of value"),
        ),
        (
            "\u{1}",
            Some("invalid character '\\x01' looking for beginning of value"),
        ),
        ("[[[]]] x", None),
        ("12", None),
    ];

    #[test]
    fn decoder_errors_read_as_go_writes_them() {
        for (input, want) in DECODER {
            let got = match scan_value(input.as_bytes()) {
                Scan::Error(e) => Some(e),
                Scan::Complete | Scan::Truncated => None,
            };
            assert_eq!(got.as_deref(), *want, "{input:?}");
        }
        assert_eq!(scan_value(b"{\"key\":"), Scan::Truncated);
        assert_eq!(scan_value(b"  [1, {\"a\": [true]}]"), Scan::Complete);
        assert_eq!(scan_value(b"-1.5e+3"), Scan::Complete);
    }

    #[test]
    fn quoted_numbers_are_checked_as_json_unmarshal_does() {
        // jsonpb unquotes an int64 and hands the text to json.Unmarshal.
        let cases: &[(&str, Option<&str>)] = &[
            (
                "abc",
                Some("invalid character 'a' looking for beginning of value"),
            ),
            ("12x", Some("invalid character 'x' after top-level value")),
            ("", Some("unexpected end of JSON input")),
            ("1.5", None),
            ("-", Some("invalid character ' ' in numeric literal")),
            (
                "1.",
                Some("invalid character ' ' after decimal point in numeric literal"),
            ),
            (
                "1e+",
                Some("invalid character ' ' in exponent of numeric literal"),
            ),
            (
                "tru",
                Some("invalid character ' ' in literal true (expecting 'e')"),
            ),
            ("\"ab", Some("unexpected end of JSON input")),
            (
                "+5",
                Some("invalid character '+' looking for beginning of value"),
            ),
            ("007", Some("invalid character '0' after top-level value")),
            (" 7 ", None),
        ];
        for (input, want) in cases {
            assert_eq!(check_valid(input.as_bytes()).as_deref(), *want, "{input:?}");
        }
    }

    #[test]
    fn characters_are_quoted_as_go_quotes_them() {
        assert_eq!(quote_char(b'a'), "'a'");
        assert_eq!(quote_char(0x7f), r"'\x7f'");
        assert_eq!(quote_char(0x85), r"'\u0085'");
        assert_eq!(quote_char(0xe9), "'é'");
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = "[".repeat(DEPTH_MAX + 1);
        assert_eq!(
            scan_value(deep.as_bytes()),
            Scan::Error("invalid character '[' exceeded max depth".into())
        );
    }
}
