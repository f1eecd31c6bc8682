//! The server's side of the frame codec: which message each request kind carries, and the
//! answer frames (responses and errors). The frame layout itself (length, kind, request id,
//! hello, error payloads) is `corekv_client::frame`, shared with the client so both ends
//! read and write the same bytes.

pub use corekv_client::frame::*;

use corekv_engine::pb::*;
use prost::Message;

/// A decoded request frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// KV.Range.
    Range(PbRangeRequest),
    /// KV.Put.
    Put(PbPutRequest),
    /// KV.DeleteRange.
    DeleteRange(PbDeleteRequest),
    /// KV.Txn.
    Txn(PbTxnRequest),
    /// KV.Compact.
    Compact(PbCompactionRequest),
    /// Lease.LeaseGrant.
    LeaseGrant(PbLeaseGrantRequest),
    /// Lease.LeaseRevoke.
    LeaseRevoke(PbLeaseRevokeRequest),
    /// One message of Lease.LeaseKeepAlive.
    LeaseKeepAlive(PbLeaseKeepAliveRequest),
    /// Lease.LeaseTimeToLive.
    LeaseTimeToLive(PbLeaseTimeToLiveRequest),
    /// Lease.LeaseLeases.
    LeaseLeases(PbLeaseLeasesRequest),
    /// One message of a Watch stream (create, cancel, progress).
    Watch(PbWatchRequest),
}

fn message<M: Message + Default>(frame: &Frame) -> Result<M, FrameError> {
    M::decode(frame.payload.clone()).map_err(|err| FrameError::BadPayload {
        kind: kind::name(frame.kind),
        reason: format!("not an etcd message of this kind: {err}"),
    })
}

/// The request a frame carries. Errors name what is wrong; after one the connection ends.
pub fn decode_request(frame: &Frame) -> Result<Request, FrameError> {
    if !kind::is_request(frame.kind) {
        return Err(FrameError::UnexpectedKind {
            kind: frame.kind,
            expected: "a request kind",
        });
    }
    if frame.request_id == CONNECTION_REQUEST_ID {
        return Err(FrameError::ReservedRequestId);
    }
    Ok(match frame.kind {
        kind::RANGE => Request::Range(message(frame)?),
        kind::PUT => Request::Put(message(frame)?),
        kind::DELETE_RANGE => Request::DeleteRange(message(frame)?),
        kind::TXN => Request::Txn(message(frame)?),
        kind::COMPACT => Request::Compact(message(frame)?),
        kind::LEASE_GRANT => Request::LeaseGrant(message(frame)?),
        kind::LEASE_REVOKE => Request::LeaseRevoke(message(frame)?),
        kind::LEASE_KEEP_ALIVE => Request::LeaseKeepAlive(message(frame)?),
        kind::LEASE_TIME_TO_LIVE => Request::LeaseTimeToLive(message(frame)?),
        kind::LEASE_LEASES => Request::LeaseLeases(message(frame)?),
        kind::WATCH => Request::Watch(message(frame)?),
        other => unreachable!("kind {other:#04x} passed is_request"),
    })
}

/// The error frame for `status`, answering `request_id` (0 for connection-level errors).
pub fn error_frame(request_id: u64, status: &tonic::Status) -> Vec<u8> {
    let mut out = Vec::new();
    ErrorBody {
        code: status.code() as i32 as u32,
        message: status.message().to_string(),
    }
    .encode(&mut out, request_id);
    out
}

/// The answer frame for a request of `request_kind`: the response, or an error frame.
pub fn answer_frame<M: Message>(
    request_kind: u8,
    request_id: u64,
    result: Result<M, tonic::Status>,
) -> Vec<u8> {
    match result {
        Ok(response) => {
            let mut out = Vec::new();
            encode_message(
                &mut out,
                request_kind | kind::RESPONSE_BIT,
                request_id,
                &response,
            );
            out
        }
        Err(status) => error_frame(request_id, &status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};

    /// A small deterministic generator (xorshift), so failures reproduce.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Valid request frames of every kind, back to back.
    fn valid_stream() -> Vec<u8> {
        let mut out = Vec::new();
        encode_raw(
            &mut out,
            kind::HELLO,
            0,
            &Hello {
                version_min: 1,
                version_max: 1,
            }
            .to_bytes(),
        );
        let range = PbRangeRequest {
            key: b"a".to_vec(),
            range_end: b"z".to_vec(),
            limit: 10,
            ..Default::default()
        };
        encode_message(&mut out, kind::RANGE, 1, &range);
        let put = PbPutRequest {
            key: b"key".to_vec(),
            value: vec![b'v'; 100],
            lease: 7,
            prev_kv: true,
            ..Default::default()
        };
        encode_message(&mut out, kind::PUT, 2, &put);
        let del = PbDeleteRequest {
            key: b"k".to_vec(),
            ..Default::default()
        };
        encode_message(&mut out, kind::DELETE_RANGE, 3, &del);
        let txn = PbTxnRequest {
            success: vec![PbTxnRequestOp {
                request: Some(PbTxnOpRequest::RequestPut(put.clone())),
            }],
            ..Default::default()
        };
        encode_message(&mut out, kind::TXN, 4, &txn);
        encode_message(
            &mut out,
            kind::LEASE_GRANT,
            5,
            &PbLeaseGrantRequest { ttl: 5, id: 0 },
        );
        encode_message(
            &mut out,
            kind::LEASE_KEEP_ALIVE,
            6,
            &PbLeaseKeepAliveRequest { id: 9 },
        );
        let watch = corekv_client::WatchOptions::prefix(b"w".to_vec()).to_request();
        encode_message(&mut out, kind::WATCH, 7, &watch);
        out
    }

    /// Decodes `bytes` the way a connection does; returns how many frames it got and the
    /// first error. Must never panic, whatever the bytes.
    fn run_decoder(bytes: &[u8], chunk: usize) -> (usize, Option<FrameError>) {
        let decoder = FrameDecoder::new(4096);
        let mut buf = BytesMut::new();
        let mut frames = 0;
        for piece in bytes.chunks(chunk.max(1)) {
            buf.put_slice(piece);
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Some(frame)) => {
                        frames += 1;
                        let checked = if frame.kind == kind::HELLO {
                            Hello::parse(&frame.payload).map(|_| ())
                        } else {
                            decode_request(&frame).map(|_| ())
                        };
                        if let Err(err) = checked {
                            return (frames, Some(err));
                        }
                    }
                    Ok(None) => break,
                    Err(err) => return (frames, Some(err)),
                }
            }
        }
        (frames, None)
    }

    #[test]
    fn valid_requests_decode_whatever_the_read_sizes() {
        let stream = valid_stream();
        for chunk in [1, 2, 3, 7, 13, 64, stream.len()] {
            assert_eq!(run_decoder(&stream, chunk), (8, None), "chunk {chunk}");
        }
    }

    #[test]
    fn fuzzed_bytes_never_panic_and_errors_say_what_is_wrong() {
        let valid = valid_stream();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut errors = 0;
        for round in 0..20_000u64 {
            let bytes: Vec<u8> = if round % 2 == 0 {
                // Pure noise of random length.
                let len = rng.below(300) as usize;
                (0..len).map(|_| rng.next() as u8).collect()
            } else {
                // A valid stream with a few bytes flipped, cut, or inserted.
                let mut bytes = valid.clone();
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(bytes.len() as u64) as usize;
                    match rng.below(3) {
                        0 => bytes[at] ^= 1 << rng.below(8),
                        1 => bytes.truncate(at),
                        _ => bytes.insert(at, rng.next() as u8),
                    }
                    if bytes.is_empty() {
                        break;
                    }
                }
                bytes
            };
            let chunk = 1 + rng.below(40) as usize;
            let (_, error) = run_decoder(&bytes, chunk);
            if let Some(err) = error {
                errors += 1;
                let text = err.to_string();
                assert!(text.starts_with("corekv: "), "unclear error: {text}");
                assert!(text.len() > 20, "unclear error: {text}");
            }
        }
        // Most noise is refused (it claims huge frames or unknown kinds).
        assert!(
            errors > 5_000,
            "only {errors} of 20000 corrupted inputs were refused"
        );
    }

    #[test]
    fn request_id_zero_and_response_kinds_are_refused() {
        let mut out = Vec::new();
        encode_message(&mut out, kind::PUT, 0, &PbPutRequest::default());
        let decoder = FrameDecoder::new(4096);
        let frame = decoder
            .decode(&mut BytesMut::from(&out[..]))
            .unwrap()
            .unwrap();
        assert_eq!(decode_request(&frame), Err(FrameError::ReservedRequestId));
        let mut out = Vec::new();
        encode_message(
            &mut out,
            kind::WATCH_RESPONSE,
            3,
            &PbWatchResponse::default(),
        );
        let frame = decoder
            .decode(&mut BytesMut::from(&out[..]))
            .unwrap()
            .unwrap();
        let err = decode_request(&frame).unwrap_err();
        assert!(
            err.to_string().contains("unexpected frame kind 0xb0"),
            "{err}"
        );
    }

    #[test]
    fn errors_carry_grpc_codes_and_etcd_texts() {
        let status = crate::grpc::to_status(corekv_engine::KvError::Compacted);
        let bytes = answer_frame::<PbRangeResponse>(kind::RANGE, 12, Err(status));
        let frame = FrameDecoder::new(4096)
            .decode(&mut BytesMut::from(&bytes[..]))
            .unwrap()
            .unwrap();
        assert_eq!((frame.kind, frame.request_id), (kind::ERROR, 12));
        let body = ErrorBody::parse(&frame.payload).unwrap();
        assert_eq!(body.code, code::OUT_OF_RANGE);
        assert_eq!(
            body.message,
            "etcdserver: mvcc: required revision has been compacted"
        );
    }
}
