//! The bot's HTTP front: shared state and the routes of both platforms.

use std::sync::Arc;

use axum::{Router, routing::post};
use mesh_store::{AlertStore, Backend as Store};

use crate::{
    alerts::Deliver,
    approvals::Approvals,
    command::{AlertFilter, Usage},
    core::Mcp,
    discord::Discord,
    metrics::Metrics,
    reply::{Reply, Tone},
    slack::Slack,
};

/// Everything a request handler needs.
#[derive(Debug)]
pub struct App {
    /// Slack, when configured.
    pub slack: Option<Slack>,
    /// Discord, when configured.
    pub discord: Option<Discord>,
    /// The mcp service.
    pub mcp: Mcp,
    /// The approval flow.
    pub approvals: Approvals<Store>,
    /// Shared state.
    pub store: Store,
    /// Metrics.
    pub metrics: Metrics,
}

impl std::fmt::Debug for Approvals<Store> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Approvals").finish_non_exhaustive()
    }
}

impl App {
    /// `alerts on|off` in `target` (`slack:C1`, `discord:123`).
    pub async fn set_alerts(&self, target: &str, on: bool, filter: AlertFilter) -> Reply {
        let value = on.then(|| serde_json::to_vec(&filter).unwrap_or_default());
        match self.store.set_subscription(target, value).await {
            Ok(()) if on => {
                let mut what = Vec::new();
                if !filter.kinds.is_empty() {
                    what.push(format!("kinds {}", filter.kinds.join(", ")));
                }
                if !filter.namespaces.is_empty() {
                    what.push(format!("namespaces {}", filter.namespaces.join(", ")));
                }
                let mut r = Reply::new("Alerts are on in this channel").text(if what.is_empty() {
                    "Every alert: plaintext edges, new callers, failing edges, denials.".to_owned()
                } else {
                    format!("Only {}.", what.join(" in "))
                });
                r.tone = Tone::Good;
                r
            }
            Ok(()) => Reply::new("Alerts are off in this channel"),
            Err(e) => Reply::refusal(
                "Could not change alerts",
                format!("The store is unavailable ({e}); try again shortly."),
            ),
        }
    }
}

impl Deliver for App {
    async fn deliver(&self, target: &str, reply: &Reply) -> std::result::Result<(), String> {
        match target.split_once(':') {
            Some(("slack", channel)) => match &self.slack {
                Some(s) => s.post(channel, reply).await.map(|_| ()),
                None => Err("Slack is not configured".into()),
            },
            Some(("discord", channel)) => match (&self.discord, channel.parse::<u64>()) {
                (Some(d), Ok(c)) => d.send(c, reply).await,
                (None, _) => Err("Discord is not configured".into()),
                (_, Err(_)) => Err(format!("{channel:?} is not a Discord channel id")),
            },
            _ => Err(format!(
                "{target:?} is not slack:<channel> or discord:<channel>"
            )),
        }
        .inspect_err(|_| {
            self.metrics
                .chat_api_error(target.split(':').next().unwrap_or_default());
        })
    }
}

impl App {
    /// Posts `reply` to `target` (`slack:C1`, `discord:123`): the message's id where the
    /// platform gives one the bot can edit later (Slack's `ts`).
    pub async fn post_card(
        &self,
        target: &str,
        reply: &Reply,
    ) -> std::result::Result<Option<String>, String> {
        match target.split_once(':') {
            Some(("slack", channel)) => match &self.slack {
                Some(s) => s
                    .post(channel, reply)
                    .await
                    .map(Some)
                    .map_err(|e| e.to_string()),
                None => Err("Slack is not configured".into()),
            },
            _ => self.deliver(target, reply).await.map(|()| None),
        }
        .inspect_err(|_| {
            self.metrics
                .chat_api_error(target.split(':').next().unwrap_or_default());
        })
    }

    /// Redraws message `message` in `target` (`slack:C1`, `discord:123`) as `reply`.
    pub async fn edit_card(
        &self,
        target: &str,
        message: &str,
        reply: &Reply,
    ) -> std::result::Result<(), String> {
        match target.split_once(':') {
            Some(("slack", channel)) => match &self.slack {
                Some(s) => s
                    .update(channel, message, reply)
                    .await
                    .map_err(|e| e.to_string()),
                None => Err("Slack is not configured".into()),
            },
            Some(("discord", channel)) => {
                match (
                    &self.discord,
                    channel.parse::<u64>(),
                    message.parse::<u64>(),
                ) {
                    (Some(d), Ok(c), Ok(m)) => d.edit(c, m, reply).await,
                    (None, _, _) => Err("Discord is not configured".into()),
                    _ => Err(format!("{target} {message} is not a Discord message")),
                }
            }
            _ => Err(format!(
                "{target:?} is not slack:<channel> or discord:<channel>"
            )),
        }
        .inspect_err(|_| {
            self.metrics
                .chat_api_error(target.split(':').next().unwrap_or_default());
        })
    }
}

/// A request header as text, or why it is missing (signature checks name what was absent).
pub fn header<'h>(
    headers: &'h axum::http::HeaderMap,
    name: &str,
) -> std::result::Result<&'h str, String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| format!("missing {name}"))
}

/// The reply to a command that did not parse.
pub fn usage_reply(u: &Usage) -> Reply {
    let mut r = Reply::refusal("That command did not work", u.problem.clone());
    if !u.usage.is_empty() {
        r = r.code(u.usage.join("\n"), "usage.txt");
    }
    r.note("`/mesh help` lists every command.")
}

/// `POST /slack/commands`, `POST /slack/interactions`, `POST /discord/interactions`; bodies
/// over 256 KiB are refused (a manifest form is at most a few KiB).
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/slack/commands", post(crate::slack::commands))
        .route("/slack/interactions", post(crate::slack::interactions))
        .route("/discord/interactions", post(crate::discord::interactions))
        .layer(axum::extract::DefaultBodyLimit::max(256 * 1024))
        .with_state(app)
}

/// A signed body the bot cannot read: `400` with the reason, on either platform.
impl axum::response::IntoResponse for crate::payload::PayloadError {
    fn into_response(self) -> axum::response::Response {
        (axum::http::StatusCode::BAD_REQUEST, format!("{self}\n")).into_response()
    }
}
