//! Persistence shared by the offset index and the time index: fixed-size entries appended to
//! a file through an [`Appender`], written lazily (at roll, checkpoint and close) because
//! recovery can always rebuild them from the log.

use std::io;
use std::rc::Rc;

use crate::io::StorageFile;
use crate::log::appender::Appender;

/// A fixed-size index entry.
pub trait Entry: Copy {
    const LEN: usize;
    fn encode(&self, out: &mut Vec<u8>);
    fn decode(bytes: &[u8]) -> Self;
}

/// Reads entries from the bytes of an index file, stopping at the first entry that does not
/// strictly follow the previous one (zero padding, garbage, a torn tail).
pub fn decode_entries<E: Entry>(bytes: &[u8], follows: impl Fn(Option<&E>, &E) -> bool) -> Vec<E> {
    let mut entries: Vec<E> = Vec::with_capacity(bytes.len() / E::LEN);
    for raw in bytes.chunks_exact(E::LEN) {
        let entry = E::decode(raw);
        if !follows(entries.last(), &entry) {
            break;
        }
        entries.push(entry);
    }
    entries
}

/// Index entries encoded for an [`IndexFile`] that lacks them.
pub struct IndexTail {
    /// The file holds entries that are no longer in the index: empty it first.
    rewrite: bool,
    bytes: Vec<u8>,
    /// Entries on disk once written.
    entries: usize,
}

/// The file behind an index: entries before `persisted` are on disk.
pub struct IndexFile {
    appender: Appender,
    persisted: usize,
}

impl IndexFile {
    /// An index file that already holds `persisted` valid entries.
    pub async fn open<E: Entry>(file: Rc<dyn StorageFile>, persisted: usize) -> io::Result<Self> {
        let end = (persisted * E::LEN) as u64;
        // Anything after the valid entries is dropped so that it can never be read back.
        file.truncate(end).await?;
        let appender = Appender::open(file, end, end, 0).await?;
        Ok(Self {
            appender,
            persisted,
        })
    }

    /// Appends the entries not yet on disk and fdatasyncs.
    pub async fn persist<E: Entry>(&mut self, entries: &[E]) -> io::Result<()> {
        let tail = self.unwritten(entries);
        self.write(&tail).await
    }

    /// What this file lacks to hold `entries`, encoded now: the caller may then let the
    /// entries change (or stay readable elsewhere) while [`IndexFile::write`] awaits the disk.
    pub fn unwritten<E: Entry>(&self, entries: &[E]) -> IndexTail {
        // Fewer entries than on disk: the index was cut (log truncation), rewrite it whole.
        let rewrite = entries.len() < self.persisted;
        let from = if rewrite { 0 } else { self.persisted };
        let mut bytes = Vec::with_capacity(entries.len().saturating_sub(from) * E::LEN);
        for e in &entries[from..] {
            e.encode(&mut bytes);
        }
        IndexTail {
            rewrite,
            bytes,
            entries: entries.len(),
        }
    }

    /// Puts `tail` (from [`IndexFile::unwritten`]) on disk and fdatasyncs. After an error the
    /// same tail may be written again (the appender is unchanged by a failed write).
    pub async fn write(&mut self, tail: &IndexTail) -> io::Result<()> {
        if tail.rewrite {
            self.appender.file().truncate(0).await?;
            self.appender = Appender::new(self.appender.file().clone(), 0, Vec::new(), 0, 0);
            self.persisted = 0;
        }
        if tail.entries == self.persisted {
            return Ok(());
        }
        self.appender.append(&[&tail.bytes]).await?;
        self.appender.file().fdatasync().await?;
        self.persisted = tail.entries;
        Ok(())
    }

    pub fn path(&self) -> &std::path::Path {
        self.appender.file().path()
    }

    /// Trims block padding so the file size is exactly the entries.
    pub async fn trim(&mut self) -> io::Result<()> {
        self.appender.trim().await
    }
}
