//! Slack: the slash command and interactivity endpoints (signed requests only) and the Web
//! API calls the bot makes (slack-morphism), with a deadline on each.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use slack_morphism::{
    prelude::*,
    signature_verifier::{SlackEventSignatureVerifier, SlackEventSignatureVerifierError},
};

use crate::{
    app::App,
    command::{self, ApplyKind, Command},
    identity::Platform,
    payload::{self, SlackInteraction},
    reply::{self, File, Reply},
};

pub use crate::payload::SlashCommand;

/// The Slack side: signature verifier and Web API client.
pub struct Slack {
    verifier: SlackEventSignatureVerifier,
    client: SlackClient<SlackClientHyperHttpsConnector>,
    token: SlackApiToken,
    http: reqwest::Client,
    timeout: Duration,
}

impl std::fmt::Debug for Slack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slack").finish_non_exhaustive()
    }
}

/// Why a Slack call failed.
pub type SlackError = String;

impl Slack {
    /// A Slack side verifying with `signing_secret`, calling `api_url` (Slack's
    /// `https://slack.com/api`, or a loopback stand-in over plain HTTP) with `bot_token`.
    pub fn new(
        signing_secret: &str,
        bot_token: &str,
        api_url: &str,
        timeout: Duration,
    ) -> Result<Self, String> {
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| format!("no system root certificates: {e}"))?;
        // Plain HTTP only for a loopback stand-in (tests, the demo); Slack itself is HTTPS.
        let connector =
            if api_url.starts_with("http://127.0.0.1") || api_url.starts_with("http://localhost") {
                builder
                    .https_or_http()
                    .enable_http1()
                    .enable_http2()
                    .build()
            } else {
                builder.https_only().enable_http1().enable_http2().build()
            };
        let client = SlackClient::new(
            SlackClientHyperConnector::from(connector)
                .with_slack_api_url(api_url.trim_end_matches('/')),
        );
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            verifier: SlackEventSignatureVerifier::new(&SlackSigningSecret::new(
                signing_secret.into(),
            )),
            client,
            token: SlackApiToken::new(bot_token.into()),
            http,
            timeout,
        })
    }

    /// Checks `X-Slack-Signature` over the raw body and refuses timestamps more than five
    /// minutes away.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
        let sig = crate::app::header(
            headers,
            SlackEventSignatureVerifier::SLACK_SIGNED_HASH_HEADER,
        )?;
        let ts = crate::app::header(headers, SlackEventSignatureVerifier::SLACK_SIGNED_TIMESTAMP)?;
        let body = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8".to_owned())?;
        self.verifier.verify(sig, body, ts).map_err(|e| match e {
            SlackEventSignatureVerifierError::IncorrectOrExpiredTimestampError(_) => {
                "stale or bad X-Slack-Request-Timestamp (more than 5 minutes off)".to_owned()
            }
            SlackEventSignatureVerifierError::WrongSignatureError(_) => {
                "X-Slack-Signature does not match the body".to_owned()
            }
            other => other.to_string(),
        })
    }

    async fn bounded<T, F>(&self, what: &str, f: F) -> Result<T, SlackError>
    where
        F: Future<Output = ClientResult<T>>,
    {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(format!("Slack {what}: {e}")),
            Err(_) => Err(format!("Slack {what}: no answer in {:?}", self.timeout)),
        }
    }

    fn content(json: &str) -> Result<SlackMessageContent, SlackError> {
        serde_json::from_str(json).map_err(|e| format!("rendered message is not Block Kit: {e}"))
    }

    /// Posts `reply` to `channel` (files into its thread); returns the message's `ts`.
    pub async fn post(&self, channel: &str, reply: &Reply) -> Result<String, SlackError> {
        let m = reply::slack(reply);
        let content = Self::content(&m.json)?;
        let session = self.client.open_session(&self.token);
        let res = self
            .bounded(
                "chat.postMessage",
                session.chat_post_message(&SlackApiChatPostMessageRequest::new(
                    channel.into(),
                    content,
                )),
            )
            .await?;
        self.upload(channel, Some(&res.ts.0), &m.files).await?;
        Ok(res.ts.0)
    }

    /// Replaces message `ts` in `channel` with `reply`.
    pub async fn update(&self, channel: &str, ts: &str, reply: &Reply) -> Result<(), SlackError> {
        let m = reply::slack(reply);
        let content = Self::content(&m.json)?;
        let session = self.client.open_session(&self.token);
        self.bounded(
            "chat.update",
            session.chat_update(&SlackApiChatUpdateRequest::new(
                channel.into(),
                content,
                ts.into(),
            )),
        )
        .await?;
        self.upload(channel, Some(ts), &m.files).await
    }

    /// Shows `reply` to `user` only.
    pub async fn ephemeral(
        &self,
        channel: &str,
        user: &str,
        reply: &Reply,
    ) -> Result<(), SlackError> {
        let m = reply::slack(reply);
        let content = Self::content(&m.json)?;
        let session = self.client.open_session(&self.token);
        self.bounded(
            "chat.postEphemeral",
            session.chat_post_ephemeral(&SlackApiChatPostEphemeralRequest::new(
                channel.into(),
                user.into(),
                content,
            )),
        )
        .await?;
        Ok(())
    }

    /// Answers a slash command through its `response_url` (files go to the channel).
    pub async fn respond(&self, cmd: &SlashCommand, reply: &Reply) -> Result<(), SlackError> {
        let m = reply::slack(reply);
        let mut body: serde_json::Value =
            serde_json::from_str(&m.json).map_err(|e| format!("rendered message: {e}"))?;
        body["response_type"] = if m.ephemeral {
            "ephemeral"
        } else {
            "in_channel"
        }
        .into();
        let res = self
            .http
            .post(&cmd.response_url)
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("response_url: {e}"))?;
        if !res.status().is_success() {
            return Err(format!("response_url answered {}", res.status()));
        }
        if !m.ephemeral {
            self.upload(&cmd.channel_id, None, &m.files).await?;
        }
        Ok(())
    }

    /// Uploads `files` to `channel` (in the thread of `ts`) the current way:
    /// `files.getUploadURLExternal`, the bytes, `files.completeUploadExternal`.
    pub async fn upload(
        &self,
        channel: &str,
        ts: Option<&str>,
        files: &[File],
    ) -> Result<(), SlackError> {
        let session = self.client.open_session(&self.token);
        for f in files {
            let url = self
                .bounded(
                    "files.getUploadURLExternal",
                    session.get_upload_url_external(
                        &SlackApiFilesGetUploadUrlExternalRequest::new(
                            f.name.clone(),
                            f.bytes.len(),
                        ),
                    ),
                )
                .await?;
            let content_type = if f.name.ends_with(".png") {
                "image/png"
            } else {
                "text/plain"
            };
            self.bounded(
                "file upload",
                session.files_upload_via_url(&SlackApiFilesUploadViaUrlRequest::new(
                    url.upload_url,
                    f.bytes.clone(),
                    content_type.into(),
                )),
            )
            .await?;
            let mut req = SlackApiFilesCompleteUploadExternalRequest::new(vec![
                SlackApiFilesComplete::new(url.file_id).with_title(f.name.clone()),
            ])
            .with_channel_id(channel.into());
            if let Some(ts) = ts {
                req = req.with_thread_ts(ts.into());
            }
            self.bounded(
                "files.completeUploadExternal",
                session.files_complete_upload_external(&req),
            )
            .await?;
        }
        Ok(())
    }

    /// Opens the manifest form for `kind`.
    pub async fn open_form(&self, cmd: &SlashCommand, kind: ApplyKind) -> Result<(), SlackError> {
        use askama::Template as _;
        let metadata = serde_json::json!({"kind": kind, "channel": cmd.channel_id}).to_string();
        let (title, label) = match kind {
            ApplyKind::Authz => (
                "Authorization change",
                "AuthorizationPolicy manifest (YAML)",
            ),
            ApplyKind::Route => ("Route change", "HTTPRoute manifest (YAML)"),
        };
        let json = reply::SlackModal {
            metadata: &metadata,
            title,
            label,
            max_len: 3000,
        }
        .render()
        .map_err(|e| e.to_string())?;
        let view: SlackView = serde_json::from_str(&json).map_err(|e| format!("modal: {e}"))?;
        let session = self.client.open_session(&self.token);
        self.bounded(
            "views.open",
            session.views_open(&SlackApiViewsOpenRequest::new(
                cmd.trigger_id.clone().into(),
                view,
            )),
        )
        .await?;
        Ok(())
    }
}

/// How long an inline step may take before the acknowledgement (platforms wait 3 s).
pub const ACK: Duration = Duration::from_millis(2500);

fn immediate(reply: &Reply) -> Response {
    let m = reply::slack(reply);
    match serde_json::from_str::<serde_json::Value>(&m.json) {
        Ok(mut body) => {
            body["response_type"] = if m.ephemeral {
                "ephemeral"
            } else {
                "in_channel"
            }
            .into();
            axum::Json(body).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn refused(app: &App, why: &str) -> Response {
    app.metrics.signature_failure("slack");
    tracing::warn!(%why, "refused a Slack request");
    (StatusCode::UNAUTHORIZED, format!("{why}\n")).into_response()
}

/// `POST /slack/commands`.
pub async fn commands(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(slack) = app.slack.as_ref() else {
        return (StatusCode::NOT_FOUND, "Slack is not configured\n").into_response();
    };
    if let Err(why) = slack.verify(&headers, &body) {
        return refused(&app, &why);
    }
    let cmd = match payload::slack_command(&body) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let parsed = command::parse(&cmd.text);
    app.metrics
        .command("slack", parsed.as_ref().map_or("invalid", command_name));
    if let Err(r) = app.approvals.identity(Platform::Slack, &cmd.user_id) {
        return immediate(&r);
    }
    let parsed = match parsed {
        Ok(c) => c,
        Err(u) => return immediate(&crate::app::usage_reply(&u)),
    };
    match parsed {
        Command::Help => immediate(&crate::core::help()),
        Command::Apply(kind) => match slack.open_form(&cmd, kind).await {
            Ok(()) => StatusCode::OK.into_response(),
            Err(e) => immediate(&Reply::refusal("Could not open the form", e)),
        },
        Command::Alerts { on, filter } => immediate(
            &app.set_alerts(&format!("slack:{}", cmd.channel_id), on, filter)
                .await,
        ),
        Command::Rollout(rc) => {
            // Posted as a message of its own (not through response_url), so the bot knows it
            // and keeps it current as the gate's evidence changes.
            let app = app.clone();
            tokio::spawn(async move {
                let (reply, id) = app
                    .approvals
                    .rollout(Platform::Slack, &cmd.user_id, &rc)
                    .await;
                let Some(slack) = app.slack.as_ref() else {
                    return;
                };
                match (id, reply.ephemeral) {
                    (Some(id), false) => match slack.post(&cmd.channel_id, &reply).await {
                        Ok(ts) => {
                            let target = format!("slack:{}", cmd.channel_id);
                            crate::rollouts::track_card(&app, &target, &ts, &id).await;
                        }
                        Err(e) => {
                            app.metrics.chat_api_error("slack");
                            tracing::warn!(%e, "could not post a rollout card");
                        }
                    },
                    _ => {
                        if let Err(e) = slack.respond(&cmd, &reply).await {
                            app.metrics.chat_api_error("slack");
                            tracing::warn!(%e, "could not answer a Slack command");
                        }
                    }
                }
            });
            StatusCode::OK.into_response()
        }
        read => {
            // Acknowledge now; the answer follows through response_url.
            let app = app.clone();
            tokio::spawn(async move {
                let reply = app.mcp.run(&read).await;
                if let Some(slack) = app.slack.as_ref()
                    && let Err(e) = slack.respond(&cmd, &reply).await
                {
                    app.metrics.chat_api_error("slack");
                    tracing::warn!(%e, "could not answer a Slack command");
                }
            });
            StatusCode::OK.into_response()
        }
    }
}

/// A short name of a command for metrics.
pub fn command_name(c: &Command) -> &'static str {
    match c {
        Command::Graph { .. } => "graph",
        Command::Edges(_) => "edges",
        Command::WhoCalls(_) => "who-calls",
        Command::Routes(_) => "routes",
        Command::Tls => "tls",
        Command::Failing { .. } => "failing",
        Command::Explain { .. } => "explain",
        Command::Policy(_) => "policy",
        Command::Apply(ApplyKind::Authz) => "authz-apply",
        Command::Apply(ApplyKind::Route) => "route-apply",
        Command::Alerts { .. } => "alerts",
        Command::Lockdown { .. } => "lockdown",
        Command::Rollout(_) => "rollout",
        Command::Diff { .. } => "diff",
        Command::Help => "help",
    }
}

/// `POST /slack/interactions`: buttons (`block_actions`) and the form (`view_submission`).
pub async fn interactions(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(slack) = app.slack.as_ref() else {
        return (StatusCode::NOT_FOUND, "Slack is not configured\n").into_response();
    };
    if let Err(why) = slack.verify(&headers, &body) {
        return refused(&app, &why);
    }
    let interaction = match payload::slack_interaction(&body) {
        Ok(i) => i,
        Err(e) => return e.into_response(),
    };
    match interaction {
        SlackInteraction::Form {
            user,
            kind,
            channel,
            manifest,
            reason,
        } => {
            app.metrics.command("slack", "form");
            let app = app.clone();
            // Close the form now; the dry-run's card (or refusal) follows in the channel.
            tokio::spawn(async move {
                let (reply, id) = app
                    .approvals
                    .request(Platform::Slack, &user, kind, &manifest, &reason)
                    .await;
                let Some(slack) = app.slack.as_ref() else {
                    return;
                };
                let res = if reply.ephemeral {
                    slack.ephemeral(&channel, &user, &reply).await
                } else {
                    match slack.post(&channel, &reply).await {
                        Ok(ts) => {
                            // Kept current as the request is approved, here or elsewhere.
                            if let Some(id) = &id {
                                let target = format!("slack:{channel}");
                                crate::requests::track_card(&app, &target, &ts, id).await;
                            }
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                };
                if let Err(e) = res {
                    app.metrics.chat_api_error("slack");
                    tracing::warn!(%e, "could not post a Slack approval card");
                }
            });
            StatusCode::OK.into_response()
        }
        SlackInteraction::Click {
            user,
            action_id,
            value,
            channel,
            ts,
        } => {
            app.metrics.command("slack", "button");
            let app = app.clone();
            tokio::spawn(async move {
                let out = app
                    .approvals
                    .click(Platform::Slack, &user, &action_id, &value)
                    .await;
                let Some(slack) = app.slack.as_ref() else {
                    return;
                };
                if let Some(card) = out.card
                    && let Err(e) = slack.update(&channel, &ts, &card).await
                {
                    app.metrics.chat_api_error("slack");
                    tracing::warn!(%e, "could not update a Slack card");
                }
                if let Some(private) = out.private
                    && let Err(e) = slack.ephemeral(&channel, &user, &private).await
                {
                    app.metrics.chat_api_error("slack");
                    tracing::warn!(%e, "could not answer a Slack click");
                }
                if let Some(post) = out.post
                    && let Err(e) = slack.post(&channel, &post).await
                {
                    app.metrics.chat_api_error("slack");
                    tracing::warn!(%e, "could not post a Slack card");
                }
            });
            StatusCode::OK.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
    use super::*;

    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIGNATURE: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    fn headers(sig: &str, ts: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-slack-signature", sig.parse().unwrap());
        h.insert("x-slack-request-timestamp", ts.parse().unwrap());
        h
    }

    /// Slack's documented example: its signature matches (the verifier gets as far as the
    /// timestamp, which is from 2018 and so refused as a replay); one changed digit or byte
    /// does not.
    #[tokio::test]
    async fn the_documented_example_verifies_and_its_age_is_refused() {
        let s = Slack::new(
            SECRET,
            "xoxb-t",
            "http://127.0.0.1:9/api",
            Duration::from_secs(1),
        )
        .unwrap();
        let e = s
            .verify(&headers(SIGNATURE, "1531420618"), BODY.as_bytes())
            .unwrap_err();
        assert!(e.contains("more than 5 minutes"), "{e}");
        let wrong = SIGNATURE.replace("a2114d", "a2114e");
        let e = s
            .verify(&headers(&wrong, "1531420618"), BODY.as_bytes())
            .unwrap_err();
        assert!(e.contains("does not match"), "{e}");
        let tampered = BODY.replace("roadrunner", "coyote");
        let e = s
            .verify(&headers(SIGNATURE, "1531420618"), tampered.as_bytes())
            .unwrap_err();
        assert!(e.contains("does not match"), "{e}");
        // The same secret, a fresh timestamp: accepted.
        let now = chatsim::now_timestamp();
        let fresh = chatsim::slack_signature(SECRET, &now, BODY);
        s.verify(&headers(&fresh, &now), BODY.as_bytes()).unwrap();
        assert!(
            s.verify(&HeaderMap::new(), BODY.as_bytes())
                .unwrap_err()
                .contains("missing")
        );
    }
}
