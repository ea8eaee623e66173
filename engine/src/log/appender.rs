//! Appends bytes to a file opened for O_DIRECT, keeping the unaligned tail block in memory.
//!
//! O_DIRECT writes must start and end on block boundaries. The appender keeps the bytes of
//! the last, partial block; each write starts at that block and carries the tail, the new
//! bytes and zero padding, so a partial block is rewritten until it fills. The file grows by
//! preallocation steps so that most writes do not change its size.
//!
//! Contract: one write at a time (the caller owns the appender exclusively during a write).
//! On error nothing in the appender changes; the caller decides what the failure means.

use std::io;
use std::rc::Rc;

use crate::io::{align_down, align_up, StorageFile, BLOCK_SIZE};

/// Writes are cut at multiples of this file position and the pieces issued together: a
/// write never crosses a 256 KiB boundary of the file. On the virtio disk we measure on, a
/// 1 MiB batch (1 MiB and a frame header: 257 blocks, starting inside the block the previous
/// write ended in) written in one piece is 15 to 20% slower than the same bytes in aligned
/// pieces, which run as fast as fio's aligned 1 MiB writes (docs/BENCHMARKS.md).
pub const WRITE_ALIGN: u64 = 256 * 1024;

fn align_down_to(v: u64, to: u64) -> u64 {
    v - v % to
}

pub struct Appender {
    file: Rc<dyn StorageFile>,
    /// Bytes of the last partial block; shorter than a block.
    tail: Vec<u8>,
    /// File position of the first byte of `tail` (block aligned).
    tail_pos: u64,
    /// The file is preallocated up to here.
    allocated_bytes: u64,
    preallocate_bytes: u64,
}

impl Appender {
    /// An appender whose logical end is `end`; `tail` holds the file's bytes from the block
    /// boundary below `end` up to `end`.
    pub fn new(
        file: Rc<dyn StorageFile>,
        end: u64,
        tail: Vec<u8>,
        allocated_bytes: u64,
        preallocate_bytes: u64,
    ) -> Self {
        debug_assert_eq!(tail.len() as u64, end % BLOCK_SIZE);
        Self {
            file,
            tail,
            tail_pos: align_down(end),
            allocated_bytes,
            preallocate_bytes,
        }
    }

    /// Opens an appender at `end`, reading the partial tail block from the file.
    pub async fn open(
        file: Rc<dyn StorageFile>,
        end: u64,
        allocated_bytes: u64,
        preallocate_bytes: u64,
    ) -> io::Result<Self> {
        let tail_len = (end % BLOCK_SIZE) as usize;
        let tail = if tail_len > 0 {
            let bytes = file.read_at(align_down(end), tail_len).await?;
            if bytes.len() < tail_len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "tail block shorter than the log end",
                ));
            }
            bytes[..tail_len].to_vec()
        } else {
            Vec::new()
        };
        Ok(Self::new(
            file,
            end,
            tail,
            allocated_bytes,
            preallocate_bytes,
        ))
    }

    /// Logical end of the file: every byte before it was appended.
    pub fn end(&self) -> u64 {
        self.tail_pos + self.tail.len() as u64
    }

    pub fn file(&self) -> &Rc<dyn StorageFile> {
        &self.file
    }

    /// Changes the preallocation step of the next appends (smaller when the disk is short of
    /// space; 0: none, the writes allocate their own blocks).
    pub fn set_preallocate_bytes(&mut self, bytes: u64) {
        self.preallocate_bytes = bytes;
    }

    /// Writes `chunks` after the current end: block aligned, in pieces that do not cross a
    /// [`WRITE_ALIGN`] boundary, all in flight at once.
    pub async fn append(&mut self, chunks: &[&[u8]]) -> io::Result<()> {
        let new_len: usize = chunks.iter().map(|c| c.len()).sum();
        if new_len == 0 {
            return Ok(());
        }
        let total = self.tail.len() + new_len;
        let end = self.tail_pos + total as u64;
        if end > self.allocated_bytes && self.preallocate_bytes > 0 {
            let target = align_up(end.max(self.allocated_bytes + self.preallocate_bytes));
            self.file.allocate(target).await?;
            self.allocated_bytes = target;
        }
        // The bytes of this write, in order: the kept tail, then the chunks.
        let mut source = std::iter::once(self.tail.as_slice())
            .chain(chunks.iter().copied())
            .filter(|c| !c.is_empty());
        let mut current: &[u8] = source.next().unwrap_or_default();
        let new_tail_pos = align_down(end);
        let new_tail_len = (end - new_tail_pos) as usize;
        let mut new_tail = Vec::with_capacity(new_tail_len);
        let mut buffers = Vec::new();
        let mut pos = self.tail_pos;
        let write_end = align_up(end);
        while pos < write_end {
            let piece_end = (align_down_to(pos, WRITE_ALIGN) + WRITE_ALIGN).min(write_end);
            let mut buf = self.file.alloc_buffer((piece_end - pos) as usize);
            let out = buf.as_bytes_mut();
            let mut at = 0;
            while at < out.len() && !current.is_empty() {
                let n = current.len().min(out.len() - at);
                out[at..at + n].copy_from_slice(&current[..n]);
                at += n;
                current = &current[n..];
                if current.is_empty() {
                    current = source.next().unwrap_or_default();
                }
            }
            // Zero padding after the data, so a reader scanning frames finds a clean end.
            out[at..].fill(0);
            if piece_end == write_end && new_tail_len > 0 {
                let from = (new_tail_pos - pos) as usize;
                new_tail.extend_from_slice(&out[from..from + new_tail_len]);
            }
            buffers.push((pos, buf));
            pos = piece_end;
        }
        let tail = self.tail.len() as u64;
        crate::copies::add(|c| {
            c.appended_bytes += new_len as u64;
            c.tail_bytes += tail + new_tail_len as u64;
        });
        // The pieces go to the disk together; the write is done when all of them are.
        let file = &self.file;
        let results = futures_util::future::join_all(
            buffers
                .into_iter()
                .map(|(pos, buf)| file.write_at(buf, pos)),
        )
        .await;
        for result in results {
            result?;
        }
        self.tail = new_tail;
        self.tail_pos = new_tail_pos;
        Ok(())
    }

    /// Makes everything appended durable and gives back the preallocated space, durably:
    /// what a segment needs before it is closed or checkpointed.
    pub async fn seal(&mut self) -> io::Result<()> {
        self.file.fdatasync().await?;
        self.trim().await?;
        self.file.fdatasync().await
    }

    /// Gives back preallocated space beyond the logical end (rounded up to a block).
    pub async fn trim(&mut self) -> io::Result<()> {
        let end = self.end();
        self.file.truncate(end).await?;
        self.allocated_bytes = end;
        Ok(())
    }
}
