//! Fuzz target: `spate_engine::fuzzing::check_manifest`, the cold tier's manifest decode
//! (input read back from the tier, or from a partition's local copy).
#![no_main]

use libfuzzer_sys::fuzz_target;
use spate_engine::fuzzing::CountingAlloc;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fuzz_target!(|data: &[u8]| spate_engine::fuzzing::check_manifest(data));
