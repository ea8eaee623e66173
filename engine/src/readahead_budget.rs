//! The read-ahead memory budget of a shard: the bytes that chunks read ahead of sequential
//! readers may hold at once, besides the batch cache (which owns the budget and hands it to
//! every partition's read-ahead). Its own module so that the cache and the log's read path
//! both use it without depending on each other.

use std::cell::Cell;
use std::rc::Rc;

/// Bytes of read-ahead the chunks of one shard may hold at once.
pub struct ReadAheadBudget {
    limit: usize,
    used: Cell<usize>,
}

impl ReadAheadBudget {
    pub fn new(limit: usize) -> Rc<Self> {
        Rc::new(Self {
            limit,
            used: Cell::new(0),
        })
    }

    pub fn used(&self) -> usize {
        self.used.get()
    }

    pub(crate) fn reserve(self: &Rc<Self>, bytes: usize) -> Option<Reservation> {
        let used = self.used.get();
        if used + bytes > self.limit {
            return None;
        }
        self.used.set(used + bytes);
        Some(Reservation {
            budget: self.clone(),
            bytes,
        })
    }
}

/// Budget held by one chunk; given back when the chunk is consumed or dropped.
pub(crate) struct Reservation {
    budget: Rc<ReadAheadBudget>,
    bytes: usize,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.set(self.budget.used.get() - self.bytes);
    }
}
