//! The frame layer of corekv's binary protocol (docs/protocol.md), shared by the server
//! (`corekv-net`) and this client so both ends read and write the same bytes.
//!
//! A frame is `[u32 len][u8 kind][u64 request id][payload]`, integers little-endian, where
//! `len` counts the bytes after itself (`9 + payload`). The payload is an etcd protobuf
//! message chosen by `kind` (see [`kind`]), or the fixed layouts of [`Hello`],
//! [`HelloAck`] and [`ErrorBody`].

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The protocol version this code speaks (negotiated by the hello exchange).
pub const PROTOCOL_VERSION: u16 = 1;

/// Bytes of the length field.
pub const LEN_FIELD_BYTES: usize = 4;
/// Bytes of kind + request id (the part of `len` that is not payload).
pub const KIND_AND_ID_BYTES: usize = 9;
/// Bytes before the payload: length, kind, request id.
pub const FRAME_HEADER_BYTES: usize = LEN_FIELD_BYTES + KIND_AND_ID_BYTES;

/// The request id of connection-level frames (hello, its answer, fatal errors). Requests
/// must use any other id.
pub const CONNECTION_REQUEST_ID: u64 = 0;

/// Frame kinds. A response has its request's kind with the high bit set.
pub mod kind {
    /// Client hello (first frame on a connection), payload [`super::Hello`].
    pub const HELLO: u8 = 0x01;
    /// etcd RangeRequest -> RangeResponse.
    pub const RANGE: u8 = 0x10;
    /// etcd PutRequest -> PutResponse.
    pub const PUT: u8 = 0x11;
    /// etcd DeleteRangeRequest -> DeleteRangeResponse.
    pub const DELETE_RANGE: u8 = 0x12;
    /// etcd TxnRequest -> TxnResponse.
    pub const TXN: u8 = 0x13;
    /// etcd CompactionRequest -> CompactionResponse.
    pub const COMPACT: u8 = 0x14;
    /// etcd LeaseGrantRequest -> LeaseGrantResponse.
    pub const LEASE_GRANT: u8 = 0x20;
    /// etcd LeaseRevokeRequest -> LeaseRevokeResponse.
    pub const LEASE_REVOKE: u8 = 0x21;
    /// etcd LeaseKeepAliveRequest -> LeaseKeepAliveResponse (one renewal per frame).
    pub const LEASE_KEEP_ALIVE: u8 = 0x22;
    /// etcd LeaseTimeToLiveRequest -> LeaseTimeToLiveResponse.
    pub const LEASE_TIME_TO_LIVE: u8 = 0x23;
    /// etcd LeaseLeasesRequest -> LeaseLeasesResponse.
    pub const LEASE_LEASES: u8 = 0x24;
    /// etcd WatchRequest (create, cancel or progress); answered by pushed
    /// [`WATCH_RESPONSE`] frames.
    pub const WATCH: u8 = 0x30;
    /// Bit set on every server-to-client kind except [`ERROR`].
    pub const RESPONSE_BIT: u8 = 0x80;
    /// Server hello answer, payload [`super::HelloAck`].
    pub const HELLO_ACK: u8 = HELLO | RESPONSE_BIT;
    /// etcd WatchResponse pushed by the server (created, events, canceled, progress).
    pub const WATCH_RESPONSE: u8 = WATCH | RESPONSE_BIT;
    /// An error answer, payload [`super::ErrorBody`].
    pub const ERROR: u8 = 0xFF;

    /// Whether `kind` is a request a client may send after the hello.
    pub fn is_request(kind: u8) -> bool {
        matches!(
            kind,
            RANGE
                | PUT
                | DELETE_RANGE
                | TXN
                | COMPACT
                | LEASE_GRANT
                | LEASE_REVOKE
                | LEASE_KEEP_ALIVE
                | LEASE_TIME_TO_LIVE
                | LEASE_LEASES
                | WATCH
        )
    }

    /// A short name for messages and logs.
    pub fn name(kind: u8) -> &'static str {
        match kind {
            HELLO => "hello",
            RANGE => "range",
            PUT => "put",
            DELETE_RANGE => "delete-range",
            TXN => "txn",
            COMPACT => "compact",
            LEASE_GRANT => "lease-grant",
            LEASE_REVOKE => "lease-revoke",
            LEASE_KEEP_ALIVE => "lease-keep-alive",
            LEASE_TIME_TO_LIVE => "lease-time-to-live",
            LEASE_LEASES => "lease-leases",
            WATCH => "watch",
            HELLO_ACK => "hello-ack",
            WATCH_RESPONSE => "watch-response",
            ERROR => "error",
            k if k & RESPONSE_BIT != 0 && is_request(k & !RESPONSE_BIT) => "response",
            _ => "unknown",
        }
    }
}

/// gRPC status codes carried by error frames (the numbers gRPC uses).
pub mod code {
    /// The request is malformed or breaks a limit.
    pub const INVALID_ARGUMENT: u32 = 3;
    /// Not found (an unknown lease).
    pub const NOT_FOUND: u32 = 5;
    /// Over a quota (NOSPACE).
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    /// A precondition failed (a lease that already exists).
    pub const FAILED_PRECONDITION: u32 = 9;
    /// Out of range (compacted or future revision, a too-large TTL).
    pub const OUT_OF_RANGE: u32 = 11;
    /// Not implemented by this server.
    pub const UNIMPLEMENTED: u32 = 12;
    /// A server-side fault.
    pub const INTERNAL: u32 = 13;
    /// The server cannot serve now (stopping, no leader).
    pub const UNAVAILABLE: u32 = 14;
    /// Data loss (corruption).
    pub const DATA_LOSS: u32 = 15;
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What the payload is (see [`kind`]).
    pub kind: u8,
    /// Chosen by the client; the server answers with the same id.
    pub request_id: u64,
    /// The message bytes.
    pub payload: Bytes,
}

/// Why bytes are not a valid frame (or a valid fixed-layout payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The length field announces a frame larger than the receiver accepts.
    TooLarge {
        /// The whole frame's size as announced (length field included).
        frame_bytes: u64,
        /// The receiver's limit.
        frame_bytes_max: usize,
    },
    /// The length field is smaller than kind + request id.
    TooShort {
        /// The announced length.
        len: u32,
    },
    /// The kind is not one the receiver accepts at this point.
    UnexpectedKind {
        /// The kind byte.
        kind: u8,
        /// What was expected instead.
        expected: &'static str,
    },
    /// The request id is 0, which only connection-level frames use.
    ReservedRequestId,
    /// A payload does not decode as its kind's message, or a fixed-layout payload (hello,
    /// hello answer, error) has the wrong size or content.
    BadPayload {
        /// The frame kind's name.
        kind: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooLarge {
                frame_bytes,
                frame_bytes_max,
            } => write!(
                f,
                "corekv: frame of {frame_bytes} bytes exceeds the maximum of {frame_bytes_max} bytes"
            ),
            FrameError::TooShort { len } => write!(
                f,
                "corekv: frame length {len} is shorter than kind and request id ({KIND_AND_ID_BYTES} bytes)"
            ),
            FrameError::UnexpectedKind { kind, expected } => write!(
                f,
                "corekv: unexpected frame kind {kind:#04x} ({}), expected {expected}",
                self::kind::name(*kind)
            ),
            FrameError::ReservedRequestId => {
                write!(f, "corekv: request id 0 is reserved for connection-level frames")
            }
            FrameError::BadPayload { kind, reason } => {
                write!(f, "corekv: malformed {kind} frame: {reason}")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Splits frames off a receive buffer, refusing any larger than `frame_bytes_max`.
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    frame_bytes_max: usize,
}

impl FrameDecoder {
    /// A decoder accepting frames of at most `frame_bytes_max` bytes (length field
    /// included). The limit is raised to at least a header's size.
    pub fn new(frame_bytes_max: usize) -> FrameDecoder {
        FrameDecoder {
            frame_bytes_max: frame_bytes_max.max(FRAME_HEADER_BYTES),
        }
    }

    /// The largest frame accepted, in bytes.
    pub fn frame_bytes_max(&self) -> usize {
        self.frame_bytes_max
    }

    /// The next whole frame at the front of `buf` (removed from it), `Ok(None)` if more
    /// bytes are needed. An error leaves `buf` as it was; the stream cannot be resynced
    /// after one, so the connection must end.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buf.len() < LEN_FIELD_BYTES {
            return Ok(None);
        }
        let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let frame_bytes = LEN_FIELD_BYTES as u64 + len as u64;
        if frame_bytes > self.frame_bytes_max as u64 {
            return Err(FrameError::TooLarge {
                frame_bytes,
                frame_bytes_max: self.frame_bytes_max,
            });
        }
        if (len as usize) < KIND_AND_ID_BYTES {
            return Err(FrameError::TooShort { len });
        }
        let frame_bytes = frame_bytes as usize;
        if buf.len() < frame_bytes {
            // Room for the rest, bounded by the limit checked above.
            buf.reserve(frame_bytes - buf.len());
            return Ok(None);
        }
        let mut frame = buf.split_to(frame_bytes);
        frame.advance(LEN_FIELD_BYTES);
        let kind = frame.get_u8();
        let request_id = frame.get_u64_le();
        Ok(Some(Frame {
            kind,
            request_id,
            payload: frame.freeze(),
        }))
    }
}

/// Writes a frame header for a payload of `payload_bytes` bytes.
///
/// Panics if the payload does not fit the 32-bit length (callers bound their payloads far
/// below that).
pub fn put_header(out: &mut impl BufMut, kind: u8, request_id: u64, payload_bytes: usize) {
    let len = u32::try_from(KIND_AND_ID_BYTES + payload_bytes)
        .expect("a frame's payload fits the 32-bit length field");
    out.put_u32_le(len);
    out.put_u8(kind);
    out.put_u64_le(request_id);
}

/// Appends a whole frame carrying `message` to `out`, encoding the message once, in place.
pub fn encode_message(out: &mut Vec<u8>, kind: u8, request_id: u64, message: &impl prost::Message) {
    let payload_bytes = message.encoded_len();
    out.reserve(FRAME_HEADER_BYTES + payload_bytes);
    put_header(out, kind, request_id, payload_bytes);
    let start = out.len();
    message
        .encode(out)
        .expect("the buffer was reserved to the message's size");
    debug_assert_eq!(out.len() - start, payload_bytes);
}

/// Appends a whole frame with raw `payload` bytes to `out`.
pub fn encode_raw(out: &mut Vec<u8>, kind: u8, request_id: u64, payload: &[u8]) {
    out.reserve(FRAME_HEADER_BYTES + payload.len());
    put_header(out, kind, request_id, payload.len());
    out.extend_from_slice(payload);
}

/// The client's hello: the protocol versions it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// Oldest version the client speaks.
    pub version_min: u16,
    /// Newest version the client speaks.
    pub version_max: u16,
}

/// Bytes of a hello payload.
pub const HELLO_BYTES: usize = 4;

impl Hello {
    /// The payload bytes: `[u16 version_min][u16 version_max]`.
    pub fn to_bytes(self) -> [u8; HELLO_BYTES] {
        let mut out = [0u8; HELLO_BYTES];
        out[..2].copy_from_slice(&self.version_min.to_le_bytes());
        out[2..].copy_from_slice(&self.version_max.to_le_bytes());
        out
    }

    /// Parses a hello payload.
    pub fn parse(payload: &[u8]) -> Result<Hello, FrameError> {
        if payload.len() != HELLO_BYTES {
            return Err(bad(
                "hello",
                format!("{} payload bytes, expected {HELLO_BYTES}", payload.len()),
            ));
        }
        let hello = Hello {
            version_min: u16::from_le_bytes([payload[0], payload[1]]),
            version_max: u16::from_le_bytes([payload[2], payload[3]]),
        };
        if hello.version_min > hello.version_max {
            return Err(bad(
                "hello",
                format!(
                    "version range {}..={} is empty",
                    hello.version_min, hello.version_max
                ),
            ));
        }
        Ok(hello)
    }

    /// The version both sides speak, if any: the newest in both ranges.
    pub fn negotiate(self, ours_min: u16, ours_max: u16) -> Option<u16> {
        let version = self.version_max.min(ours_max);
        (version >= self.version_min.max(ours_min)).then_some(version)
    }
}

/// The server's answer to a hello: the chosen version and the limits it enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloAck {
    /// The protocol version used from now on.
    pub version: u16,
    /// Largest frame the server accepts (a larger one ends the connection).
    pub frame_bytes_max: u32,
    /// Requests the server reads ahead per connection before it waits for answers to go out.
    pub requests_in_flight_max: u32,
    /// The cluster's id (as in etcd's response headers).
    pub cluster_id: u64,
    /// The answering member's id.
    pub member_id: u64,
}

/// Bytes of a hello answer payload.
pub const HELLO_ACK_BYTES: usize = 26;

impl HelloAck {
    /// The payload bytes:
    /// `[u16 version][u32 frame_bytes_max][u32 requests_in_flight_max][u64 cluster][u64 member]`.
    pub fn to_bytes(self) -> [u8; HELLO_ACK_BYTES] {
        let mut out = [0u8; HELLO_ACK_BYTES];
        let mut w = &mut out[..];
        w.put_u16_le(self.version);
        w.put_u32_le(self.frame_bytes_max);
        w.put_u32_le(self.requests_in_flight_max);
        w.put_u64_le(self.cluster_id);
        w.put_u64_le(self.member_id);
        out
    }

    /// Parses a hello answer payload.
    pub fn parse(mut payload: &[u8]) -> Result<HelloAck, FrameError> {
        if payload.len() != HELLO_ACK_BYTES {
            return Err(bad(
                "hello-ack",
                format!(
                    "{} payload bytes, expected {HELLO_ACK_BYTES}",
                    payload.len()
                ),
            ));
        }
        Ok(HelloAck {
            version: payload.get_u16_le(),
            frame_bytes_max: payload.get_u32_le(),
            requests_in_flight_max: payload.get_u32_le(),
            cluster_id: payload.get_u64_le(),
            member_id: payload.get_u64_le(),
        })
    }
}

/// An error frame's payload: a gRPC status code and etcd's error text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    /// gRPC status code (see [`code`]).
    pub code: u32,
    /// The message, as etcd words it ("etcdserver: ...").
    pub message: String,
}

impl ErrorBody {
    /// Appends an error frame for `request_id` to `out`: `[u32 code][UTF-8 message]`.
    pub fn encode(&self, out: &mut Vec<u8>, request_id: u64) {
        out.reserve(FRAME_HEADER_BYTES + 4 + self.message.len());
        put_header(out, kind::ERROR, request_id, 4 + self.message.len());
        out.put_u32_le(self.code);
        out.extend_from_slice(self.message.as_bytes());
    }

    /// Parses an error payload.
    pub fn parse(payload: &[u8]) -> Result<ErrorBody, FrameError> {
        if payload.len() < 4 {
            return Err(bad(
                "error",
                format!("{} payload bytes, expected at least 4", payload.len()),
            ));
        }
        let code = u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]);
        let message = std::str::from_utf8(&payload[4..])
            .map_err(|e| bad("error", format!("message is not UTF-8: {e}")))?;
        Ok(ErrorBody {
            code,
            message: message.to_string(),
        })
    }
}

fn bad(kind: &'static str, reason: String) -> FrameError {
    FrameError::BadPayload { kind, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_across_split_reads() {
        let mut wire = Vec::new();
        let put = etcd_client::proto::PbPutRequest {
            key: b"k".to_vec(),
            value: vec![7; 300],
            ..Default::default()
        };
        encode_message(&mut wire, kind::PUT, 42, &put);
        encode_raw(
            &mut wire,
            kind::HELLO,
            0,
            &Hello {
                version_min: 1,
                version_max: 3,
            }
            .to_bytes(),
        );
        ErrorBody {
            code: code::NOT_FOUND,
            message: "etcdserver: requested lease not found".into(),
        }
        .encode(&mut wire, 9);
        let decoder = FrameDecoder::new(1 << 20);
        // Feed one byte at a time: a frame comes out only once it is whole.
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for byte in &wire {
            buf.put_u8(*byte);
            while let Some(frame) = decoder.decode(&mut buf).unwrap() {
                frames.push(frame);
            }
        }
        assert!(buf.is_empty());
        assert_eq!(frames.len(), 3);
        assert_eq!((frames[0].kind, frames[0].request_id), (kind::PUT, 42));
        let back: etcd_client::proto::PbPutRequest =
            prost::Message::decode(frames[0].payload.clone()).unwrap();
        assert_eq!(back, put);
        assert_eq!(
            Hello::parse(&frames[1].payload).unwrap(),
            Hello {
                version_min: 1,
                version_max: 3
            }
        );
        let err = ErrorBody::parse(&frames[2].payload).unwrap();
        assert_eq!((err.code, frames[2].request_id), (code::NOT_FOUND, 9));
    }

    #[test]
    fn oversized_and_undersized_lengths_are_refused_before_buffering() {
        let decoder = FrameDecoder::new(64);
        let mut buf = BytesMut::from(&61u32.to_le_bytes()[..]);
        let err = decoder.decode(&mut buf).unwrap_err();
        assert_eq!(
            err,
            FrameError::TooLarge {
                frame_bytes: 65,
                frame_bytes_max: 64
            }
        );
        assert!(err.to_string().contains("exceeds the maximum of 64 bytes"));
        let mut buf = BytesMut::from(&8u32.to_le_bytes()[..]);
        assert_eq!(
            decoder.decode(&mut buf).unwrap_err(),
            FrameError::TooShort { len: 8 }
        );
        // Exactly at the limit is fine.
        let mut buf = BytesMut::from(&60u32.to_le_bytes()[..]);
        assert_eq!(decoder.decode(&mut buf).unwrap(), None);
    }

    #[test]
    fn versions_negotiate_to_the_newest_common_one() {
        let hello = Hello {
            version_min: 1,
            version_max: 4,
        };
        assert_eq!(hello.negotiate(1, 1), Some(1));
        assert_eq!(hello.negotiate(2, 7), Some(4));
        assert_eq!(
            Hello {
                version_min: 2,
                version_max: 3
            }
            .negotiate(1, 1),
            None
        );
        assert!(Hello::parse(
            &Hello {
                version_min: 3,
                version_max: 2
            }
            .to_bytes()
        )
        .is_err());
        let ack = HelloAck {
            version: 1,
            frame_bytes_max: 2_097_152,
            requests_in_flight_max: 1024,
            cluster_id: u64::MAX - 1,
            member_id: 77,
        };
        assert_eq!(HelloAck::parse(&ack.to_bytes()).unwrap(), ack);
        assert!(HelloAck::parse(&ack.to_bytes()[1..]).is_err());
    }
}
