//! Walks the frames of a segment file from a known-good position, checking each one.
//! Recovery uses it to find where valid data ends; loading uses it to learn a segment's tail.

use std::io;

use crate::frame::{FrameError, FrameHeader, FRAME_HEADER_LEN};
use crate::io::StorageFile;

/// Bytes read per step of a scan.
pub const SCAN_CHUNK_BYTES: usize = 1024 * 1024;

/// Where a scan stopped and what it saw.
#[derive(Debug, Clone)]
pub struct ScanOutcome {
    /// Position just after the last valid frame.
    pub end_position: u64,
    /// Offset after the last valid frame.
    pub next_offset: u64,
    /// Greatest frame timestamp seen by the scan (`i64::MIN` if none).
    pub max_timestamp_ms: i64,
    pub frames: u64,
    /// Why the scan stopped before the end of the file; `None` at a clean end (end of file or
    /// zeroed, never-written space).
    pub stop: Option<(u64, FrameError)>,
}

/// Scans frames from `position` (a frame start holding `expected_offset`) up to `file_size`.
/// `on_frame` sees every valid frame with its position.
pub async fn scan_frames(
    file: &dyn StorageFile,
    mut position: u64,
    expected_offset: u64,
    file_size: u64,
    mut on_frame: impl FnMut(&FrameHeader, u64),
) -> io::Result<ScanOutcome> {
    let mut outcome = ScanOutcome {
        end_position: position,
        next_offset: expected_offset,
        max_timestamp_ms: i64::MIN,
        frames: 0,
        stop: None,
    };
    while position < file_size {
        let want = SCAN_CHUNK_BYTES.min((file_size - position) as usize);
        let chunk = file.read_at(position, want).await?;
        let mut at = 0usize;
        let mut progressed = false;
        while at < chunk.len() {
            let rest = &chunk[at..];
            if rest.len() < FRAME_HEADER_LEN {
                if position + (at as u64) + rest.len() as u64 >= file_size {
                    // The file ends inside a header: zeros are a clean end, anything else torn.
                    if rest.iter().any(|b| *b != 0) {
                        outcome.stop = Some((
                            position + at as u64,
                            FrameError::Short {
                                needed: FRAME_HEADER_LEN,
                                available: rest.len(),
                            },
                        ));
                    }
                    return Ok(outcome);
                }
                break; // read the header again at the start of the next chunk
            }
            let header = match FrameHeader::decode(rest) {
                Ok(h) => h,
                Err(FrameError::Zero) => return Ok(outcome),
                Err(e) => {
                    outcome.stop = Some((position + at as u64, e));
                    return Ok(outcome);
                }
            };
            if !header.follows(outcome.next_offset) {
                outcome.stop = Some((
                    position + at as u64,
                    FrameError::Invalid("offset does not follow the previous frame"),
                ));
                return Ok(outcome);
            }
            let frame_len = header.frame_len() as usize;
            let frame_pos = position + at as u64;
            if frame_pos + frame_len as u64 > file_size {
                outcome.stop = Some((
                    frame_pos,
                    FrameError::Short {
                        needed: frame_len,
                        available: (file_size - frame_pos) as usize,
                    },
                ));
                return Ok(outcome);
            }
            let payload_ok = if rest.len() >= frame_len {
                header.check_payload(&rest[FRAME_HEADER_LEN..frame_len])
            } else if at == 0 {
                // A frame larger than the chunk: read it whole.
                let whole = file.read_at(frame_pos, frame_len).await?;
                if whole.len() < frame_len {
                    Err(FrameError::Short {
                        needed: frame_len,
                        available: whole.len(),
                    })
                } else {
                    header.check_payload(&whole[FRAME_HEADER_LEN..frame_len])
                }
            } else {
                break; // re-read from this frame
            };
            if let Err(e) = payload_ok {
                outcome.stop = Some((frame_pos, e));
                return Ok(outcome);
            }
            on_frame(&header, frame_pos);
            outcome.frames += 1;
            outcome.next_offset = header.next_offset();
            outcome.max_timestamp_ms = outcome.max_timestamp_ms.max(header.max_timestamp_ms);
            outcome.end_position = frame_pos + frame_len as u64;
            at += frame_len;
            progressed = true;
            if at > chunk.len() {
                break;
            }
        }
        if !progressed && outcome.end_position == position && chunk.len() < FRAME_HEADER_LEN {
            return Ok(outcome);
        }
        position = outcome.end_position;
    }
    Ok(outcome)
}

/// How many bytes after `from` hold anything but zeros, reading until a zeroed chunk or the
/// end of the file. Used to report how much a recovery cut.
pub async fn nonzero_bytes_after(
    file: &dyn StorageFile,
    from: u64,
    file_size: u64,
) -> io::Result<u64> {
    let mut position = from;
    let mut last_nonzero_end = from;
    while position < file_size {
        let want = SCAN_CHUNK_BYTES.min((file_size - position) as usize);
        let chunk = file.read_at(position, want).await?;
        if chunk.is_empty() {
            break;
        }
        match chunk.iter().rposition(|b| *b != 0) {
            Some(i) => last_nonzero_end = position + i as u64 + 1,
            None => break,
        }
        position += chunk.len() as u64;
    }
    Ok(last_nonzero_end - from)
}
