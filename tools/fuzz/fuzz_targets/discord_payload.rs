//! Fuzzes the reader of what Discord posts once its signature holds (pings, commands, buttons
//! and forms): any body reads as what the bot acts on or as a specific error, never a panic.
//! Replayed in `make test` by `services/chatbot/tests/corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_chatbot::payload;

fuzz_target!(|data: &[u8]| {
    let _ = payload::discord_interaction(data);
});
