//! Fuzzes the chatbot's identity map reader: any bytes give a map or a reason, never a panic.
//! Replayed in `make test` by `services/chatbot/tests/corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = mesh_chatbot::identity::IdentityMap::parse(text);
    }
});
