//! Swapping cleaned segments into a log, crash-safe: after a crash at any point the log
//! holds either the old segments or the cleaned one, never a mix, and never neither.
//!
//! A pass writes the cleaned copy of the segments `[B, E)` as `B.log.cleaned` and makes it
//! durable. Renaming it to `B-E.swap` (its directory entry synced) is the commit point: from
//! then on the cleaned copy is the log's. Completing the swap removes the old segments'
//! indexes, their logs but `B.log`, then renames the swap file over `B.log`. Recovery removes
//! every `.cleaned` file (a pass that never committed) and completes every swap file it finds
//! before it lists the segments; completing is idempotent, so a crash while completing is
//! completed again. The cleaned segment's indexes are written after the swap; a crash before
//! that costs the next start a scan of that segment (`Segment::load_closed` rebuilds them).

use std::path::{Path, PathBuf};

use crate::error::{EngineError, Result};
use crate::io::Storage;
use crate::log::retention::remove_if_present;
use crate::log::segment::{self, parse_segment_name};

/// Suffix of a cleaned segment being written (removed at start: it never committed).
pub const CLEANED_SUFFIX: &str = ".log.cleaned";
/// Suffix of a committed swap waiting to be completed.
pub const SWAP_SUFFIX: &str = ".swap";

pub fn cleaned_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}{CLEANED_SUFFIX}"))
}

/// `{B:020}-{E:020}.swap`: the cleaned copy of the segments with bases in `[B, E)`.
pub fn swap_path(dir: &Path, base: u64, end: u64) -> PathBuf {
    dir.join(format!("{base:020}-{end:020}{SWAP_SUFFIX}"))
}

/// The `(B, E)` a swap file name holds.
pub fn parse_swap_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(SWAP_SUFFIX)?;
    let (b, e) = stem.split_once('-')?;
    let digits = |s: &str| s.len() == 20 && s.bytes().all(|c| c.is_ascii_digit());
    if !digits(b) || !digits(e) {
        return None;
    }
    let (b, e) = (b.parse().ok()?, e.parse().ok()?);
    (b < e).then_some((b, e))
}

/// Commits a cleaned copy: `B.log.cleaned` (written and synced) becomes `B-E.swap`.
pub async fn commit(storage: &dyn Storage, dir: &Path, base: u64, end: u64) -> Result<()> {
    rename_durably(
        storage,
        dir,
        &cleaned_path(dir, base),
        &swap_path(dir, base, end),
    )
    .await
}

/// Completes a committed swap: the old segments of `[B, E)` go and the swap file becomes
/// `B.log`. `sources` are their bases, as the caller knows them (recovery: the files found).
pub async fn complete(
    storage: &dyn Storage,
    dir: &Path,
    base: u64,
    end: u64,
    sources: &[u64],
) -> Result<()> {
    for &s in sources.iter().filter(|s| (base..end).contains(*s)) {
        remove_if_present(storage, &segment::index_path(dir, s)).await?;
        remove_if_present(storage, &segment::time_index_path(dir, s)).await?;
        if s != base {
            remove_if_present(storage, &segment::log_path(dir, s)).await?;
        }
    }
    let to = segment::log_path(dir, base);
    rename_durably(storage, dir, &swap_path(dir, base, end), &to).await
}

/// Renames `from` to `to` in `dir` and syncs the directory.
async fn rename_durably(storage: &dyn Storage, dir: &Path, from: &Path, to: &Path) -> Result<()> {
    storage
        .rename(from, to)
        .await
        .map_err(|e| EngineError::from_io(e, from))?;
    storage
        .sync_dir(dir)
        .await
        .map_err(|e| EngineError::from_io(e, dir))
}

/// At open, before the segments are listed: removes uncommitted cleaned copies and completes
/// committed swaps. Returns how many swaps it completed.
pub async fn recover(storage: &dyn Storage, dir: &Path, name: &str) -> Result<usize> {
    let names = storage
        .list_dir(dir)
        .await
        .map_err(|e| EngineError::from_io(e, dir))?;
    let bases: Vec<u64> = names.iter().filter_map(|n| parse_segment_name(n)).collect();
    let mut completed = 0;
    for file_name in &names {
        if file_name.ends_with(CLEANED_SUFFIX) {
            remove_if_present(storage, &dir.join(file_name)).await?;
        } else if let Some((base, end)) = parse_swap_name(file_name) {
            complete(storage, dir, base, end, &bases).await?;
            tracing::info!(
                partition = name,
                base,
                end,
                "completed a compaction swap that a stop interrupted"
            );
            completed += 1;
        }
    }
    Ok(completed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_names_round_trip_and_refuse_others() {
        let p = swap_path(Path::new("/d"), 5, 900);
        let name = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(parse_swap_name(name), Some((5, 900)));
        assert_eq!(parse_swap_name("00000000000000000005.log"), None);
        assert_eq!(
            parse_swap_name("00000000000000000009-00000000000000000009.swap"),
            None,
            "an empty range"
        );
        assert_eq!(parse_swap_name("5-900.swap"), None);
    }
}
