//! The tools' and the prompt's arguments, as JSON Schemas the client sees.

use super::*;

/// Filters for `get_mesh_graph`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct GraphArgs {
    /// Only these namespaces (edges touching them); empty: all.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Only edges to or from this workload, `namespace/name`.
    #[serde(default)]
    pub workload: Option<String>,
    /// Only edges with this TLS status: `mtls`, `plaintext` or `unknown`.
    #[serde(default)]
    pub tls: Option<String>,
    /// Only edges with at least this many requests per second.
    #[serde(default)]
    pub min_rps: Option<f64>,
    /// The full edge list (capped at `max_edges`) instead of a summary.
    #[serde(default)]
    pub full: bool,
    /// Cap on edges in a full answer (default 200).
    #[serde(default)]
    pub max_edges: Option<usize>,
    /// The graph as it was at this moment instead of now: RFC 3339 in UTC
    /// (`2026-12-07T10:32:00Z`) or a duration ago (`-1h`), within Prometheus's retention.
    #[serde(default)]
    pub at: Option<String>,
}

/// The span of `what_changed`: `since` (a duration back from now), or `from` and `to`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct ChangedArgs {
    /// How far back from now, e.g. `1h`, `15m`, `2d`.
    #[serde(default)]
    pub since: Option<String>,
    /// The earlier moment (instead of `since`): RFC 3339 in UTC or a duration ago (`-2h`).
    #[serde(default)]
    pub from: Option<String>,
    /// The later moment (default now): RFC 3339 in UTC or a duration ago.
    #[serde(default)]
    pub to: Option<String>,
    /// Only these namespaces; empty: all.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Most changes listed (default 100), the earliest first.
    #[serde(default)]
    pub max_changes: Option<usize>,
}

/// One workload, `namespace/name`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct WorkloadArgs {
    /// The workload, `namespace/name`, e.g. `emojivoto/voting`.
    pub workload: String,
}

/// An optional namespace.
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct NamespaceArgs {
    /// Only this namespace; absent: all.
    #[serde(default)]
    pub namespace: Option<String>,
}

/// Failing edges.
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct FailingArgs {
    /// Success rate below which an edge is failing (0..1, default 0.95).
    #[serde(default)]
    pub threshold: Option<f64>,
    /// Only this namespace; absent: all.
    #[serde(default)]
    pub namespace: Option<String>,
}

/// Who may reach whom.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ExplainArgs {
    /// The calling workload, `namespace/name`.
    pub from: String,
    /// The called workload, `namespace/name`.
    pub to: String,
    /// The port; absent: the destination's own (its Service's) port.
    #[serde(default)]
    pub port: Option<u16>,
    /// HTTP method, for per-route policy.
    #[serde(default)]
    pub method: Option<String>,
    /// HTTP path, for per-route policy.
    #[serde(default)]
    pub path: Option<String>,
}

/// What to lock down.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ProposeArgs {
    /// The namespace.
    pub namespace: String,
    /// One workload of it; absent: every workload of the namespace.
    #[serde(default)]
    pub workload: Option<String>,
    /// How far back to look at traffic, e.g. `7d`, `24h`; absent: the served graph's window.
    #[serde(default)]
    pub since: Option<String>,
    /// Servers with `accessPolicy: audit` (a rollout's first phase) instead of `deny`.
    #[serde(default)]
    pub audit: bool,
    /// Authorize each observed HTTPRoute on its own where every call went through one.
    #[serde(default)]
    pub per_route: bool,
}

/// A rollout to start.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct StartRolloutArgs {
    /// The namespace to lock down.
    pub namespace: String,
    /// One workload of it; absent: every workload of the namespace.
    #[serde(default)]
    pub workload: Option<String>,
    /// How far back to look at traffic, e.g. `7d`; absent: the served graph's window.
    #[serde(default)]
    pub since: Option<String>,
    /// How long audit must show no would-be-denied traffic before enforcing, e.g. `30m`
    /// (the default).
    #[serde(default)]
    pub observe_for: Option<String>,
    /// Authorize each observed HTTPRoute on its own where every call went through one.
    #[serde(default)]
    pub per_route: bool,
}

/// A rollout to read.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct RolloutArgs {
    /// The rollout's id (from start_rollout).
    pub id: String,
}

/// A rollout step.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct AdvanceRolloutArgs {
    /// The rollout's id.
    pub id: String,
    /// `audit` (apply the plan in audit mode), `enforce` (only once the gate is open),
    /// `rollback` (back one phase) or `repropose` (propose again from the traffic now).
    pub action: String,
    /// Dry-run: check RBAC, show the diff and what-if; change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// The revision you reviewed (from get_rollout); the step is refused if it moved since.
    #[serde(default)]
    pub expected_revision: Option<u64>,
}

/// A change to plan: a manifest, or a structured spec (see the tool description).
#[derive(Debug, Deserialize, JsonSchema)]
pub struct PlanArgs {
    /// YAML or JSON: one main object and the authentications and Server it needs.
    #[serde(default)]
    pub manifest: Option<String>,
    /// The change described instead (the fields of linkerd.mcp.v1 AuthorizationSpec or
    /// RouteSpec, in snake_case).
    #[serde(default)]
    pub spec: Option<Value>,
}

/// A plan to apply.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ApplyPlanArgs {
    /// The id `plan_authorization_policy` or `plan_http_route` returned.
    pub plan_id: String,
    /// Why the change is wanted, in one line: shown to the people asked to approve it.
    #[serde(default)]
    pub reason: Option<String>,
}

/// An approval request to look at.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ApprovalArgs {
    /// The approval id `apply_plan` returned.
    pub id: String,
}

/// Which approval requests to list.
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct ListApprovalsArgs {
    /// Only requests in this state: pending, applying, applied, stale, failed, unknown,
    /// rejected or expired.
    #[serde(default)]
    pub state: Option<String>,
    /// Only requests writing this namespace.
    #[serde(default)]
    pub namespace: Option<String>,
}

pub(super) fn spec_of(rpc: Rpc, spec: Value) -> Result<pb::PolicySpec, String> {
    let kind = match rpc {
        Rpc::AuthorizationPolicy => pb::policy_spec::Kind::Authorization(
            serde_json::from_value(spec).map_err(|e| format!("spec: {e}"))?,
        ),
        Rpc::HttpRoute => pb::policy_spec::Kind::Route(
            serde_json::from_value(spec).map_err(|e| format!("spec: {e}"))?,
        ),
    };
    Ok(pb::PolicySpec { kind: Some(kind) })
}

/// Arguments of the audit prompt.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct AuditArgs {
    /// Only this namespace; absent: the whole mesh.
    #[serde(default)]
    pub namespace: Option<String>,
}
