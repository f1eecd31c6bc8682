//! JSON as etcd 3.4's gateway reads and writes it (grpc-gateway's JSONPb with OrigName):
//! field names are the .proto names (`create_revision`, but `grantedTTL`, `peerURLs`), 64-bit
//! integers are strings, bytes are standard base64, enums are their names, and fields at
//! their zero value are left out. Input takes the .proto name or its lowerCamelCase form,
//! integers as numbers or strings, enums as names or numbers; unknown fields are ignored.

use serde_json::{Map, Value};

/// A request body that does not decode (answered as gRPC InvalidArgument, like etcd).
#[derive(Debug)]
pub struct BadInput(pub String);

pub type In<T> = Result<T, BadInput>;

// ---------------------------------------------------------------- base64

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding, as Go's encoding/json writes `[]byte`.
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(B64[(n >> 18) as usize & 63] as char);
        out.push(B64[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            B64[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            B64[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

fn b64_value(c: u8) -> Option<u32> {
    B64.iter().position(|&x| x == c).map(|p| p as u32)
}

/// Standard base64 with padding, as Go's encoding/json reads `[]byte` (it skips `\r` and
/// `\n`); the error text is Go's.
pub fn base64_decode(text: &str) -> In<Vec<u8>> {
    let bytes: Vec<(usize, u8)> = text
        .bytes()
        .enumerate()
        .filter(|&(_, c)| c != b'\r' && c != b'\n')
        .collect();
    let illegal = |at: usize| BadInput(format!("illegal base64 data at input byte {at}"));
    if !bytes.len().is_multiple_of(4) {
        // Go reports the position where the incomplete quantum ends.
        let at = bytes.len() - bytes.len() % 4;
        let at = bytes.get(at).map_or(text.len(), |&(i, _)| i);
        // A character that is not base64 at all is reported where it stands.
        if let Some(&(i, _)) = bytes
            .iter()
            .find(|&&(_, c)| c != b'=' && b64_value(c).is_none())
        {
            return Err(illegal(i));
        }
        return Err(illegal(at));
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for (q, quad) in bytes.chunks(4).enumerate() {
        let last = q == bytes.len() / 4 - 1;
        let mut n = 0u32;
        let mut pad = 0;
        for (j, &(i, c)) in quad.iter().enumerate() {
            if c == b'=' && last && j >= 2 {
                pad += 1;
                n <<= 6;
                continue;
            }
            if pad > 0 {
                return Err(illegal(i));
            }
            n = (n << 6) | b64_value(c).ok_or_else(|| illegal(i))?;
        }
        out.push((n >> 16) as u8);
        if pad < 2 {
            out.push((n >> 8) as u8);
        }
        if pad < 1 {
            out.push(n as u8);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------- output

/// JSON text already rendered, fields in .proto order (as Go's jsonpb writes them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Json(pub String);

impl Json {
    /// A JSON string.
    pub fn string(s: &str) -> Json {
        Json(Value::String(s.to_string()).to_string())
    }
}

/// A JSON object under construction; every setter leaves out zero values.
#[derive(Default)]
pub struct Obj(String);

impl Obj {
    pub fn new() -> Obj {
        Obj(String::from("{"))
    }
    fn field(mut self, name: &str, rendered: &str) -> Obj {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        self.0
            .push_str(&Value::String(name.to_string()).to_string());
        self.0.push(':');
        self.0.push_str(rendered);
        self
    }
    pub fn i64(self, name: &str, v: i64) -> Obj {
        if v == 0 {
            return self;
        }
        self.field(name, &format!("\"{v}\""))
    }
    pub fn u64(self, name: &str, v: u64) -> Obj {
        if v == 0 {
            return self;
        }
        self.field(name, &format!("\"{v}\""))
    }
    /// 32-bit integers are JSON numbers.
    pub fn u32(self, name: &str, v: u32) -> Obj {
        if v == 0 {
            return self;
        }
        self.field(name, &v.to_string())
    }
    pub fn i32(self, name: &str, v: i32) -> Obj {
        if v == 0 {
            return self;
        }
        self.field(name, &v.to_string())
    }
    pub fn bool(self, name: &str, v: bool) -> Obj {
        if !v {
            return self;
        }
        self.field(name, "true")
    }
    pub fn str(self, name: &str, v: &str) -> Obj {
        if v.is_empty() {
            return self;
        }
        self.field(name, &Json::string(v).0)
    }
    pub fn bytes(self, name: &str, v: &[u8]) -> Obj {
        if v.is_empty() {
            return self;
        }
        self.field(name, &format!("\"{}\"", base64_encode(v)))
    }
    /// An enum by its name; the zero value is left out.
    pub fn enumeration(self, name: &str, v: i32, names: &[&str]) -> Obj {
        if v == 0 {
            return self;
        }
        match usize::try_from(v).ok().and_then(|i| names.get(i)) {
            Some(n) => self.str(name, n),
            None => self.i32(name, v),
        }
    }
    /// A message field: present (even if empty) when set.
    pub fn msg(self, name: &str, v: Option<Json>) -> Obj {
        match v {
            Some(v) => self.field(name, &v.0),
            None => self,
        }
    }
    pub fn list(self, name: &str, v: Vec<Json>) -> Obj {
        if v.is_empty() {
            return self;
        }
        let items: Vec<String> = v.into_iter().map(|j| j.0).collect();
        self.field(name, &format!("[{}]", items.join(",")))
    }
    pub fn done(mut self) -> Json {
        self.0.push('}');
        Json(self.0)
    }
}

// ---------------------------------------------------------------- input

/// A request object as sent; fields looked up by .proto name or its lowerCamelCase form.
pub struct Input<'a>(Option<&'a Map<String, Value>>);

/// lowerCamelCase of a .proto field name, as protoc derives json_name.
fn camel(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn type_error(found: &Value, go_type: &str) -> BadInput {
    let what = match found {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    BadInput(format!(
        "json: cannot unmarshal {what} into Go value of type {go_type}"
    ))
}

impl<'a> Input<'a> {
    /// The top-level body (or a nested message).
    pub fn of(v: &'a Value) -> In<Input<'a>> {
        match v {
            Value::Object(m) => Ok(Input(Some(m))),
            Value::Null => Ok(Input(None)),
            other => Err(type_error(other, "map[string]json.RawMessage")),
        }
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        let m = self.0?;
        let v = m.get(name).or_else(|| m.get(&camel(name)))?;
        (!v.is_null()).then_some(v)
    }

    pub fn i64(&self, name: &str) -> In<i64> {
        match self.get(name) {
            None => Ok(0),
            Some(v) => int(v, "int64"),
        }
    }
    pub fn u64(&self, name: &str) -> In<u64> {
        match self.get(name) {
            None => Ok(0),
            Some(v) => int(v, "uint64"),
        }
    }
    pub fn bool(&self, name: &str) -> In<bool> {
        match self.get(name) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(type_error(other, "bool")),
        }
    }
    pub fn string(&self, name: &str) -> In<String> {
        match self.get(name) {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(type_error(other, "string")),
        }
    }
    pub fn bytes(&self, name: &str) -> In<Vec<u8>> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(Value::String(s)) => base64_decode(s),
            Some(other) => Err(type_error(other, "[]uint8")),
        }
    }
    pub fn strings(&self, name: &str) -> In<Vec<String>> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(type_error(other, "string")),
                })
                .collect(),
            Some(other) => Err(type_error(other, "[]string")),
        }
    }
    /// An enum given by name (one of `names`, indexed by value) or by number.
    pub fn enumeration(&self, name: &str, names: &[&str], go_type: &str) -> In<i32> {
        match self.get(name) {
            None => Ok(0),
            Some(v) => enum_value(v, names, go_type),
        }
    }
    pub fn enums(&self, name: &str, names: &[&str], go_type: &str) -> In<Vec<i32>> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| enum_value(v, names, go_type))
                .collect(),
            Some(other) => Err(type_error(other, &format!("[]{go_type}"))),
        }
    }
    /// A nested message, if present.
    pub fn msg(&self, name: &str) -> In<Option<Input<'a>>> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => Input::of(v).map(Some),
        }
    }
    /// A repeated message field.
    pub fn msgs(&self, name: &str) -> In<Vec<Input<'a>>> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items.iter().map(Input::of).collect(),
            Some(other) => Err(type_error(other, "[]json.RawMessage")),
        }
    }
    /// Whether the field is present at all (oneof members).
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

/// An integer as a JSON number or a string holding one (jsonpb takes both).
fn int<T: std::str::FromStr + TryFrom<i128>>(v: &Value, go_type: &str) -> In<T> {
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => return Err(type_error(other, go_type)),
    };
    // jsonpb unquotes the string and hands its text to json.Unmarshal, whose syntax check
    // speaks first ("+5" and "007" are not JSON numbers; " 5" is).
    if let Value::String(s) = v {
        if let Some(go) = super::go_json::check_valid(s.as_bytes()) {
            return Err(BadInput(go));
        }
    }
    let text = text.trim_matches(|c| matches!(c, ' ' | '\t' | '\r' | '\n'));
    if let Ok(x) = text.parse::<T>() {
        return Ok(x);
    }
    Err(BadInput(format!(
        "json: cannot unmarshal number {text} into Go value of type {go_type}"
    )))
}

fn enum_value(v: &Value, names: &[&str], go_type: &str) -> In<i32> {
    match v {
        Value::String(s) => names
            .iter()
            .position(|n| n == s)
            .map(|p| p as i32)
            .ok_or_else(|| BadInput(format!("unknown value \"{s}\" for enum {go_type}"))),
        Value::Number(_) => int::<i32>(v, go_type),
        other => Err(type_error(other, go_type)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_rejects_what_go_rejects() {
        for data in [&b""[..], b"f", b"fo", b"foo", b"foob", b"\x00\xff\x10"] {
            let text = base64_encode(data);
            assert_eq!(base64_decode(&text).unwrap(), data, "{text}");
        }
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"w"), "dw==");
        assert_eq!(
            base64_decode("Zm9v!").unwrap_err().0,
            "illegal base64 data at input byte 4"
        );
        assert!(base64_decode("Zm9").is_err());
        assert!(base64_decode("Z=9v").is_err());
    }

    #[test]
    fn output_keeps_field_order_and_leaves_out_zero_values() {
        let inner = Obj::new().i64("revision", 3).done();
        let out = Obj::new()
            .msg("header", Some(inner))
            .i64("zero", 0)
            .bytes("key", b"foo")
            .bool("more", false)
            .i64("count", -1)
            .u32("hash", 7)
            .enumeration("sort_order", 2, &["NONE", "ASCEND", "DESCEND"])
            .list("keys", vec![Json::string("a\"b")])
            .done();
        assert_eq!(
            out.0,
            r#"{"header":{"revision":"3"},"key":"Zm9v","count":"-1","hash":7,"sort_order":"DESCEND","keys":["a\"b"]}"#
        );
        assert_eq!(Obj::new().done().0, "{}");
    }

    #[test]
    fn input_takes_snake_or_camel_and_numbers_or_strings() {
        let v: Value =
            serde_json::from_str(r#"{"range_end":"YQ==","countOnly":true,"limit":"5"}"#).unwrap();
        let i = Input::of(&v).unwrap();
        assert_eq!(i.bytes("range_end").unwrap(), b"a");
        assert!(i.bool("count_only").unwrap());
        assert_eq!(i.i64("limit").unwrap(), 5);
        assert_eq!(i.i64("revision").unwrap(), 0);
        let bad: Value = serde_json::from_str(r#"{"limit":1.5}"#).unwrap();
        assert!(Input::of(&bad).unwrap().i64("limit").is_err());
    }
}
