//! Fuzz target: `spate_replication::fuzzing::check_cluster_frame` (what it checks is
//! documented there).
#![no_main]

use libfuzzer_sys::fuzz_target;
use spate_engine::fuzzing::CountingAlloc;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fuzz_target!(|data: &[u8]| spate_replication::fuzzing::check_cluster_frame(data));
