//! Repairs the HTTP/2 `:authority` that etcd's own Go clients send, before hyper sees it.
//!
//! etcd's clientv3 (3.4, and 3.5 before a fix) dials Maintenance calls such as Status with
//! the endpoint as given, so `etcdctl --endpoints=http://127.0.0.1:2379 endpoint status`
//! sends `:authority: http://127.0.0.1:2379`. Go's HTTP/2 server accepts that; hyper's h2
//! resets the stream with PROTOCOL_ERROR and offers no switch to allow it. etcd compatibility
//! means serving those clients, so each connection passes through [`AuthorityRepair`]:
//!
//! - It looks at the connection's first request header block. A valid authority (every Rust
//!   and modern Go client) switches the connection to plain pass-through: zero cost after.
//! - Otherwise the connection is rewritten for its whole life: each header block is decoded
//!   (HPACK, mirroring the client's dynamic table), the authority is reduced to `host:port`,
//!   and the block is re-encoded with literals only (never indexed), so hyper's decoder
//!   table stays empty and cannot drift from what we send.
//!
//! HTTP/1.1 connections (no HTTP/2 preface) pass through untouched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_BYTES: usize = 9;
const FRAME_HEADERS: u8 = 0x1;
const FRAME_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// The largest frame payload hyper accepts unless it advertised more (HTTP/2's default).
const FRAME_PAYLOAD_BYTES_MAX: usize = 16_384;
/// A header block larger than this is not repaired; hyper then judges it as it is.
const HEADER_BLOCK_BYTES_MAX: usize = 256 * 1024;
/// Bytes read from the socket per read call.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// HPACK dynamic table size: hyper advertises HTTP/2's default.
const HPACK_TABLE_BYTES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Waiting for the preface and the first header block.
    Sniffing,
    /// Every header block is decoded, repaired and re-encoded.
    Rewriting,
    /// Bytes flow through untouched.
    PassThrough,
}

/// A header block being collected across HEADERS + CONTINUATION frames.
struct PendingBlock {
    stream_id: u32,
    end_stream: bool,
    fragment: BytesMut,
    /// The frames exactly as received, forwarded as they are if no repair is needed.
    original: BytesMut,
}

/// The byte-level state machine, separate from I/O so it can be tested on its own.
struct Repairer {
    mode: Mode,
    preface_seen: bool,
    decoder: loona_hpack::Decoder<'static>,
    pending: Option<PendingBlock>,
}

impl Repairer {
    fn new() -> Repairer {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(HPACK_TABLE_BYTES);
        Repairer {
            mode: Mode::Sniffing,
            preface_seen: false,
            decoder,
            pending: None,
        }
    }

    /// Moves every complete unit of `raw` into `out`, repaired where needed.
    fn process(&mut self, raw: &mut BytesMut, out: &mut BytesMut) {
        if self.mode == Mode::Sniffing && !self.preface_seen && !self.take_preface(raw, out) {
            return;
        }
        while self.mode != Mode::PassThrough {
            let Some(frame_len) = complete_frame_len(raw) else {
                return;
            };
            let frame = raw.split_to(frame_len);
            self.frame(frame, out);
        }
        out.extend_from_slice(raw);
        raw.clear();
    }

    /// Returns true once the HTTP/2 preface has been passed on.
    fn take_preface(&mut self, raw: &mut BytesMut, out: &mut BytesMut) -> bool {
        let n = raw.len().min(PREFACE.len());
        if raw[..n] != PREFACE[..n] {
            self.mode = Mode::PassThrough; // HTTP/1.1: nothing to repair.
            return true;
        }
        if raw.len() < PREFACE.len() {
            return false;
        }
        out.extend_from_slice(&raw.split_to(PREFACE.len()));
        self.preface_seen = true;
        true
    }

    fn frame(&mut self, frame: BytesMut, out: &mut BytesMut) {
        let kind = frame[3];
        let flags = frame[4];
        let stream_id = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        match (kind, self.pending.is_some()) {
            (FRAME_HEADERS, false) => match header_fragment(&frame[FRAME_HEADER_BYTES..], flags) {
                Some(fragment) => {
                    let block = PendingBlock {
                        stream_id,
                        end_stream: flags & FLAG_END_STREAM != 0,
                        fragment: BytesMut::from(fragment),
                        original: frame.clone(),
                    };
                    self.pending = Some(block);
                    if flags & FLAG_END_HEADERS != 0 {
                        self.finish_block(out);
                    }
                }
                None => self.give_up(frame, out),
            },
            (FRAME_CONTINUATION, true) => {
                let pending = self.pending.as_mut().expect("checked");
                pending
                    .fragment
                    .extend_from_slice(&frame[FRAME_HEADER_BYTES..]);
                pending.original.extend_from_slice(&frame);
                if pending.fragment.len() > HEADER_BLOCK_BYTES_MAX {
                    let original = self.pending.take().expect("checked").original;
                    self.give_up(original, out);
                } else if flags & FLAG_END_HEADERS != 0 {
                    self.finish_block(out);
                }
            }
            // Anything else mid-block is a protocol error hyper will report itself.
            (_, true) => {
                let mut original = self.pending.take().expect("checked").original;
                original.extend_from_slice(&frame);
                self.give_up(original, out);
            }
            (_, false) => out.extend_from_slice(&frame),
        }
    }

    /// Stops repairing: what follows is hyper's to judge, byte for byte.
    fn give_up(&mut self, bytes: BytesMut, out: &mut BytesMut) {
        out.extend_from_slice(&bytes);
        self.mode = Mode::PassThrough;
    }

    fn finish_block(&mut self, out: &mut BytesMut) {
        let block = self.pending.take().expect("a block is pending");
        let headers = match self.decoder.decode(&block.fragment) {
            Ok(headers) => headers,
            Err(_) => return self.give_up(block.original, out),
        };
        if self.mode == Mode::Sniffing {
            if authority_is_valid(&headers) {
                return self.give_up(block.original, out);
            }
            self.mode = Mode::Rewriting;
        }
        let repaired: Vec<(Vec<u8>, Vec<u8>)> =
            headers.into_iter().filter_map(repair_header).collect();
        write_header_frames(
            block.stream_id,
            block.end_stream,
            encode_literals(&repaired),
            out,
        );
    }
}

/// Length of the first frame in `raw` if it is complete.
fn complete_frame_len(raw: &BytesMut) -> Option<usize> {
    if raw.len() < FRAME_HEADER_BYTES {
        return None;
    }
    let payload = (usize::from(raw[0]) << 16) | (usize::from(raw[1]) << 8) | usize::from(raw[2]);
    let total = FRAME_HEADER_BYTES + payload;
    (raw.len() >= total).then_some(total)
}

/// The header-block fragment of a HEADERS payload, without padding and priority fields.
fn header_fragment(payload: &[u8], flags: u8) -> Option<&[u8]> {
    let mut start = 0;
    let mut end = payload.len();
    if flags & FLAG_PADDED != 0 {
        let pad = usize::from(*payload.first()?);
        start += 1;
        end = end.checked_sub(pad)?;
    }
    if flags & FLAG_PRIORITY != 0 {
        start += 5;
    }
    (start <= end).then(|| &payload[start..end])
}

fn authority_is_valid(headers: &[(Vec<u8>, Vec<u8>)]) -> bool {
    headers
        .iter()
        .filter(|(name, _)| name == b":authority")
        .all(|(_, value)| http::uri::Authority::try_from(value.as_slice()).is_ok())
}

/// Reduces `scheme://host:port/...` to `host:port`; drops an authority that stays invalid
/// (HTTP/2 allows a request without one).
fn repair_header((name, value): (Vec<u8>, Vec<u8>)) -> Option<(Vec<u8>, Vec<u8>)> {
    if name != b":authority" || http::uri::Authority::try_from(value.as_slice()).is_ok() {
        return Some((name, value));
    }
    let text = String::from_utf8_lossy(&value);
    let without_scheme = text.split_once("://").map_or(&*text, |(_, rest)| rest);
    let host_port = without_scheme.split('/').next().unwrap_or_default();
    http::uri::Authority::try_from(host_port)
        .ok()
        .map(|_| (name, host_port.as_bytes().to_vec()))
}

/// HPACK "literal header field without indexing — new name" for every header, no Huffman:
/// the receiver's dynamic table is never touched.
fn encode_literals(headers: &[(Vec<u8>, Vec<u8>)]) -> BytesMut {
    let mut out = BytesMut::with_capacity(headers.iter().map(|(n, v)| n.len() + v.len() + 8).sum());
    for (name, value) in headers {
        out.put_u8(0x00);
        encode_string(name, &mut out);
        encode_string(value, &mut out);
    }
    out
}

/// An HPACK string literal: H bit clear, length as a 7-bit-prefix integer, raw bytes.
fn encode_string(bytes: &[u8], out: &mut BytesMut) {
    encode_integer(bytes.len(), 7, 0x00, out);
    out.extend_from_slice(bytes);
}

/// RFC 7541 section 5.1 integer with an `prefix_bits`-bit prefix; `first` holds the bits
/// above the prefix.
fn encode_integer(mut value: usize, prefix_bits: u32, first: u8, out: &mut BytesMut) {
    let max_prefix = (1usize << prefix_bits) - 1;
    if value < max_prefix {
        out.put_u8(first | value as u8);
        return;
    }
    out.put_u8(first | max_prefix as u8);
    value -= max_prefix;
    while value >= 128 {
        out.put_u8((value % 128 + 128) as u8);
        value /= 128;
    }
    out.put_u8(value as u8);
}

/// One HEADERS frame, plus CONTINUATION frames if the block exceeds the frame size.
fn write_header_frames(stream_id: u32, end_stream: bool, mut block: BytesMut, out: &mut BytesMut) {
    let mut first = true;
    loop {
        let chunk = block.split_to(block.len().min(FRAME_PAYLOAD_BYTES_MAX));
        let last = block.is_empty();
        let kind = if first {
            FRAME_HEADERS
        } else {
            FRAME_CONTINUATION
        };
        let mut flags = if last { FLAG_END_HEADERS } else { 0 };
        if first && end_stream {
            flags |= FLAG_END_STREAM;
        }
        let len = chunk.len();
        out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
        out.put_u32(stream_id);
        out.extend_from_slice(&chunk);
        first = false;
        if last {
            return;
        }
    }
}

/// A client connection whose HTTP/2 `:authority` values are repaired on the way in.
pub struct AuthorityRepair<S> {
    inner: S,
    repairer: Repairer,
    /// Bytes read from the socket, not yet processed.
    raw: BytesMut,
    /// Processed bytes waiting to be handed to hyper.
    out: BytesMut,
}

impl<S> AuthorityRepair<S> {
    /// Wraps a freshly accepted connection.
    pub fn new(inner: S) -> AuthorityRepair<S> {
        AuthorityRepair {
            inner,
            repairer: Repairer::new(),
            raw: BytesMut::new(),
            out: BytesMut::new(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityRepair<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.out.is_empty() {
                let n = this.out.len().min(buf.remaining());
                buf.put_slice(&this.out[..n]);
                this.out.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.repairer.mode == Mode::PassThrough && this.raw.is_empty() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut chunk = [0u8; READ_CHUNK_BYTES];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Ready(Ok(())) if read.filled().is_empty() => {
                    // EOF: hand over whatever is left, complete or not.
                    let rest = this.raw.split();
                    this.out.extend_from_slice(&rest);
                    if this.out.is_empty() {
                        return Poll::Ready(Ok(()));
                    }
                }
                Poll::Ready(Ok(())) => {
                    this.raw.extend_from_slice(read.filled());
                    this.repairer.process(&mut this.raw, &mut this.out);
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityRepair<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Client side of a connection: preface, a SETTINGS frame, then header blocks encoded
    /// with a real (indexing, Huffman-free) HPACK encoder so the dynamic table is exercised.
    fn client_bytes(requests: &[Vec<(&[u8], &[u8])>], split_at: Option<usize>) -> Vec<u8> {
        let mut encoder = loona_hpack::Encoder::new();
        let mut out = BytesMut::new();
        out.extend_from_slice(PREFACE);
        out.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]); // empty SETTINGS
        for (i, headers) in requests.iter().enumerate() {
            let block = BytesMut::from(&encoder.encode(headers.iter().copied())[..]);
            let stream_id = 1 + 2 * i as u32;
            match split_at {
                Some(at) if at < block.len() => {
                    let (a, b) = block.split_at(at);
                    push_frame(&mut out, FRAME_HEADERS, FLAG_END_STREAM, stream_id, a);
                    push_frame(&mut out, FRAME_CONTINUATION, FLAG_END_HEADERS, stream_id, b);
                }
                _ => push_frame(
                    &mut out,
                    FRAME_HEADERS,
                    FLAG_END_HEADERS | FLAG_END_STREAM,
                    stream_id,
                    &block,
                ),
            }
            push_frame(&mut out, 0x0, FLAG_END_STREAM, stream_id, b"body"); // DATA
        }
        out.to_vec()
    }

    fn push_frame(out: &mut BytesMut, kind: u8, flags: u8, stream_id: u32, payload: &[u8]) {
        let len = payload.len();
        out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
        out.put_u32(stream_id);
        out.extend_from_slice(payload);
    }

    /// Feeds `input` in pieces of `step` bytes and decodes what comes out as a server would.
    fn run(input: &[u8], step: usize) -> (Mode, Vec<Vec<(Vec<u8>, Vec<u8>)>>, usize) {
        let mut repairer = Repairer::new();
        let (mut raw, mut out) = (BytesMut::new(), BytesMut::new());
        for piece in input.chunks(step) {
            raw.extend_from_slice(piece);
            repairer.process(&mut raw, &mut out);
        }
        assert!(raw.is_empty(), "complete input must be fully processed");
        assert!(out.starts_with(PREFACE));
        out.advance(PREFACE.len());
        let mut server = loona_hpack::Decoder::new();
        let (mut blocks, mut data_frames) = (Vec::new(), 0);
        let mut block = BytesMut::new();
        while !out.is_empty() {
            let len = complete_frame_len(&out).expect("whole frames out");
            let frame = out.split_to(len);
            match frame[3] {
                FRAME_HEADERS | FRAME_CONTINUATION => {
                    block.extend_from_slice(&frame[FRAME_HEADER_BYTES..]);
                    if frame[4] & FLAG_END_HEADERS != 0 {
                        blocks.push(server.decode(&block).expect("server decodes what we send"));
                        block.clear();
                    }
                }
                0x0 => data_frames += 1,
                _ => {}
            }
        }
        (repairer.mode, blocks, data_frames)
    }

    fn request(
        authority: &'static [u8],
        path: &'static [u8],
    ) -> Vec<(&'static [u8], &'static [u8])> {
        vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", path),
            (b":authority", authority),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ]
    }

    fn authority_of(block: &[(Vec<u8>, Vec<u8>)]) -> Option<&[u8]> {
        block
            .iter()
            .find(|(n, _)| n == b":authority")
            .map(|(_, v)| v.as_slice())
    }

    #[test]
    fn etcd_style_authority_is_repaired_on_every_request() {
        let requests = vec![
            request(
                b"http://127.0.0.1:2379",
                b"/etcdserverpb.Maintenance/Status",
            ),
            request(b"http://127.0.0.1:2379", b"/etcdserverpb.KV/Range"),
            request(b"http://127.0.0.1:2379", b"/etcdserverpb.KV/Put"),
        ];
        for split in [None, Some(3)] {
            for step in [1, 7, 4096] {
                let (mode, blocks, data) = run(&client_bytes(&requests, split), step);
                assert_eq!(mode, Mode::Rewriting);
                assert_eq!(blocks.len(), 3);
                assert_eq!(data, 3, "DATA frames pass through");
                for (block, req) in blocks.iter().zip(&requests) {
                    assert_eq!(authority_of(block), Some(&b"127.0.0.1:2379"[..]));
                    let path = block.iter().find(|(n, _)| n == b":path").unwrap();
                    assert_eq!(
                        path.1, req[2].1,
                        "other headers survive (dynamic table mirrored)"
                    );
                }
            }
        }
    }

    #[test]
    fn valid_authority_switches_to_pass_through_unchanged() {
        let requests = vec![
            request(b"127.0.0.1:2379", b"/a"),
            request(b"127.0.0.1:2379", b"/b"),
        ];
        let input = client_bytes(&requests, None);
        let (mode, blocks, _) = run(&input, 5);
        assert_eq!(mode, Mode::PassThrough);
        assert_eq!(blocks.len(), 2);
        // Byte for byte what the client sent.
        let mut repairer = Repairer::new();
        let (mut raw, mut out) = (BytesMut::from(&input[..]), BytesMut::new());
        repairer.process(&mut raw, &mut out);
        assert_eq!(&out[..], &input[..]);
    }

    #[test]
    fn http1_passes_through() {
        let input = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut repairer = Repairer::new();
        let (mut raw, mut out) = (BytesMut::from(&input[..]), BytesMut::new());
        repairer.process(&mut raw, &mut out);
        assert_eq!(repairer.mode, Mode::PassThrough);
        assert_eq!(&out[..], &input[..]);
    }

    #[test]
    fn hopeless_authority_is_dropped_and_garbage_is_left_to_hyper() {
        assert_eq!(
            repair_header((b":authority".to_vec(), b"a b".to_vec())),
            None
        );
        assert_eq!(
            repair_header((b":authority".to_vec(), b"https://h:1/x".to_vec())),
            Some((b":authority".to_vec(), b"h:1".to_vec()))
        );
        // A header block that does not decode is forwarded as is and repair stops.
        let mut input = BytesMut::from(PREFACE);
        push_frame(
            &mut input,
            FRAME_HEADERS,
            FLAG_END_HEADERS,
            1,
            &[0xff, 0xff, 0xff],
        );
        let expected = input.clone();
        let mut repairer = Repairer::new();
        let mut out = BytesMut::new();
        repairer.process(&mut input, &mut out);
        assert_eq!(repairer.mode, Mode::PassThrough);
        assert_eq!(out, expected);
    }

    #[test]
    fn large_blocks_are_split_into_continuations() {
        let value = vec![b'v'; 40_000];
        let headers = vec![
            (b":authority".to_vec(), b"h:1".to_vec()),
            (b"x-big".to_vec(), value.clone()),
        ];
        let mut out = BytesMut::new();
        write_header_frames(5, true, encode_literals(&headers), &mut out);
        let mut frames = 0;
        let mut block = BytesMut::new();
        while !out.is_empty() {
            let frame = out.split_to(complete_frame_len(&out).unwrap());
            assert!(frame.len() - FRAME_HEADER_BYTES <= FRAME_PAYLOAD_BYTES_MAX);
            block.extend_from_slice(&frame[FRAME_HEADER_BYTES..]);
            frames += 1;
        }
        assert_eq!(frames, 3);
        let decoded = loona_hpack::Decoder::new().decode(&block).unwrap();
        assert_eq!(decoded[1].1, value);
    }
}
