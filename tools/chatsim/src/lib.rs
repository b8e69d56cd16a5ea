//! chatsim: loopback stand-ins for the Slack Web API and the Discord REST API that record every
//! call and check messages against each platform's documented limits (answering as the
//! platform does when they are broken), and senders that sign requests exactly as Slack and
//! Discord sign them.

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::AtomicU64, atomic::Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Multipart, Path, State},
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::{any, get, post},
};
use ed25519_dalek::{Signer as _, SigningKey};
use hmac::{Hmac, Mac as _};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// One call the bot made.
#[derive(Clone, Debug, Serialize)]
pub struct Call {
    /// Sequence number from 1.
    pub seq: u64,
    /// HTTP method.
    pub method: String,
    /// Path, e.g. `/api/chat.postMessage` or `/api/v10/webhooks/1/tok/messages/@original`.
    pub path: String,
    /// Query string.
    pub query: String,
    /// The JSON body (for multipart: its `payload_json`), if any.
    pub json: Option<Value>,
    /// Files sent with it: name and size.
    pub files: Vec<(String, usize)>,
    /// The `Authorization` header.
    pub authorization: String,
    /// What the stand-in refused about it (empty: accepted).
    pub refused: String,
}

impl Call {
    /// The `ts` the stand-in gave this call's message (as `chat.postMessage` answers it).
    pub fn ts(&self) -> String {
        message_ts(self.seq)
    }

    /// The Slack Web API method (`chat.postMessage`), if a Slack call.
    pub fn slack_method(&self) -> Option<&str> {
        self.path
            .strip_prefix("/api/")
            .filter(|m| !m.starts_with("v10/"))
    }
}

#[derive(Debug, Default)]
struct Recorded {
    calls: Vec<Call>,
}

#[derive(Clone, Debug)]
struct Sim {
    addr: SocketAddr,
    recorded: Arc<Mutex<Recorded>>,
    seq: Arc<AtomicU64>,
}

/// A running stand-in.
#[derive(Debug)]
pub struct StandIn {
    /// Where it listens.
    pub addr: SocketAddr,
    sim: Sim,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

impl StandIn {
    /// Starts on `addr` (port 0: a free one).
    pub async fn start(addr: SocketAddr) -> std::io::Result<Self> {
        let l = tokio::net::TcpListener::bind(addr).await?;
        let addr = l.local_addr()?;
        let sim = Sim {
            addr,
            recorded: Arc::default(),
            seq: Arc::new(AtomicU64::new(0)),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = router(sim.clone());
        tokio::spawn(async move {
            let _ = axum::serve(l, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self {
            addr,
            sim,
            stop: Some(stop),
        })
    }

    /// `--slack-api-url` for the bot.
    pub fn slack_api_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    /// `--discord-api-url` for the bot.
    pub fn discord_api_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A `response_url` that records what is posted to it.
    pub fn response_url(&self, name: &str) -> String {
        format!("http://{}/response/{name}", self.addr)
    }

    /// Every call so far.
    pub async fn calls(&self) -> Vec<Call> {
        self.sim.recorded.lock().await.calls.clone()
    }

    /// Waits (bounded) until a call after `after` satisfies `check`.
    pub async fn wait_for(
        &self,
        after: u64,
        limit: Duration,
        check: impl Fn(&Call) -> bool,
    ) -> Option<Call> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(c) = self
                .calls()
                .await
                .into_iter()
                .find(|c| c.seq > after && check(c))
            {
                return Some(c);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The newest sequence number (0 before any call).
    pub async fn last_seq(&self) -> u64 {
        self.sim
            .recorded
            .lock()
            .await
            .calls
            .last()
            .map_or(0, |c| c.seq)
    }
}

/// The message timestamp of the call numbered `seq`.
fn message_ts(seq: u64) -> String {
    format!("1700000000.{seq:06}")
}

fn router(sim: Sim) -> Router {
    Router::new()
        .route("/api/files.getUploadURLExternal", get(slack_upload_url))
        .route("/api/{method}", post(slack_method))
        .route("/upload/{id}", post(slack_upload))
        .route("/response/{name}", post(response_url))
        .route("/api/v10/{*rest}", any(discord))
        .route("/calls", get(list_calls))
        .with_state(sim)
}

async fn record(
    sim: &Sim,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    json: Option<Value>,
    files: Vec<(String, usize)>,
    refused: String,
) -> u64 {
    let seq = sim.seq.fetch_add(1, Ordering::SeqCst) + 1;
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if refused.is_empty() {
        tracing::info!(seq, method = %method, path = uri.path(), "call");
    } else {
        tracing::warn!(seq, method = %method, path = uri.path(), %refused, "refused call");
    }
    sim.recorded.lock().await.calls.push(Call {
        seq,
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
        json,
        files,
        authorization,
        refused,
    });
    seq
}

async fn list_calls(State(sim): State<Sim>) -> Json<Vec<Call>> {
    Json(sim.recorded.lock().await.calls.clone())
}

/// The `ts` of the newest message the bot posted to `channel` that carries the button
/// `action` with `value` (what a person clicking it would be looking at).
pub fn card_ts(calls: &[Value], channel: &str, action: &str, value: &str) -> Option<String> {
    calls.iter().rev().find_map(|c| {
        let j = &c["json"];
        let posted = c["path"] == "/api/chat.postMessage"
            && c["refused"].as_str().is_none_or(str::is_empty)
            && j["channel"] == channel;
        let has =
            j["blocks"].as_array().into_iter().flatten().any(|b| {
                b["elements"].as_array().into_iter().flatten().any(|e| {
                    e["type"] == "button" && e["action_id"] == action && e["value"] == value
                })
            });
        (posted && has).then(|| message_ts(c["seq"].as_u64().unwrap_or_default()))
    })
}

/// Slack's Block Kit limits, as Slack enforces them (`invalid_blocks`).
pub fn check_slack_blocks(msg: &Value) -> Result<(), String> {
    let Some(blocks) = msg.get("blocks") else {
        return Ok(());
    };
    let blocks = blocks.as_array().ok_or("blocks is not an array")?;
    if blocks.len() > 50 {
        return Err(format!("{} blocks; at most 50", blocks.len()));
    }
    let text_len = |v: &Value| v["text"].as_str().map_or(0, |s| s.chars().count());
    for (i, b) in blocks.iter().enumerate() {
        match b["type"].as_str() {
            Some("header") => {
                if b["text"]["type"] != "plain_text" || text_len(&b["text"]) > 150 {
                    return Err(format!(
                        "blocks[{i}]: header needs plain_text of at most 150"
                    ));
                }
            }
            Some("section") => {
                if let Some(t) = b.get("text")
                    && (text_len(t) > 3000 || text_len(t) == 0)
                {
                    return Err(format!(
                        "blocks[{i}]: section text is {} characters (1..3000)",
                        text_len(t)
                    ));
                }
                if let Some(f) = b.get("fields") {
                    let f = f.as_array().ok_or("fields is not an array")?;
                    if f.len() > 10 || f.iter().any(|x| text_len(x) > 2000) {
                        return Err(format!("blocks[{i}]: at most 10 fields of 2000"));
                    }
                }
                if b.get("text").is_none() && b.get("fields").is_none() {
                    return Err(format!("blocks[{i}]: section needs text or fields"));
                }
            }
            Some("context") => {
                let e = b["elements"].as_array().ok_or("context without elements")?;
                if e.is_empty() || e.len() > 10 || e.iter().any(|x| text_len(x) > 3000) {
                    return Err(format!("blocks[{i}]: context elements"));
                }
            }
            Some("actions") => {
                let e = b["elements"].as_array().ok_or("actions without elements")?;
                if e.is_empty() || e.len() > 25 {
                    return Err(format!("blocks[{i}]: 1..25 actions"));
                }
                for x in e {
                    if x["type"] != "button"
                        || x["action_id"].as_str().is_none_or(|a| a.len() > 255)
                        || x["value"].as_str().is_some_and(|v| v.len() > 2000)
                        || text_len(&x["text"]) > 75
                    {
                        return Err(format!("blocks[{i}]: bad button {x}"));
                    }
                }
            }
            Some("divider") | Some("image") | Some("input") => {}
            other => return Err(format!("blocks[{i}]: unknown type {other:?}")),
        }
    }
    Ok(())
}

/// Discord's message limits, as Discord enforces them (`50035 Invalid Form Body`).
pub fn check_discord_message(msg: &Value) -> Result<(), String> {
    let len = |v: &Value| v.as_str().map_or(0, |s| s.chars().count());
    if len(&msg["content"]) > 2000 {
        return Err("content over 2000".into());
    }
    let embeds = msg["embeds"].as_array().cloned().unwrap_or_default();
    if embeds.len() > 10 {
        return Err("more than 10 embeds".into());
    }
    for e in &embeds {
        let fields = e["fields"].as_array().cloned().unwrap_or_default();
        let total = len(&e["title"])
            + len(&e["description"])
            + len(&e["footer"]["text"])
            + fields
                .iter()
                .map(|f| len(&f["name"]) + len(&f["value"]))
                .sum::<usize>();
        if len(&e["title"]) > 256
            || len(&e["description"]) > 4096
            || fields.len() > 25
            || fields
                .iter()
                .any(|f| len(&f["name"]) > 256 || len(&f["value"]) > 1024 || len(&f["value"]) == 0)
            || len(&e["footer"]["text"]) > 2048
            || total > 6000
        {
            return Err(format!("embed over its limits (total {total})"));
        }
    }
    for row in msg["components"].as_array().cloned().unwrap_or_default() {
        if row["type"] != 1 {
            return Err("a top-level component is not an action row".into());
        }
        let buttons = row["components"].as_array().cloned().unwrap_or_default();
        if buttons.is_empty() || buttons.len() > 5 {
            return Err("an action row holds 1..5 buttons".into());
        }
        for b in buttons {
            if b["type"] != 2 || len(&b["custom_id"]) > 100 || len(&b["label"]) > 80 {
                return Err(format!("bad button {b}"));
            }
        }
    }
    Ok(())
}

async fn slack_method(
    State(sim): State<Sim>,
    Path(method_name): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let json: Option<Value> = serde_json::from_slice(&body).ok();
    let mut refused = match (&json, headers.get("authorization")) {
        (_, None) => "not_authed".to_owned(),
        (None, _) => "invalid_json".to_owned(),
        (Some(v), _) if method_name.starts_with("chat.") => {
            check_slack_blocks(v).err().unwrap_or_default()
        }
        _ => String::new(),
    };
    // Slack updates only a message that exists in that channel; anything else is
    // `message_not_found`, never a silent rewrite of another message.
    if refused.is_empty()
        && method_name == "chat.update"
        && let Some(v) = &json
    {
        let (channel, ts) = (v["channel"].as_str(), v["ts"].as_str());
        let found = sim.recorded.lock().await.calls.iter().any(|c| {
            c.refused.is_empty()
                && c.slack_method() == Some("chat.postMessage")
                && c.json.as_ref().and_then(|j| j["channel"].as_str()) == channel
                && Some(c.ts().as_str()) == ts
        });
        if !found {
            refused = "message_not_found".to_owned();
        }
    }
    let seq = record(
        &sim,
        &method,
        &uri,
        &headers,
        json.clone(),
        Vec::new(),
        refused.clone(),
    )
    .await;
    if !refused.is_empty() {
        let error =
            if ["not_authed", "invalid_json", "message_not_found"].contains(&refused.as_str()) {
                refused.clone()
            } else {
                "invalid_blocks".into()
            };
        return Json(json!({"ok": false, "error": error, "detail": refused})).into_response();
    }
    let v = json.unwrap_or_default();
    let ts = message_ts(seq);
    let channel = v["channel"].as_str().unwrap_or("C0").to_owned();
    let message = json!({"type": "message", "ts": v["ts"].as_str().unwrap_or(&ts), "text": v["text"], "blocks": v["blocks"]});
    let reply = match method_name.as_str() {
        "chat.postMessage" => json!({"ok": true, "channel": channel, "ts": ts, "message": message}),
        "chat.update" => {
            json!({"ok": true, "channel": channel, "ts": v["ts"], "message": {"text": v["text"], "blocks": v["blocks"]}})
        }
        "chat.postEphemeral" => json!({"ok": true, "message_ts": ts}),
        "views.open" => {
            let mut view = v["view"].clone();
            view["id"] = "V0001".into();
            view["team_id"] = "T0001".into();
            view["hash"] = "h0001".into();
            view["state"] = json!({"values": {}});
            json!({"ok": true, "view": view})
        }
        "files.completeUploadExternal" => {
            let files: Vec<Value> = v["files"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|f| json!({"id": f["id"], "title": f["title"], "name": f["title"]}))
                .collect();
            json!({"ok": true, "files": files})
        }
        _ => json!({"ok": false, "error": "unknown_method"}),
    };
    Json(reply).into_response()
}

async fn slack_upload_url(
    State(sim): State<Sim>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let seq = record(
        &sim,
        &method,
        &uri,
        &headers,
        None,
        Vec::new(),
        String::new(),
    )
    .await;
    let id = format!("F{seq:04}");
    Json(json!({"ok": true, "upload_url": format!("http://{}/upload/{id}", sim.addr), "file_id": id})).into_response()
}

async fn slack_upload(
    State(sim): State<Sim>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(
        &sim,
        &method,
        &uri,
        &headers,
        None,
        vec![(id, body.len())],
        String::new(),
    )
    .await;
    "OK - 1".into_response()
}

async fn response_url(
    State(sim): State<Sim>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let json: Option<Value> = serde_json::from_slice(&body).ok();
    let refused = match &json {
        None => "invalid_json".to_owned(),
        Some(v) => check_slack_blocks(v).err().unwrap_or_default(),
    };
    record(
        &sim,
        &method,
        &uri,
        &headers,
        json,
        Vec::new(),
        refused.clone(),
    )
    .await;
    if refused.is_empty() {
        "ok".into_response()
    } else {
        (StatusCode::BAD_REQUEST, refused).into_response()
    }
}

fn discord_message(seq: u64, channel: &str) -> Value {
    json!({
        "id": format!("{}", 1_000_000 + seq),
        "channel_id": channel,
        "author": {"id": "42", "username": "mesh", "discriminator": "0000", "avatar": null, "bot": true},
        "content": "",
        "timestamp": "2026-11-29T00:00:00.000000+00:00",
        "edited_timestamp": null,
        "tts": false,
        "mention_everyone": false,
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "embeds": [],
        "pinned": false,
        "type": 0
    })
}

async fn discord(
    State(sim): State<Sim>,
    Path(rest): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    request: axum::extract::Request,
) -> Response {
    let multipart = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("multipart/form-data"));
    let (json, files) = if multipart {
        let mut json = None;
        let mut files = Vec::new();
        match <Multipart as axum::extract::FromRequest<()>>::from_request(request, &()).await {
            Ok(mut m) => {
                while let Ok(Some(field)) = m.next_field().await {
                    let name = field.name().unwrap_or_default().to_owned();
                    let file = field.file_name().map(str::to_owned);
                    let bytes = field.bytes().await.unwrap_or_default();
                    if name == "payload_json" {
                        json = serde_json::from_slice(&bytes).ok();
                    } else {
                        files.push((file.unwrap_or(name), bytes.len()));
                    }
                }
            }
            Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        }
        (json, files)
    } else {
        let body = axum::body::to_bytes(request.into_body(), 8 << 20)
            .await
            .unwrap_or_default();
        (serde_json::from_slice::<Value>(&body).ok(), Vec::new())
    };
    let bot = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.starts_with("Bot "));
    let webhook = rest.starts_with("webhooks/");
    let refused = if !webhook && !bot {
        "401: Unauthorized (no Bot token)".to_owned()
    } else if rest.ends_with("/commands") {
        String::new()
    } else {
        json.as_ref()
            .map(check_discord_message)
            .transpose()
            .err()
            .unwrap_or_default()
    };
    let seq = record(
        &sim,
        &method,
        &uri,
        &headers,
        json.clone(),
        files,
        refused.clone(),
    )
    .await;
    if !refused.is_empty() {
        let code = if refused.starts_with("401") {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::BAD_REQUEST
        };
        return (
            code,
            Json(json!({"code": 50035, "message": "Invalid Form Body", "errors": refused})),
        )
            .into_response();
    }
    if method == Method::DELETE {
        return StatusCode::NO_CONTENT.into_response();
    }
    if rest.ends_with("/commands") {
        let app = rest.split('/').nth(1).unwrap_or("1").to_owned();
        let list: Vec<Value> = json
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, mut c)| {
                c["id"] = format!("{}", 2_000_000 + i).into();
                c["application_id"] = app.clone().into();
                c["version"] = "1".into();
                c["type"] = c.get("type").cloned().unwrap_or(json!(1));
                c["default_member_permissions"] = Value::Null;
                c
            })
            .collect();
        return Json(list).into_response();
    }
    let channel = rest
        .strip_prefix("channels/")
        .and_then(|r| r.split('/').next())
        .unwrap_or("100");
    Json(discord_message(seq, channel)).into_response()
}

/// Slack's signature of `body` at `timestamp`: `v0=` + hex HMAC-SHA256 of `v0:{ts}:{body}`.
pub fn slack_signature(secret: &str, timestamp: &str, body: &str) -> String {
    let mut mac = <Hmac<sha2::Sha256>>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(format!("v0:{timestamp}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// Seconds since the epoch, as a header value.
pub fn now_timestamp() -> String {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .to_string()
}

/// Sends `request` and returns its status and body.
async fn status_and_body(request: reqwest::RequestBuilder) -> reqwest::Result<(u16, String)> {
    let r = request.send().await?;
    let status = r.status().as_u16();
    Ok((status, r.text().await?))
}

/// The senders' HTTP client: every request bounded.
fn sender_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default()
}

/// Sends signed Slack requests to the bot.
#[derive(Clone, Debug)]
pub struct SlackSender {
    /// The bot's base URL (`http://127.0.0.1:8080`).
    pub bot: String,
    /// The signing secret.
    pub secret: String,
    http: reqwest::Client,
}

impl SlackSender {
    /// A sender to `bot` signing with `secret`.
    pub fn new(bot: &str, secret: &str) -> Self {
        Self {
            bot: bot.trim_end_matches('/').to_owned(),
            secret: secret.to_owned(),
            http: sender_client(),
        }
    }

    /// POSTs `body` (form encoded) to `path` signed at `timestamp` (tests pass stale ones)
    /// with `secret` (tests pass wrong ones).
    pub async fn post_signed(
        &self,
        path: &str,
        body: &str,
        timestamp: &str,
        secret: &str,
    ) -> reqwest::Result<(u16, String)> {
        status_and_body(
            self.http
                .post(format!("{}{path}", self.bot))
                .header("content-type", "application/x-www-form-urlencoded")
                .header("x-slack-request-timestamp", timestamp)
                .header(
                    "x-slack-signature",
                    slack_signature(secret, timestamp, body),
                )
                .body(body.to_owned()),
        )
        .await
    }

    /// The form body of `/mesh <text>` by `user` in `channel`.
    pub fn command_body(user: &str, channel: &str, text: &str, response_url: &str) -> String {
        serde_urlencoded::to_string([
            ("token", "legacy-unused"),
            ("team_id", "T0001"),
            ("team_domain", "mesh"),
            ("channel_id", channel),
            ("channel_name", "mesh-ops"),
            ("user_id", user),
            ("user_name", user),
            ("command", "/mesh"),
            ("text", text),
            ("api_app_id", "A0001"),
            ("response_url", response_url),
            ("trigger_id", "13345224609.738474920.8088930838d88f008e0"),
        ])
        .unwrap_or_default()
    }

    /// `/mesh <text>`, signed now.
    pub async fn command(
        &self,
        user: &str,
        channel: &str,
        text: &str,
        response_url: &str,
    ) -> reqwest::Result<(u16, String)> {
        let body = Self::command_body(user, channel, text, response_url);
        self.post_signed("/slack/commands", &body, &now_timestamp(), &self.secret)
            .await
    }

    /// An interactivity payload (`block_actions`, `view_submission`), signed now.
    pub async fn interaction(&self, payload: &Value) -> reqwest::Result<(u16, String)> {
        let body =
            serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap_or_default();
        self.post_signed("/slack/interactions", &body, &now_timestamp(), &self.secret)
            .await
    }

    /// The `view_submission` of the manifest form.
    pub fn form_submission(
        user: &str,
        channel: &str,
        kind: &str,
        manifest: &str,
        reason: &str,
    ) -> Value {
        json!({
            "type": "view_submission",
            "team": {"id": "T0001"},
            "user": {"id": user, "username": user, "team_id": "T0001"},
            "api_app_id": "A0001",
            "trigger_id": "1.2.3",
            "view": {
                "id": "V0001",
                "type": "modal",
                "callback_id": "mesh-apply",
                "private_metadata": json!({"kind": kind, "channel": channel}).to_string(),
                "state": {"values": {
                    "manifest": {"manifest": {"type": "plain_text_input", "value": manifest}},
                    "reason": {"reason": {"type": "plain_text_input", "value": reason}}
                }}
            }
        })
    }

    /// A button click on message `ts` in `channel`.
    pub fn click(
        user: &str,
        channel: &str,
        ts: &str,
        action: &str,
        value: &str,
        response_url: &str,
    ) -> Value {
        json!({
            "type": "block_actions",
            "team": {"id": "T0001"},
            "user": {"id": user, "username": user, "team_id": "T0001"},
            "api_app_id": "A0001",
            "trigger_id": "1.2.4",
            "container": {"type": "message", "message_ts": ts, "channel_id": channel},
            "channel": {"id": channel, "name": "mesh-ops"},
            "message": {"type": "message", "ts": ts},
            "response_url": response_url,
            "actions": [{"type": "button", "action_id": action, "block_id": "b", "value": value, "action_ts": "1700000000.1"}]
        })
    }
}

/// Sends Ed25519-signed Discord interactions to the bot.
#[derive(Clone, Debug)]
pub struct DiscordSender {
    /// The bot's base URL.
    pub bot: String,
    key: SigningKey,
    http: reqwest::Client,
}

impl DiscordSender {
    /// A sender to `bot` signing with the key made from `seed`.
    pub fn new(bot: &str, seed: [u8; 32]) -> Self {
        Self {
            bot: bot.trim_end_matches('/').to_owned(),
            key: SigningKey::from_bytes(&seed),
            http: sender_client(),
        }
    }

    /// The public key (hex) the bot verifies with.
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.key.verifying_key().to_bytes())
    }

    /// The hex signature of `timestamp + body`.
    pub fn sign(&self, timestamp: &str, body: &str) -> String {
        hex::encode(
            self.key
                .sign(format!("{timestamp}{body}").as_bytes())
                .to_bytes(),
        )
    }

    /// POSTs `body` signed with `signature` at `timestamp`.
    pub async fn post_raw(
        &self,
        body: &str,
        timestamp: &str,
        signature: &str,
    ) -> reqwest::Result<(u16, String)> {
        status_and_body(
            self.http
                .post(format!("{}/discord/interactions", self.bot))
                .header("content-type", "application/json")
                .header("x-signature-ed25519", signature)
                .header("x-signature-timestamp", timestamp)
                .body(body.to_owned()),
        )
        .await
    }

    /// POSTs `interaction`, signed now.
    pub async fn send(&self, interaction: &Value) -> reqwest::Result<(u16, String)> {
        let body = interaction.to_string();
        let ts = now_timestamp();
        self.post_raw(&body, &ts, &self.sign(&ts, &body)).await
    }

    fn base(kind: u8, user: &str, channel: &str, token: &str) -> Value {
        json!({
            "id": "1100000000000000001",
            "application_id": "1200000000000000001",
            "type": kind,
            "token": token,
            "version": 1,
            "guild_id": "1300000000000000001",
            "channel_id": channel,
            "member": {"user": {"id": user, "username": format!("user{user}"), "discriminator": "0"}, "roles": [], "permissions": "0"},
            "locale": "en-US"
        })
    }

    /// `/mesh <sub> [args]`.
    pub fn command(user: &str, channel: &str, token: &str, sub: &str, args: Option<&str>) -> Value {
        let mut v = Self::base(2, user, channel, token);
        let options = match args {
            Some(a) => json!([{"name": "args", "type": 3, "value": a}]),
            None => json!([]),
        };
        v["data"] = json!({"id": "1400000000000000001", "name": "mesh", "type": 1, "options": [{"name": sub, "type": 1, "options": options}]});
        v
    }

    /// The submission of the manifest form.
    pub fn form_submission(
        user: &str,
        channel: &str,
        token: &str,
        kind: &str,
        manifest: &str,
        reason: &str,
    ) -> Value {
        let mut v = Self::base(5, user, channel, token);
        v["data"] = json!({"custom_id": format!("apply:{kind}"), "components": [
            {"type": 1, "components": [{"type": 4, "custom_id": "manifest", "value": manifest}]},
            {"type": 1, "components": [{"type": 4, "custom_id": "reason", "value": reason}]}
        ]});
        v
    }

    /// A button click.
    pub fn click(user: &str, channel: &str, token: &str, custom_id: &str) -> Value {
        let mut v = Self::base(3, user, channel, token);
        v["data"] = json!({"custom_id": custom_id, "component_type": 2});
        v["message"] = json!({"id": "1500000000000000001", "channel_id": channel});
        v
    }

    /// A PING.
    pub fn ping() -> Value {
        json!({"id": "1", "application_id": "1200000000000000001", "type": 1, "token": "t", "version": 1})
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
    use super::*;

    /// `chat.update` of a message that is not in that channel is refused as Slack refuses it,
    /// and a card is found by its button.
    #[tokio::test]
    async fn updates_need_a_real_message_and_cards_are_found_by_their_button() {
        let s = StandIn::start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let c = reqwest::Client::new();
        let call = async |method: &str, body: Value| -> Value {
            c.post(format!("{}/{method}", s.slack_api_url()))
                .header("authorization", "Bearer xoxb-t")
                .json(&body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        };
        let alert = json!({"channel": "C1", "text": "an alert"});
        let card = json!({"channel": "C1", "text": "a card", "blocks": [{"type": "actions",
            "elements": [{"type": "button", "action_id": "approve", "value": "a1",
                          "text": {"type": "plain_text", "text": "Approve"}}]}]});
        let first = call("chat.postMessage", alert).await;
        let posted = call("chat.postMessage", card).await;
        let recorded: Vec<Value> = s
            .calls()
            .await
            .iter()
            .map(|c| serde_json::to_value(c).unwrap())
            .collect();
        assert_eq!(
            card_ts(&recorded, "C1", "approve", "a1").as_deref(),
            posted["ts"].as_str()
        );
        assert_eq!(card_ts(&recorded, "C2", "approve", "a1"), None);
        assert_eq!(card_ts(&recorded, "C1", "approve", "other"), None);
        for (channel, ts) in [
            ("C1", "1700000000.999999"),
            ("C2", posted["ts"].as_str().unwrap()),
        ] {
            let r = call(
                "chat.update",
                json!({"channel": channel, "ts": ts, "text": "x"}),
            )
            .await;
            assert_eq!(r["ok"], false, "{channel} {ts}: {r}");
            assert_eq!(r["error"], "message_not_found");
        }
        for ts in [&first["ts"], &posted["ts"]] {
            let r = call(
                "chat.update",
                json!({"channel": "C1", "ts": ts, "text": "y"}),
            )
            .await;
            assert_eq!(r["ok"], true, "{r}");
        }
    }

    /// Slack's documented example (its published secret, timestamp, body and signature).
    #[test]
    fn reproduces_slacks_documented_signature() {
        let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        assert_eq!(body.len(), 362);
        assert_eq!(
            slack_signature("8f742231b10e8888abcd99yyyzzz85a5", "1531420618", body),
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
        );
    }

    #[test]
    fn limits_are_checked_like_the_platforms_do() {
        let ok = json!({"blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}]});
        assert!(check_slack_blocks(&ok).is_ok());
        let long = json!({"blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "x".repeat(3001)}}]});
        assert!(check_slack_blocks(&long).unwrap_err().contains("3001"));
        let many = json!({"blocks": vec![json!({"type": "divider"}); 51]});
        assert!(check_slack_blocks(&many).is_err());
        let d = json!({"embeds": [{"title": "t", "description": "x".repeat(4097)}]});
        assert!(check_discord_message(&d).is_err());
        let d = json!({"content": "x".repeat(2001)});
        assert!(check_discord_message(&d).is_err());
        let d = json!({"components": [{"type": 1, "components": [{"type": 2, "label": "a", "custom_id": "x".repeat(101)}]}]});
        assert!(check_discord_message(&d).is_err());
    }
}
