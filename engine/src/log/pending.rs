//! Frames accepted by `append` and not yet written, in offset order.

use std::collections::VecDeque;

use bytes::Bytes;
use futures_channel::oneshot;
use glommio::sync::StaticPermit;

use crate::error::Result;
use crate::frame::FrameHeader;
use crate::Durability;

/// One frame waiting to be written (and perhaps synced).
pub(crate) struct Pending {
    pub header: FrameHeader,
    pub payload: Bytes,
    /// Where the assigned base offset goes in the stored payload, and its bytes.
    pub offset_patch: Option<(usize, [u8; 8])>,
    pub durability: Durability,
    /// Set on the last frame of an append call; resolved when that frame is done.
    pub waiter: Option<oneshot::Sender<Result<()>>>,
    pub _permit: StaticPermit,
}

impl Pending {
    pub fn len(&self) -> u64 {
        self.header.frame_len()
    }
}

/// The queue of pending frames, with what the flush loop needs to decide whether to write
/// now: how many bytes wait, and whether any of them waits only for the write.
#[derive(Default)]
pub(crate) struct PendingQueue {
    frames: VecDeque<Pending>,
    bytes: u64,
    /// Frames whose append is acked when written (not waiting for an fdatasync).
    not_durable: usize,
}

impl PendingQueue {
    pub fn push(&mut self, p: Pending) {
        self.bytes += p.len();
        if p.durability != Durability::Durable {
            self.not_durable += 1;
        }
        self.frames.push_back(p);
    }

    pub fn pop_front(&mut self) -> Option<Pending> {
        let p = self.frames.pop_front()?;
        self.bytes -= p.len();
        if p.durability != Durability::Durable {
            self.not_durable -= 1;
        }
        Some(p)
    }

    pub fn front(&self) -> Option<&Pending> {
        self.frames.front()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Bytes of the frames waiting (headers included).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether every frame waiting also waits for an fdatasync.
    pub fn all_durable(&self) -> bool {
        self.not_durable == 0
    }

    pub fn take_all(&mut self) -> Vec<Pending> {
        self.bytes = 0;
        self.not_durable = 0;
        self.frames.drain(..).collect()
    }
}
