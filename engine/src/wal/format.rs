//! The on-disk format: segment header and record frames (see docs/wal-format.md).
//!
//! Everything here is pure byte work, so it can be tested and reasoned about without files.

use super::RecordKind;

/// First bytes of every segment file.
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"CKVWAL\r\n";
/// Bumped whenever the layout changes incompatibly.
pub(crate) const FORMAT_VERSION: u32 = 1;
/// magic(8) + version(4) + seq(8) + header crc32c(4).
pub(crate) const SEGMENT_HEADER_BYTES: usize = 24;
/// len(4) + crc32c(4) + type(1).
pub(crate) const FRAME_HEADER_BYTES: usize = 9;

/// Encodes the fixed header that starts segment `seq`.
pub(crate) fn encode_segment_header(seq: u64) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut header = [0u8; SEGMENT_HEADER_BYTES];
    header[0..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[12..20].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32c::crc32c(&header[0..20]);
    header[20..24].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Checks a segment header and returns the sequence number it carries, or why it is bad.
pub(crate) fn decode_segment_header(data: &[u8]) -> Result<u64, String> {
    if data.len() < SEGMENT_HEADER_BYTES {
        return Err(format!(
            "segment header needs {SEGMENT_HEADER_BYTES} bytes, file has {}",
            data.len()
        ));
    }
    if data[0..8] != SEGMENT_MAGIC {
        return Err("bad segment magic".to_string());
    }
    let stored_crc = read_u32(data, 20);
    if stored_crc != crc32c::crc32c(&data[0..20]) {
        return Err("segment header checksum mismatch".to_string());
    }
    let version = read_u32(data, 8);
    if version != FORMAT_VERSION {
        return Err(format!(
            "unsupported format version {version} (expected {FORMAT_VERSION})"
        ));
    }
    Ok(u64::from_le_bytes(
        data[12..20].try_into().expect("8 bytes"),
    ))
}

/// Bytes one record occupies on disk.
pub(crate) fn frame_bytes(payload_bytes: usize) -> usize {
    FRAME_HEADER_BYTES + payload_bytes
}

/// Checksum of a record: covers the type byte and the payload, so a record cannot be
/// re-labelled by a flipped type byte without detection.
fn record_crc(kind_byte: u8, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&[kind_byte]), payload)
}

/// Appends one framed record to `out`. The caller has checked the payload size bound.
pub(crate) fn encode_record(out: &mut Vec<u8>, kind: RecordKind, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("payload size checked by caller");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&record_crc(kind as u8, payload).to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(payload);
}

/// What sits at one offset of a segment.
#[derive(Debug)]
pub(crate) enum Frame<'a> {
    /// End of data: zero header or all-zero bytes up to the end of the file.
    End,
    /// A valid record; `end` is the offset right after it.
    Record {
        kind: RecordKind,
        payload: &'a [u8],
        end: usize,
    },
    /// Not a valid record. `claimed_end` is where the record would end if its length field
    /// were right (None when not even the length could be read).
    Invalid {
        reason: String,
        claimed_end: Option<u64>,
    },
}

/// Parses the frame at `offset` of a segment image, bounding the payload by `record_bytes_max`.
pub(crate) fn parse_frame(data: &[u8], offset: usize, record_bytes_max: u32) -> Frame<'_> {
    let rest = &data[offset.min(data.len())..];
    if rest.len() < FRAME_HEADER_BYTES {
        // Room for no full header: zeros are the preallocated tail, anything else a torn header.
        return if rest.iter().all(|&b| b == 0) {
            Frame::End
        } else {
            Frame::Invalid {
                reason: "truncated record header".to_string(),
                claimed_end: None,
            }
        };
    }
    let len = read_u32(rest, 0);
    let crc = read_u32(rest, 4);
    let kind_byte = rest[8];
    if len == 0 && crc == 0 && kind_byte == 0 {
        return Frame::End;
    }
    let claimed_end = offset as u64 + FRAME_HEADER_BYTES as u64 + u64::from(len);
    let invalid = |reason: String| Frame::Invalid {
        reason,
        claimed_end: Some(claimed_end),
    };
    if len > record_bytes_max {
        return invalid(format!(
            "record length {len} over the maximum {record_bytes_max}"
        ));
    }
    if claimed_end > data.len() as u64 {
        return invalid(format!("record length {len} runs past the end of the file"));
    }
    let Some(kind) = RecordKind::from_u8(kind_byte) else {
        return invalid(format!("unknown record type {kind_byte}"));
    };
    let payload = &rest[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len as usize];
    if record_crc(kind_byte, payload) != crc {
        return invalid("record checksum mismatch".to_string());
    }
    Frame::Record {
        kind,
        payload,
        end: claimed_end as usize,
    }
}

fn read_u32(data: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_damage() {
        let header = encode_segment_header(0x1234);
        assert_eq!(decode_segment_header(&header), Ok(0x1234));
        let mut bad = header;
        bad[13] ^= 1;
        assert!(decode_segment_header(&bad)
            .unwrap_err()
            .contains("checksum"));
        assert!(decode_segment_header(&header[..10]).is_err());
    }

    #[test]
    fn record_round_trip_and_end_marker() {
        let mut buf = Vec::new();
        encode_record(&mut buf, RecordKind::Entry, b"hello");
        encode_record(&mut buf, RecordKind::HardState, b"");
        buf.extend_from_slice(&[0u8; 20]);
        let Frame::Record { kind, payload, end } = parse_frame(&buf, 0, 100) else {
            panic!()
        };
        assert_eq!((kind, payload, end), (RecordKind::Entry, &b"hello"[..], 14));
        let Frame::Record { kind, payload, end } = parse_frame(&buf, 14, 100) else {
            panic!()
        };
        assert_eq!((kind, payload, end), (RecordKind::HardState, &b""[..], 23));
        assert!(matches!(parse_frame(&buf, 23, 100), Frame::End));
        assert!(matches!(parse_frame(&buf, buf.len() - 3, 100), Frame::End));
        assert!(matches!(parse_frame(&buf, buf.len(), 100), Frame::End));
    }

    #[test]
    fn empty_payload_records_never_look_like_the_end_marker() {
        // The end marker needs type 0, which no record kind uses; check the crc anyway.
        for kind in RecordKind::ALL {
            assert_ne!(record_crc(kind as u8, b""), 0);
        }
    }

    #[test]
    fn invalid_frames() {
        let mut buf = Vec::new();
        encode_record(&mut buf, RecordKind::Entry, b"hello");
        let mut flipped = buf.clone();
        flipped[10] ^= 0x40;
        assert!(matches!(
            parse_frame(&flipped, 0, 100),
            Frame::Invalid {
                claimed_end: Some(14),
                ..
            }
        ));
        assert!(matches!(parse_frame(&buf, 0, 4), Frame::Invalid { .. }));
        assert!(matches!(
            parse_frame(&buf[..12], 0, 100),
            Frame::Invalid { .. }
        ));
        assert!(matches!(
            parse_frame(&buf[..5], 0, 100),
            Frame::Invalid {
                claimed_end: None,
                ..
            }
        ));
        let mut bad_type = buf.clone();
        bad_type[8] = 9;
        assert!(matches!(
            parse_frame(&bad_type, 0, 100),
            Frame::Invalid { .. }
        ));
    }
}
