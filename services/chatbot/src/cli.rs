//! `mesh-chatbot`'s command line and wiring.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use mesh_store::{Backend, MemoryStore, StoreArgs};
use mesh_telemetry::{AdminArgs, RunError};

use crate::{
    alerts::{self, AlertConfig},
    app::App,
    approvals::Approvals,
    core::{Mcp, Token},
    discord::{DISCORD_API, Discord},
    metrics::Metrics,
    slack::Slack,
};

/// Exit code for bad configuration.
pub const EXIT_USAGE: i32 = mesh_telemetry::EXIT_USAGE;

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

/// Command line; every flag also reads `MESH_<FLAG>`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "mesh-chatbot",
    version,
    about = "The Linkerd mesh in Slack and Discord: answers, alerts, approved policy changes",
    mut_arg("redis_url", |a| a.help("Redis/Valkey URL for pending approvals and alert state (`redis://` or `rediss://`); absent: this process's memory (one replica; pending approvals die with it)"))
)]
pub struct Args {
    /// What else to do than serving.
    #[command(subcommand)]
    pub command: Option<Sub>,
    /// mcp service gRPC address (`host:port` or URL).
    #[arg(long, env = "MESH_SERVER", global = true)]
    pub server: Option<String>,
    /// Bearer token sent to the mcp service (the bot's identity there, a delegator).
    #[arg(long, env = "MESH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Read the bearer token from this file at every call (a projected service account token,
    /// rotated by the kubelet).
    #[arg(
        long,
        env = "MESH_TOKEN_FILE",
        value_name = "FILE",
        conflicts_with = "token"
    )]
    pub token_file: Option<PathBuf>,
    /// The identity map (YAML): chat users to Kubernetes identities, approvers. Reloaded on
    /// change.
    #[arg(long, env = "MESH_IDENTITY_MAP", value_name = "FILE")]
    pub identity_map: Option<PathBuf>,
    /// Pending approvals and alert state: Redis/Valkey shared by replicas; without
    /// `--redis-url`, this process's memory (one replica; pending approvals die with it).
    #[command(flatten)]
    pub store: StoreArgs,
    /// Address for `POST /slack/commands`, `/slack/interactions`, `/discord/interactions`.
    #[arg(long, env = "MESH_HTTP_LISTEN", default_value = "0.0.0.0:8080")]
    pub http_listen: SocketAddr,
    /// The admin port.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Slack app signing secret (verifies every request).
    #[arg(long, env = "MESH_SLACK_SIGNING_SECRET", hide_env_values = true)]
    pub slack_signing_secret: Option<String>,
    /// Slack bot token (`xoxb-...`).
    #[arg(long, env = "MESH_SLACK_BOT_TOKEN", hide_env_values = true)]
    pub slack_bot_token: Option<String>,
    /// Slack Web API base URL.
    #[arg(
        long,
        env = "MESH_SLACK_API_URL",
        default_value = "https://slack.com/api"
    )]
    pub slack_api_url: String,
    /// Discord application public key (hex; verifies every interaction).
    #[arg(long, env = "MESH_DISCORD_PUBLIC_KEY")]
    pub discord_public_key: Option<String>,
    /// Discord application id.
    #[arg(long, env = "MESH_DISCORD_APPLICATION_ID", global = true)]
    pub discord_application_id: Option<u64>,
    /// Discord bot token.
    #[arg(
        long,
        env = "MESH_DISCORD_BOT_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub discord_bot_token: Option<String>,
    /// Discord API base URL.
    #[arg(long, env = "MESH_DISCORD_API_URL", default_value = DISCORD_API, global = true)]
    pub discord_api_url: String,
    /// Deadline of every call to the mcp service, Slack, Discord and Redis.
    #[arg(long, env = "MESH_TIMEOUT", default_value = "5s", value_parser = duration, global = true)]
    pub timeout: Duration,
    /// Where cards of approval requests from other front ends (agents over MCP, `meshctl
    /// apply`) go: `slack:C123` or `discord:123` for every namespace, `NAMESPACE=slack:C123`
    /// for one (instead of the default). Repeatable.
    #[arg(long, env = "MESH_APPROVAL_CHANNEL", value_delimiter = ',')]
    pub approval_channel: Vec<String>,
    /// A Slack channel id that always gets alerts. Repeatable.
    #[arg(long, env = "MESH_ALERT_SLACK_CHANNEL", value_delimiter = ',')]
    pub alert_slack_channel: Vec<String>,
    /// A Discord channel id that always gets alerts. Repeatable.
    #[arg(long, env = "MESH_ALERT_DISCORD_CHANNEL", value_delimiter = ',')]
    pub alert_discord_channel: Vec<u64>,
    /// An edge below this success rate ...
    #[arg(long, env = "MESH_ALERT_FAILING_BELOW", default_value_t = 0.95)]
    pub alert_failing_below: f64,
    /// ... for this long raises a `failing` alert.
    #[arg(long, env = "MESH_ALERT_FAILING_FOR", default_value = "2m", value_parser = duration)]
    pub alert_failing_for: Duration,
    /// Most alert messages per channel per minute; the rest are counted in the next one.
    #[arg(long, env = "MESH_ALERT_MAX_PER_MINUTE", default_value_t = 10)]
    pub alert_max_per_minute: usize,
    /// The alert lease (one replica sends alerts): TTL.
    #[arg(long, env = "MESH_ALERT_LEASE_TTL", default_value = "6s", value_parser = duration)]
    pub alert_lease_ttl: Duration,
    /// An approval left applying this long (its replica died mid-apply) is applied again, under
    /// the same preconditions, on the next Approve click.
    #[arg(long, env = "MESH_APPLY_RETRY_AFTER", default_value = "2m", value_parser = duration)]
    pub apply_retry_after: Duration,
    /// How often the rollout cards the bot posted are redrawn with their gate's evidence (by
    /// the replica holding the alert lease).
    #[arg(long, env = "MESH_ROLLOUT_REFRESH", default_value = "15s", value_parser = duration)]
    pub rollout_refresh: Duration,
    /// This replica's name in the alert lease (default: host name and PID).
    #[arg(long, env = "MESH_LEASE_HOLDER")]
    pub lease_holder: Option<String>,
}

/// Subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Sub {
    /// Registers the `/mesh` slash command with Discord (globally, or in one guild at once).
    RegisterCommands {
        /// Register in this guild only (takes effect immediately; global commands may take
        /// up to an hour).
        #[arg(long, env = "MESH_GUILD_ID")]
        guild_id: Option<u64>,
    },
}

type Failure = RunError;

fn usage(m: impl Into<String>) -> Failure {
    RunError::Usage(m.into())
}

/// Runs the bot (or a subcommand) until SIGTERM.
pub async fn run(args: Args) -> Result<(), Failure> {
    if let Some(Sub::RegisterCommands { guild_id }) = &args.command {
        let (Some(app), Some(token)) = (args.discord_application_id, &args.discord_bot_token)
        else {
            return Err(usage(
                "register-commands needs --discord-application-id and --discord-bot-token",
            ));
        };
        let d = Discord::rest(app, token, &args.discord_api_url, args.timeout).map_err(usage)?;
        let n = d
            .register_commands(*guild_id)
            .await
            .map_err(RunError::Failed)?;
        println!("registered {n} command(s) for application {app}");
        return Ok(());
    }
    let server = args
        .server
        .clone()
        .ok_or_else(|| usage("--server is required"))?;
    let map_path = args
        .identity_map
        .clone()
        .ok_or_else(|| usage("--identity-map is required (who is who in Kubernetes)"))?;
    let identities = crate::identity::watch_file(map_path, Duration::from_secs(2))
        .map_err(|e| usage(format!("--identity-map {e}")))?;
    let slack = match (&args.slack_signing_secret, &args.slack_bot_token) {
        (Some(secret), Some(token)) => {
            Some(Slack::new(secret, token, &args.slack_api_url, args.timeout).map_err(usage)?)
        }
        (None, None) => None,
        _ => {
            return Err(usage(
                "Slack needs both --slack-signing-secret and --slack-bot-token",
            ));
        }
    };
    let discord = match (
        &args.discord_public_key,
        args.discord_application_id,
        &args.discord_bot_token,
    ) {
        (Some(key), Some(app), Some(token)) => Some(
            Discord::new(key, app, token, &args.discord_api_url, args.timeout).map_err(usage)?,
        ),
        (None, None, None) => None,
        _ => {
            return Err(usage(
                "Discord needs --discord-public-key, --discord-application-id and --discord-bot-token",
            ));
        }
    };
    if slack.is_none() && discord.is_none() {
        return Err(usage(
            "configure Slack (--slack-*) or Discord (--discord-*), or both",
        ));
    }
    let token = match (&args.token, &args.token_file) {
        (Some(t), _) => Token::Static(t.clone()),
        (None, Some(f)) => {
            std::fs::metadata(f)
                .map_err(|e| usage(format!("--token-file {}: {e}", f.display())))?;
            Token::File(f.clone())
        }
        (None, None) => Token::None,
    };
    let mcp = Mcp::new(&server, token, args.timeout).map_err(usage)?;
    let holder = args.lease_holder.clone().unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "mesh-chatbot".into());
        format!("{host}/{}", std::process::id())
    });
    let alert_config = AlertConfig {
        failing_below: args.alert_failing_below,
        failing_for: args.alert_failing_for,
        max_per_minute: args.alert_max_per_minute.max(1),
        lease_ttl: args.alert_lease_ttl,
        lease_renew: (args.alert_lease_ttl / 3).max(Duration::from_millis(100)),
        holder,
    };
    if !(0.0..=1.0).contains(&args.alert_failing_below) {
        return Err(usage(
            "--alert-failing-below: a success rate between 0 and 1",
        ));
    }
    let metrics = Metrics::default();
    let store = Backend::open(&args.store, "", args.timeout).map_err(usage)?;
    // The alert lease: the collectors' lease mechanism under the bot's own keys.
    let leader = match args
        .store
        .redis("chatbot:", 1, args.timeout)
        .map_err(usage)?
    {
        Some(lease) => alerts::keep_lease(Arc::new(lease), alert_config.clone(), metrics.clone()),
        None => {
            tracing::warn!("no --redis-url: pending approvals live in this process only");
            alerts::keep_lease(
                Arc::new(MemoryStore::new(1)),
                alert_config.clone(),
                metrics.clone(),
            )
        }
    };
    for c in &args.alert_slack_channel {
        let _ = mesh_store::AlertStore::set_subscription(
            &store,
            &format!("slack:{c}"),
            Some(b"{}".to_vec()),
        )
        .await;
    }
    for c in &args.alert_discord_channel {
        let _ = mesh_store::AlertStore::set_subscription(
            &store,
            &format!("discord:{c}"),
            Some(b"{}".to_vec()),
        )
        .await;
    }
    let app = Arc::new(App {
        slack,
        discord,
        mcp: mcp.clone(),
        approvals: Approvals::new(store.clone(), mcp.clone(), identities, metrics.clone())
            .with_retry_after(args.apply_retry_after),
        store: store.clone(),
        metrics: metrics.clone(),
    });
    let channels = crate::requests::Channels::parse(&args.approval_channel).map_err(usage)?;
    tokio::spawn(crate::requests::keep_cards(
        app.clone(),
        leader.clone(),
        channels,
    ));
    tokio::spawn(crate::rollouts::keep_cards_current(
        app.clone(),
        leader.clone(),
        args.rollout_refresh,
    ));
    tokio::spawn(alerts::run(
        mcp,
        store.clone(),
        app.clone(),
        alert_config,
        leader,
        metrics.clone(),
    ));
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    if let Some(addr) = args.admin.admin_listen {
        // Ready while the store answers: without it no approval can be recorded or decided.
        let store_ok = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (probe, flag, timeout) = (store.clone(), store_ok.clone(), args.timeout);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                let ok = tokio::time::timeout(
                    timeout,
                    mesh_store::ApprovalStore::get_approval(&probe, "readiness-probe"),
                )
                .await
                .is_ok_and(|r| r.is_ok());
                flag.store(ok, std::sync::atomic::Ordering::Relaxed);
            }
        });
        let ready: mesh_telemetry::Readiness = Arc::new(move || {
            if store_ok.load(std::sync::atomic::Ordering::Relaxed) {
                Ok(())
            } else {
                Err("the store (Redis/Valkey) does not answer".into())
            }
        });
        mesh_telemetry::serve_admin(
            addr,
            mesh_telemetry::admin_router(Arc::new(registry), ready),
        )
        .await
        .map_err(usage)?;
    }
    let listener = tokio::net::TcpListener::bind(args.http_listen)
        .await
        .map_err(|e| usage(format!("--http-listen {}: {e}", args.http_listen)))?;
    tracing::info!(addr = %args.http_listen, "serving Slack and Discord endpoints");
    mesh_telemetry::serve::serve_http(
        listener,
        crate::app::router(app),
        mesh_telemetry::serve::ConnLimits::DEFAULT,
        mesh_telemetry::shutdown_signal(),
    )
    .await;
    Ok(())
}
