//! Small structured answers: how tools phrase refusals, edges and workloads for a model.

use super::*;

/// A refusal as the tool's error text (a tool error the model reads, not a protocol error).
pub(super) fn status_text(s: &Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// Structured content with a short summary as the text a model reads first.
pub(super) fn answer(summary: String, value: Value) -> CallToolResult {
    let mut r = CallToolResult::structured(value);
    r.content = vec![ContentBlock::text(summary)];
    r
}

pub(super) fn id(w: Option<&pb::WorkloadRef>) -> String {
    w.map_or_else(String::new, |w| format!("{}/{}", w.namespace, w.name))
}

pub(super) fn tls_name(tls: i32) -> &'static str {
    match pb::TlsStatus::try_from(tls).unwrap_or_default() {
        pb::TlsStatus::Mtls => "mtls",
        pb::TlsStatus::Plaintext => "plaintext",
        _ => "unknown",
    }
}

pub(super) fn decision_name(p: Option<&pb::PolicyVerdict>) -> &'static str {
    match p.map(pb::PolicyVerdict::decision).unwrap_or_default() {
        pb::policy_verdict::Decision::Allowed => "allowed",
        pb::policy_verdict::Decision::Denied => "denied",
        pb::policy_verdict::Decision::Audit => "audit",
        _ => "unknown",
    }
}

/// One edge as a compact row: what an agent needs, nothing else.
pub(super) fn edge_row(e: &pb::Edge) -> Value {
    let m = e.metrics.unwrap_or_default();
    let to = if e.dst.is_some() {
        id(e.dst.as_ref())
    } else {
        e.dst_authority.clone()
    };
    let mut row = json!({
        "from": id(e.src.as_ref()),
        "to": to,
        "protocol": e.protocol,
        "rps": (m.rps * 100.0).round() / 100.0,
        "tls": tls_name(e.tls),
        "policy": decision_name(e.policy.as_ref()),
    });
    if let Some(s) = m.success_rate {
        row["success_rate"] = json!((s * 1000.0).round() / 1000.0);
    }
    if let Some(p) = m.latency_p99_ms {
        row["p99_ms"] = json!(p.round());
    }
    if !e.no_tls_reason.is_empty() {
        row["no_tls_reason"] = json!(e.no_tls_reason);
    }
    if let Some(p) = &e.policy {
        if let Some(d) = p.observed_deny_rps.filter(|d| *d > 0.0) {
            row["denied_rps"] = json!((d * 100.0).round() / 100.0);
        }
        if !p.rate_limit.is_empty() {
            row["rate_limit"] = json!(p.rate_limit);
        }
        if let Some(r) = p.observed_rate_limited_rps.filter(|r| *r > 0.0) {
            row["rate_limited_rps"] = json!((r * 100.0).round() / 100.0);
        }
        if let Some(a) = p.observed_audit_rps.filter(|a| *a > 0.0) {
            // Admitted only by audit mode: what enforcing the policy would refuse.
            row["audit_rps"] = json!((a * 100.0).round() / 100.0);
        }
        if !p.disagreement.is_empty() {
            row["disagreement"] = json!(p.disagreement);
        }
    }
    row
}

/// One route of an edge, as agents read it: which route on which parent, and how it fares.
pub(super) fn route_row(r: &pb::RouteStats) -> Value {
    let mut row = json!({
        "route": mesh_model::RouteId {
            kind: r.route_kind.clone(),
            namespace: r.route_namespace.clone(),
            name: r.route_name.clone(),
            parent: String::new(),
        }
        .qualified_name(),
        "kind": r.route_kind,
        "parent": r.parent,
        "rps": (r.rps * 100.0).round() / 100.0,
    });
    if let Some(s) = r.success_rate {
        row["success_rate"] = json!((s * 1000.0).round() / 1000.0);
        row["failing_rps"] = json!((r.rps * (1.0 - s) * 100.0).round() / 100.0);
    }
    if let Some(p) = r.latency_p99_ms {
        row["p99_ms"] = json!(p.round());
    }
    if r.rate_limited_rps > 0.0 {
        row["rate_limited_rps"] = json!((r.rate_limited_rps * 100.0).round() / 100.0);
    }
    row
}

/// [`edge_row`] with the edge's routes, when its proxies report them.
pub(super) fn edge_row_with_routes(e: &pb::Edge) -> Value {
    let mut row = edge_row(e);
    if !e.routes.is_empty() {
        row["routes"] = e.routes.iter().map(route_row).collect();
    }
    row
}

pub(super) fn in_namespace(e: &pb::Edge, ns: Option<&str>) -> bool {
    ns.is_none_or(|ns| {
        e.src.as_ref().is_some_and(|s| s.namespace == ns)
            || e.dst.as_ref().is_some_and(|d| d.namespace == ns)
    })
}

/// A rollout as an agent reads it.
pub(super) fn rollout_json(r: &pb::Rollout) -> Value {
    let gate = r.gate.clone().unwrap_or_default();
    serde_json::json!({
        "id": r.id,
        "namespace": r.namespace,
        "workload": r.workload,
        "phase": r.phase,
        "revision": r.revision,
        "next": r.next,
        "plan_pending": r.plan_pending,
        "gate": {
            "status": gate.status().as_str_name().to_ascii_lowercase(),
            "summary": gate.summary,
            "source": gate.source,
            "would_be_denied": gate.would_be_denied.iter().map(|w| serde_json::json!({
                "caller": w.caller, "callee": w.callee, "count": w.count.round(),
            })).collect::<Vec<_>>(),
        },
        "objects": r.objects.iter().map(|o| serde_json::json!({
            "kind": o.kind, "namespace": o.namespace, "name": o.name,
            "justification": o.justification,
        })).collect::<Vec<_>>(),
        "needs_action": r.needs_action.iter().map(|n| serde_json::json!({
            "caller": n.caller, "callee": id(n.callee.as_ref()), "advice": n.advice,
        })).collect::<Vec<_>>(),
        "history": r.history.iter().map(|h| serde_json::json!({
            "from": h.from, "to": h.to, "by": h.by, "approved_by": h.approved_by,
            "outcome": h.outcome, "audit_id": h.audit_id,
        })).collect::<Vec<_>>(),
        "last_error": r.last_error,
        "yaml": r.yaml,
    })
}

/// One change of `what_changed`: when, what kind, the sentence, and the fields to act on.
pub(super) fn change_row(c: &mesh_model::history::Change) -> Value {
    use mesh_model::history::ChangeKind as K;
    let mut row = json!({
        "at": crate::past::rfc3339(c.at),
        "kind": c.what.label(),
        "what": c.what.to_string(),
    });
    if let Some(e) = c.what.edge() {
        row["from"] = json!(e.src.to_string());
        row["to"] = json!(e.dst.to_string());
    }
    if let K::Object(o) = &c.what {
        row["object"] = json!({
            "kind": o.kind, "namespace": o.namespace, "name": o.name,
            "operation": o.operation.as_str(), "resource_version": o.resource_version,
            "field_manager": o.field_manager, "requested_by": o.requested_by, "via": o.via,
            "approved_by": o.approved_by, "audit_id": o.audit_id, "diff": o.diff,
        });
    }
    row
}
