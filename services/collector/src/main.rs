//! `mesh-collector`: reads linkerd-viz's Prometheus and publishes the mesh graph to Redis/Valkey.

use std::{sync::Arc, time::Duration};

use clap::Parser;

/// Command line; every flag also reads `MESH_<FLAG>`.
#[derive(Debug, Parser)]
#[command(
    name = "mesh-collector",
    version,
    about = "Publishes the Linkerd mesh graph to Redis/Valkey",
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true,
    mut_arg("prometheus_url", |a| a.required(true).help("linkerd-viz Prometheus base URL")),
    mut_arg("redis_url", |a| a.required(true).help("Redis/Valkey URL to publish to (`redis://` or `rediss://`)"))
)]
struct Args {
    /// Instead of collecting, print something and exit.
    #[command(subcommand)]
    command: Option<Command>,
    /// What to read, and how often.
    #[command(flatten)]
    collect: mesh_collector::run::CollectArgs,
    /// The Redis/Valkey to publish to (`--redis-url` is required).
    #[command(flatten)]
    store: mesh_store::StoreArgs,
    /// Deltas kept in the stream (about).
    #[arg(long, env = "MESH_STREAM_LENGTH", default_value_t = 10_000)]
    stream_length: usize,
    /// The admin port.
    #[command(flatten)]
    admin: mesh_telemetry::AdminArgs,
    /// The Kubernetes API to watch.
    #[command(flatten)]
    kube: mesh_collector::KubeArgs,
    /// This replica's name in the leader lease (default: host name and PID).
    #[arg(long, env = "MESH_LEASE_HOLDER")]
    lease_holder: Option<String>,
    /// How long the leader lease lasts unless renewed (a dead leader is replaced after this).
    #[arg(long, env = "MESH_LEASE_TTL", default_value = "2s", value_parser = humantime::parse_duration)]
    lease_ttl: Duration,
    /// How often the leader renews and a standby asks for the lease.
    #[arg(long, env = "MESH_LEASE_RENEW", default_value = "500ms", value_parser = humantime::parse_duration)]
    lease_renew: Duration,
    /// The snapshot expires this long after the last leader vouched for it (0s: never).
    #[arg(long, env = "MESH_SNAPSHOT_TTL", default_value = "5m", value_parser = humantime::parse_duration)]
    snapshot_ttl: Duration,
}

/// What the collector can print instead of collecting.
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Prints the recording rules the collector reads, as a Prometheus rules file.
    ///
    /// Load it into the Prometheus that scrapes the proxies: for linkerd-viz's, through its
    /// `prometheus.ruleConfigMapMounts`, as a file whose name ends in `_rules.yml` (the chart
    /// ships it so); the chart's PrometheusRule holds the same rules.
    PrintRules {
        /// The collector's metrics window (`--window`) the rules are for.
        #[arg(long, env = "MESH_WINDOW", default_value = "1m", value_parser = mesh_prometheus::parse_window)]
        window: Duration,
        /// How often Prometheus evaluates them (the rule group's `interval`; linkerd-viz's
        /// Prometheus evaluates every 10s).
        #[arg(long, default_value = "10s", value_parser = mesh_prometheus::parse_window)]
        interval: Duration,
    },
}

fn usage(msg: impl std::fmt::Display) -> ! {
    mesh_telemetry::usage_exit("mesh-collector", msg)
}

#[tokio::main]
async fn main() {
    let args: Args = mesh_telemetry::parse_args("mesh-collector");
    if let Some(Command::PrintRules { window, interval }) = args.command {
        print!("{}", mesh_prometheus::promql::rules_file(window, interval));
        return;
    }
    mesh_telemetry::init_logging();
    let source = args
        .collect
        .source("mesh-collector")
        .unwrap_or_else(|e| usage(e));
    if args.lease_renew.is_zero() || args.lease_renew * 2 > args.lease_ttl {
        usage(format!(
            "--lease-renew {:?} must be at most half of --lease-ttl {:?}, or one slow renewal \
             loses the lease",
            args.lease_renew, args.lease_ttl
        ));
    }
    // Store calls must give up well before the lease would lapse.
    let store_timeout = (args.lease_ttl / 2).min(Duration::from_secs(2));
    let store = args
        .store
        .redis("", args.stream_length, store_timeout)
        .unwrap_or_else(|e| usage(e))
        .unwrap_or_else(|| {
            usage("--redis-url is required: the collector publishes to Redis/Valkey")
        })
        .with_snapshot_ttl(args.snapshot_ttl);
    let metrics = mesh_collector::run::Metrics::default();
    if let Some(addr) = args.admin.admin_listen {
        let mut registry = prometheus_client::registry::Registry::default();
        metrics.register(&mut registry);
        let m = metrics.clone();
        let ready: mesh_telemetry::Readiness = Arc::new(move || m.readiness());
        mesh_telemetry::serve_admin(
            addr,
            mesh_telemetry::admin_router(Arc::new(registry), ready),
        )
        .await
        .unwrap_or_else(|e| usage(e));
    }
    tracing::info!(prometheus = ?args.collect.prometheus_url, interval = ?args.collect.interval, "collecting");
    let sources = mesh_collector::run::Sources {
        prometheus: source,
        kubernetes: mesh_collector::cluster_from(
            &args.kube.config().await.unwrap_or_else(|e| usage(e)),
        ),
        history: args.collect.history(),
    };
    let lease = mesh_collector::run::LeaseConfig {
        holder: args
            .lease_holder
            .unwrap_or_else(mesh_collector::run::default_holder),
        ttl: args.lease_ttl,
        renew_every: args.lease_renew,
    };
    mesh_collector::run::run_leased(
        sources,
        Arc::new(store),
        args.collect.interval,
        lease,
        metrics,
        mesh_telemetry::shutdown_signal(),
    )
    .await;
}
