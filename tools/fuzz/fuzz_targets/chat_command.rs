//! Fuzzes the chat command parser (`/mesh ...` in Slack and Discord): any text gives a command or
//! a usage message, never a panic. Replayed in `make test` by `services/chatbot/tests/corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = mesh_chatbot::command::parse(text);
    }
});
