//! Fuzzes meshsim's topology reader (files and `PUT /topology`): any bytes give a topology or
//! a reason, never a panic. Replayed in `make test` by `tools/meshsim/tests/corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = meshsim::Topology::from_yaml(text);
    }
});
