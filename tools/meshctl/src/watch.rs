//! `meshctl watch` as text: the snapshot in one line, then only what really changed. The
//! printer keeps its own copy of the graph (the snapshot with every delta applied), so each
//! changed edge says which fields moved and from what; a delta or heartbeat that changes
//! nothing a person would notice (the collector refreshes source timestamps on every build)
//! prints nothing, and a source turning stale or recovering prints one status line.

use mesh_model::{Edge, GraphDelta, MeshGraph, PolicyVerdict, SourceHealth, TlsStatus};
use mesh_proto::pb::{self, mesh_graph_event::Event};

/// Turns watch events into the lines a person reads.
#[derive(Debug, Default)]
pub struct WatchPrinter {
    graph: Option<MeshGraph>,
    /// The error last reported for each stale source (a source absent here is ok).
    stale: std::collections::BTreeMap<String, String>,
}

impl WatchPrinter {
    /// The lines for one event (none for a heartbeat or a delta that changed nothing visible).
    pub fn event(&mut self, ev: pb::MeshGraphEvent) -> Result<Vec<String>, String> {
        match ev.event {
            Some(Event::Snapshot(g)) => {
                let g = MeshGraph::try_from(g).map_err(|e| format!("invalid snapshot: {e}"))?;
                let mut out = vec![format!(
                    "snapshot epoch {} version {}: {} workloads, {} edges",
                    g.epoch,
                    g.version,
                    g.workloads.len(),
                    g.edges.len()
                )];
                self.stale.clear();
                out.extend(self.sources(&g.sources));
                self.graph = Some(g);
                Ok(out)
            }
            Some(Event::Delta(d)) => {
                let d = GraphDelta::try_from(d).map_err(|e| format!("invalid delta: {e}"))?;
                let graph = self
                    .graph
                    .as_mut()
                    .ok_or("the server sent a delta before a snapshot")?;
                let changes = describe(graph, &d);
                d.apply(graph).map_err(|e| e.to_string())?;
                let mut out = Vec::new();
                if !changes.is_empty() {
                    out.push(format!("delta {} -> {}:", d.from_version, d.to_version));
                    out.extend(changes);
                }
                out.extend(self.sources(&d.sources));
                Ok(out)
            }
            Some(Event::Heartbeat(h)) => {
                let sources: Vec<SourceHealth> = h
                    .sources
                    .into_iter()
                    .map(SourceHealth::try_from)
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("invalid heartbeat: {e}"))?;
                Ok(self.sources(&sources))
            }
            None => Ok(Vec::new()),
        }
    }

    /// One line per source whose health changed since it was last reported.
    fn sources(&mut self, sources: &[SourceHealth]) -> Vec<String> {
        let mut out = Vec::new();
        for s in sources {
            let was = self.stale.get(&s.source);
            if s.ok {
                if was.is_some() {
                    self.stale.remove(&s.source);
                    out.push(format!("source {} ok again", s.source));
                }
            } else if was != Some(&s.error) {
                out.push(format!("source {} stale: {}", s.source, s.error));
                self.stale.insert(s.source.clone(), s.error.clone());
            }
        }
        out
    }
}

fn edge_name(e: &mesh_model::EdgeKey) -> String {
    format!("{} -> {} ({})", e.src, e.dst, e.protocol)
}

fn tls_word(t: TlsStatus) -> &'static str {
    match t {
        TlsStatus::Mtls => "mTLS",
        TlsStatus::Plaintext => "plaintext",
        TlsStatus::Unknown => "unknown",
    }
}

/// The POLICY word of a verdict; `-` when none was computed.
fn decision_word(p: &PolicyVerdict) -> &'static str {
    if p.is_evaluated() {
        p.decision.as_str()
    } else {
        "-"
    }
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |s| format!("{:.2}%", s * 100.0))
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |p| format!("{p:.0}ms"))
}

/// A new edge, in one line: protocol, TLS, rate and verdict.
fn new_edge(e: &Edge) -> String {
    let policy = match decision_word(&e.policy) {
        "-" => String::new(),
        w => format!(", policy {w}"),
    };
    format!(
        "  + {}: {}, {:.2} rps, success {}{policy}",
        edge_name(&e.key),
        tls_word(e.tls),
        e.metrics.rps,
        pct(e.metrics.success_rate)
    )
}

/// What moved on an edge that exists before and after, field by field.
fn changed_edge(old: &Edge, new: &Edge) -> Option<String> {
    let mut parts = Vec::new();
    if old.tls != new.tls {
        parts.push(format!("{} -> {}", tls_word(old.tls), tls_word(new.tls)));
    }
    let (a, b) = (decision_word(&old.policy), decision_word(&new.policy));
    if a != b {
        parts.push(format!("policy {a} -> {b}"));
    }
    let (a, b) = (&old.metrics, &new.metrics);
    if format!("{:.2}", a.rps) != format!("{:.2}", b.rps) {
        parts.push(format!("rps {:.2} -> {:.2}", a.rps, b.rps));
    }
    if pct(a.success_rate) != pct(b.success_rate) {
        parts.push(format!(
            "success {} -> {}",
            pct(a.success_rate),
            pct(b.success_rate)
        ));
    }
    if ms(a.latency_p99_ms) != ms(b.latency_p99_ms) {
        parts.push(format!(
            "p99 {} -> {}",
            ms(a.latency_p99_ms),
            ms(b.latency_p99_ms)
        ));
    }
    let deny = |p: &PolicyVerdict| p.observed_deny_rps.map(|r| format!("{r:.2}"));
    if deny(&old.policy) != deny(&new.policy) {
        parts.push(format!(
            "denied/s {} -> {}",
            deny(&old.policy).unwrap_or_else(|| "-".into()),
            deny(&new.policy).unwrap_or_else(|| "-".into())
        ));
    }
    if old.client_identity != new.client_identity || old.server_identity != new.server_identity {
        parts.push("identities changed".to_owned());
    }
    if old.policy.disagreement != new.policy.disagreement && !new.policy.disagreement.is_empty() {
        parts.push(format!("proxies disagree: {}", new.policy.disagreement));
    }
    (!parts.is_empty()).then(|| format!("  ~ {}: {}", edge_name(&new.key), parts.join(", ")))
}

/// The visible changes `d` makes to `graph` (which is at `d.from_version`), one line each.
pub fn describe(graph: &MeshGraph, d: &GraphDelta) -> Vec<String> {
    let mut out = Vec::new();
    for e in &d.upserted_edges {
        match graph.edges.get(&e.key) {
            None => out.push(new_edge(e)),
            Some(old) => out.extend(changed_edge(old, e)),
        }
    }
    for k in &d.removed_edges {
        out.push(format!("  - {}", edge_name(k)));
    }
    for w in &d.upserted_workloads {
        match graph.workloads.get(&w.id) {
            None => out.push(format!("  + workload {}", w.id)),
            Some(old) => {
                let mut parts = Vec::new();
                if old.ready_replicas != w.ready_replicas {
                    parts.push(format!(
                        "ready {} -> {}",
                        old.ready_replicas, w.ready_replicas
                    ));
                }
                if old.meshed != w.meshed {
                    parts.push(
                        if w.meshed {
                            "now meshed"
                        } else {
                            "no longer meshed"
                        }
                        .into(),
                    );
                }
                if old.identity != w.identity || old.service_account != w.service_account {
                    parts.push(format!("identity {}", w.identity));
                }
                if !parts.is_empty() {
                    out.push(format!("  ~ workload {}: {}", w.id, parts.join(", ")));
                }
            }
        }
    }
    for w in &d.removed_workloads {
        out.push(format!("  - workload {w}"));
    }
    for p in &d.upserted_policies {
        let k = &p.key;
        let sign = if graph.policies.contains_key(k) {
            "~"
        } else {
            "+"
        };
        out.push(format!("  {sign} {} {}/{}", k.kind, k.namespace, k.name));
    }
    for k in &d.removed_policies {
        out.push(format!("  - {} {}/{}", k.kind, k.namespace, k.name));
    }
    out
}
