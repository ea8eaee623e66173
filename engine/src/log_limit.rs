//! Rate-bounded log lines: a cause that repeats (a client sending the same bad request in a
//! loop, every produce refused on a full disk) is logged at most [`BURST`] times per
//! [`WINDOW`] on each thread (a shard is a thread), and the first line after a quiet spell says
//! how many were left out. A log that a client can fill is a denial of service of its own.
//!
//! Use [`warn_limited!`](crate::warn_limited) with a `&'static str` cause that names the kind
//! of event (not its details, which differ between lines):
//!
//! ```ignore
//! spate_engine::warn_limited!("bad request", peer = %peer, "closing connection: {reason}");
//! ```

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a window of log lines for one cause lasts.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Lines logged per cause and window on one thread; the rest are counted.
pub const BURST: u32 = 10;
/// Distinct causes tracked per thread (causes are static strings, so this is never reached in
/// practice; past it the table is cleared rather than grown).
const MAX_CAUSES: usize = 256;

struct Window {
    started: Instant,
    logged: u32,
    hidden: u64,
}

thread_local! {
    static WINDOWS: RefCell<HashMap<&'static str, Window>> = RefCell::new(HashMap::new());
}

/// Whether a line for `cause` may be logged now. `Some(n)`: log it, saying that `n` lines of
/// that cause were left out since the last one logged (0: none); `None`: leave it out.
pub fn admit(cause: &'static str) -> Option<u64> {
    admit_at(cause, Instant::now())
}

fn admit_at(cause: &'static str, now: Instant) -> Option<u64> {
    WINDOWS.with(|w| {
        let mut w = w.borrow_mut();
        if w.len() >= MAX_CAUSES && !w.contains_key(cause) {
            w.clear();
        }
        let win = w.entry(cause).or_insert(Window {
            started: now,
            logged: 0,
            hidden: 0,
        });
        if now.duration_since(win.started) >= WINDOW {
            win.started = now;
            win.logged = 0;
        }
        if win.logged < BURST {
            win.logged += 1;
            Some(std::mem::take(&mut win.hidden))
        } else {
            win.hidden += 1;
            None
        }
    })
}

/// `tracing::warn!` at a bounded rate per cause (see the module): the first argument is the
/// cause, a `&'static str`; the rest is what `tracing::warn!` takes. A line after some were
/// left out carries `suppressed = N`.
#[macro_export]
macro_rules! warn_limited {
    ($cause:expr, $($arg:tt)+) => {
        if let Some(suppressed) = $crate::log_limit::admit($cause) {
            if suppressed == 0 {
                ::tracing::warn!($($arg)+);
            } else {
                ::tracing::warn!(suppressed, $($arg)+);
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_silence_then_a_count_of_what_was_left_out() {
        let t0 = Instant::now();
        for _ in 0..BURST {
            assert_eq!(admit_at("test burst", t0), Some(0));
        }
        for _ in 0..5 {
            assert_eq!(admit_at("test burst", t0 + Duration::from_secs(1)), None);
        }
        // Another cause has its own budget.
        assert_eq!(admit_at("test other", t0), Some(0));
        // The next window logs again and says how many lines the last one left out.
        assert_eq!(admit_at("test burst", t0 + WINDOW), Some(5));
        assert_eq!(admit_at("test burst", t0 + WINDOW), Some(0));
    }
}
