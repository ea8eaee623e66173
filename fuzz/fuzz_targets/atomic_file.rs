//! Fuzz target: `spate_engine::fuzzing::check_atomic_file` (what it checks is documented there).
#![no_main]

use libfuzzer_sys::fuzz_target;
use spate_engine::fuzzing::CountingAlloc;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fuzz_target!(|data: &[u8]| spate_engine::fuzzing::check_atomic_file(data));
