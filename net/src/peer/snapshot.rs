//! Snapshot transfer on a connection of its own: `SnapshotBegin` (the MsgSnapshot),
//! the store image in `SnapshotChunk`s read straight from its file, `SnapshotEnd` (size and
//! crc32c of the image), then the receiver's `SnapshotAck` once the image is durable.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::tls::PeerStream;
use corekv_engine::KvError;
use corekv_raft::Message;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

use super::frame::{self, Hello, Kind, Purpose};
use super::{PeerEvent, Shared};
use crate::metrics;
use crate::shard_api::SnapshotImage;

/// Bytes per chunk frame.
const CHUNK_BYTES: usize = 1024 * 1024;
/// How long the receiver may take to make the image durable and acknowledge it.
const ACK_TIMEOUT_MS: u64 = 60_000;
/// Longest pause between two frames of a snapshot being received.
const FRAME_TIMEOUT_MS: u64 = 30_000;

/// Sends one snapshot; reports the outcome to the sequencer either way.
pub(super) async fn send(
    shared: Arc<Shared>,
    mut message: Message,
    urls: Vec<String>,
    image: oneshot::Receiver<Result<SnapshotImage, KvError>>,
) {
    let to = message.to;
    let started = Instant::now();
    let outcome = async {
        let image = image
            .await
            .map_err(|_| io::Error::other("store image request dropped"))?
            .map_err(|e| io::Error::other(e.to_string()))?;
        let snap = message.snapshot.get_or_insert_with(Default::default);
        let meta = snap.metadata.get_or_insert_with(Default::default);
        // The image holds the store at its own commit, at or after what raft asked for.
        assert!(image.index > 0, "a store image holds a log position");
        meta.index = image.index;
        meta.term = image.term;
        snap.data.clear();
        send_image(&shared, &message, &urls, image).await
    }
    .await;
    let m = metrics::global();
    let delivered = match outcome {
        Ok(()) => {
            m.snapshot_sends.fetch_add(1, Ordering::Relaxed);
            m.snapshot_send_seconds.observe_duration(started.elapsed());
            log::info!("sent a snapshot to peer {to:x} in {:?}", started.elapsed());
            true
        }
        Err(err) => {
            m.snapshot_send_failures.fetch_add(1, Ordering::Relaxed);
            log::warn!("sending a snapshot to peer {to:x} failed: {err}");
            false
        }
    };
    (shared.deliver)(PeerEvent::SnapshotSent { to, delivered });
}

async fn send_image(
    shared: &Shared,
    message: &Message,
    urls: &[String],
    image: SnapshotImage,
) -> io::Result<()> {
    let hello = Hello {
        purpose: Purpose::Snapshot,
        cluster_id: shared.settings.cluster_id,
        from: shared.settings.local_id,
        to: message.to,
    };
    let mut last = io::Error::other("peer has no URL");
    let mut stream = None;
    for url in urls {
        match super::link::handshake(url, hello, shared.settings.tls.as_ref()).await {
            Ok((s, _)) => {
                stream = Some(s);
                break;
            }
            Err(err) => last = err,
        }
    }
    let mut stream = stream.ok_or(last)?;
    let header = corekv_raft::codec::encode_message(message);
    frame::write_frame(&mut stream, Kind::SnapshotBegin, &header).await?;
    let file = Arc::new(image.file);
    let mut crc = 0u32;
    let mut offset = 0u64;
    // Bounded by the image size: each turn sends one chunk of it.
    while offset < image.size_bytes {
        let len = CHUNK_BYTES.min((image.size_bytes - offset) as usize);
        let f = file.clone();
        let chunk = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; len];
            f.read_exact_at(&mut buf, offset).map(|_| buf)
        })
        .await
        .map_err(io::Error::other)??;
        crc = crc32c::crc32c_append(crc, &chunk);
        frame::write_frame(&mut stream, Kind::SnapshotChunk, &chunk).await?;
        offset += len as u64;
    }
    let mut end = image.size_bytes.to_le_bytes().to_vec();
    end.extend_from_slice(&crc.to_le_bytes());
    frame::write_frame(&mut stream, Kind::SnapshotEnd, &end).await?;
    stream.flush().await?;
    let mut buf = Vec::new();
    let kind = tokio::time::timeout(
        Duration::from_millis(ACK_TIMEOUT_MS),
        frame::read_frame(&mut stream, &mut buf),
    )
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no acknowledgement"))??;
    match kind {
        Kind::SnapshotAck => Ok(()),
        Kind::Reject => Err(io::Error::other(String::from_utf8_lossy(&buf).into_owned())),
        other => Err(frame::invalid(format!("{other:?} instead of an ack"))),
    }
}

/// Receives one snapshot into a file next to the store, then hands it to the sequencer.
pub(super) async fn receive(
    mut stream: PeerStream,
    from: u64,
    shared: Arc<Shared>,
) -> io::Result<()> {
    let n = shared.received.fetch_add(1, Ordering::Relaxed);
    let path = shared
        .settings
        .snapshot_dir
        .join(format!("db.recv-{from:x}-{n}"));
    let result = receive_into(&mut stream, from, &shared, &path).await;
    match result {
        Ok(message) => {
            if (shared.deliver)(PeerEvent::SnapshotReceived {
                message,
                path: path.clone(),
            }) {
                frame::write_frame(&mut stream, Kind::SnapshotAck, &[]).await
            } else {
                let _ = std::fs::remove_file(&path);
                let reason = b"this member is too busy to take a snapshot now";
                frame::write_frame(&mut stream, Kind::Reject, reason).await
            }
        }
        Err(err) => {
            let _ = std::fs::remove_file(&path);
            let _ = frame::write_frame(&mut stream, Kind::Reject, err.to_string().as_bytes()).await;
            Err(err)
        }
    }
}

async fn receive_into(
    stream: &mut PeerStream,
    from: u64,
    shared: &Shared,
    path: &PathBuf,
) -> io::Result<Message> {
    let timeout = Duration::from_millis(FRAME_TIMEOUT_MS);
    let mut buf = Vec::new();
    let kind = tokio::time::timeout(timeout, frame::read_frame(stream, &mut buf))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no snapshot header"))??;
    if kind != Kind::SnapshotBegin {
        return Err(frame::invalid(format!(
            "{kind:?} instead of a snapshot header"
        )));
    }
    let message =
        corekv_raft::codec::decode_message(&buf).map_err(|e| frame::invalid(e.to_string()))?;
    if message.from != from || message.to != shared.settings.local_id {
        return Err(frame::invalid(
            "snapshot message names other members".into(),
        ));
    }
    let mut file = tokio::fs::File::create(path).await?;
    let mut crc = 0u32;
    let mut size = 0u64;
    loop {
        let kind = tokio::time::timeout(timeout, frame::read_frame(stream, &mut buf))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "snapshot stalled"))??;
        match kind {
            Kind::SnapshotChunk => {
                size += buf.len() as u64;
                if size > shared.settings.snapshot_bytes_max {
                    return Err(frame::invalid(format!(
                        "snapshot larger than {} bytes",
                        shared.settings.snapshot_bytes_max
                    )));
                }
                crc = crc32c::crc32c_append(crc, &buf);
                file.write_all(&buf).await?;
            }
            Kind::SnapshotEnd => {
                if buf.len() != 12 {
                    return Err(frame::invalid("malformed snapshot end".into()));
                }
                let want_size = u64::from_le_bytes(buf[..8].try_into().expect("8"));
                let want_crc = u32::from_le_bytes(buf[8..].try_into().expect("4"));
                if want_size != size || want_crc != crc {
                    return Err(frame::invalid(format!(
                        "snapshot damaged in transit ({size} bytes, crc {crc:08x}; sender says {want_size}, {want_crc:08x})"
                    )));
                }
                file.sync_all().await?;
                return Ok(message);
            }
            other => return Err(frame::invalid(format!("{other:?} inside a snapshot"))),
        }
    }
}
