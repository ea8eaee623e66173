//! Fuzz target: `spate_net::fuzzing::check_offsets_record` (what it checks is documented there).
#![no_main]

use libfuzzer_sys::fuzz_target;
use spate_engine::fuzzing::CountingAlloc;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fuzz_target!(|data: &[u8]| spate_net::fuzzing::check_offsets_record(data));
