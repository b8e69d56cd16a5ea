//! Discord: the HTTP interactions endpoint (Ed25519-signed requests only) and the REST calls
//! the bot makes (serenity's client), with a deadline on each.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serenity::{
    all::{ApplicationId, ChannelId, CommandOptionType, GuildId},
    builder::{CreateAttachment, CreateCommand, CreateCommandOption},
    http::{Http, HttpBuilder},
    interactions_endpoint::Verifier,
};

use crate::{
    app::App,
    command::{self, ApplyKind, Command},
    identity::Platform,
    payload::{self, DiscordInteraction},
    reply::{self, Reply},
};

/// Discord's API base; a stand-in replaces it for tests and the demo.
pub const DISCORD_API: &str = "https://discord.com";

/// The Discord side: signature verifier and REST client.
pub struct Discord {
    verifier: Option<Verifier>,
    http: Http,
    timeout: Duration,
}

impl std::fmt::Debug for Discord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discord").finish_non_exhaustive()
    }
}

/// Most seconds an interaction's timestamp may be off (replays are refused).
const MAX_SKEW: i64 = 300;

impl Discord {
    /// A Discord side verifying with `public_key` (hex), calling `api_url` as application
    /// `application_id` with `bot_token`.
    pub fn new(
        public_key: &str,
        application_id: u64,
        bot_token: &str,
        api_url: &str,
        timeout: Duration,
    ) -> Result<Self, String> {
        let key = hex::decode(public_key.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or("--discord-public-key: not 64 hex digits")?;
        let verifier = Verifier::try_new(key).map_err(|e| format!("--discord-public-key: {e}"))?;
        let mut d = Self::rest(application_id, bot_token, api_url, timeout)?;
        d.verifier = Some(verifier);
        Ok(d)
    }

    /// A REST-only Discord side (registering commands needs no public key).
    pub fn rest(
        application_id: u64,
        bot_token: &str,
        api_url: &str,
        timeout: Duration,
    ) -> Result<Self, String> {
        if application_id == 0 {
            return Err("--discord-application-id: required with --discord-public-key".into());
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| e.to_string())?;
        let mut b = HttpBuilder::new(bot_token)
            .application_id(ApplicationId::new(application_id))
            .client(client);
        let api_url = api_url.trim_end_matches('/');
        if api_url != DISCORD_API {
            // serenity's rate limiter sends to Discord itself, ignoring the proxy: a stand-in
            // (or an HTTP proxy doing its own rate limiting) goes without it.
            b = b.proxy(api_url).ratelimiter_disabled(true);
        }
        Ok(Self {
            verifier: None,
            http: b.build(),
            timeout,
        })
    }

    /// Checks `X-Signature-Ed25519` over timestamp + body, and the timestamp's age.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
        let sig = crate::app::header(headers, "x-signature-ed25519")?;
        let ts = crate::app::header(headers, "x-signature-timestamp")?;
        self.verifier
            .as_ref()
            .ok_or("no --discord-public-key to verify with")?
            .verify(sig, ts, body)
            .map_err(|()| "X-Signature-Ed25519 does not match".to_owned())?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        match ts.parse::<i64>() {
            Ok(t) if (now - t).abs() <= MAX_SKEW => Ok(()),
            _ => Err("stale or bad X-Signature-Timestamp (more than 5 minutes off)".into()),
        }
    }

    async fn bounded<T>(
        &self,
        what: &str,
        f: impl Future<Output = serenity::Result<T>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(format!("Discord {what}: {e}")),
            Err(_) => Err(format!("Discord {what}: no answer in {:?}", self.timeout)),
        }
    }

    fn body(reply: &Reply) -> Result<(serde_json::Value, Vec<CreateAttachment>), String> {
        let m = reply::discord(reply);
        let v = serde_json::from_str(&m.json).map_err(|e| format!("rendered message: {e}"))?;
        let files = m
            .files
            .into_iter()
            .map(|f| CreateAttachment::bytes(f.bytes, f.name))
            .collect();
        Ok((v, files))
    }

    /// Answers a deferred interaction: edits its original response, or, for a reply only the
    /// requester should see, removes the placeholder and answers privately.
    pub async fn answer(&self, token: &str, reply: &Reply) -> Result<(), String> {
        let (body, files) = Self::body(reply)?;
        if reply.ephemeral {
            self.bounded(
                "delete original",
                self.http.delete_original_interaction_response(token),
            )
            .await?;
            self.bounded(
                "followup",
                self.http.create_followup_message(token, &body, files),
            )
            .await?;
        } else {
            self.bounded(
                "edit original",
                self.http
                    .edit_original_interaction_response(token, &body, files),
            )
            .await?;
        }
        Ok(())
    }

    /// Redraws the message a clicked component belongs to.
    pub async fn redraw(&self, token: &str, reply: &Reply) -> Result<(), String> {
        let (body, files) = Self::body(reply)?;
        self.bounded(
            "edit message",
            self.http
                .edit_original_interaction_response(token, &body, files),
        )
        .await?;
        Ok(())
    }

    /// Answers a deferred interaction with `reply` and returns the message's id (`None` for a
    /// private answer), so the bot can redraw it later.
    pub async fn answer_message(&self, token: &str, reply: &Reply) -> Result<Option<u64>, String> {
        if reply.ephemeral {
            return self.answer(token, reply).await.map(|()| None);
        }
        let (body, files) = Self::body(reply)?;
        let m = self
            .bounded(
                "edit original",
                self.http
                    .edit_original_interaction_response(token, &body, files),
            )
            .await?;
        Ok(Some(m.id.get()))
    }

    /// A new message in the channel of an interaction, everyone sees it.
    pub async fn followup(&self, token: &str, reply: &Reply) -> Result<(), String> {
        let (body, files) = Self::body(reply)?;
        self.bounded(
            "followup",
            self.http.create_followup_message(token, &body, files),
        )
        .await?;
        Ok(())
    }

    /// Redraws message `message` of `channel` (one the bot posted).
    pub async fn edit(&self, channel: u64, message: u64, reply: &Reply) -> Result<(), String> {
        let (body, files) = Self::body(reply)?;
        self.bounded(
            "edit message",
            self.http.edit_message(
                ChannelId::new(channel),
                serenity::all::MessageId::new(message),
                &body,
                files,
            ),
        )
        .await?;
        Ok(())
    }

    /// A message only the clicker sees.
    pub async fn private(&self, token: &str, reply: &Reply) -> Result<(), String> {
        let mut reply = reply.clone();
        reply.ephemeral = true;
        let (body, files) = Self::body(&reply)?;
        self.bounded(
            "followup",
            self.http.create_followup_message(token, &body, files),
        )
        .await?;
        Ok(())
    }

    /// Posts `reply` to a channel (alerts).
    pub async fn send(&self, channel: u64, reply: &Reply) -> Result<(), String> {
        let (body, files) = Self::body(reply)?;
        self.bounded(
            "create message",
            self.http
                .send_message(ChannelId::new(channel), files, &body),
        )
        .await?;
        Ok(())
    }

    /// Registers `/mesh` with its subcommands, globally or in one guild (immediate).
    pub async fn register_commands(&self, guild: Option<u64>) -> Result<usize, String> {
        let commands = vec![slash_command()];
        let done = match guild {
            Some(g) => {
                self.bounded(
                    "register guild commands",
                    self.http.create_guild_commands(GuildId::new(g), &commands),
                )
                .await?
            }
            None => {
                self.bounded(
                    "register commands",
                    self.http.create_global_commands(&commands),
                )
                .await?
            }
        };
        Ok(done.len())
    }
}

/// `/mesh` with one subcommand per command word, each with an optional `args` string.
pub fn slash_command() -> CreateCommand {
    let mut c =
        CreateCommand::new("mesh").description("Ask about the Linkerd mesh, or change its policy");
    for (usage, what) in command::USAGE {
        let mut words = usage.split_whitespace();
        let Some(name) = words.next() else { continue };
        // One subcommand per word: `alerts off` and `rollout <id>` share theirs.
        if (name == "alerts" && usage.contains("off"))
            || (name == "rollout" && !usage.contains("start"))
        {
            continue;
        }
        let args: Vec<&str> = words.collect();
        let mut sub = CreateCommandOption::new(CommandOptionType::SubCommand, name, *what);
        if !args.is_empty() {
            let hint = if name == "alerts" {
                "on [ns=a,b] [kind=...] | off".to_owned()
            } else if name == "rollout" {
                "start <ns>[/<workload>] [since=7d] [observe=30m] | <id>".to_owned()
            } else {
                args.join(" ")
            };
            sub = sub.add_sub_option(
                CreateCommandOption::new(CommandOptionType::String, "args", hint)
                    .required(false)
                    .max_length(500),
            );
        }
        c = c.add_option(sub);
    }
    c
}

fn respond(kind: u8, data: Option<serde_json::Value>) -> Response {
    let mut v = serde_json::json!({ "type": kind });
    if let Some(d) = data {
        v["data"] = d;
    }
    axum::Json(v).into_response()
}

/// An immediate message (type 4).
fn message(reply: &Reply) -> Response {
    let m = reply::discord(reply);
    match serde_json::from_str::<serde_json::Value>(&m.json) {
        Ok(v) => respond(4, Some(v)),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `POST /discord/interactions`.
pub async fn interactions(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(discord) = app.discord.as_ref() else {
        return (StatusCode::NOT_FOUND, "Discord is not configured\n").into_response();
    };
    if let Err(why) = discord.verify(&headers, &body) {
        app.metrics.signature_failure("discord");
        tracing::warn!(%why, "refused a Discord request");
        return (StatusCode::UNAUTHORIZED, format!("{why}\n")).into_response();
    }
    let interaction = match payload::discord_interaction(&body) {
        Ok(i) => i,
        Err(e) => return e.into_response(),
    };
    match interaction {
        DiscordInteraction::Ping => respond(1, None),
        DiscordInteraction::Command {
            user,
            channel,
            token,
            name,
            text,
        } => {
            if name != "mesh" {
                return message(&Reply::refusal(
                    "Unknown command",
                    format!(
                        "/{} is not a command of this bot; try /mesh help",
                        command::clip(&name)
                    ),
                ));
            }
            let parsed = command::parse(&text);
            app.metrics.command(
                "discord",
                parsed
                    .as_ref()
                    .map_or("invalid", crate::slack::command_name),
            );
            if let Err(r) = app.approvals.identity(Platform::Discord, &user) {
                return message(&r);
            }
            match parsed {
                Err(u) => message(&crate::app::usage_reply(&u)),
                Ok(Command::Help) => message(&crate::core::help()),
                Ok(Command::Apply(kind)) => {
                    use askama::Template as _;
                    let (title, label) = match kind {
                        ApplyKind::Authz => (
                            "Authorization change",
                            "AuthorizationPolicy manifest (YAML)",
                        ),
                        ApplyKind::Route => ("Route change", "HTTPRoute manifest (YAML)"),
                    };
                    let custom_id = format!("apply:{}", kind.word());
                    match (reply::DiscordModal {
                        custom_id: &custom_id,
                        title,
                        label,
                        max_len: 4000,
                    })
                    .render()
                    .map_err(|e| e.to_string())
                    .and_then(|s| {
                        serde_json::from_str::<serde_json::Value>(&s).map_err(|e| e.to_string())
                    }) {
                        Ok(v) => axum::Json(v).into_response(),
                        Err(e) => message(&Reply::refusal("Could not open the form", e)),
                    }
                }
                Ok(Command::Rollout(rc)) => {
                    let app = app.clone();
                    let channel = channel.unwrap_or_default();
                    tokio::spawn(async move {
                        let (reply, id) =
                            app.approvals.rollout(Platform::Discord, &user, &rc).await;
                        let Some(d) = app.discord.as_ref() else {
                            return;
                        };
                        match d.answer_message(&token, &reply).await {
                            Ok(Some(message)) if !channel.is_empty() => {
                                if let Some(id) = &id {
                                    let (target, message) =
                                        (format!("discord:{channel}"), message.to_string());
                                    crate::rollouts::track_card(&app, &target, &message, id).await;
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                app.metrics.chat_api_error("discord");
                                tracing::warn!(%e, "could not answer a Discord command");
                            }
                        }
                    });
                    respond(5, None)
                }
                Ok(Command::Alerts { on, filter }) => {
                    let channel = channel.unwrap_or_default();
                    message(
                        &app.set_alerts(&format!("discord:{channel}"), on, filter)
                            .await,
                    )
                }
                Ok(read) => {
                    let app = app.clone();
                    tokio::spawn(async move {
                        let reply = app.mcp.run(&read).await;
                        if let Some(d) = app.discord.as_ref()
                            && let Err(e) = d.answer(&token, &reply).await
                        {
                            app.metrics.chat_api_error("discord");
                            tracing::warn!(%e, "could not answer a Discord command");
                        }
                    });
                    respond(5, None)
                }
            }
        }
        DiscordInteraction::Click {
            user,
            token,
            action,
            id,
        } => {
            app.metrics.command("discord", "button");
            let app = app.clone();
            tokio::spawn(async move {
                let out = app
                    .approvals
                    .click(Platform::Discord, &user, &action, &id)
                    .await;
                let Some(d) = app.discord.as_ref() else {
                    return;
                };
                if let Some(card) = out.card
                    && let Err(e) = d.redraw(&token, &card).await
                {
                    app.metrics.chat_api_error("discord");
                    tracing::warn!(%e, "could not update a Discord card");
                }
                if let Some(p) = out.private
                    && let Err(e) = d.private(&token, &p).await
                {
                    app.metrics.chat_api_error("discord");
                    tracing::warn!(%e, "could not answer a Discord click");
                }
                if let Some(p) = out.post
                    && let Err(e) = d.followup(&token, &p).await
                {
                    app.metrics.chat_api_error("discord");
                    tracing::warn!(%e, "could not post a Discord card");
                }
            });
            respond(6, None)
        }
        DiscordInteraction::Form {
            user,
            token,
            kind,
            manifest,
            reason,
        } => {
            app.metrics.command("discord", "form");
            let app = app.clone();
            tokio::spawn(async move {
                // Discord cards are redrawn by their buttons' interactions.
                let (reply, _) = app
                    .approvals
                    .request(Platform::Discord, &user, kind, &manifest, &reason)
                    .await;
                if let Some(d) = app.discord.as_ref()
                    && let Err(e) = d.answer(&token, &reply).await
                {
                    app.metrics.chat_api_error("discord");
                    tracing::warn!(%e, "could not post a Discord approval card");
                }
            });
            respond(5, None)
        }
    }
}
