//! The command core: a parsed command -> the mcp service over gRPC -> a [`Reply`].

use std::{fmt::Write as _, time::Duration};

use mesh_model::{Decision, Destination, MeshGraph, TlsStatus};
use mesh_proto::pb::{self, mesh_service_client::MeshServiceClient};
use tonic::transport::Channel;

use crate::{
    command::{Command, WorkloadArg},
    mcp_error::McpError,
    reply::{File, Reply, Tone},
};

/// The bot's bearer token for the mcp service.
#[derive(Clone, Debug)]
pub enum Token {
    /// None (an mcp service without authentication).
    None,
    /// A fixed token.
    Static(String),
    /// A file read at every call: a projected service account token, which the kubelet
    /// rotates.
    File(std::path::PathBuf),
}

/// Calls to the mcp service: its gRPC client, the bot's bearer token, a deadline per call.
#[derive(Clone, Debug)]
pub struct Mcp {
    client: MeshServiceClient<Channel>,
    token: Token,
    timeout: Duration,
}

/// Most edges listed in one reply; the rest are counted.
const MAX_ROWS: usize = 25;

impl Mcp {
    /// A client of `server` (`host:port` or URL) that connects on first use.
    pub fn new(server: &str, token: Token, timeout: Duration) -> Result<Self, String> {
        let url = if server.contains("://") {
            server.to_owned()
        } else {
            format!("http://{server}")
        };
        let endpoint = Channel::from_shared(url.clone())
            .map_err(|e| format!("--server {server:?}: {e}"))?
            .connect_timeout(timeout)
            // The client-side bound of every call (a change's deadline, the longest); reads
            // also carry their own shorter `grpc-timeout`, which the server enforces.
            .timeout((timeout * 6).max(Duration::from_secs(30)));
        Ok(Self {
            client: MeshServiceClient::new(endpoint.connect_lazy()),
            token,
            timeout,
        })
    }

    /// A request carrying the bot's token and deadline.
    pub fn request<T>(&self, m: T) -> Result<tonic::Request<T>, McpError> {
        let mut r = tonic::Request::new(m);
        r.set_timeout(self.timeout);
        let token = match &self.token {
            Token::None => None,
            Token::Static(t) => Some(t.clone()),
            Token::File(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| {
                        McpError::Credentials(format!("--token-file {}: {e}", p.display()))
                    })?
                    .trim()
                    .to_owned(),
            ),
        };
        if let Some(t) = token {
            let v = format!("Bearer {t}").parse().map_err(|_| {
                McpError::Credentials("the bot's token is not a valid header value".into())
            })?;
            r.metadata_mut().insert("authorization", v);
        }
        Ok(r)
    }

    /// A request for a change: the apply pipeline makes several Kubernetes calls, so it gets
    /// six times the read deadline (at least 30 s).
    pub fn change_request<T>(&self, m: T) -> Result<tonic::Request<T>, McpError> {
        let mut r = self.request(m)?;
        r.set_timeout((self.timeout * 6).max(Duration::from_secs(30)));
        Ok(r)
    }

    /// A request carrying the bot's token and no deadline (for the watch stream, which lives
    /// as long as it is read).
    pub fn stream_request<T>(&self, m: T) -> Result<tonic::Request<T>, McpError> {
        let mut r = self.request(m)?;
        r.metadata_mut().remove("grpc-timeout");
        Ok(r)
    }

    /// The gRPC client.
    pub fn client(&self) -> MeshServiceClient<Channel> {
        self.client.clone()
    }

    async fn graph(&self, req: pb::GetMeshGraphRequest) -> Result<MeshGraph, McpError> {
        let g = self
            .client()
            .get_mesh_graph(self.request(req)?)
            .await?
            .into_inner();
        MeshGraph::try_from(g).map_err(|e| McpError::Unreadable(e.to_string()))
    }

    /// Runs a read command. `Apply`, `Alerts` and `Help` belong to the front ends.
    pub async fn run(&self, cmd: &Command) -> Reply {
        let out = match cmd {
            Command::Graph { namespace } => self.graph_reply(namespace.as_deref()).await,
            Command::Edges(w) => self.edges(w, false).await,
            Command::WhoCalls(w) => self.edges(w, true).await,
            Command::Routes(w) => self.routes(w).await,
            Command::Tls => self.plaintext().await,
            Command::Failing { threshold } => self.failing(*threshold).await,
            Command::Explain { from, to, port } => self.explain(from, to, *port).await,
            Command::Policy(w) => self.policy(w).await,
            Command::Diff { since, namespace } => self.diff(*since, namespace.as_deref()).await,
            Command::Lockdown {
                namespace,
                workload,
                since,
            } => self.lockdown(namespace, workload.as_deref(), *since).await,
            Command::Apply(_) | Command::Alerts { .. } | Command::Rollout(_) | Command::Help => {
                Ok(help())
            }
        };
        out.unwrap_or_else(|s| status_reply("The mesh service could not answer", &s))
    }

    async fn graph_reply(&self, namespace: Option<&str>) -> Result<Reply, McpError> {
        let g = self
            .graph(pb::GetMeshGraphRequest {
                namespaces: namespace.map(str::to_owned).into_iter().collect(),
                ..Default::default()
            })
            .await?;
        let scope = namespace.map_or_else(|| "the mesh".to_owned(), |n| format!("namespace {n}"));
        let edges: Vec<_> = g.edges.values().collect();
        let mtls = edges.iter().filter(|e| e.tls == TlsStatus::Mtls).count();
        let plain = edges
            .iter()
            .filter(|e| e.tls == TlsStatus::Plaintext)
            .count();
        let failing = edges
            .iter()
            .filter(|e| e.metrics.success_rate.is_some_and(|s| s < 0.95))
            .count();
        let denied = edges
            .iter()
            .filter(|e| e.policy.decision == Decision::Denied)
            .count();
        let rps: f64 = edges.iter().map(|e| e.metrics.rps).sum();
        let mut r = Reply::new(format!("Call graph of {scope}"))
            .field("Workloads", g.workloads.len().to_string())
            .field("Edges", edges.len().to_string())
            .field("Requests", format!("{rps:.1}/s"))
            .field("mTLS", format!("{mtls} of {}", edges.len()))
            .field("Plaintext", plain.to_string())
            .field("Below 95% success", failing.to_string())
            .field("Denied by policy", denied.to_string());
        if plain > 0 || failing > 0 || denied > 0 {
            r.tone = Tone::Warn;
        }
        let mut busiest = edges.clone();
        busiest.sort_by(|a, b| b.metrics.rps.total_cmp(&a.metrics.rps));
        r = r.code(table(busiest.iter().copied(), MAX_ROWS), "edges.txt");
        match mesh_render::png(&g) {
            Ok(png) => {
                r.image = Some(File {
                    name: "mesh-graph.png".into(),
                    bytes: png,
                });
            }
            Err(e) => r = r.note(format!("no picture: {e}")),
        }
        Ok(r.note(freshness(&g)))
    }

    /// What changed in the last `since`: a list read top to bottom in time, counts, and the
    /// picture with added, removed and regressed edges and turned verdicts marked.
    async fn diff(
        &self,
        since: std::time::Duration,
        namespace: Option<&str>,
    ) -> Result<Reply, McpError> {
        let now = std::time::SystemTime::now();
        let req = pb::DiffMeshGraphRequest {
            from: Some(mesh_proto::timestamp_to_pb(now - since)),
            namespaces: namespace.map(str::to_owned).into_iter().collect(),
            include_graphs: true,
            ..Default::default()
        };
        // A diff builds graphs to date its changes: the change deadline, not a read's.
        let d = self
            .client()
            .diff_mesh_graph(self.change_request(req)?)
            .await?
            .into_inner();
        let changes =
            mesh_proto::diff_changes(&d).map_err(|e| McpError::Unreadable(e.to_string()))?;
        let scope = namespace.map_or_else(|| "the mesh".to_owned(), |n| format!("namespace {n}"));
        let count = |label: &str| {
            changes
                .iter()
                .filter(|c| c.what.label() == label)
                .count()
                .to_string()
        };
        let mut r = Reply::new(format!(
            "What changed in {scope} in the last {}",
            humantime::format_duration(since)
        ))
        .field("Objects changed", count("object"))
        .field("Edges added", count("edge-added"))
        .field("Edges removed", count("edge-removed"))
        .field("TLS changes", count("tls"))
        .field("Verdict changes", count("verdict"))
        .field("Regressions", count("regression"));
        if changes.is_empty() {
            r = r.text("Nothing changed.");
        } else {
            if changes.iter().any(|c| {
                matches!(
                    c.what.label(),
                    "tls" | "verdict" | "regression" | "edge-removed"
                )
            }) {
                r.tone = Tone::Warn;
            }
            let lines: Vec<String> = changes
                .iter()
                .map(|c| format!("{}  {}", humantime::format_rfc3339_seconds(c.at), c.what))
                .collect();
            r = r.code(lines.join("\n"), "changes.txt");
        }
        let graph = |g: &Option<pb::MeshGraph>| {
            MeshGraph::try_from(g.clone().unwrap_or_default())
                .map_err(|e| McpError::Unreadable(e.to_string()))
        };
        match mesh_render::diff_png(&graph(&d.from_graph)?, &graph(&d.to_graph)?, &changes) {
            Ok(png) => {
                r.image = Some(File {
                    name: "mesh-diff.png".into(),
                    bytes: png,
                });
            }
            Err(e) => r = r.note(format!("no picture: {e}")),
        }
        for n in &d.notes {
            r = r.note(n.clone());
        }
        for (end, p) in [("start", &d.from_point), ("end", &d.to_point)] {
            if let Some(p) = p
                && !p.objects_exact
            {
                r = r.note(format!("At the {end}: {}", p.objects_note));
            }
        }
        Ok(r)
    }

    /// The graph around workload `w`, or the refusal to answer when the mesh does not know it.
    async fn workload_graph(&self, w: &WorkloadArg) -> Result<Result<MeshGraph, Reply>, McpError> {
        let g = self
            .graph(pb::GetMeshGraphRequest {
                workload: w.to_string(),
                ..Default::default()
            })
            .await?;
        let known = g
            .workloads
            .keys()
            .any(|k| k.namespace == w.namespace && k.name == w.name);
        Ok(if known {
            Ok(g)
        } else {
            Err(Reply::refusal(
                format!("No workload {w}"),
                format!("The mesh has no workload {w} with traffic in the window."),
            ))
        })
    }

    async fn edges(&self, w: &WorkloadArg, callers_only: bool) -> Result<Reply, McpError> {
        let g = match self.workload_graph(w).await? {
            Ok(g) => g,
            Err(refusal) => return Ok(refusal),
        };
        let is_dst = |e: &&mesh_model::Edge| matches!(&e.key.dst, Destination::Workload(d) if d.namespace == w.namespace && d.name == w.name);
        let mut list: Vec<_> = g
            .edges
            .values()
            .filter(|e| !callers_only || is_dst(e))
            .collect();
        list.sort_by(|a, b| b.metrics.rps.total_cmp(&a.metrics.rps));
        let title = if callers_only {
            format!("Who calls {w}")
        } else {
            format!("Edges of {w}")
        };
        let mut r = Reply::new(title).field(
            if callers_only { "Callers" } else { "Edges" },
            list.len().to_string(),
        );
        if list.is_empty() {
            r = r.text(if callers_only {
                "Nothing called it in the window."
            } else {
                "It had no traffic in the window."
            });
        } else {
            r = r.code(table(list.iter().copied(), MAX_ROWS), "edges.txt");
        }
        Ok(r.note(freshness(&g)))
    }

    async fn routes(&self, w: &WorkloadArg) -> Result<Reply, McpError> {
        let g = match self.workload_graph(w).await? {
            Ok(g) => g,
            Err(refusal) => return Ok(refusal),
        };
        let mut routes: Vec<(&mesh_model::Edge, &mesh_model::RouteStats)> = g
            .edges
            .values()
            .flat_map(|e| e.routes.iter().map(move |r| (e, r)))
            .collect();
        routes.sort_by(|(_, a), (_, b)| b.rps.total_cmp(&a.rps));
        let mut r =
            Reply::new(format!("Routes of {w}'s calls")).field("Routes", routes.len().to_string());
        if routes.is_empty() {
            r = r.text(
                "No route metrics for its calls in the window. Linkerd 2.14 and newer proxies \
                 report them (outbound_http_route_*, outbound_grpc_route_*).",
            );
        } else {
            if let Some((e, worst)) = routes
                .iter()
                .filter(|(_, r)| r.failure_rps() > 0.0)
                .max_by(|(_, a), (_, b)| a.failure_rps().total_cmp(&b.failure_rps()))
            {
                r.tone = Tone::Warn;
                r = r.text(format!(
                    "Worst: {} ({} -> {}), failing {:.2}/s.",
                    worst.id,
                    e.key.src,
                    e.key.dst,
                    worst.failure_rps()
                ));
            }
            r = r.code(route_table(&routes, MAX_ROWS), "routes.txt");
        }
        Ok(r.note(freshness(&g)))
    }

    async fn lockdown(
        &self,
        namespace: &str,
        workload: Option<&str>,
        since: Option<std::time::Duration>,
    ) -> Result<Reply, McpError> {
        let req = pb::ProposePolicyRequest {
            namespace: namespace.to_owned(),
            workload: workload.unwrap_or_default().to_owned(),
            since: since.map(|d| pbjson_types::Duration {
                seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                nanos: 0,
            }),
            audit: false,
            per_route: false,
        };
        let p = self
            .client()
            .propose_policy(self.request(req)?)
            .await?
            .into_inner();
        let target = workload.map_or_else(|| namespace.to_owned(), |w| format!("{namespace}/{w}"));
        let mut r = Reply::new(format!("Least-privilege policy for {target}"))
            .field("Objects", p.objects.len().to_string())
            .field("Callers needing action", p.needs_action.len().to_string());
        if !p.newly_denied.is_empty() {
            r.tone = Tone::Warn;
            r = r.text(format!(
                "This proposal would deny observed traffic: {}",
                p.newly_denied.join("; ")
            ));
        } else if p.objects.is_empty() {
            r.tone = Tone::Good;
            r = r.text("Nothing to propose: the policy in force already admits exactly the callers observed, or nothing called.");
        } else {
            r = r.text("Every observed caller stays admitted; anyone else would be denied.");
        }
        for n in p.needs_action.iter().take(MAX_ROWS) {
            let callee = n
                .callee
                .as_ref()
                .map_or_else(String::new, |w| format!("{}/{}", w.namespace, w.name));
            r = r.text(format!(
                "Needs action: {} -> {callee}: {}",
                n.caller, n.advice
            ));
        }
        if !p.objects.is_empty() {
            r = r.code(p.yaml, "proposal.yaml");
        }
        Ok(r)
    }

    async fn plaintext(&self) -> Result<Reply, McpError> {
        let g = self
            .graph(pb::GetMeshGraphRequest {
                tls: pb::TlsStatus::Plaintext.into(),
                ..Default::default()
            })
            .await?;
        let mut r = Reply::new("Edges without mTLS").field("Plaintext", g.edges.len().to_string());
        if g.edges.is_empty() {
            r.tone = Tone::Good;
            r = r.text("Every edge in the window is mTLS.");
        } else {
            r.tone = Tone::Warn;
            let mut lines = String::new();
            for e in g.edges.values().take(MAX_ROWS) {
                let _ = writeln!(
                    lines,
                    "{} -> {}  {:.2} rps  ({})",
                    e.key.src,
                    e.key.dst,
                    e.metrics.rps,
                    if e.no_tls_reason.is_empty() {
                        "no reason reported"
                    } else {
                        &e.no_tls_reason
                    }
                );
            }
            r = r.code(lines, "plaintext.txt");
        }
        Ok(r.note(freshness(&g)))
    }

    async fn failing(&self, threshold: f64) -> Result<Reply, McpError> {
        let g = self.graph(pb::GetMeshGraphRequest::default()).await?;
        let mut list: Vec<_> = g
            .edges
            .values()
            .filter(|e| e.metrics.success_rate.is_some_and(|s| s < threshold))
            .collect();
        list.sort_by(|a, b| {
            a.metrics
                .success_rate
                .unwrap_or(1.0)
                .total_cmp(&b.metrics.success_rate.unwrap_or(1.0))
        });
        let mut r = Reply::new(format!("Edges below {:.0}% success", threshold * 100.0))
            .field("Failing", list.len().to_string());
        if list.is_empty() {
            r.tone = Tone::Good;
            r = r.text("No edge is below the threshold.");
        } else {
            r.tone = Tone::Warn;
            r = r.code(table(list.iter().copied(), MAX_ROWS), "failing.txt");
        }
        Ok(r.note(freshness(&g)))
    }

    async fn explain(
        &self,
        from: &WorkloadArg,
        to: &WorkloadArg,
        port: u32,
    ) -> Result<Reply, McpError> {
        let res = self
            .client()
            .explain_access(self.request(pb::ExplainAccessRequest {
                from: from.to_string(),
                to: to.to_string(),
                port,
                ..Default::default()
            })?)
            .await;
        let v = match res {
            Ok(v) => mesh_model::PolicyVerdict::from(v.into_inner()),
            Err(s) => match McpError::from(s) {
                e @ (McpError::Invalid(_) | McpError::NotFound(_)) => {
                    return Ok(Reply::refusal("Cannot explain that", e.message()));
                }
                e => return Err(e),
            },
        };
        let (word, tone) = match v.decision {
            Decision::Allowed => ("allowed", Tone::Good),
            Decision::Denied => ("denied", Tone::Bad),
            Decision::Audit => ("allowed (audit mode)", Tone::Warn),
            Decision::Unknown => ("unknown", Tone::Warn),
        };
        let port = if port == 0 {
            String::new()
        } else {
            format!(":{port}")
        };
        let mut r = Reply::new(format!("{from} -> {to}{port}: {word}"));
        r.tone = tone;
        if !v.server.is_empty() {
            r = r.field("Server", v.server.clone());
        }
        if !v.authorization_policies.is_empty() {
            r = r.field("Authorizations", v.authorization_policies.join(", "));
        }
        if !v.http_route.is_empty() {
            r = r.field("Route", v.http_route.clone());
        }
        if !v.default_policy.is_empty() {
            r = r.field("Default policy", v.default_policy.clone());
        }
        if let Some(d) = v.observed_deny_rps {
            r = r.field("Denied now", format!("{d:.2}/s"));
        }
        let chain: String = v
            .chain
            .iter()
            .enumerate()
            .fold(String::new(), |mut s, (i, c)| {
                let _ = writeln!(s, "{}. {c}", i + 1);
                s
            });
        r = r.code(chain, "explain.txt");
        if !v.disagreement.is_empty() {
            r = r.note(format!("The proxies disagree: {}", v.disagreement));
        }
        Ok(r)
    }

    async fn policy(&self, w: &WorkloadArg) -> Result<Reply, McpError> {
        let g = self
            .graph(pb::GetMeshGraphRequest {
                workload: w.to_string(),
                include_policies: true,
                ..Default::default()
            })
            .await?;
        let inbound: Vec<_> = g
            .edges
            .values()
            .filter(|e| matches!(&e.key.dst, Destination::Workload(d) if d.namespace == w.namespace && d.name == w.name))
            .collect();
        let mut r = Reply::new(format!("Policy protecting {w}"));
        let mut named: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        let mut lines = String::new();
        for e in &inbound {
            let p = &e.policy;
            let what = if !p.authorization_policies.is_empty() {
                p.authorization_policies.join(", ")
            } else if !p.default_policy.is_empty() {
                format!("default {}", p.default_policy)
            } else {
                "-".to_owned()
            };
            let _ = writeln!(
                lines,
                "{} -> {}  {}  server {}  by {what}",
                e.key.src,
                w.name,
                decision_word(p.decision),
                if p.server.is_empty() { "-" } else { &p.server }
            );
            if !p.server.is_empty() {
                named.insert(format!("Server {}", p.server));
            }
            for a in &p.authorization_policies {
                named.insert(a.clone());
            }
            if !p.http_route.is_empty() {
                named.insert(format!("HTTPRoute {}", p.http_route));
            }
        }
        let in_ns: Vec<String> = g
            .policies
            .keys()
            .filter(|k| k.namespace == w.namespace)
            .map(|k| format!("{} {}/{}", k.kind, k.namespace, k.name))
            .collect();
        r = r
            .field("Inbound edges", inbound.len().to_string())
            .field("Policy objects in namespace", in_ns.len().to_string());
        if inbound.is_empty() {
            r = r.text("No inbound traffic in the window to evaluate.");
        } else {
            r = r.code(lines, "policy.txt");
        }
        if !named.is_empty() {
            r = r.text(format!(
                "In force: {}",
                named.into_iter().collect::<Vec<_>>().join("; ")
            ));
        }
        if !in_ns.is_empty() {
            r = r.code(in_ns.join("\n"), "objects.txt");
        }
        Ok(r.note(freshness(&g)))
    }
}

fn decision_word(d: Decision) -> &'static str {
    match d {
        Decision::Allowed => "allowed",
        Decision::Denied => "DENIED",
        Decision::Audit => "audit",
        Decision::Unknown => "unknown",
    }
}

/// A compact edge table for chat (narrower than `meshctl graph`).
pub fn table<'a>(edges: impl Iterator<Item = &'a mesh_model::Edge>, max: usize) -> String {
    let mut rows = vec![[
        "SRC".to_owned(),
        "DST".to_owned(),
        "PROTO".to_owned(),
        "TLS".to_owned(),
        "RPS".to_owned(),
        "SUCCESS".to_owned(),
        "P99".to_owned(),
        "POLICY".to_owned(),
    ]];
    let mut more = 0;
    for (i, e) in edges.enumerate() {
        if i >= max {
            more += 1;
            continue;
        }
        let m = &e.metrics;
        rows.push([
            e.key.src.to_string(),
            e.key.dst.to_string(),
            e.key.protocol.to_string(),
            match e.tls {
                TlsStatus::Mtls => "mTLS",
                TlsStatus::Plaintext => "PLAIN",
                TlsStatus::Unknown => "?",
            }
            .to_owned(),
            format!("{:.2}", m.rps),
            m.success_rate
                .map_or_else(|| "-".into(), |s| format!("{:.1}%", s * 100.0)),
            m.latency_p99_ms
                .map_or_else(|| "-".into(), |p| format!("{p:.0}ms")),
            decision_word(e.policy.decision).to_owned(),
        ]);
    }
    let mut out = mesh_render::columns(&rows, " ");
    if more > 0 {
        let _ = writeln!(out, "(and {more} more)");
    }
    out
}

/// Routes as fixed-width rows: the call, the route and its parent, then the golden metrics and
/// 429s per second.
pub fn route_table(routes: &[(&mesh_model::Edge, &mesh_model::RouteStats)], max: usize) -> String {
    let mut rows = vec![
        ["CALL", "ROUTE", "PARENT", "RPS", "SUCCESS", "P99", "429/S"]
            .map(str::to_owned)
            .to_vec(),
    ];
    for (e, r) in routes.iter().take(max) {
        rows.push(vec![
            format!("{} -> {}", e.key.src.name, e.key.dst),
            if r.id.kind == "default" {
                format!("[default {}]", r.id.name)
            } else {
                format!("{} {}", r.id.kind, r.id.name)
            },
            r.id.parent.clone(),
            format!("{:.2}", r.rps),
            r.success_rate
                .map_or_else(|| "-".into(), |s| format!("{:.1}%", s * 100.0)),
            r.latency_p99_ms
                .map_or_else(|| "-".into(), |p| format!("{p:.0}ms")),
            format!("{:.2}", r.rate_limited_rps),
        ]);
    }
    let mut out = mesh_render::columns(&rows, " ");
    if routes.len() > max {
        let _ = writeln!(out, "(and {} more)", routes.len() - max);
    }
    out
}

fn freshness(g: &MeshGraph) -> String {
    let stale: Vec<String> = g
        .sources
        .iter()
        .filter(|s| !s.ok)
        .map(|s| format!("{} is stale: {}", s.source, s.error))
        .collect();
    let mut s = format!(
        "Graph version {} over the last {}.",
        g.version,
        humantime::format_duration(g.window)
    );
    if !stale.is_empty() {
        s.push(' ');
        s.push_str(&stale.join("; "));
    }
    s
}

/// The reply to a failure of the mesh service: what it means for the user, and its message.
pub fn status_reply(title: &str, e: &McpError) -> Reply {
    Reply::refusal(title, e.meaning()).code(e.message().to_owned(), "error.txt")
}

/// The command list.
pub fn help() -> Reply {
    let mut lines = String::new();
    for (u, what) in crate::command::USAGE {
        let _ = writeln!(lines, "/mesh {u:<38} {what}");
    }
    let mut r = Reply::new("Mesh commands").code(lines, "help.txt");
    r.ephemeral = true;
    r.note("Changes are dry-run as you, then applied as you once someone else approves.")
}
