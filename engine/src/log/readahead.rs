//! Read-ahead for sequential readers of a partition.
//!
//! A consumer that lags behind the batch cache reads from disk, one fetch after another, each
//! starting where the previous one ended. Without read-ahead every fetch waits for its own
//! O_DIRECT read (there is no page cache to read ahead for us). After a disk read, the log
//! remembers where that reader will continue (its next offset and file position, so the next
//! read needs no index lookup and re-reads nothing) and starts reading the following chunk in
//! the background. The next fetch at that offset takes the chunk, usually already in memory.
//!
//! Memory is bounded per shard by [`ReadAheadBudget`](crate::readahead_budget::ReadAheadBudget): a chunk is only read ahead while the
//! shard's chunks in memory stay under the budget; without budget the reader still gets the
//! position (it just waits for its own read).

use std::collections::VecDeque;
use std::io;
use std::rc::Rc;

use bytes::Bytes;
use glommio::Task;

use crate::readahead_budget::{ReadAheadBudget, Reservation};

/// Readers of one partition followed at once (a reader beyond these loses its read-ahead).
const SLOTS_PER_PARTITION: usize = 4;

/// Where a sequential reader continues, and the chunk read ahead for it (if any).
pub struct Resume {
    /// The offset the reader will ask for next: the end of what it was given.
    pub next_offset: u64,
    /// Base offset of the segment holding `next_offset`'s frame.
    pub segment_base: u64,
    /// File position of that frame.
    pub position: u64,
    chunk: Option<(Task<io::Result<Bytes>>, Reservation)>,
}

impl Resume {
    /// The chunk read ahead from `position`, once read; `None` if nothing was read ahead or the
    /// read failed (the caller then reads for itself, and sees the error if it persists).
    pub async fn chunk(self) -> Option<Bytes> {
        let (task, _reservation) = self.chunk?;
        task.await.ok()
    }
}

/// The resume points of one partition's sequential readers, newest last.
#[derive(Default)]
pub struct ReadAhead {
    resumes: VecDeque<Resume>,
}

impl ReadAhead {
    /// The resume point of a reader continuing at `offset`, if one was left.
    pub fn take(&mut self, offset: u64) -> Option<Resume> {
        let i = self.resumes.iter().position(|r| r.next_offset == offset)?;
        self.resumes.remove(i)
    }

    /// Records where a reader continues, reading `len` bytes at `position` in `file` ahead of
    /// it if `len > 0` and the budget allows.
    pub fn leave(
        &mut self,
        budget: &Rc<ReadAheadBudget>,
        file: Rc<dyn crate::io::StorageFile>,
        next_offset: u64,
        segment_base: u64,
        position: u64,
        len: usize,
    ) {
        self.resumes.retain(|r| r.next_offset != next_offset);
        if self.resumes.len() >= SLOTS_PER_PARTITION {
            self.resumes.pop_front();
        }
        let chunk = (len > 0)
            .then(|| budget.reserve(len))
            .flatten()
            .map(|reservation| {
                // A resume point dropped unused (another reader took the slot, the log closed)
                // drops the task, which cancels the read.
                let task = glommio::spawn_local(async move { file.read_at(position, len).await });
                (task, reservation)
            });
        self.resumes.push_back(Resume {
            next_offset,
            segment_base,
            position,
            chunk,
        });
    }

    /// Forgets every resume point (the log is closing or going away).
    pub fn clear(&mut self) {
        self.resumes.clear();
    }
}
