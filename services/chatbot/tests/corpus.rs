//! Replays the fuzz inputs of the chat command parser, the identity map reader and the Slack and
//! Discord payload readers: the seeds
//! (`tools/fuzz/seeds/`, written by hand; `ok-*` must be accepted, `bad-*` refused) and the
//! corpora `make fuzz` grows (`tools/fuzz/corpus/`). Nothing may panic.

use mesh_chatbot::{command, identity::IdentityMap, payload};

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

#[test]
fn the_slack_payload_corpus_replays_without_a_panic() {
    for (name, bytes) in mesh_testkit::fuzz_inputs("slack_payload") {
        let (cmd, interaction) = (
            payload::slack_command(&bytes),
            payload::slack_interaction(&bytes),
        );
        if name.starts_with("ok-command") {
            assert!(cmd.is_ok(), "slack_payload/{name}: {:?}", cmd.err());
        } else if name.starts_with("ok-interaction") {
            assert!(
                interaction.is_ok(),
                "slack_payload/{name}: {:?}",
                interaction.err()
            );
        } else if name.starts_with("bad-") {
            assert!(
                cmd.is_err() && interaction.is_err(),
                "slack_payload/{name} was accepted"
            );
        }
    }
}

#[test]
fn the_discord_payload_corpus_replays_without_a_panic() {
    for (name, bytes) in mesh_testkit::fuzz_inputs("discord_payload") {
        let r = payload::discord_interaction(&bytes);
        if name.starts_with("ok-") {
            assert!(r.is_ok(), "discord_payload/{name}: {:?}", r.err());
        } else if name.starts_with("bad-") {
            assert!(r.is_err(), "discord_payload/{name} was accepted");
        }
    }
}
