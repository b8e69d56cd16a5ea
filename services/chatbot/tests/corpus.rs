//! Replays the fuzz inputs of the chat command parser and the identity map reader: the seeds
//! (`tools/fuzz/seeds/`, written by hand; `ok-*` must be accepted, `bad-*` refused) and the
//! corpora `make fuzz` grows (`tools/fuzz/corpus/`). Nothing may panic.

use mesh_chatbot::{command, identity::IdentityMap};

/// Runs `parse` over a corpus; checks `ok-*` seeds are accepted and `bad-*` refused.
fn replay<T, E: std::fmt::Debug>(target: &str, parse: impl Fn(&str) -> Result<T, E>) {
    for (name, bytes) in mesh_testkit::fuzz_inputs(target) {
        let Ok(text) = std::str::from_utf8(&bytes) else {
            continue;
        };
        let r = parse(text);
        if name.starts_with("ok-") {
            assert!(r.is_ok(), "{target}/{name}: {:?}", r.err());
        } else if name.starts_with("bad-") {
            assert!(r.is_err(), "{target}/{name} was accepted");
        }
    }
}

#[test]
fn the_chat_command_corpus_replays_without_a_panic() {
    replay("chat_command", command::parse);
}

#[test]
fn the_identity_map_corpus_replays_without_a_panic() {
    replay("identity_map", IdentityMap::parse);
}
