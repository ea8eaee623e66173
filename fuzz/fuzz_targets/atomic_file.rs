//! Fuzz target: `spate_net::fuzzing::check_atomic_file`, the atomic-file envelope with both
//! payloads it carries (the engine's recovery checkpoint, the network layer's topic
//! metadata); what it checks is documented there and in `spate_engine::fuzzing`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spate_engine::fuzzing::CountingAlloc;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fuzz_target!(|data: &[u8]| spate_net::fuzzing::check_atomic_file(data));
