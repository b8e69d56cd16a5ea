//! `chatsim`: run the Slack/Discord stand-in, or talk to mesh-chatbot from a terminal as a
//! Slack or Discord user would (requests signed as the platforms sign them).

use std::{net::SocketAddr, time::Duration};

use chatsim::{DiscordSender, SlackSender, StandIn};
use clap::{Parser, Subcommand};

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "chatsim",
    version,
    about = "Slack and Discord stand-ins for mesh-chatbot"
)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Serve the Slack Web API and Discord REST stand-in, logging every call.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "MESH_LISTEN", default_value = "127.0.0.1:9400")]
        listen: SocketAddr,
    },
    /// Send `/mesh <TEXT>` (or a form, or a click) to the bot as a Slack user and print what the
    /// bot sent back through the stand-in.
    Slack {
        #[command(flatten)]
        to: SlackTo,
        /// Send the manifest form with this file (after `/mesh authz apply`).
        #[arg(long, value_name = "FILE")]
        form: Option<std::path::PathBuf>,
        /// Which form: authz or route.
        #[arg(long, default_value = "authz")]
        kind: String,
        /// Click this button (`approve:<id>`, `reject:<id>`) on the card that carries it.
        #[arg(long, value_name = "ACTION:ID")]
        click: Option<String>,
        /// The message the clicked button is on (default: the card in the channel that carries
        /// the button, found among the calls the stand-in recorded).
        #[arg(long)]
        ts: Option<String>,
        /// The command text.
        text: Vec<String>,
    },
    /// Print the Ed25519 public key (hex) of a seed: the bot's --discord-public-key.
    PublicKey {
        /// Seed (64 hex digits).
        #[arg(long, env = "MESH_DISCORD_SEED")]
        seed: String,
    },
    /// Send `/mesh <SUB> [ARGS]` to the bot as a Discord user and print the answer.
    Discord {
        /// The bot's base URL.
        #[arg(long, env = "MESH_BOT", default_value = "http://127.0.0.1:8090")]
        bot: String,
        /// The stand-in's base URL.
        #[arg(long, env = "MESH_STAND_IN", default_value = "http://127.0.0.1:9400")]
        stand_in: String,
        /// Seed (64 hex digits) of the application's Ed25519 key.
        #[arg(long, env = "MESH_DISCORD_SEED")]
        seed: String,
        /// Discord user id.
        #[arg(long, default_value = "80351110224678912")]
        user: String,
        /// Channel id.
        #[arg(long, default_value = "1000000000000000001")]
        channel: String,
        /// Subcommand and its arguments.
        text: Vec<String>,
    },
}

#[derive(Debug, clap::Args)]
struct SlackTo {
    /// The bot's base URL.
    #[arg(long, env = "MESH_BOT", default_value = "http://127.0.0.1:8090")]
    bot: String,
    /// The stand-in's base URL.
    #[arg(long, env = "MESH_STAND_IN", default_value = "http://127.0.0.1:9400")]
    stand_in: String,
    /// The Slack signing secret the bot checks.
    #[arg(long, env = "MESH_SLACK_SIGNING_SECRET")]
    secret: String,
    /// Slack user id.
    #[arg(long, default_value = "U024BE7LH")]
    user: String,
    /// Channel id.
    #[arg(long, default_value = "C0MESH")]
    channel: String,
}

async fn calls(stand_in: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    Ok(reqwest::Client::new()
        .get(format!("{stand_in}/calls"))
        .timeout(Duration::from_secs(5))
        .send()
        .await?
        .json()
        .await?)
}

/// Prints what the bot sent after `after`, for up to `wait`.
async fn show(stand_in: &str, after: usize, wait: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut seen = after;
    loop {
        let all = calls(stand_in).await?;
        for c in all.iter().skip(seen) {
            let j = &c["json"];
            let text = j["text"]
                .as_str()
                .map(str::to_owned)
                .or_else(|| {
                    j["embeds"][0]["title"].as_str().map(|t| {
                        format!(
                            "{t}\n{}",
                            j["embeds"][0]["description"].as_str().unwrap_or_default()
                        )
                    })
                })
                .unwrap_or_default();
            println!(
                "--- {} {}",
                c["method"].as_str().unwrap_or_default(),
                c["path"].as_str().unwrap_or_default()
            );
            if !text.is_empty() {
                // Slack escapes &, < and > in message text; its clients show them plainly.
                println!(
                    "{}",
                    text.replace("&lt;", "<")
                        .replace("&gt;", ">")
                        .replace("&amp;", "&")
                );
            }
            for b in j["blocks"].as_array().into_iter().flatten() {
                for e in b["elements"].as_array().into_iter().flatten() {
                    if e["type"] == "button" {
                        println!(
                            "[button {}:{}]",
                            e["action_id"].as_str().unwrap_or_default(),
                            e["value"].as_str().unwrap_or_default()
                        );
                    }
                }
            }
            for row in j["components"].as_array().into_iter().flatten() {
                for b in row["components"].as_array().into_iter().flatten() {
                    println!("[button {}]", b["custom_id"].as_str().unwrap_or_default());
                }
            }
        }
        seen = all.len();
        if tokio::time::Instant::now() >= deadline {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn parse_seed(seed: &str) -> anyhow::Result<[u8; 32]> {
    hex::decode(seed.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| anyhow::anyhow!("--seed: 64 hex digits"))
}

async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Cmd::Serve { listen } => {
            let s = StandIn::start(listen).await?;
            println!(
                "stand-in on http://{}: --slack-api-url {} --discord-api-url {}",
                s.addr,
                s.slack_api_url(),
                s.discord_api_url()
            );
            mesh_telemetry::shutdown_signal().await;
            Ok(())
        }
        Cmd::Slack {
            to,
            form,
            kind,
            click,
            ts,
            text,
        } => {
            let sender = SlackSender::new(&to.bot, &to.secret);
            let before = calls(&to.stand_in).await?.len();
            let response_url = format!("{}/response/cli", to.stand_in);
            let (status, body) = if let Some(file) = form {
                let manifest = std::fs::read_to_string(&file)?;
                sender
                    .interaction(&SlackSender::form_submission(
                        &to.user,
                        &to.channel,
                        &kind,
                        &manifest,
                        "from chatsim",
                    ))
                    .await?
            } else if let Some(c) = click {
                let (action, id) = c
                    .split_once(':')
                    .ok_or_else(|| anyhow::anyhow!("--click ACTION:ID"))?;
                let ts = match ts {
                    Some(ts) => ts,
                    None => chatsim::card_ts(&calls(&to.stand_in).await?, &to.channel, action, id)
                        .ok_or_else(|| {
                            anyhow::anyhow!(
                                "no card in channel {} has the button {c}; pass --ts",
                                to.channel
                            )
                        })?,
                };
                sender
                    .interaction(&SlackSender::click(
                        &to.user,
                        &to.channel,
                        &ts,
                        action,
                        id,
                        &response_url,
                    ))
                    .await?
            } else {
                sender
                    .command(&to.user, &to.channel, &text.join(" "), &response_url)
                    .await?
            };
            println!("bot answered HTTP {status}");
            if !body.trim().is_empty() {
                println!("{body}");
            }
            show(&to.stand_in, before, Duration::from_secs(5)).await
        }
        Cmd::PublicKey { seed } => {
            let key = DiscordSender::new("http://unused", parse_seed(&seed)?).public_key_hex();
            println!("{key}");
            Ok(())
        }
        Cmd::Discord {
            bot,
            stand_in,
            seed,
            user,
            channel,
            text,
        } => {
            let seed = parse_seed(&seed)?;
            let sender = DiscordSender::new(&bot, seed);
            let before = calls(&stand_in).await?.len();
            let (sub, rest) = text
                .split_first()
                .ok_or_else(|| anyhow::anyhow!("which subcommand?"))?;
            let args = rest.join(" ");
            let i = DiscordSender::command(
                &user,
                &channel,
                "cli-token",
                sub,
                (!args.is_empty()).then_some(args.as_str()),
            );
            let (status, body) = sender.send(&i).await?;
            println!("bot answered HTTP {status}: {body}");
            show(&stand_in, before, Duration::from_secs(5)).await
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Args = mesh_telemetry::parse_args("chatsim");
    mesh_telemetry::init_logging();
    if let Err(e) = run(args).await {
        eprintln!("chatsim: {e:#}");
        std::process::exit(1);
    }
}
