//! Host checks and tuning for Spate, as Redpanda's `rpk redpanda tune` does for Redpanda.
//! Profiles are data (`tuning/profiles/*.toml`: each check's expected value and why); checks
//! read the host through `/proc` and `/sys` (under a root that tests point at a fake tree) and
//! say pass, fail or unknown (with the reason) and the command that would fix it; `--apply`
//! writes what survives a reboot (a sysctl file, a udev rule, a systemd drop-in and unit).
//! `alloc` tunes the process itself: the allocator settings the broker and spate-bench set at
//! start.

pub mod alloc;
pub mod apply;
pub mod checks;
pub mod device;
pub mod host;
pub mod probe;
pub mod profile;

pub use checks::{run_checks, CheckResult, Status};
pub use host::Host;
pub use profile::Profile;
