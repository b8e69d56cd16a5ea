//! Reading what Slack and Discord send, after the signature check and before anything acts on
//! it: pure functions from a request body to the few fields the bot uses, so the readers can be
//! fuzzed (`tools/fuzz`, targets `slack_payload` and `discord_payload`) apart from the handlers.

use serde::Deserialize;

use crate::command::ApplyKind;

/// Why a signed body is not something the bot acts on (answered `400 Bad Request`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    /// Not `application/x-www-form-urlencoded` with the fields Slack always sends.
    #[error("not a slash command: {0}")]
    NotACommand(String),
    /// Neither a form with a JSON `payload` nor a Discord interaction object.
    #[error("not an interaction: {0}")]
    NotAnInteraction(String),
    /// An interaction of a type the bot has no use for.
    #[error("interaction type {0} is not handled")]
    Unhandled(String),
    /// A button whose id is not `action:id`.
    #[error("unknown component")]
    UnknownComponent,
    /// A modal the bot did not open.
    #[error("unknown form")]
    UnknownForm,
}

/// The fields of a slash command the bot uses.
#[derive(Clone, Debug, Deserialize)]
pub struct SlashCommand {
    /// Who typed it.
    pub user_id: String,
    /// Where.
    pub channel_id: String,
    /// What followed `/mesh`.
    #[serde(default)]
    pub text: String,
    /// Where to answer within 30 minutes.
    pub response_url: String,
    /// Opens a modal within 3 seconds.
    pub trigger_id: String,
}

/// Reads `POST /slack/commands`.
pub fn slack_command(body: &[u8]) -> Result<SlashCommand, PayloadError> {
    serde_urlencoded::from_bytes(body).map_err(|e| PayloadError::NotACommand(e.to_string()))
}

/// A Slack interaction the bot acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SlackInteraction {
    /// The change form (`view_submission` of `mesh-apply`).
    Form {
        /// Who submitted it.
        user: String,
        /// The form's kind, from the metadata the bot put in it.
        kind: ApplyKind,
        /// The channel the form was opened from.
        channel: String,
        /// The manifest typed in.
        manifest: String,
        /// The reason typed in.
        reason: String,
    },
    /// A button on a card (`block_actions`).
    Click {
        /// Who clicked.
        user: String,
        /// The button's action id.
        action_id: String,
        /// The button's value (the card's id).
        value: String,
        /// The card's channel.
        channel: String,
        /// The card's message.
        ts: String,
    },
}

#[derive(Deserialize)]
struct Form {
    payload: String,
}

/// Reads `POST /slack/interactions`: a form body whose `payload` is JSON.
pub fn slack_interaction(body: &[u8]) -> Result<SlackInteraction, PayloadError> {
    let payload: serde_json::Value = serde_urlencoded::from_bytes::<Form>(body)
        .map_err(|e| e.to_string())
        .and_then(|f| serde_json::from_str(&f.payload).map_err(|e| e.to_string()))
        .map_err(PayloadError::NotAnInteraction)?;
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    let user = s(&payload["user"]["id"]);
    match payload["type"].as_str() {
        Some("view_submission") if payload["view"]["callback_id"] == "mesh-apply" => {
            let view = &payload["view"];
            // The metadata is the bot's own (set when it opened the form); an unreadable one
            // falls back to an authorization change rather than refusing the user's input.
            let meta: serde_json::Value =
                serde_json::from_str(view["private_metadata"].as_str().unwrap_or("{}"))
                    .unwrap_or_default();
            let kind = serde_json::from_value(meta["kind"].clone()).unwrap_or(ApplyKind::Authz);
            let values = &view["state"]["values"];
            Ok(SlackInteraction::Form {
                user,
                kind,
                channel: s(&meta["channel"]),
                manifest: s(&values["manifest"]["manifest"]["value"]),
                reason: s(&values["reason"]["reason"]["value"]),
            })
        }
        Some("block_actions") => {
            let action = &payload["actions"][0];
            Ok(SlackInteraction::Click {
                user,
                action_id: s(&action["action_id"]),
                value: s(&action["value"]),
                channel: s(&payload["channel"]["id"]),
                ts: s(&payload["message"]["ts"]),
            })
        }
        other => Err(PayloadError::Unhandled(format!("{other:?}"))),
    }
}

#[derive(Debug, Deserialize)]
struct User {
    id: String,
}

#[derive(Debug, Deserialize)]
struct Member {
    user: User,
}

#[derive(Debug, Default, Deserialize)]
struct Opt {
    name: String,
    #[serde(default)]
    value: Option<serde_json::Value>,
    #[serde(default)]
    options: Vec<Opt>,
}

#[derive(Debug, Default, Deserialize)]
struct Input {
    #[serde(default)]
    custom_id: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    components: Vec<Input>,
}

#[derive(Debug, Default, Deserialize)]
struct Data {
    #[serde(default)]
    name: String,
    #[serde(default)]
    options: Vec<Opt>,
    #[serde(default)]
    custom_id: String,
    #[serde(default)]
    components: Vec<Input>,
}

/// The fields of an interaction the bot uses, as Discord sends them.
#[derive(Debug, Deserialize)]
struct Wire {
    #[serde(rename = "type")]
    kind: u8,
    #[serde(default)]
    token: String,
    #[serde(default)]
    channel_id: Option<String>,
    #[serde(default)]
    member: Option<Member>,
    #[serde(default)]
    user: Option<User>,
    #[serde(default)]
    data: Option<Data>,
}

/// A Discord interaction the bot acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiscordInteraction {
    /// Discord checking the endpoint (type 1).
    Ping,
    /// An application command (type 2).
    Command {
        /// Who ran it (a guild member's user, or the user in a DM).
        user: String,
        /// Where, when Discord says.
        channel: Option<String>,
        /// The interaction token the answer goes to.
        token: String,
        /// The command's name (`mesh` for this bot's).
        name: String,
        /// The subcommand and its `args`, as the same text a Slack user types.
        text: String,
    },
    /// A button (type 3) whose id is `action:id`.
    Click {
        /// Who clicked.
        user: String,
        /// The interaction token the answer goes to.
        token: String,
        /// The button's action.
        action: String,
        /// The card's id.
        id: String,
    },
    /// The change form (type 5, custom id `apply:<kind>`).
    Form {
        /// Who submitted it.
        user: String,
        /// The interaction token the answer goes to.
        token: String,
        /// The form's kind.
        kind: ApplyKind,
        /// The manifest typed in.
        manifest: String,
        /// The reason typed in.
        reason: String,
    },
}

/// Flattens the text inputs of a modal submission (serde_json's recursion limit bounds depth).
fn inputs(components: &[Input], out: &mut Vec<(String, String)>) {
    for c in components {
        if let Some(v) = &c.value {
            out.push((c.custom_id.clone(), v.clone()));
        }
        inputs(&c.components, out);
    }
}

/// Reads `POST /discord/interactions`.
pub fn discord_interaction(body: &[u8]) -> Result<DiscordInteraction, PayloadError> {
    let i: Wire =
        serde_json::from_slice(body).map_err(|e| PayloadError::NotAnInteraction(e.to_string()))?;
    let user = i
        .member
        .map(|m| m.user)
        .or(i.user)
        .map(|u| u.id)
        .unwrap_or_default();
    let data = i.data.unwrap_or_default();
    match i.kind {
        1 => Ok(DiscordInteraction::Ping),
        2 => {
            let text = match data.options.first() {
                Some(sub) => {
                    let args = sub
                        .options
                        .iter()
                        .find(|o| o.name == "args")
                        .and_then(|o| o.value.as_ref())
                        .and_then(|v| v.as_str())
                        .unwrap_or_default();
                    format!("{} {args}", sub.name)
                }
                None => String::new(),
            };
            Ok(DiscordInteraction::Command {
                user,
                channel: i.channel_id,
                token: i.token,
                name: data.name,
                text,
            })
        }
        3 => {
            let (action, id) = data
                .custom_id
                .split_once(':')
                .ok_or(PayloadError::UnknownComponent)?;
            Ok(DiscordInteraction::Click {
                user,
                token: i.token,
                action: action.to_owned(),
                id: id.to_owned(),
            })
        }
        5 => {
            let kind = data
                .custom_id
                .strip_prefix("apply:")
                .and_then(ApplyKind::from_word)
                .ok_or(PayloadError::UnknownForm)?;
            let mut values = Vec::new();
            inputs(&data.components, &mut values);
            let get = |k: &str| {
                values
                    .iter()
                    .find(|(id, _)| id == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            Ok(DiscordInteraction::Form {
                user,
                token: i.token,
                kind,
                manifest: get("manifest"),
                reason: get("reason"),
            })
        }
        other => Err(PayloadError::Unhandled(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
    use super::*;

    #[test]
    fn a_slack_button_and_form_read_as_the_bot_uses_them() {
        let click = r#"{"type":"block_actions","user":{"id":"U1"},"channel":{"id":"C1"},"message":{"ts":"1.2"},"actions":[{"action_id":"approve","value":"abc"}]}"#;
        let body = serde_urlencoded::to_string([("payload", click)]).unwrap();
        assert_eq!(
            slack_interaction(body.as_bytes()).unwrap(),
            SlackInteraction::Click {
                user: "U1".into(),
                action_id: "approve".into(),
                value: "abc".into(),
                channel: "C1".into(),
                ts: "1.2".into()
            }
        );
        let form = r#"{"type":"view_submission","user":{"id":"U2"},"view":{"callback_id":"mesh-apply","private_metadata":"{\"kind\":\"route\",\"channel\":\"C2\"}","state":{"values":{"manifest":{"manifest":{"value":"kind: HTTPRoute"}},"reason":{"reason":{"value":"why"}}}}}}"#;
        let body = serde_urlencoded::to_string([("payload", form)]).unwrap();
        let SlackInteraction::Form { kind, channel, .. } =
            slack_interaction(body.as_bytes()).unwrap()
        else {
            panic!("not a form")
        };
        assert_eq!((kind, channel.as_str()), (ApplyKind::Route, "C2"));
        assert_eq!(
            slack_interaction(b"payload=%7B%22type%22%3A%22shortcut%22%7D"),
            Err(PayloadError::Unhandled("Some(\"shortcut\")".into()))
        );
    }

    #[test]
    fn discord_commands_clicks_and_forms_read_as_the_bot_uses_them() {
        let cmd = br#"{"type":2,"token":"t","channel_id":"9","member":{"user":{"id":"7"}},"data":{"name":"mesh","options":[{"name":"graph","options":[{"name":"args","value":"-n emojivoto"}]}]}}"#;
        assert_eq!(
            discord_interaction(cmd).unwrap(),
            DiscordInteraction::Command {
                user: "7".into(),
                channel: Some("9".into()),
                token: "t".into(),
                name: "mesh".into(),
                text: "graph -n emojivoto".into()
            }
        );
        assert_eq!(
            discord_interaction(br#"{"type":3,"data":{"custom_id":"nocolon"}}"#),
            Err(PayloadError::UnknownComponent)
        );
        let form = br#"{"type":5,"token":"t","user":{"id":"8"},"data":{"custom_id":"apply:authz","components":[{"components":[{"custom_id":"manifest","value":"m"}]},{"components":[{"custom_id":"reason","value":"r"}]}]}}"#;
        let DiscordInteraction::Form {
            manifest, reason, ..
        } = discord_interaction(form).unwrap()
        else {
            panic!("not a form")
        };
        assert_eq!((manifest.as_str(), reason.as_str()), ("m", "r"));
        assert_eq!(
            discord_interaction(br#"{"type":5,"data":{"custom_id":"apply:nope"}}"#),
            Err(PayloadError::UnknownForm)
        );
    }
}
