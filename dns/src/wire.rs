//! DNS messages on the wire (RFC 1035 section 4.1): queries out, responses in.
//!
//! Every multi-byte field is big-endian and read with explicit bounds checks: a short,
//! truncated or hostile message is an error, never a panic or an unbounded loop.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Record types this resolver asks for.
pub(crate) const TYPE_A: u16 = 1;
pub(crate) const TYPE_AAAA: u16 = 28;
pub(crate) const TYPE_SRV: u16 = 33;
const CLASS_IN: u16 = 1;

const HEADER_LEN: usize = 12;
/// Answers read from one message; the rest are ignored (discovery needs a handful).
pub(crate) const ANSWERS_MAX: usize = 256;
/// Questions a response may echo (we send one; anything above a few is garbage).
const QUESTIONS_MAX: usize = 4;
/// Compression pointers followed while reading one name: a pointer loop ends here.
const POINTER_JUMPS_MAX: usize = 64;
/// RFC 1035 limits: a label is at most 63 bytes, a whole name at most 255.
const LABEL_LEN_MAX: usize = 63;
const NAME_LEN_MAX: usize = 255;

/// Response codes that matter to a stub resolver.
pub(crate) const RCODE_OK: u8 = 0;
pub(crate) const RCODE_NXDOMAIN: u8 = 3;

/// A malformed message or a name that cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WireError(pub(crate) String);

fn err<T>(why: impl Into<String>) -> Result<T, WireError> {
    Err(WireError(why.into()))
}

/// One SRV record's data (RFC 2782). `target` keeps DNS's trailing dot, as Go's resolver
/// reports it (etcd trims it when it builds URLs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
}

/// The data of an answer record of a type this resolver understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rdata {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Srv(Srv),
}

/// The parts of a response a stub resolver needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    pub(crate) id: u16,
    /// TC bit: the answer did not fit; ask again over TCP. Nothing after the header is
    /// parsed in that case.
    pub(crate) truncated: bool,
    pub(crate) rcode: u8,
    /// The first question, as echoed: `(name, type)`.
    pub(crate) question: Option<(String, u16)>,
    /// Class IN answers of the types in [`Rdata`], in message order (at most
    /// [`ANSWERS_MAX`]); other records (CNAME, ...) are skipped.
    pub(crate) answers: Vec<Rdata>,
}

/// A recursive query (RD set) for `name` (absolute or not; a trailing dot is implied).
pub(crate) fn encode_query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::with_capacity(HEADER_LEN + name.len() + 6);
    out.extend_from_slice(&id.to_be_bytes());
    // Flags: a standard query with recursion desired.
    out.extend_from_slice(&0x0100u16.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    out.extend_from_slice(&[0; 6]); // ANCOUNT, NSCOUNT, ARCOUNT
    encode_name(name, &mut out)?;
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(out)
}

fn encode_name(name: &str, out: &mut Vec<u8>) -> Result<(), WireError> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    let mut encoded_len = 1; // the root label
    if !trimmed.is_empty() {
        for label in trimmed.split('.') {
            if label.is_empty() || label.len() > LABEL_LEN_MAX {
                return err(format!("invalid DNS name {name:?}: bad label length"));
            }
            encoded_len += 1 + label.len();
            if encoded_len > NAME_LEN_MAX {
                return err(format!("invalid DNS name {name:?}: longer than 255 bytes"));
            }
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
    }
    out.push(0);
    Ok(())
}

/// Parses a response. Only the header is read when the TC bit is set.
pub(crate) fn decode_response(msg: &[u8]) -> Result<Response, WireError> {
    if msg.len() < HEADER_LEN {
        return err(format!(
            "message of {} bytes is shorter than a header",
            msg.len()
        ));
    }
    let id = be16(msg, 0)?;
    let flags = be16(msg, 2)?;
    if flags & 0x8000 == 0 {
        return err("message is a query, not a response");
    }
    let truncated = flags & 0x0200 != 0;
    let rcode = (flags & 0x000f) as u8;
    let mut response = Response {
        id,
        truncated,
        rcode,
        question: None,
        answers: Vec::new(),
    };
    if truncated {
        return Ok(response);
    }
    let questions = be16(msg, 4)? as usize;
    let answers = be16(msg, 6)? as usize;
    if questions > QUESTIONS_MAX {
        return err(format!("{questions} questions in a response"));
    }
    let mut pos = HEADER_LEN;
    for _ in 0..questions {
        let (name, next) = read_name(msg, pos)?;
        let qtype = be16(msg, next)?;
        be16(msg, next + 2)?; // QCLASS
        pos = next + 4;
        response.question.get_or_insert((name, qtype));
    }
    for _ in 0..answers.min(ANSWERS_MAX) {
        let (_, next) = read_name(msg, pos)?;
        let rtype = be16(msg, next)?;
        let class = be16(msg, next + 2)?;
        // next + 4 .. next + 8 is the TTL, unused by a one-shot lookup.
        let rdlength = be16(msg, next + 8)? as usize;
        let start = next + 10;
        let end = start + rdlength;
        let rdata = msg
            .get(start..end)
            .ok_or_else(|| WireError("record data runs past the end of the message".into()))?;
        pos = end;
        if class != CLASS_IN {
            continue;
        }
        match rtype {
            TYPE_A => {
                let octets: [u8; 4] = rdata
                    .try_into()
                    .map_err(|_| WireError(format!("A record of {rdlength} bytes")))?;
                response.answers.push(Rdata::A(Ipv4Addr::from(octets)));
            }
            TYPE_AAAA => {
                let octets: [u8; 16] = rdata
                    .try_into()
                    .map_err(|_| WireError(format!("AAAA record of {rdlength} bytes")))?;
                response.answers.push(Rdata::Aaaa(Ipv6Addr::from(octets)));
            }
            TYPE_SRV => {
                if rdlength < 7 {
                    return err(format!("SRV record of {rdlength} bytes"));
                }
                let (target, target_end) = read_name(msg, start + 6)?;
                if target_end > end {
                    return err("SRV target runs past its record");
                }
                response.answers.push(Rdata::Srv(Srv {
                    priority: be16(msg, start)?,
                    weight: be16(msg, start + 2)?,
                    port: be16(msg, start + 4)?,
                    target,
                }));
            }
            _ => {}
        }
    }
    Ok(response)
}

fn be16(msg: &[u8], at: usize) -> Result<u16, WireError> {
    match msg.get(at..at + 2) {
        Some(b) => Ok(u16::from_be_bytes([b[0], b[1]])),
        None => err("message ends inside a field"),
    }
}

/// Reads the (possibly compressed) name at `start`: `(name with trailing dot, offset just
/// past the name where it started)`. Label bytes other than letters, digits, `-` and `_`
/// come out escaped as `\DDD`, so they cannot pass for a host name.
fn read_name(msg: &[u8], start: usize) -> Result<(String, usize), WireError> {
    let mut name = String::new();
    let mut pos = start;
    let mut end = None;
    let mut jumps = 0;
    let mut encoded_len = 1;
    loop {
        let Some(&len) = msg.get(pos) else {
            return err("name runs past the end of the message");
        };
        match len & 0xc0 {
            0x00 if len == 0 => {
                end.get_or_insert(pos + 1);
                break;
            }
            0x00 => {
                let len = len as usize;
                let label = msg
                    .get(pos + 1..pos + 1 + len)
                    .ok_or_else(|| WireError("label runs past the end of the message".into()))?;
                encoded_len += 1 + len;
                if encoded_len > NAME_LEN_MAX {
                    return err("name longer than 255 bytes");
                }
                for &b in label {
                    if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                        name.push(b as char);
                    } else {
                        name.push_str(&format!("\\{b:03}"));
                    }
                }
                name.push('.');
                pos += 1 + len;
            }
            0xc0 => {
                let Some(&low) = msg.get(pos + 1) else {
                    return err("compression pointer runs past the end of the message");
                };
                end.get_or_insert(pos + 2);
                jumps += 1;
                if jumps > POINTER_JUMPS_MAX {
                    return err("too many compression pointers (a loop?)");
                }
                pos = (usize::from(len & 0x3f) << 8) | usize::from(low);
            }
            _ => return err(format!("unsupported label type {len:#04x}")),
        }
    }
    if name.is_empty() {
        name.push('.');
    }
    Ok((name, end.unwrap_or(pos + 1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response header: id, flags (QR set plus `flags`), counts.
    fn header(id: u16, flags: u16, qd: u16, an: u16) -> Vec<u8> {
        let mut m = Vec::new();
        for v in [id, 0x8000 | flags, qd, an, 0, 0] {
            m.extend_from_slice(&v.to_be_bytes());
        }
        m
    }

    fn name(text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        encode_name(text, &mut out).unwrap();
        out
    }

    /// A class IN record with `owner` already encoded.
    fn record(owner: &[u8], rtype: u16, rdata: &[u8]) -> Vec<u8> {
        let mut r = owner.to_vec();
        r.extend_from_slice(&rtype.to_be_bytes());
        r.extend_from_slice(&CLASS_IN.to_be_bytes());
        r.extend_from_slice(&300u32.to_be_bytes());
        r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        r.extend_from_slice(rdata);
        r
    }

    fn srv_rdata(priority: u16, weight: u16, port: u16, target: &[u8]) -> Vec<u8> {
        let mut d = Vec::new();
        for v in [priority, weight, port] {
            d.extend_from_slice(&v.to_be_bytes());
        }
        d.extend_from_slice(target);
        d
    }

    #[test]
    fn queries_encode_as_rfc_1035_says() {
        let q = encode_query(0xbeef, "_etcd-server._tcp.example.com", TYPE_SRV).unwrap();
        let mut want = vec![0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        want.extend_from_slice(b"\x0c_etcd-server\x04_tcp\x07example\x03com\x00");
        want.extend_from_slice(&[0, 33, 0, 1]);
        assert_eq!(q, want);
        // A trailing dot changes nothing; the root is a single zero byte.
        assert_eq!(
            encode_query(1, "example.com.", TYPE_A).unwrap(),
            encode_query(1, "example.com", TYPE_A).unwrap()
        );
        assert_eq!(name("."), [0]);
    }

    #[test]
    fn bad_names_are_not_encoded() {
        assert!(encode_query(1, "a..b", TYPE_A).is_err());
        assert!(encode_query(1, &format!("{}.com", "x".repeat(64)), TYPE_A).is_err());
        let long = vec!["abcdefghi"; 26].join(".");
        assert!(long.len() < 300 && encode_query(1, &long, TYPE_A).is_err());
    }

    #[test]
    fn srv_and_address_answers_decode_with_compression() {
        let mut m = header(7, 0x0400, 1, 3);
        let question_at = m.len();
        m.extend_from_slice(&name("_etcd-server._tcp.example.com"));
        m.extend_from_slice(&[0, 33, 0, 1]);
        // Owner: a pointer to the question's name; target "infra0" + pointer to "example.com".
        let owner = [0xc0, question_at as u8];
        let example_at = question_at + 1 + 12 + 1 + 4;
        let target = [b"\x06infra0".as_slice(), &[0xc0, example_at as u8]].concat();
        m.extend_from_slice(&record(&owner, TYPE_SRV, &srv_rdata(10, 5, 2380, &target)));
        m.extend_from_slice(&record(&target, TYPE_A, &[10, 0, 1, 10]));
        let v6: Ipv6Addr = "fd00::10".parse().unwrap();
        m.extend_from_slice(&record(&target, TYPE_AAAA, &v6.octets()));
        let r = decode_response(&m).unwrap();
        assert_eq!((r.id, r.truncated, r.rcode), (7, false, RCODE_OK));
        assert_eq!(
            r.question,
            Some(("_etcd-server._tcp.example.com.".to_string(), TYPE_SRV))
        );
        assert_eq!(
            r.answers,
            [
                Rdata::Srv(Srv {
                    priority: 10,
                    weight: 5,
                    port: 2380,
                    target: "infra0.example.com.".into()
                }),
                Rdata::A(Ipv4Addr::new(10, 0, 1, 10)),
                Rdata::Aaaa(v6),
            ]
        );
    }

    #[test]
    fn other_record_types_and_classes_are_skipped() {
        let mut m = header(1, 0, 0, 3);
        m.extend_from_slice(&record(&name("www.example.com"), 5, &name("example.com")));
        let mut chaos = record(&name("x"), TYPE_A, &[1, 2, 3, 4]);
        let class_at = chaos.len() - 4 - 2 - 4 - 2;
        chaos[class_at..class_at + 2].copy_from_slice(&3u16.to_be_bytes());
        m.extend_from_slice(&chaos);
        m.extend_from_slice(&record(&name("example.com"), TYPE_A, &[192, 0, 2, 1]));
        let r = decode_response(&m).unwrap();
        assert_eq!(r.answers, [Rdata::A(Ipv4Addr::new(192, 0, 2, 1))]);
    }

    #[test]
    fn header_flags_are_read() {
        let r = decode_response(&header(9, 0x0003, 0, 0)).unwrap();
        assert_eq!(r.rcode, RCODE_NXDOMAIN);
        // Truncated: the body is not parsed, even if it is garbage.
        let mut m = header(9, 0x0200, 1, 1);
        m.extend_from_slice(&[0xff; 3]);
        let r = decode_response(&m).unwrap();
        assert!(r.truncated && r.answers.is_empty());
        let mut query = header(9, 0, 0, 0);
        query[2] &= 0x7f;
        assert!(decode_response(&query).is_err());
    }

    #[test]
    fn every_truncation_of_a_good_answer_is_an_error_not_a_panic() {
        let mut m = header(3, 0, 1, 2);
        m.extend_from_slice(&name("_etcd-client._tcp.example.com"));
        m.extend_from_slice(&[0, 33, 0, 1]);
        let target = name("infra1.example.com");
        m.extend_from_slice(&record(
            &[0xc0, 12],
            TYPE_SRV,
            &srv_rdata(0, 0, 2379, &target),
        ));
        m.extend_from_slice(&record(&target, TYPE_A, &[127, 0, 0, 1]));
        assert_eq!(decode_response(&m).unwrap().answers.len(), 2);
        for len in 0..m.len() {
            assert!(decode_response(&m[..len]).is_err(), "cut at {len}");
        }
    }

    #[test]
    fn hostile_names_fail_cleanly() {
        // A pointer to itself, and two pointers to each other.
        let mut m = header(1, 0, 1, 0);
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert!(decode_response(&m).unwrap_err().0.contains("compression"));
        let mut m = header(1, 0, 1, 0);
        m.extend_from_slice(&[0xc0, 14, 0xc0, 12, 0, 1, 0, 1]);
        assert!(decode_response(&m).is_err());
        // A pointer past the end, a reserved label type, a name over 255 bytes.
        let mut m = header(1, 0, 1, 0);
        m.extend_from_slice(&[0xc0, 0xff, 0, 1, 0, 1]);
        assert!(decode_response(&m).is_err());
        let mut m = header(1, 0, 1, 0);
        m.extend_from_slice(&[0x80, 0, 0, 1, 0, 1]);
        assert!(decode_response(&m).unwrap_err().0.contains("label type"));
        let mut m = header(1, 0, 1, 0);
        for _ in 0..5 {
            m.push(63);
            m.extend_from_slice(&[b'a'; 63]);
        }
        m.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert!(decode_response(&m).unwrap_err().0.contains("255"));
    }

    #[test]
    fn malformed_records_are_errors() {
        // rdlength past the end; an A record of 3 bytes; an SRV whose target leaves it.
        let mut m = header(1, 0, 0, 1);
        let mut r = record(&name("a"), TYPE_A, &[1, 2, 3, 4]);
        r.truncate(r.len() - 1);
        m.extend_from_slice(&r);
        assert!(decode_response(&m).is_err());
        let mut m = header(1, 0, 0, 1);
        m.extend_from_slice(&record(&name("a"), TYPE_A, &[1, 2, 3]));
        assert!(decode_response(&m).is_err());
        let mut m = header(1, 0, 0, 2);
        let rdata = srv_rdata(0, 0, 1, &[]);
        m.extend_from_slice(&record(&name("a"), TYPE_SRV, &[rdata, vec![1]].concat()));
        m.extend_from_slice(&record(&name("b"), TYPE_A, &[1, 2, 3, 4]));
        assert!(decode_response(&m).is_err());
        // Too many questions for a response to our single question.
        let m = header(1, 0, 500, 0);
        assert!(decode_response(&m).is_err());
    }

    #[test]
    fn odd_label_bytes_are_escaped() {
        let mut m = header(1, 0, 0, 1);
        let target = b"\x03a.b\x00";
        m.extend_from_slice(&record(&name("x"), TYPE_SRV, &srv_rdata(0, 0, 1, target)));
        let r = decode_response(&m).unwrap();
        let Rdata::Srv(srv) = &r.answers[0] else {
            panic!("not an SRV answer")
        };
        assert_eq!(srv.target, "a\\046b.");
    }

    #[test]
    fn answers_beyond_the_cap_are_ignored() {
        let count = ANSWERS_MAX + 10;
        let mut m = header(1, 0, 0, count as u16);
        for _ in 0..count {
            m.extend_from_slice(&record(&[0], TYPE_A, &[127, 0, 0, 1]));
        }
        assert_eq!(decode_response(&m).unwrap().answers.len(), ANSWERS_MAX);
    }
}
