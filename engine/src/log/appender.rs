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

    /// Writes `chunks` after the current end (one write call, block aligned).
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
        let mut buf = self.file.alloc_buffer(total);
        {
            let out = buf.as_bytes_mut();
            out[..self.tail.len()].copy_from_slice(&self.tail);
            let mut at = self.tail.len();
            for chunk in chunks {
                out[at..at + chunk.len()].copy_from_slice(chunk);
                at += chunk.len();
            }
            debug_assert_eq!(at, total);
            let tail = self.tail.len() as u64;
            crate::copies::add(|c| {
                c.appended_bytes += new_len as u64;
                c.tail_bytes += tail;
            });
            // Zero padding after the data, so a reader scanning frames finds a clean end.
            out[at..].fill(0);
        }
        let new_tail_pos = align_down(end);
        let new_tail_len = (end - new_tail_pos) as usize;
        let from = (new_tail_pos - self.tail_pos) as usize;
        let new_tail = buf.as_bytes()[from..from + new_tail_len].to_vec();
        crate::copies::add(|c| c.tail_bytes += new_tail_len as u64);
        self.file.write_at(buf, self.tail_pos).await?;
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
