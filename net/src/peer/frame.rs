//! The peer protocol's frames (written down in docs/peer-protocol.md).
//!
//! A frame is `len u32 LE | kind u8 | payload`, where `len` counts the kind byte and the
//! payload. Every connection opens with a [`Hello`] from the dialer, answered by a
//! `HelloOk` or a `Reject` carrying etcd's reason text (e.g. a cluster ID mismatch).

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// "CKVP": the first bytes of every Hello, so a stray client is told apart at once.
pub const MAGIC: u32 = 0x5056_4b43;
/// The protocol version this build speaks.
pub const VERSION: u16 = 1;
/// The largest frame accepted: a raft append is capped at 1 MiB of entries by raft's
/// `max_size_per_msg`, plus one entry of up to --max-request-bytes; snapshot chunks are
/// smaller.
pub const FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Frame kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Hello = 1,
    HelloOk = 2,
    Reject = 3,
    /// A raft message (raft's protobuf encoding), never carrying snapshot data.
    Raft = 4,
    /// Snapshot connection: the MsgSnapshot whose data follows in chunks.
    SnapshotBegin = 5,
    SnapshotChunk = 6,
    /// `size_bytes u64 LE | crc32c u32 LE` of everything sent in chunks.
    SnapshotEnd = 7,
    /// The receiver made the image durable.
    SnapshotAck = 8,
    /// `nonce u64 LE`; answered by a Pong with the same nonce (round-trip time).
    Ping = 9,
    Pong = 10,
    /// `id u64 LE | body`: a request forwarded to the leader (see `forward.rs`).
    Request = 11,
    /// `id u64 LE | body`: its answer.
    Response = 12,
    /// The receiver was removed from the cluster (the last frame on a link).
    Removed = 13,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        use Kind::*;
        Some(match b {
            1 => Hello,
            2 => HelloOk,
            3 => Reject,
            4 => Raft,
            5 => SnapshotBegin,
            6 => SnapshotChunk,
            7 => SnapshotEnd,
            8 => SnapshotAck,
            9 => Ping,
            10 => Pong,
            11 => Request,
            12 => Response,
            13 => Removed,
            _ => return None,
        })
    }
}

/// What a connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Purpose {
    /// The one long-lived connection of a member pair: raft messages both ways.
    Stream = 1,
    /// One snapshot, dialed by its sender.
    Snapshot = 2,
    /// A member starting with --initial-cluster-state=existing asks for the membership.
    Join = 3,
}

/// The dialer's first frame: `magic u32 | version u16 | purpose u8 | cluster_id u64 |
/// from u64 | to u64`, all LE. `cluster_id`/`to` are 0 on a Join connection (unknown yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    pub purpose: Purpose,
    pub cluster_id: u64,
    pub from: u64,
    pub to: u64,
}

impl Hello {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(31);
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.push(self.purpose as u8);
        out.extend_from_slice(&self.cluster_id.to_le_bytes());
        out.extend_from_slice(&self.from.to_le_bytes());
        out.extend_from_slice(&self.to.to_le_bytes());
        out
    }

    pub fn decode(p: &[u8]) -> Result<Hello, String> {
        if p.len() != 31 {
            return Err(format!("hello of {} bytes", p.len()));
        }
        if u32::from_le_bytes(p[0..4].try_into().expect("4")) != MAGIC {
            return Err("not a corekv peer (bad magic)".into());
        }
        let version = u16::from_le_bytes(p[4..6].try_into().expect("2"));
        if version != VERSION {
            return Err(format!(
                "peer protocol version {version} is not supported (this member speaks {VERSION})"
            ));
        }
        let purpose = match p[6] {
            1 => Purpose::Stream,
            2 => Purpose::Snapshot,
            3 => Purpose::Join,
            other => return Err(format!("unknown connection purpose {other}")),
        };
        let u64_at = |at: usize| u64::from_le_bytes(p[at..at + 8].try_into().expect("8"));
        Ok(Hello {
            purpose,
            cluster_id: u64_at(7),
            from: u64_at(15),
            to: u64_at(23),
        })
    }
}

/// Reads one frame: `(kind, payload)`. A length past [`FRAME_BYTES_MAX`], a zero length or
/// an unknown kind is an `InvalidData` error: the connection is dropped, never trusted.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> io::Result<Kind> {
    let len = r.read_u32_le().await? as usize;
    if len == 0 || len > FRAME_BYTES_MAX {
        return Err(invalid(format!("frame length {len}")));
    }
    let kind = r.read_u8().await?;
    let kind = Kind::from_u8(kind).ok_or_else(|| invalid(format!("frame kind {kind}")))?;
    buf.clear();
    buf.resize(len - 1, 0);
    r.read_exact(buf).await?;
    Ok(kind)
}

/// Appends one frame to `out` (written later in one go with others).
pub fn put_frame(out: &mut Vec<u8>, kind: Kind, payload: &[u8]) {
    assert!(payload.len() < FRAME_BYTES_MAX, "frame too large to send");
    out.extend_from_slice(&((payload.len() + 1) as u32).to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(payload);
}

/// Writes one frame now.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    kind: Kind,
    payload: &[u8],
) -> io::Result<()> {
    let mut out = Vec::with_capacity(payload.len() + 5);
    put_frame(&mut out, kind, payload);
    w.write_all(&out).await
}

pub fn invalid(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// `id u64 LE | body` (Request and Response frames).
pub fn split_id(payload: &[u8]) -> io::Result<(u64, &[u8])> {
    if payload.len() < 8 {
        return Err(invalid("request frame without an id".into()));
    }
    let id = u64::from_le_bytes(payload[..8].try_into().expect("8"));
    Ok((id, &payload[8..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trips_and_refuses_strangers() {
        let hello = Hello {
            purpose: Purpose::Snapshot,
            cluster_id: 0xdead,
            from: 1,
            to: 2,
        };
        let bytes = hello.encode();
        assert_eq!(Hello::decode(&bytes).unwrap(), hello);
        let mut bad = bytes.clone();
        bad[0] ^= 1;
        assert!(Hello::decode(&bad).unwrap_err().contains("magic"));
        let mut future = bytes.clone();
        future[4] = 9;
        assert!(Hello::decode(&future).unwrap_err().contains("version"));
        assert!(Hello::decode(&bytes[..30]).is_err());
    }

    #[tokio::test]
    async fn frames_round_trip_and_bad_lengths_are_refused() {
        let mut wire = Vec::new();
        put_frame(&mut wire, Kind::Raft, b"abc");
        put_frame(&mut wire, Kind::Ping, &7u64.to_le_bytes());
        let mut r = wire.as_slice();
        let mut buf = Vec::new();
        assert_eq!(read_frame(&mut r, &mut buf).await.unwrap(), Kind::Raft);
        assert_eq!(buf, b"abc");
        assert_eq!(read_frame(&mut r, &mut buf).await.unwrap(), Kind::Ping);
        assert!(read_frame(&mut r, &mut buf).await.is_err(), "end of input");
        for bad in [
            0u32.to_le_bytes().to_vec(),
            ((FRAME_BYTES_MAX + 1) as u32).to_le_bytes().to_vec(),
            [2u32.to_le_bytes().to_vec(), vec![99, 0]].concat(),
        ] {
            let mut r = bad.as_slice();
            let err = read_frame(&mut r, &mut buf).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        }
    }
}
