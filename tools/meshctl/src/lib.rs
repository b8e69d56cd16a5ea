//! meshctl: the mesh graph on the command line. Today `meshctl graph --prometheus-url URL`
//! builds the graph straight from linkerd-viz's Prometheus and prints it as a table (like
//! `linkerd viz edges`, with RPS, success rate and p99), proto3 JSON, DOT, SVG or PNG.

use std::{
    io::{IsTerminal, Write},
    path::PathBuf,
    time::{Duration, SystemTime},
};

use clap::{Parser, Subcommand, ValueEnum};
use mesh_model::{Destination, MeshGraph, PolicyVerdict, TlsStatus};
use mesh_prometheus::{PrometheusSource, parse_window};

pub mod approvals;
pub mod diff;
pub mod rollout;

/// Exit code for bad configuration (BSD `EX_USAGE`).
pub const EXIT_USAGE: i32 = mesh_telemetry::EXIT_USAGE;

/// Command line of `meshctl`.
#[derive(Debug, Parser)]
#[command(name = "meshctl", version, about = "Ask linkerd-mcp about the mesh")]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the mesh graph: who calls whom, how fast, over mTLS or not.
    Graph(GraphArgs),
    /// Print each call's routes (HTTPRoutes, GRPCRoutes, Linkerd's default routes) with their
    /// golden metrics, like `linkerd viz stat-outbound` (Linkerd 2.14+ proxies).
    Routes(RoutesArgs),
    /// Stream graph changes from mesh-mcp: a snapshot, then deltas and heartbeats.
    Watch(WatchArgs),
    /// Check Linkerd policy manifests offline, as Linkerd's admission webhook would.
    Validate(ValidateArgs),
    /// Explain, offline, whether Linkerd's policy lets one workload call another, and why.
    Explain(ExplainArgs),
    /// Propose least-privilege Linkerd policy for a namespace (or one workload) from the traffic
    /// mesh-mcp observed, proved against it: each rule says which calls justify it, callers
    /// that cannot be admitted by identity are listed. Changes nothing.
    Propose(ProposeArgs),
    /// Change Linkerd policy through mesh-mcp: validated, checked against RBAC as you,
    /// dry-run on the server, what-if on observed traffic, then applied and audited.
    Apply(ApplyArgs),
    /// Roll least-privilege policy out in stages through mesh-mcp: start (proposed), advance to
    /// audit (nothing denied, would-be denials reported), advance to enforce once the gate has
    /// seen no would-be denial for long enough; rollback at any time.
    #[command(subcommand)]
    Rollout(rollout::RolloutCommand),
    /// What changed in the mesh between two moments, from mesh-mcp: edges added and removed,
    /// TLS and verdict changes, regressions, and the Kubernetes objects changed in between
    /// with who requested and approved each change, earliest first.
    Diff(diff::DiffArgs),
    /// Changes waiting for people under mesh-mcp's approval policy (from agents, chat or
    /// `meshctl apply`): list them, show one, approve or reject as yourself.
    #[command(subcommand)]
    Approvals(approvals::ApprovalsCommand),
}

/// `meshctl apply` flags.
#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// Manifest: one AuthorizationPolicy or HTTPRoute, and the MeshTLSAuthentication,
    /// NetworkAuthentication and Server objects it needs.
    #[arg(short = 'f', long = "filename", env = "MESH_FILENAME")]
    pub file: PathBuf,
    /// mesh-mcp gRPC address.
    #[arg(long, env = "MESH_SERVER")]
    pub server: String,
    /// Bearer token.
    #[arg(long, env = "MESH_TOKEN")]
    pub token: Option<String>,
    /// Validate, check RBAC, dry-run and show the what-if; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Take over fields another field manager owns.
    #[arg(long)]
    pub force: bool,
    /// Act as this user (only when your token's identity is a configured delegator).
    #[arg(long = "as")]
    pub as_user: Option<String>,
    /// Groups of the --as identity (repeatable).
    #[arg(long = "as-group", requires = "as_user")]
    pub as_groups: Vec<String>,
    /// Who approved the change (recorded in the audit trail; only a delegator's token may set
    /// it, e.g. the chatbot's after an approval).
    #[arg(long)]
    pub approved_by: Option<String>,
    /// Why (recorded in the audit trail; only a delegator's token may set it).
    #[arg(long)]
    pub reason: Option<String>,
    /// Refuse unless the main object is still at this resourceVersion.
    #[arg(long)]
    pub expected_resource_version: Option<String>,
    /// Fail if the main object exists now (it was new when the change was reviewed).
    #[arg(
        long,
        env = "MESH_EXPECT_ABSENT",
        conflicts_with = "expected_resource_version"
    )]
    pub expect_absent: bool,
    /// `text` or `json` (the proto3 JSON of the response).
    #[arg(short = 'o', long, env = "MESH_OUTPUT", default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
}

/// `meshctl watch` flags.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// mesh-mcp gRPC address.
    #[arg(long, env = "MESH_SERVER")]
    pub server: String,
    /// Bearer token.
    #[arg(long, env = "MESH_TOKEN")]
    pub token: Option<String>,
    /// Only edges with an end in this namespace (repeatable).
    #[arg(
        short = 'n',
        long = "namespace",
        env = "MESH_NAMESPACE",
        value_delimiter = ','
    )]
    pub namespaces: Vec<String>,
    /// `text` (the snapshot, then what changed; quiet while nothing does) or `json` (every
    /// event, heartbeats too, as one proto3 JSON object per line).
    #[arg(short = 'o', long, env = "MESH_OUTPUT", default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
    /// Stop after this many events (snapshot, deltas and heartbeats), e.g. in scripts.
    #[arg(long, env = "MESH_MAX_EVENTS", value_name = "N")]
    pub max_events: Option<u64>,
}

/// `meshctl validate` flags.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Manifest file or folder (repeatable).
    #[arg(
        short = 'f',
        long = "filename",
        env = "MESH_FILENAME",
        required = true,
        value_delimiter = ','
    )]
    pub paths: Vec<PathBuf>,
}

/// Output formats of `meshctl explain`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExplainOutput {
    /// The verdict and numbered steps.
    Text,
    /// JSON: decision, server, defaultPolicy, authorizations, route, chain.
    Json,
}

/// `meshctl propose` flags.
#[derive(Debug, clap::Args)]
pub struct ProposeArgs {
    /// mesh-mcp gRPC address.
    #[arg(long, env = "MESH_SERVER")]
    pub server: String,
    /// Bearer token.
    #[arg(long, env = "MESH_TOKEN")]
    pub token: Option<String>,
    /// The namespace to lock down.
    #[arg(long, short = 'n', env = "MESH_NAMESPACE")]
    pub namespace: String,
    /// Only this workload of the namespace.
    #[arg(long, env = "MESH_WORKLOAD")]
    pub workload: Option<String>,
    /// How far back to look at traffic, e.g. 7d, 24h (mesh-mcp reads its Prometheus);
    /// default: the window of the graph mesh-mcp serves.
    #[arg(long, env = "MESH_SINCE", value_parser = parse_window)]
    pub since: Option<Duration>,
    /// Servers with `accessPolicy: audit` (admit and flag) instead of `deny`.
    #[arg(long)]
    pub audit: bool,
    /// Authorize each observed HTTPRoute on its own (an inbound HTTPRoute on the Server and an
    /// authorization naming only its callers) where every call went through a named HTTPRoute.
    #[arg(long)]
    pub per_route: bool,
    /// `table` (what would be created, and why), `yaml` (the objects, for `meshctl apply -f`
    /// and `meshctl validate -f`, justifications as comments) or `json` (the RPC's answer).
    #[arg(short = 'o', long, env = "MESH_OUTPUT", default_value = "table", value_parser = ["table", "yaml", "json"])]
    pub output: String,
}

/// `meshctl explain` flags.
#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// Folder (or file) of manifests: workloads, Namespaces, the linkerd-config ConfigMap and
    /// policy objects.
    #[arg(long, env = "MESH_MANIFESTS")]
    pub manifests: PathBuf,
    /// The client: NAMESPACE/WORKLOAD (meshed, with its service account's identity), or an IP
    /// address (an unmeshed client).
    #[arg(long, env = "MESH_FROM")]
    pub from: String,
    /// The destination: NAMESPACE/WORKLOAD.
    #[arg(long, env = "MESH_TO")]
    pub to: String,
    /// Destination port (default: the workload's first container port).
    #[arg(long, env = "MESH_PORT")]
    pub port: Option<u16>,
    /// HTTP path of the request, for route matching.
    #[arg(long, env = "MESH_PATH")]
    pub path: Option<String>,
    /// HTTP method of the request, for route matching.
    #[arg(long, env = "MESH_METHOD")]
    pub method: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, env = "MESH_OUTPUT", value_enum, default_value_t = ExplainOutput::Text)]
    pub output: ExplainOutput,
}

/// Output formats of `meshctl graph`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// A table like `linkerd viz edges`, with RPS, success rate and p99.
    Table,
    /// The table plus client and server identities.
    Wide,
    /// proto3 JSON of `linkerd.mcp.v1.MeshGraph`.
    Json,
    /// Graphviz DOT, namespaces as clusters.
    Dot,
    /// SVG picture.
    Svg,
    /// PNG picture.
    Png,
}

/// Where a graph comes from, and which part of it; shared by `meshctl graph` and `meshctl
/// routes`. Each flag also reads `MESH_<FLAG>`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("from").required(true).args(["prometheus_url", "server"])))]
pub struct GraphSource {
    /// Build the graph straight from this linkerd-viz Prometheus.
    #[arg(long, env = "MESH_PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,
    /// Ask this mesh-mcp gRPC address instead (`host:port` or `http://host:port`).
    #[arg(long, env = "MESH_SERVER")]
    pub server: Option<String>,
    /// Bearer token for --server.
    #[arg(long, env = "MESH_TOKEN")]
    pub token: Option<String>,
    /// Only edges with an end in this namespace (repeatable).
    #[arg(
        short = 'n',
        long = "namespace",
        env = "MESH_NAMESPACE",
        value_delimiter = ','
    )]
    pub namespaces: Vec<String>,
    /// Metrics window, e.g. 30s, 1m, 5m (with --prometheus-url; mesh-mcp's graph has the
    /// window its collector was started with).
    #[arg(long, env = "MESH_WINDOW", default_value = "1m", value_parser = parse_window, conflicts_with = "server")]
    pub window: Duration,
    /// With `--prometheus-url`: read the series `mesh-collector print-rules` records (`auto`
    /// when loaded for this window, `require`, or `off`); the graph's `sources` say which.
    #[arg(long, env = "MESH_RECORDING_RULES", default_value = "auto", value_parser = ["auto", "require", "off"], conflicts_with = "server")]
    pub recording_rules: String,
    /// Time limit for each Prometheus query.
    #[arg(long, env = "MESH_TIMEOUT", default_value = "10s", value_parser = parse_window)]
    pub timeout: Duration,
    /// The graph as it was at this moment: RFC 3339 in UTC (`2026-12-07T10:32:00Z`) or a
    /// duration ago (`-1h`). With --server, policy and workloads are replayed from the change
    /// log; with --prometheus-url, only the metrics are of that moment.
    #[arg(long, env = "MESH_AT", allow_hyphen_values = true, value_parser = parse_at)]
    pub at: Option<SystemTime>,
}

/// A moment on the command line (see `mesh_telemetry::parse_moment`).
pub(crate) fn parse_at(s: &str) -> Result<SystemTime, String> {
    mesh_telemetry::parse_moment(s, SystemTime::now())
}

/// `meshctl graph` flags; each also reads `MESH_<FLAG>`.
#[derive(Debug, clap::Args)]
pub struct GraphArgs {
    /// Where the graph comes from.
    #[command(flatten)]
    pub source: GraphSource,
    /// Output format.
    #[arg(short = 'o', long, env = "MESH_OUTPUT", value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Write the output to this file instead of standard output.
    #[arg(long, env = "MESH_OUT")]
    pub out: Option<PathBuf>,
}

/// `meshctl routes` flags.
#[derive(Debug, clap::Args)]
pub struct RoutesArgs {
    /// Only the routes of calls from or to this workload (`namespace/name`).
    #[arg(value_name = "NAMESPACE/WORKLOAD")]
    pub workload: Option<String>,
    /// Where the graph comes from.
    #[command(flatten)]
    pub source: GraphSource,
    /// Output format: `table` (like `linkerd viz stat-outbound`) or `json` (proto3 JSON of the
    /// edges, with their routes).
    #[arg(short = 'o', long, env = "MESH_OUTPUT", default_value = "table", value_parser = ["table", "json"])]
    pub output: String,
}

/// A failure, with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    /// One line for the user.
    pub message: String,
    /// Process exit code.
    pub code: i32,
}

impl Failure {
    fn new(code: i32, message: impl std::fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            code,
        }
    }
}

/// Runs a parsed command line.
pub async fn run(args: Args) -> Result<(), Failure> {
    match args.command {
        Command::Graph(g) => graph(g).await,
        Command::Routes(r) => routes(r).await,
        Command::Watch(w) => watch(w).await,
        Command::Validate(v) => validate(&v),
        Command::Explain(e) => explain(&e),
        Command::Propose(p) => propose(p).await,
        Command::Apply(a) => apply(a).await,
        Command::Rollout(r) => rollout::rollout(r).await,
        Command::Diff(d) => diff::diff(d).await,
        Command::Approvals(a) => approvals::approvals(a).await,
    }
}

/// The graph from Prometheus or mesh-mcp, limited to the asked namespaces.
async fn fetch(args: &GraphSource) -> Result<MeshGraph, Failure> {
    fetch_with_point(args).await.map(|(g, _)| g)
}

/// [`fetch`], and for a graph of a past moment from mesh-mcp how it was made.
async fn fetch_with_point(
    args: &GraphSource,
) -> Result<(MeshGraph, Option<mesh_proto::pb::PointInTime>), Failure> {
    Ok(match (&args.prometheus_url, &args.server) {
        (Some(url), _) => {
            let rules: mesh_prometheus::RulesMode = args
                .recording_rules
                .parse()
                .map_err(|e| Failure::new(EXIT_USAGE, e))?;
            let mut source = PrometheusSource::new(url, args.window, args.timeout)
                .map_err(|e| Failure::new(EXIT_USAGE, e))?
                .with_rules(rules);
            if let Some(at) = args.at {
                source = source.at(at);
            }
            let now = args.at.unwrap_or_else(SystemTime::now);
            let seen = source.observe(now).await.map_err(|e| Failure::new(1, e))?;
            let mut g = seen.graph;
            mesh_policy::overlay::attach_observed(&mut g, &seen.authz);
            g.sources = vec![mesh_model::SourceHealth {
                source: "prometheus".into(),
                ok: true,
                last_success: Some(seen.read.data_time),
                error: String::new(),
                detail: seen.read.detail(args.window),
            }];
            (g.filter_namespaces(&args.namespaces), None)
        }
        (None, Some(server)) => {
            let mut c = connect(server, args.timeout).await?;
            let req = mesh_proto::pb::GetMeshGraphRequest {
                namespaces: args.namespaces.clone(),
                at: args.at.map(mesh_proto::timestamp_to_pb),
                ..Default::default()
            };
            // A past graph is built from Prometheus for this answer: allow it the time.
            let limit = if args.at.is_some() {
                args.timeout.max(Duration::from_secs(60))
            } else {
                args.timeout
            };
            let mut g = c
                .get_mesh_graph(with_token(req, args.token.as_deref(), Some(limit))?)
                .await
                .map_err(|s| server_failure(server, &s))?
                .into_inner();
            let point = g.point_in_time.take();
            let g = mesh_model::MeshGraph::try_from(g)
                .map_err(|e| Failure::new(1, format!("{server} answered an invalid graph: {e}")))?;
            (g, point)
        }
        (None, None) => unreachable!("clap requires one of --prometheus-url and --server"),
    })
}

async fn propose(args: ProposeArgs) -> Result<(), Failure> {
    let mut c = connect(&args.server, Duration::from_secs(10)).await?;
    let req = mesh_proto::pb::ProposePolicyRequest {
        namespace: args.namespace.clone(),
        workload: args.workload.clone().unwrap_or_default(),
        since: args.since.map(|d| pbjson_types::Duration {
            seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: 0,
        }),
        audit: args.audit,
        per_route: args.per_route,
    };
    let r = c
        .propose_policy(with_token(
            req,
            args.token.as_deref(),
            Some(Duration::from_secs(90)),
        )?)
        .await
        .map_err(|s| server_failure(&args.server, &s))?
        .into_inner();
    let text = match args.output.as_str() {
        "yaml" => r.yaml.clone(),
        "json" => {
            let mut s = serde_json::to_string_pretty(&r).expect("proto JSON always serializes");
            s.push('\n');
            s
        }
        _ => proposal_table(&r),
    };
    std::io::stdout()
        .write_all(text.as_bytes())
        .map_err(|e| Failure::new(1, format!("cannot write output: {e}")))
}

/// A proposal as a reader checks it: what it would deny first, then each object and why, the
/// callers that need action, and what was left alone.
pub fn proposal_table(r: &mesh_proto::pb::ProposePolicyResponse) -> String {
    let mut out = String::new();
    for d in &r.newly_denied {
        out.push_str(&format!("WOULD DENY OBSERVED TRAFFIC: {d}\n"));
    }
    let window = r.window.as_ref().map_or(0, |w| w.seconds);
    if r.objects.is_empty() {
        out.push_str(&format!(
            "nothing to propose from the last {window}s of traffic\n"
        ));
    } else {
        out.push_str(&objects_table(&r.objects));
        out.push_str(&format!(
            "{} objects from the last {window}s of traffic; -o yaml prints them for meshctl apply -f\n",
            r.objects.len()
        ));
    }
    out.push_str(&needs_action_lines(&r.needs_action));
    for n in &r.notes {
        out.push_str(&format!("note: {n}\n"));
    }
    out
}

/// Proposed objects as a table: kind, namespace, name and the first call that justifies each.
pub(crate) fn objects_table(objects: &[mesh_proto::pb::ProposedObject]) -> String {
    let mut rows = vec![
        ["KIND", "NAMESPACE", "NAME", "WHY"]
            .map(str::to_owned)
            .to_vec(),
    ];
    for o in objects {
        let why = o.justification.first().cloned().unwrap_or_default();
        let more = o.justification.len().saturating_sub(1);
        rows.push(vec![
            o.kind.clone(),
            o.namespace.clone(),
            o.name.clone(),
            if more > 0 {
                format!("{why} (+{more} more)")
            } else {
                why
            },
        ]);
    }
    mesh_render::columns(&rows, "  ")
}

/// One line per caller a proposal cannot admit by identity, with what to do.
pub(crate) fn needs_action_lines(callers: &[mesh_proto::pb::CallerNeedingAction]) -> String {
    callers
        .iter()
        .map(|n| {
            let callee = n
                .callee
                .as_ref()
                .map_or_else(String::new, |w| format!("{}/{}", w.namespace, w.name));
            format!(
                "needs action: {} -> {callee} ({:.2} rps): {}\n",
                n.caller, n.rps, n.advice
            )
        })
        .collect()
}

async fn routes(args: RoutesArgs) -> Result<(), Failure> {
    let mut graph = fetch(&args.source).await?;
    if let Some(w) = &args.workload {
        let Some((ns, name)) = split_id(w) else {
            return Err(Failure::new(
                EXIT_USAGE,
                format!("{w:?} is not namespace/name"),
            ));
        };
        let touches = |d: &Destination| matches!(d, Destination::Workload(x) if x.namespace == ns && x.name == name);
        graph
            .edges
            .retain(|k, _| (k.src.namespace == ns && k.src.name == name) || touches(&k.dst));
    }
    let text = if args.output == "json" {
        let edges: Vec<mesh_proto::pb::Edge> = graph
            .edges
            .values()
            .filter(|e| !e.routes.is_empty())
            .map(Into::into)
            .collect();
        let mut s = serde_json::to_string_pretty(&serde_json::json!({ "edges": edges }))
            .expect("proto JSON always serializes");
        s.push('\n');
        s
    } else {
        routes_table(&graph)
    };
    std::io::stdout()
        .write_all(text.as_bytes())
        .map_err(|e| Failure::new(1, format!("cannot write output: {e}")))
}

/// One row per route of each call, like `linkerd viz stat-outbound`: the caller, the parent the
/// route attaches to, the route, then its golden metrics and 429s (rate-limited).
pub fn routes_table(graph: &MeshGraph) -> String {
    let mut rows = vec![
        [
            "SRC", "DST", "PARENT", "ROUTE", "KIND", "RPS", "SUCCESS", "P50", "P95", "P99", "429/S",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    let ms = |v: Option<f64>| opt(v, |p| format!("{p:.0}ms"));
    for e in graph.edges.values() {
        for r in &e.routes {
            let route = r.id.qualified_name();
            rows.push(vec![
                format!("{}/{}", e.key.src.namespace, e.key.src.name),
                e.key.dst.to_string(),
                r.id.parent.clone(),
                route,
                r.id.kind.clone(),
                format!("{:.2}", r.rps),
                opt(r.success_rate, |s| format!("{:.2}%", s * 100.0)),
                ms(r.latency_p50_ms),
                ms(r.latency_p95_ms),
                ms(r.latency_p99_ms),
                format!("{:.2}", r.rate_limited_rps),
            ]);
        }
    }
    if rows.len() == 1 {
        return "(no route metrics in the window: Linkerd 2.14+ proxies report them as outbound_http_route_* and outbound_grpc_route_*)\n".to_owned();
    }
    mesh_render::columns(&rows, "  ")
}

async fn graph(args: GraphArgs) -> Result<(), Failure> {
    let binary = matches!(args.output, Output::Png);
    if binary && args.out.is_none() && std::io::stdout().is_terminal() {
        return Err(Failure::new(
            EXIT_USAGE,
            "-o png writes binary data: pass --out FILE or redirect standard output",
        ));
    }
    let (graph, point) = fetch_with_point(&args.source).await?;
    let width = (args.out.is_none() && std::io::stdout().is_terminal())
        .then(|| terminal_size::terminal_size().map(|(w, _)| usize::from(w.0)))
        .flatten();
    let mut bytes = render(&graph, args.output, width).map_err(|e| Failure::new(1, e))?;
    if let Some(p) = point {
        match args.output {
            Output::Json => {
                let mut wire = mesh_proto::pb::MeshGraph::from(&graph);
                wire.point_in_time = Some(p);
                let mut s =
                    serde_json::to_string_pretty(&wire).expect("proto JSON always serializes");
                s.push('\n');
                bytes = s.into_bytes();
            }
            Output::Table | Output::Wide => {
                bytes.extend(diff::point_lines("graph", &p).into_bytes());
            }
            Output::Dot | Output::Svg | Output::Png => {}
        }
    }
    match &args.out {
        Some(path) => std::fs::write(path, &bytes)
            .map_err(|e| Failure::new(1, format!("cannot write {}: {e}", path.display()))),
        None => std::io::stdout()
            .write_all(&bytes)
            .map_err(|e| Failure::new(1, format!("cannot write output: {e}"))),
    }
}

fn validate(args: &ValidateArgs) -> Result<(), Failure> {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let (mut objects, mut policies) = (0, 0);
    for p in &args.paths {
        if !p.exists() {
            return Err(Failure::new(
                EXIT_USAGE,
                format!("{}: no such file or folder", p.display()),
            ));
        }
        let m = mesh_k8s::read_manifests(p);
        objects += m.resources.len();
        policies += m.policy_count();
        problems.extend(m.validate());
        warnings.extend(m.warnings());
    }
    for w in &warnings {
        println!("warning: {w}");
    }
    if problems.is_empty() {
        println!("{objects} objects read, {policies} Linkerd policy objects: all valid");
        return Ok(());
    }
    for p in &problems {
        println!("{p}");
    }
    Err(Failure::new(
        1,
        format!("{} problem(s) in {objects} objects", problems.len()),
    ))
}

fn split_id(s: &str) -> Option<(&str, &str)> {
    s.split_once('/')
        .filter(|(a, b)| !a.is_empty() && !b.is_empty() && !b.contains('/'))
}

fn explain(args: &ExplainArgs) -> Result<(), Failure> {
    use mesh_policy::eval::{AccessRequest, ClientInfo};
    if !args.manifests.exists() {
        return Err(Failure::new(
            EXIT_USAGE,
            format!("{}: no such file or folder", args.manifests.display()),
        ));
    }
    let m = mesh_k8s::read_manifests(&args.manifests);
    let set = m.policy_set();
    let (dst_ns, dst_name) = split_id(&args.to).ok_or_else(|| {
        Failure::new(
            EXIT_USAGE,
            format!("--to {:?}: want NAMESPACE/WORKLOAD", args.to),
        )
    })?;
    let missing = |what: &str| {
        Failure::new(
            2,
            format!(
                "no Deployment, StatefulSet, DaemonSet or Pod {what} in {}",
                args.manifests.display()
            ),
        )
    };
    let (pod, _) = m.pod(dst_ns, dst_name).ok_or_else(|| missing(&args.to))?;
    let client = match args.from.parse::<std::net::IpAddr>() {
        Ok(ip) => ClientInfo {
            identity: None,
            ip: Some(ip),
            in_cluster: false,
        },
        Err(_) => {
            let (ns, name) = split_id(&args.from).ok_or_else(|| {
                Failure::new(
                    EXIT_USAGE,
                    format!(
                        "--from {:?}: want NAMESPACE/WORKLOAD or an IP address",
                        args.from
                    ),
                )
            })?;
            let (_, sa) = m.pod(ns, name).ok_or_else(|| missing(&args.from))?;
            ClientInfo {
                identity: Some(set.sa_identity(&sa, ns)),
                ip: None,
                in_cluster: true,
            }
        }
    };
    let port = args
        .port
        .or_else(|| pod.ports.first().map(|(_, p)| *p))
        .ok_or_else(|| {
            Failure::new(
                EXIT_USAGE,
                format!("{} declares no container port: pass --port", args.to),
            )
        })?;
    let req = AccessRequest {
        client,
        pod,
        port,
        method: args.method.clone(),
        path: args.path.clone(),
    };
    let x = set.explain(&req);
    let decision = match x.decision {
        mesh_model::Decision::Allowed => "ALLOWED",
        mesh_model::Decision::Denied => "DENIED",
        mesh_model::Decision::Audit => "AUDIT",
        mesh_model::Decision::Unknown => "UNKNOWN",
    };
    match args.output {
        ExplainOutput::Json => {
            let v = serde_json::json!({
                "decision": decision,
                "server": x.server,
                "defaultPolicy": x.default_policy,
                "authorizations": x.authorizations,
                "route": x.route,
                "chain": x.chain,
            });
            println!("{}", serde_json::to_string_pretty(&v).expect("JSON"));
        }
        ExplainOutput::Text => {
            let request = match (&args.method, &args.path) {
                (Some(mth), Some(p)) => format!(" {mth} {p}"),
                (None, Some(p)) => format!(" {p}"),
                _ => String::new(),
            };
            println!("{decision}: {} -> {}:{port}{request}", args.from, args.to);
            for (i, step) in x.chain.iter().enumerate() {
                println!("  {}. {step}", i + 1);
            }
        }
    }
    match x.decision {
        mesh_model::Decision::Allowed | mesh_model::Decision::Audit => Ok(()),
        _ => Err(Failure::new(
            1,
            format!("{decision}: {} -> {}:{port}", args.from, args.to),
        )),
    }
}

type Client = mesh_proto::pb::mesh_service_client::MeshServiceClient<tonic::transport::Channel>;

/// A failed call, said plainly; an answer that was HTTP but not gRPC names the likely mix-up.
pub(crate) fn server_failure(server: &str, s: &tonic::Status) -> Failure {
    if s.message().contains("grpc-status header missing") {
        return Failure::new(
            1,
            format!(
                "{server} answered plain HTTP, not gRPC: this looks like mesh-mcp's HTTP port \
                 (--http-listen); point --server at its gRPC port (--grpc-listen)"
            ),
        );
    }
    Failure::new(1, format!("{server}: {} ({:?})", s.message(), s.code()))
}

pub(crate) async fn connect(server: &str, timeout: Duration) -> Result<Client, Failure> {
    let url = if server.contains("://") {
        server.to_owned()
    } else {
        format!("http://{server}")
    };
    let endpoint = tonic::transport::Endpoint::from_shared(url.clone())
        .map_err(|e| Failure::new(EXIT_USAGE, format!("--server {server:?}: {e}")))?
        .connect_timeout(timeout);
    let channel = endpoint.connect().await.map_err(|e| {
        let mut reason = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            reason = s.to_string();
            src = s.source();
        }
        Failure::new(1, format!("cannot reach mesh-mcp at {url}: {reason}"))
    })?;
    Ok(Client::new(channel))
}

/// A request carrying the bearer token, with a deadline unless it is a stream.
pub(crate) fn with_token<T>(
    msg: T,
    token: Option<&str>,
    timeout: Option<Duration>,
) -> Result<tonic::Request<T>, Failure> {
    let mut r = tonic::Request::new(msg);
    if let Some(t) = timeout {
        r.set_timeout(t);
    }
    if let Some(t) = token {
        let v = format!("Bearer {t}").parse().map_err(|_| {
            Failure::new(EXIT_USAGE, "--token has characters a header cannot carry")
        })?;
        r.metadata_mut().insert("authorization", v);
    }
    Ok(r)
}

async fn apply(args: ApplyArgs) -> Result<(), Failure> {
    use mesh_proto::pb;
    let manifest = std::fs::read_to_string(&args.file)
        .map_err(|e| Failure::new(EXIT_USAGE, format!("{}: {e}", args.file.display())))?;
    let (docs, _) = mesh_policy::document::parse_text(&args.file.display().to_string(), &manifest);
    let kinds: Vec<&str> = docs
        .iter()
        .filter_map(|d| d.value["kind"].as_str())
        .collect();
    let route = if kinds.contains(&"AuthorizationPolicy") {
        false
    } else if kinds.contains(&"HTTPRoute") {
        true
    } else {
        return Err(Failure::new(
            EXIT_USAGE,
            format!(
                "{}: holds no AuthorizationPolicy or HTTPRoute to apply",
                args.file.display()
            ),
        ));
    };
    let req = pb::ApplyRequest {
        source: Some(pb::apply_request::Source::Manifest(manifest)),
        dry_run: args.dry_run,
        force: args.force,
        expected_resource_version: args.expected_resource_version.clone().unwrap_or_default(),
        expect_absent: args.expect_absent,
        on_behalf_of: args.as_user.clone().map(|user| pb::Identity {
            user,
            groups: args.as_groups.clone(),
        }),
        approved_by: args.approved_by.clone().unwrap_or_default(),
        reason: args.reason.clone().unwrap_or_default(),
        // Supporting objects' reviewed versions are what the chatbot and MCP plans carry;
        // a person at a terminal reviews and applies in one go.
        preconditions: Vec::new(),
    };
    let mut c = connect(&args.server, Duration::from_secs(10)).await?;
    let r = with_token(
        req.clone(),
        args.token.as_deref(),
        Some(Duration::from_secs(60)),
    )?;
    let answer = match if route {
        c.apply_http_route(r).await
    } else {
        c.apply_authorization_policy(r).await
    } {
        Ok(a) => a.into_inner(),
        // The approval policy wants people first: ask them, and say where to follow it.
        Err(s) if mesh_proto::needs_approval(&s) && !args.dry_run => {
            return request_approval(&args, &mut c, req, route, s.message()).await;
        }
        Err(s) => return Err(server_failure(&args.server, &s)),
    };
    if args.output == "json" {
        println!(
            "{}",
            serde_json::to_string_pretty(&answer).expect("proto JSON")
        );
        return Ok(());
    }
    for o in &answer.objects {
        println!("{} {}/{}: {}", o.kind, o.namespace, o.name, o.action);
    }
    if !answer.diff.is_empty() {
        println!();
        print!("{}", answer.diff);
    }
    if !answer.affected_edges.is_empty() {
        println!("\nEDGE  RPS  VERDICT");
        for a in &answer.affected_edges {
            let e = a.edge.clone().unwrap_or_default();
            let name = |r: Option<pb::WorkloadRef>| {
                r.map(|r| format!("{}/{}", r.namespace, r.name))
                    .unwrap_or_default()
            };
            println!(
                "{} -> {}  {:.2}  {} -> {}",
                name(e.src),
                name(e.dst),
                a.rps,
                a.before().as_str_name().to_ascii_lowercase(),
                a.after().as_str_name().to_ascii_lowercase()
            );
        }
    }
    for w in &answer.warnings {
        println!("warning: {w}");
    }
    let who = answer.acted_as.map(|i| i.user).unwrap_or_default();
    println!(
        "\n{} as {who}; audit id {}",
        if answer.dry_run { "dry-run" } else { "applied" },
        answer.audit_id
    );
    Ok(())
}

/// Turns a change the approval policy holds back into an approval request, printing its id.
async fn request_approval(
    args: &ApplyArgs,
    c: &mut mesh_proto::pb::mesh_service_client::MeshServiceClient<tonic::transport::Channel>,
    mut change: mesh_proto::pb::ApplyRequest,
    route: bool,
    why: &str,
) -> Result<(), Failure> {
    use mesh_proto::pb;
    change.force = false;
    let req = pb::RequestApprovalRequest {
        kind: if route {
            pb::ChangeKind::HttpRoute
        } else {
            pb::ChangeKind::AuthorizationPolicy
        }
        .into(),
        change: Some(change),
        agent: String::new(),
        front_end: "cli".into(),
    };
    let ap = c
        .request_approval(with_token(
            req,
            args.token.as_deref(),
            Some(Duration::from_secs(60)),
        )?)
        .await
        .map_err(|s| server_failure(&args.server, &s))?
        .into_inner();
    approvals::print_approval(&args.output, &ap)?;
    if args.output == "json" {
        return Ok(());
    }
    println!(
        "\nnot applied yet: {why}\napproval requested: {} (needs {} approval(s) under {}); follow \
         it with `meshctl approvals show {}`",
        ap.id, ap.needed, ap.rule, ap.id
    );
    Ok(())
}

async fn watch(args: WatchArgs) -> Result<(), Failure> {
    let mut c = connect(&args.server, Duration::from_secs(10)).await?;
    let req = mesh_proto::pb::WatchMeshGraphRequest {
        namespaces: args.namespaces.clone(),
        ..Default::default()
    };
    let r = with_token(req, args.token.as_deref(), None)?;
    let mut stream = c
        .watch_mesh_graph(r)
        .await
        .map_err(|s| server_failure(&args.server, &s))?
        .into_inner();
    let mut printer = watch::WatchPrinter::default();
    let mut seen = 0u64;
    while args.max_events.is_none_or(|max| seen < max) {
        let msg = stream.message().await.map_err(|s| {
            Failure::new(1, format!("watch ended: {} ({:?})", s.message(), s.code()))
        })?;
        let Some(ev) = msg else { return Ok(()) };
        seen += 1;
        let lines = if args.output == "json" {
            vec![serde_json::to_string(&ev).expect("proto JSON")]
        } else {
            printer
                .event(ev)
                .map_err(|e| Failure::new(1, format!("{}: {e}", args.server)))?
        };
        let mut out = std::io::stdout().lock();
        for l in lines {
            writeln!(out, "{l}")
                .map_err(|e| Failure::new(1, format!("cannot write output: {e}")))?;
        }
        out.flush()
            .map_err(|e| Failure::new(1, format!("cannot write output: {e}")))?;
    }
    Ok(())
}

/// The graph in an output format; `width` is the terminal's, when writing to one.
pub fn render(
    graph: &MeshGraph,
    output: Output,
    width: Option<usize>,
) -> Result<Vec<u8>, mesh_render::RenderError> {
    Ok(match output {
        Output::Table => table(graph, false).into_bytes(),
        Output::Wide => table_fit(graph, true, width).into_bytes(),
        Output::Json => {
            let wire = mesh_proto::pb::MeshGraph::from(graph);
            let mut s = serde_json::to_string_pretty(&wire).expect("proto JSON always serializes");
            s.push('\n');
            s.into_bytes()
        }
        Output::Dot => mesh_render::dot(graph).into_bytes(),
        Output::Svg => mesh_render::svg(graph).into_bytes(),
        Output::Png => mesh_render::png(graph)?,
    })
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "-".to_owned(), f)
}

/// The POLICY cell: the decision, `!` when the proxies' counters disagree with it.
fn policy_cell(p: &PolicyVerdict) -> String {
    let d = p.decision.as_str();
    if p.disagreement.is_empty() {
        d.to_owned()
    } else {
        format!("{d}!")
    }
}

/// The AUTHZ cell: what admitted the edge (its authorizations, else the default policy).
fn authz_cell(p: &PolicyVerdict) -> String {
    if !p.authorization_policies.is_empty() {
        p.authorization_policies.join(",")
    } else if let Some(d) = p.default_policy.split_whitespace().next() {
        format!("default:{d}")
    } else if !p.server.is_empty() {
        format!("server:{}", p.server)
    } else {
        "-".to_owned()
    }
}

/// The ROUTES cell: how many routes carried the edge, and the one failing the most requests.
fn routes_cell(e: &mesh_model::Edge) -> String {
    match (e.routes.len(), e.worst_route()) {
        (0, _) => "-".to_owned(),
        (n, None) => format!("{n} ok"),
        (n, Some(w)) => format!(
            "{n}, worst {} {}",
            w.id.short_name(),
            opt(w.success_rate, |s| format!("{:.1}%", s * 100.0))
        ),
    }
}

/// `sa.ns` for a Linkerd identity of the usual form (`sa.ns.serviceaccount.identity.<control
/// plane namespace>.<trust domain>`), with the suffix it dropped; else the identity whole.
fn short_identity(id: &str) -> (String, Option<String>) {
    let mut parts = id.splitn(4, '.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(sa), Some(ns), Some("serviceaccount"), Some(rest))
            if rest.starts_with("identity.") =>
        {
            (format!("{sa}.{ns}"), Some(format!("serviceaccount.{rest}")))
        }
        _ => (id.to_owned(), None),
    }
}

/// A table like `linkerd viz edges -o wide`, plus protocol and golden metrics; with a
/// POLICY column once the graph has known the cluster (a `kubernetes` source that succeeded).
pub fn table(graph: &MeshGraph, wide: bool) -> String {
    table_fit(graph, wide, None)
}

/// [`table`], fitted to a terminal `width` columns wide: when the wide table would be wider,
/// each row's identities and authorizations go on an indented line under it.
pub fn table_fit(graph: &MeshGraph, wide: bool, width: Option<usize>) -> String {
    let policy = graph
        .sources
        .iter()
        .any(|s| s.source == "kubernetes" && s.last_success.is_some());
    let mut header = vec![
        "SRC", "DST", "SRC_NS", "DST_NS", "PROTO", "SECURED", "RPS", "SUCCESS", "P99",
    ];
    if policy {
        header.push("POLICY");
    }
    let mut extra_header = Vec::new();
    if wide {
        if policy {
            header.push("DENIED/S");
        }
        extra_header.extend(["CLIENT_ID", "SERVER_ID"]);
        if policy {
            extra_header.push("AUTHZ");
        }
        extra_header.push("ROUTES");
    }
    let mut suffixes = std::collections::BTreeSet::new();
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| (*s).to_owned()).collect()];
    let mut extras: Vec<Vec<String>> = vec![extra_header.iter().map(|s| (*s).to_owned()).collect()];
    let mut notes = Vec::new();
    for e in graph.edges.values() {
        let (dst, dst_ns) = match &e.key.dst {
            Destination::Workload(w) => (w.name.clone(), w.namespace.clone()),
            Destination::Authority(a) => (a.clone(), "-".to_owned()),
        };
        let secured = match e.tls {
            TlsStatus::Mtls => "√ mTLS".to_owned(),
            TlsStatus::Plaintext => {
                // The reason can be long (several, with a share): it goes under the table.
                if !e.no_tls_reason.is_empty() {
                    notes.push(format!(
                        "× {} -> {}: {}",
                        e.key.src, e.key.dst, e.no_tls_reason
                    ));
                }
                "× plaintext".to_owned()
            }
            TlsStatus::Unknown => "? unknown".to_owned(),
        };
        let m = &e.metrics;
        let mut row = vec![
            e.key.src.name.clone(),
            dst,
            e.key.src.namespace.clone(),
            dst_ns,
            e.key.protocol.to_string(),
            secured,
            format!("{:.2}", m.rps),
            opt(m.success_rate, |s| format!("{:.2}%", s * 100.0)),
            opt(m.latency_p99_ms, |p| format!("{p:.0}ms")),
        ];
        if policy {
            row.push(policy_cell(&e.policy));
            if let Some(why) = e.policy.why_unknown() {
                notes.push(format!("? {} -> {}: {why}", e.key.src, e.key.dst));
            }
        }
        let mut extra = Vec::new();
        if wide {
            if policy {
                // What the destination's proxies refused, as they report it.
                row.push(opt(e.policy.observed_deny_rps, |r| format!("{r:.2}")));
            }
            for id in [&e.client_identity, &e.server_identity] {
                extra.push(if id.is_empty() {
                    "-".to_owned()
                } else {
                    let (short, suffix) = short_identity(id);
                    suffixes.extend(suffix);
                    short
                });
            }
            if policy {
                extra.push(authz_cell(&e.policy));
            }
            extra.push(routes_cell(e));
        }
        rows.push(row);
        extras.push(extra);
    }
    let mut out = if wide {
        let joined: Vec<Vec<String>> = rows
            .iter()
            .zip(&extras)
            .map(|(r, x)| r.iter().chain(x).cloned().collect())
            .collect();
        let one = mesh_render::columns(&joined, "  ");
        let widest = one.lines().map(|l| l.chars().count()).max().unwrap_or(0);
        if width.is_none_or(|w| widest <= w) {
            one
        } else {
            // Too wide for the terminal: identities and authorizations under each row.
            let (main, under) = (
                mesh_render::columns(&rows, "  "),
                mesh_render::columns(&extras, "  "),
            );
            main.lines()
                .zip(under.lines())
                .map(|(m, u)| format!("{m}\n    {u}\n"))
                .collect()
        }
    } else {
        mesh_render::columns(&rows, "  ")
    };
    if graph.edges.is_empty() {
        out.push_str("(no edges in the window)\n");
    }
    for s in &suffixes {
        out.push_str(&format!("identities: SA.NS stands for SA.NS.{s}\n"));
    }
    for n in notes {
        out.push_str(&n);
        out.push('\n');
    }
    for e in graph.edges.values() {
        if let Some(r) = e.policy.observed_rate_limited_rps.filter(|r| *r > 0.0) {
            out.push_str(&format!(
                "~ {} -> {}: rate limited by {}: {r:.2}/s answered 429\n",
                e.key.src, e.key.dst, e.policy.rate_limit
            ));
        }
        if let Some(a) = e.policy.observed_audit_rps.filter(|a| *a > 0.0) {
            out.push_str(&format!(
                "~ {} -> {}: audit mode admitted {a:.2}/s that enforcing the policy would refuse\n",
                e.key.src, e.key.dst
            ));
        }
        if !e.policy.disagreement.is_empty() {
            out.push_str(&format!(
                "! {} -> {}: {}\n",
                e.key.src, e.key.dst, e.policy.disagreement
            ));
        }
    }
    for s in graph.sources.iter().filter(|s| !s.ok) {
        out.push_str(&format!("stale: {}: {}\n", s.source, s.error));
    }
    out
}

pub mod watch;

#[cfg(test)]
mod tests;
