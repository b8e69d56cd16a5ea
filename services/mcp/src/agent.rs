//! The Model Context Protocol face, for LLM agents: read tools that answer mesh questions in
//! small structured results, mutation tools that only change the cluster through a reviewed
//! plan, resources and a prompt. Served over streamable HTTP at `/mcp` (in process, as the
//! authenticated caller) and over stdio (`mesh-mcp stdio`, talking to a remote mcp service over
//! gRPC with a token), through one [`Backend`].

use std::{sync::Arc, time::Duration};

use mesh_proto::pb::{self, mesh_service_client::MeshServiceClient};
use rmcp::{
    ErrorData as McpError, RoleServer, ServerHandler,
    handler::server::{
        router::prompt::PromptRouter, router::tool::ToolRouter, wrapper::Parameters,
    },
    model::{
        CallToolResult, ContentBlock, Implementation, ListResourceTemplatesResult,
        ListResourcesResult, PaginatedRequestParams, PromptMessage, ReadResourceRequestParams,
        ReadResourceResponse, ReadResourceResult, Resource, ResourceContents, ResourceTemplate,
        ResourceUpdatedNotificationParam, Role, ServerCapabilities, ServerConfig,
        SubscribeRequestParams, SubscriptionFilter, UnsubscribeRequestParams,
    },
    prompt, prompt_handler, prompt_router,
    service::{Peer, RequestContext, SubscriptionContext},
    tool, tool_handler, tool_router,
};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Mutex, watch};
use tonic::{Request, Status, transport::Channel};

use mesh_proto::server::mesh_service_server::MeshService;

use crate::{Caller, GraphService, apply::Rpc};

mod args;
mod backend;
mod format;
mod notify;

use self::{
    args::spec_of,
    backend::Who,
    format::{
        answer, change_row, decision_name, edge_row, edge_row_with_routes, id, in_namespace,
        rollout_json, route_row, status_text,
    },
    notify::{Subscriptions, graph_changes, known_resource, notify_subscribers},
};
pub use self::{
    args::{
        AdvanceRolloutArgs, ApplyPlanArgs, ApprovalArgs, AuditArgs, ChangedArgs, ExplainArgs,
        FailingArgs, GraphArgs, ListApprovalsArgs, NamespaceArgs, PlanArgs, ProposeArgs,
        RolloutArgs, StartRolloutArgs, WorkloadArgs,
    },
    backend::Backend,
};

/// How long a plan may wait for `apply_plan`.
const PLAN_TTL: Duration = Duration::from_secs(600);
/// Edges in a full `get_mesh_graph` answer unless the caller asks for fewer.
const DEFAULT_MAX_EDGES: usize = 200;

/// Where plans wait for `apply_plan`: this process, or the Redis/Valkey the replicas share
/// (so a plan made through one replica can be applied through another).
pub type Plans = mesh_store::Backend;

/// A reviewed change waiting for `apply_plan`, as stored.
#[derive(Debug, serde::Serialize, Deserialize)]
struct Plan {
    /// `ApplyAuthorizationPolicy` or `ApplyHTTPRoute`.
    http_route: bool,
    /// The request as reviewed (proto3 JSON), with the reviewed resourceVersion.
    request: pb::ApplyRequest,
}

/// The MCP server: tools, resources and a prompt over a [`Backend`].
#[derive(Clone)]
pub struct MeshAgent {
    backend: Backend,
    plans: Plans,
    subscriptions: Subscriptions,
    changes: watch::Receiver<u64>,
    tool_router: ToolRouter<Self>,
    prompt_router: PromptRouter<Self>,
}

impl std::fmt::Debug for MeshAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshAgent")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// The mutation tools, hidden by `--read-only`.
pub const MUTATION_TOOLS: [&str; 5] = [
    "plan_authorization_policy",
    "plan_http_route",
    "apply_plan",
    "start_rollout",
    "advance_rollout",
];

#[tool_router]
impl MeshAgent {
    /// Keeps plans in `plans` (default: this process).
    #[must_use]
    pub fn with_plans(mut self, plans: Plans) -> Self {
        self.plans = plans;
        self
    }

    /// A server over `backend`; without mutation tools when `read_only`.
    pub fn new(backend: Backend, read_only: bool) -> Self {
        let mut tool_router = Self::tool_router();
        if read_only {
            for t in MUTATION_TOOLS {
                tool_router.remove_route(t);
            }
        }
        let changes = graph_changes(&backend);
        let subscriptions = Subscriptions::default();
        notify_subscribers(subscriptions.clone(), changes.clone());
        Self {
            backend,
            plans: Plans::memory(),
            subscriptions,
            changes,
            tool_router,
            prompt_router: Self::prompt_router(),
        }
    }

    fn who(&self, ctx: &RequestContext<RoleServer>) -> Who {
        // Every MCP caller is an agent: named by its client as it introduced itself.
        let agent = ctx
            .peer
            .peer_info()
            .and_then(|i| crate::auth::agent_name(&i.client_info.name))
            .unwrap_or_else(|| "mcp-client".into());
        match &self.backend {
            Backend::Local(_) => {
                let caller = ctx
                    .extensions
                    .get::<axum::http::request::Parts>()
                    .and_then(|p| p.extensions.get::<Caller>().cloned())
                    .map(|c| Caller {
                        agent: Some(agent.clone()),
                        ..c
                    });
                let key = caller.as_ref().map_or_else(String::new, |c| {
                    format!("{}|{}", c.user, c.groups.join(","))
                });
                Who { caller, key, agent }
            }
            Backend::Remote { .. } => Who {
                caller: None,
                key: "stdio".into(),
                agent,
            },
        }
    }

    async fn graph(
        &self,
        ctx: &RequestContext<RoleServer>,
        req: pb::GetMeshGraphRequest,
    ) -> Result<pb::MeshGraph, String> {
        self.backend
            .graph(&self.who(ctx), req)
            .await
            .map_err(|s| status_text(&s))
    }

    #[tool(
        description = "The Linkerd mesh as a graph of workloads and the traffic between them \
            (requests per second, success rate, p99 latency, mTLS or plaintext, and the Linkerd \
            policy verdict of each edge). By default a summary: counts, plaintext, failing and \
            denied edges, and the busiest edges. Set full=true for the edge list (capped at \
            max_edges, with a note when cut). Filter by namespaces, workload (namespace/name), \
            tls (mtls, plaintext, unknown) or min_rps.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn get_mesh_graph(
        &self,
        Parameters(a): Parameters<GraphArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, String> {
        let tls = match a.tls.as_deref() {
            None | Some("") => 0,
            Some(t) => match pb::TlsStatus::from_str_name(&t.to_ascii_uppercase()) {
                Some(v) => v as i32,
                None => {
                    return Err(format!("tls: {t:?} is not mtls, plaintext or unknown"));
                }
            },
        };
        let now = std::time::SystemTime::now();
        let at =
            a.at.as_deref()
                .map(|t| crate::past::moment("at", t, now))
                .transpose()?;
        let v = self
            .backend
            .view(
                &self.who(&ctx),
                pb::GetMeshGraphRequest {
                    namespaces: a.namespaces,
                    workload: a.workload.unwrap_or_default(),
                    tls,
                    min_rps: a.min_rps.unwrap_or(0.0),
                    include_policies: false,
                    at,
                },
            )
            .await
            .map_err(|s| status_text(&s))?;
        let g = &v.graph;
        // Read from the model, not the wire form: only the edges listed are converted.
        let mut edges: Vec<&mesh_model::Edge> = g.edges.values().collect();
        edges.sort_by(|a, b| b.metrics.rps.total_cmp(&a.metrics.rps));
        let count = |f: &dyn Fn(&mesh_model::Edge) -> bool| edges.iter().filter(|e| f(e)).count();
        let plaintext = count(&|e| e.tls == mesh_model::TlsStatus::Plaintext);
        let failing = count(&|e| e.metrics.success_rate.is_some_and(|s| s < 0.95));
        let denied = count(&|e| e.policy.decision == mesh_model::Decision::Denied);
        let stale: Vec<Value> = v
            .sources
            .iter()
            .filter(|s| !s.ok)
            .map(|s| json!({"source": s.source, "error": s.error}))
            .collect();
        let summary = format!(
            "{} workloads, {} edges ({} plaintext, {} failing below 95%, {} denied by policy){}",
            g.workloads.len(),
            edges.len(),
            plaintext,
            failing,
            denied,
            if stale.is_empty() {
                String::new()
            } else {
                format!("; {} source(s) stale", stale.len())
            }
        );
        let mut out = json!({
            "version": g.version,
            "workloads": g.workloads.len(),
            "edges": edges.len(),
            "plaintext_edges": plaintext,
            "failing_edges": failing,
            "denied_edges": denied,
            "stale_sources": stale,
        });
        if let Some(p) = &v.point {
            out["point_in_time"] = serde_json::to_value(p).unwrap_or_default();
        }
        if a.full {
            let max = a.max_edges.unwrap_or(DEFAULT_MAX_EDGES).max(1);
            out["edge_list"] = edges
                .iter()
                .take(max)
                .map(|e| edge_row(&pb::Edge::from(*e)))
                .collect();
            if edges.len() > max {
                out["note"] = json!(format!(
                    "truncated to the {max} busiest of {} edges; filter or raise max_edges",
                    edges.len()
                ));
            }
        } else {
            out["busiest"] = edges
                .iter()
                .take(10)
                .map(|e| edge_row(&pb::Edge::from(*e)))
                .collect();
        }
        Ok(answer(summary, out))
    }

    #[tool(
        description = "What changed in the mesh between two moments: edges that appeared or \
            vanished, edges that lost or gained mTLS, policy verdicts that turned, success \
            rate, p99 or traffic that regressed, and the Kubernetes objects (policy, \
            workloads, namespaces) created, changed or deleted in between with who requested \
            and approved each change, earliest first. Give since (e.g. 1h) or from and to \
            (RFC 3339 in UTC, or a duration ago like -2h). Optionally namespaces. The first \
            question of an incident: what changed?",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn what_changed(
        &self,
        Parameters(a): Parameters<ChangedArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, String> {
        let now = std::time::SystemTime::now();
        let (from, to) =
            crate::past::span(a.since.as_deref(), a.from.as_deref(), a.to.as_deref(), now)?;
        let d = self
            .backend
            .diff(
                &self.who(&ctx),
                pb::DiffMeshGraphRequest {
                    from: Some(from),
                    to,
                    namespaces: a.namespaces,
                    ..Default::default()
                },
            )
            .await
            .map_err(|s| status_text(&s))?;
        let notes = d.notes.clone();
        let changes =
            mesh_proto::diff_changes(&d).map_err(|e| format!("the diff could not be read: {e}"))?;
        let max = a.max_changes.unwrap_or(100).max(1);
        let count = |label: &str| changes.iter().filter(|c| c.what.label() == label).count();
        let summary = format!(
            "{} changes: {} object changes, {} edges added, {} removed, {} TLS changes, {} \
             verdict changes, {} regressions",
            changes.len(),
            count("object"),
            count("edge-added"),
            count("edge-removed"),
            count("tls"),
            count("verdict"),
            count("regression")
        );
        let mut out = json!({
            "from": d.from.map(|t| crate::past::rfc3339(mesh_proto::timestamp_from_pb(&t).unwrap_or(now))),
            "to": d.to.map(|t| crate::past::rfc3339(mesh_proto::timestamp_from_pb(&t).unwrap_or(now))),
            "changes": changes.iter().take(max).map(change_row).collect::<Vec<_>>(),
            "from_point": serde_json::to_value(&d.from_point).unwrap_or_default(),
            "to_point": serde_json::to_value(&d.to_point).unwrap_or_default(),
            "notes": notes,
        });
        if changes.len() > max {
            out["note"] = json!(format!(
                "showing the earliest {max} of {} changes; narrow the span or namespaces, or \
                 raise max_changes",
                changes.len()
            ));
        }
        Ok(answer(summary, out))
    }

    #[tool(
        description = "One workload (namespace/name): whether it is meshed, its service account \
            and mTLS identity, and every inbound and outbound edge with its traffic, TLS and \
            policy verdict, and (Linkerd 2.14+ proxies) each edge's routes: HTTPRoute, GRPCRoute \
            or Linkerd's default route, with requests per second, success rate, p99 and 429s.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn get_workload(
        &self,
        Parameters(a): Parameters<WorkloadArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, String> {
        let g = self
            .graph(
                &ctx,
                pb::GetMeshGraphRequest {
                    workload: a.workload.clone(),
                    ..Default::default()
                },
            )
            .await?;
        let Some(w) = g
            .workloads
            .iter()
            .find(|w| id(w.r#ref.as_ref()) == a.workload)
        else {
            return Err(format!(
                "no workload {} in the mesh graph (namespace/name, e.g. emojivoto/web)",
                a.workload
            ));
        };
        let is = |r: Option<&pb::WorkloadRef>| id(r) == a.workload;
        let inbound: Vec<Value> = g
            .edges
            .iter()
            .filter(|e| is(e.dst.as_ref()))
            .map(edge_row_with_routes)
            .collect();
        let outbound: Vec<Value> = g
            .edges
            .iter()
            .filter(|e| is(e.src.as_ref()))
            .map(edge_row_with_routes)
            .collect();
        let summary = format!(
            "{} ({}, {}): {} inbound and {} outbound edges",
            a.workload,
            w.r#ref.as_ref().map_or("", |r| r.kind.as_str()),
            if w.meshed { "meshed" } else { "not meshed" },
            inbound.len(),
            outbound.len()
        );
        Ok(answer(
            summary,
            json!({
                "workload": a.workload,
                "kind": w.r#ref.as_ref().map(|r| r.kind.clone()),
                "meshed": w.meshed,
                "service_account": w.service_account,
                "identity": w.identity,
                "inbound": inbound,
                "outbound": outbound,
            }),
        ))
    }

    #[tool(
        description = "Who calls a workload (namespace/name): each caller with its requests per \
            second, success rate, TLS status and whether Linkerd policy admits it.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn who_calls(
        &self,
        Parameters(a): Parameters<WorkloadArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, String> {
        let g = self
            .graph(
                &ctx,
                pb::GetMeshGraphRequest {
                    workload: a.workload.clone(),
                    ..Default::default()
                },
            )
            .await?;
        let callers: Vec<Value> = g
            .edges
            .iter()
            .filter(|e| id(e.dst.as_ref()) == a.workload)
            .map(edge_row)
            .collect();
        let names: Vec<&str> = callers.iter().filter_map(|c| c["from"].as_str()).collect();
        let summary = if names.is_empty() {
            format!("nothing calls {} in the window", a.workload)
        } else {
            format!("{} is called by {}", a.workload, names.join(", "))
        };
        Ok(answer(
            summary,
            json!({ "workload": a.workload, "callers": callers }),
        ))
    }

    #[tool(
        description = "Edges whose traffic is not mTLS (plaintext or unmeshed), with the reason \
            the proxy gave. Optionally one namespace.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn find_plaintext_edges(
        &self,
        Parameters(a): Parameters<NamespaceArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, String> {
        let g = self
            .graph(
                &ctx,
                pb::GetMeshGraphRequest {
                    tls: pb::TlsStatus::Plaintext as i32,
                    ..Default::default()
                },
            )
            .await?;
        let rows: Vec<Value> = g
            .edges
            .iter()
            .filter(|e| in_namespace(e, a.namespace.as_deref()))
            .map(edge_row)
            .collect();
        let summary = format!("{} plaintext edge(s)", rows.len());
        Ok(answer(summary, json!({ "edges": rows })))
    }

    #[tool(
        description = "Edges whose success rate is below a threshold (default 0.95), worst \
            first. Optionally one namespace.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn find_failing_edges(
        &self,
        Parameters(a): Parameters<FailingArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, String> {
        let threshold = a.threshold.unwrap_or(0.95);
        let g = self.graph(&ctx, pb::GetMeshGraphRequest::default()).await?;
        let sr = |e: &pb::Edge| e.metrics.and_then(|m| m.success_rate);
        let mut failing: Vec<&pb::Edge> = g
            .edges
            .iter()
            .filter(|e| {
                in_namespace(e, a.namespace.as_deref()) && sr(e).is_some_and(|s| s < threshold)
            })
            .collect();
        failing.sort_by(|a, b| sr(a).unwrap_or(1.0).total_cmp(&sr(b).unwrap_or(1.0)));
        let rows: Vec<Value> = failing.iter().map(|e| edge_row(e)).collect();
        let summary = format!(
            "{} edge(s) below {:.1}% success",
            rows.len(),
            threshold * 100.0
        );
        Ok(answer(
            summary,
            json!({ "threshold": threshold, "edges": rows }),
        ))
    }

    #[tool(
        description = "Routes whose success rate is below a threshold (default 0.95), worst \
            first: the HTTPRoute, GRPCRoute or Linkerd default route, its parent Service or \
            EgressNetwork, the calling and called workloads, requests and failures per second. \
            Needs Linkerd 2.14+ proxies (route metrics). Optionally one namespace.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn find_failing_routes(
        &self,
        Parameters(a): Parameters<FailingArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, String> {
        let threshold = a.threshold.unwrap_or(0.95);
        let g = self.graph(&ctx, pb::GetMeshGraphRequest::default()).await?;
        let mut failing: Vec<(&pb::Edge, &pb::RouteStats)> = g
            .edges
            .iter()
            .filter(|e| in_namespace(e, a.namespace.as_deref()))
            .flat_map(|e| e.routes.iter().map(move |r| (e, r)))
            .filter(|(_, r)| r.success_rate.is_some_and(|s| s < threshold))
            .collect();
        let sr = |r: &pb::RouteStats| r.success_rate.unwrap_or(1.0);
        failing.sort_by(|(_, x), (_, y)| sr(x).total_cmp(&sr(y)));
        let with_routes = g.edges.iter().filter(|e| !e.routes.is_empty()).count();
        let rows: Vec<Value> = failing
            .iter()
            .map(|(e, r)| {
                let mut row = route_row(r);
                let edge = edge_row(e);
                row["from"] = edge["from"].clone();
                row["to"] = edge["to"].clone();
                row
            })
            .collect();
        let summary = if with_routes == 0 {
            "no edge reports route metrics (Linkerd 2.14+ proxies report them as \
             outbound_http_route_* and outbound_grpc_route_*)"
                .to_owned()
        } else {
            format!(
                "{} route(s) below {:.1}% success, on {with_routes} edge(s) with route metrics",
                rows.len(),
                threshold * 100.0
            )
        };
        Ok(answer(
            summary,
            json!({ "threshold": threshold, "routes": rows }),
        ))
    }

    #[tool(
        description = "Least-privilege Linkerd policy for a namespace (or one workload) from the \
            traffic observed: a Server per called port unless one exists, a \
            MeshTLSAuthentication with the observed client identities and an \
            AuthorizationPolicy per Server, each saying which calls justify it; callers that \
            cannot be admitted by identity (plaintext, unmeshed) are listed with what to do. \
            Proved against the observed traffic (`newly_denied` is empty when sound). Returns \
            the objects as YAML for plan_authorization_policy or meshctl apply. Changes nothing.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn propose_policy(
        &self,
        Parameters(a): Parameters<ProposeArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, String> {
        let since = match a.since.as_deref() {
            None => None,
            Some(s) => Some(
                mesh_prometheus::parse_window(s)
                    .map_err(|e| format!("since: {e}"))
                    .map(|d| pbjson_types::Duration {
                        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                        nanos: 0,
                    })?,
            ),
        };
        let req = pb::ProposePolicyRequest {
            namespace: a.namespace.clone(),
            workload: a.workload.clone().unwrap_or_default(),
            since,
            audit: a.audit,
            per_route: a.per_route,
        };
        let p = self
            .backend
            .propose(&self.who(&ctx), req)
            .await
            .map_err(|s| status_text(&s))?;
        let target = match &a.workload {
            Some(w) => format!("{}/{w}", a.namespace),
            None => a.namespace.clone(),
        };
        let mut summary = format!(
            "{} object(s) proposed for {target}, {} caller(s) need action",
            p.objects.len(),
            p.needs_action.len()
        );
        if !p.newly_denied.is_empty() {
            summary = format!(
                "WARNING: would deny {} observed edge(s); {summary}",
                p.newly_denied.len()
            );
        }
        Ok(answer(
            summary,
            json!({
                "objects": p.objects.iter().map(|o| json!({
                    "kind": o.kind, "namespace": o.namespace, "name": o.name,
                    "justification": o.justification,
                })).collect::<Vec<_>>(),
                "needs_action": p.needs_action.iter().map(|n| json!({
                    "caller": n.caller,
                    "callee": id(n.callee.as_ref()),
                    "rps": (n.rps * 100.0).round() / 100.0,
                    "advice": n.advice,
                })).collect::<Vec<_>>(),
                "newly_denied": p.newly_denied,
                "notes": p.notes,
                "yaml": p.yaml,
            }),
        ))
    }

    #[tool(
        description = "Start a staged, audit-first rollout of least-privilege policy for a \
            namespace (or one workload): the proposal of propose_policy, stored as a rollout in \
            phase `proposed`. Nothing is applied: advance_rollout applies it in audit mode \
            (nothing denied, would-be denials reported), then enforces it once the gate has \
            seen no would-be-denied traffic for `observe_for`.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn start_rollout(
        &self,
        Parameters(a): Parameters<StartRolloutArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, String> {
        let window = |what: &str, v: &Option<String>| -> Result<_, String> {
            v.as_deref()
                .map(|s| {
                    mesh_prometheus::parse_window(s)
                        .map_err(|e| format!("{what}: {e}"))
                        .map(|d| pbjson_types::Duration {
                            seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                            nanos: 0,
                        })
                })
                .transpose()
        };
        let req = pb::StartRolloutRequest {
            namespace: a.namespace.clone(),
            workload: a.workload.clone().unwrap_or_default(),
            since: window("since", &a.since)?,
            observe_for: window("observe_for", &a.observe_for)?,
            on_behalf_of: None,
            per_route: a.per_route,
        };
        let r = self
            .backend
            .start_rollout(&self.who(&ctx), req)
            .await
            .map_err(|s| status_text(&s))?;
        let summary = format!(
            "rollout {} started for {}: {} object(s) proposed, phase proposed; advance_rollout \
             with action audit applies them in audit mode",
            r.id,
            a.workload
                .as_ref()
                .map_or_else(|| a.namespace.clone(), |w| format!("{}/{w}", a.namespace)),
            r.objects.len()
        );
        Ok(answer(summary, rollout_json(&r)))
    }

    #[tool(
        description = "A staged rollout: its phase (proposed, audit, enforced, withdrawn), the \
            gate (would-be-denied callers seen in audit, and how long until enforcing is \
            allowed), the actions allowed next, the plan with each object's justification, \
            and the history of who moved it and who approved.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn get_rollout(
        &self,
        Parameters(a): Parameters<RolloutArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, String> {
        let r = self
            .backend
            .get_rollout(&self.who(&ctx), pb::GetRolloutRequest { id: a.id })
            .await
            .map_err(|s| status_text(&s))?;
        let gate = r
            .gate
            .as_ref()
            .map(|g| g.summary.clone())
            .unwrap_or_default();
        let summary = format!(
            "rollout {} is {}; {gate}; next: {}",
            r.id,
            r.phase,
            if r.next.is_empty() {
                "nothing".into()
            } else {
                r.next.join(", ")
            }
        );
        Ok(answer(summary, rollout_json(&r)))
    }

    #[tool(
        description = "Move a rollout one step, as you, through the policy-change pipeline \
            (RBAC, dry-run, what-if, audit): `audit` applies the plan with the Servers in audit \
            mode, `enforce` switches them to deny (refused unless the gate is open), \
            `rollback` goes back one phase (enforced -> audit; audit -> withdrawn, deleting \
            what the rollout created), `repropose` proposes again from the traffic now (adding \
            callers the gate named; applies nothing). Use dry_run first and show the diff. \
            Changes the cluster unless dry_run.",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn advance_rollout(
        &self,
        Parameters(a): Parameters<AdvanceRolloutArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, String> {
        use pb::advance_rollout_request::Action;
        let action = match a.action.as_str() {
            "audit" => Action::Audit,
            "enforce" => Action::Enforce,
            "rollback" => Action::Rollback,
            "repropose" => Action::Repropose,
            other => {
                return Err(format!(
                    "action: {other:?} is not one of audit, enforce, rollback, repropose"
                ));
            }
        };
        let req = pb::AdvanceRolloutRequest {
            id: a.id,
            action: action.into(),
            expected_revision: a.expected_revision.unwrap_or(0),
            change: Some(pb::ApplyRequest {
                dry_run: a.dry_run,
                ..Default::default()
            }),
            since: None,
        };
        let r = self
            .backend
            .advance_rollout(&self.who(&ctx), req)
            .await
            .map_err(|s| status_text(&s))?;
        let mut v = rollout_json(&r.rollout.clone().unwrap_or_default());
        if let Some(c) = &r.change {
            v["change"] = json!({
                "dry_run": c.dry_run,
                "audit_id": c.audit_id,
                "objects": c.objects.iter().map(|o| json!({
                    "kind": o.kind, "namespace": o.namespace, "name": o.name, "action": o.action,
                })).collect::<Vec<_>>(),
                "diff": c.diff,
                "warnings": c.warnings,
                "affected_edges": c.affected_edges.len(),
            });
        }
        Ok(answer(r.summary, v))
    }

    #[tool(
        description = "Can workload `from` reach workload `to` (namespace/name each) on a port, \
            under Linkerd's policy as it stands now, traffic or not? The verdict (allowed, \
            denied, audit, unknown) and the chain that decides it: the Server that selects the \
            port or the default policy, the HTTPRoute, the AuthorizationPolicy or \
            ServerAuthorization and the authentication that admits the client. Give method and \
            path for per-route policy.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn explain_access(
        &self,
        Parameters(a): Parameters<ExplainArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, String> {
        let req = pb::ExplainAccessRequest {
            from: a.from.clone(),
            to: a.to.clone(),
            port: u32::from(a.port.unwrap_or(0)),
            method: a.method.unwrap_or_default(),
            path: a.path.unwrap_or_default(),
        };
        match self.backend.explain(&self.who(&ctx), req).await {
            Ok(v) => {
                let decision = decision_name(Some(&v));
                let summary = format!(
                    "{} -> {}: {}{}",
                    a.from,
                    a.to,
                    decision.to_uppercase(),
                    v.chain.last().map_or(String::new(), |c| format!(" ({c})"))
                );
                Ok(answer(
                    summary,
                    json!({
                        "from": a.from,
                        "to": a.to,
                        "decision": decision,
                        "server": v.server,
                        "default_policy": v.default_policy,
                        "authorizations": v.authorization_policies,
                        "http_route": v.http_route,
                        "chain": v.chain,
                    }),
                ))
            }
            Err(s) => Err(status_text(&s)),
        }
    }

    #[tool(
        description = "The Linkerd policy objects in the cluster (Server, AuthorizationPolicy, \
            MeshTLSAuthentication, NetworkAuthentication, ServerAuthorization, HTTPRoute, \
            GRPCRoute) with their specs. Optionally one namespace.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn list_policies(
        &self,
        Parameters(a): Parameters<NamespaceArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, String> {
        let req = pb::GetMeshGraphRequest {
            namespaces: a.namespace.clone().into_iter().collect(),
            include_policies: true,
            ..Default::default()
        };
        let g = self.graph(&ctx, req).await?;
        let rows: Vec<Value> = g
            .policies
            .iter()
            .filter(|p| a.namespace.as_deref().is_none_or(|ns| p.namespace == ns))
            .map(|p| {
                json!({
                    "kind": p.kind,
                    "namespace": p.namespace,
                    "name": p.name,
                    "spec": serde_json::from_str::<Value>(&p.spec_json).unwrap_or(Value::Null),
                })
            })
            .collect();
        let summary = format!("{} policy object(s)", rows.len());
        Ok(answer(summary, json!({ "policies": rows })))
    }

    async fn plan(
        &self,
        rpc: Rpc,
        a: PlanArgs,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<CallToolResult, String> {
        let source = match (a.manifest, a.spec) {
            (Some(m), None) => pb::apply_request::Source::Manifest(m),
            (None, Some(s)) => pb::apply_request::Source::Spec(spec_of(rpc, s)?),
            _ => return Err("give exactly one of manifest or spec".into()),
        };
        let who = self.who(ctx);
        let req = pb::ApplyRequest {
            source: Some(source.clone()),
            dry_run: true,
            ..Default::default()
        };
        let r = self
            .backend
            .apply(&who, rpc, req)
            .await
            .map_err(|s| status_text(&s))?;
        let reviewed_version = r
            .objects
            .last()
            .map(|o| o.resource_version_before.clone())
            .unwrap_or_default();
        let plan_id = format!("plan-{}", r.audit_id);
        let plan = Plan {
            http_route: rpc == Rpc::HttpRoute,
            request: pb::ApplyRequest {
                source: Some(source),
                // A new object must still be new when the plan is applied.
                expect_absent: reviewed_version.is_empty(),
                expected_resource_version: reviewed_version,
                // And every supporting object as the plan found it (the main one is last).
                preconditions: r
                    .objects
                    .iter()
                    .take(r.objects.len().saturating_sub(1))
                    .map(pb::ObjectPrecondition::from)
                    .collect(),
                ..Default::default()
            },
        };
        let bytes = serde_json::to_vec(&plan).map_err(|e| e.to_string())?;
        mesh_store::PlanStore::put_plan(&self.plans, &plan_id, &who.key, bytes, PLAN_TTL)
            .await
            .map_err(|e| format!("the plan could not be kept for apply_plan: {e}"))?;
        let affected: Vec<Value> = r
            .affected_edges
            .iter()
            .map(|a| {
                let e = a.edge.clone().unwrap_or_default();
                json!({
                    "from": id(e.src.as_ref()),
                    "to": id(e.dst.as_ref()),
                    "rps": (a.rps * 100.0).round() / 100.0,
                    "before": decision_name(Some(&pb::PolicyVerdict { decision: a.before, ..Default::default() })),
                    "after": decision_name(Some(&pb::PolicyVerdict { decision: a.after, ..Default::default() })),
                })
            })
            .collect();
        let objects: Vec<Value> = r
            .objects
            .iter()
            .map(|o| json!({"kind": o.kind, "namespace": o.namespace, "name": o.name, "action": o.action}))
            .collect();
        let summary = format!(
            "plan {plan_id}: {} object(s), {} edge(s) would change verdict{}; apply it with apply_plan within {} minutes",
            objects.len(),
            affected.len(),
            if r.warnings.is_empty() {
                String::new()
            } else {
                format!("; warnings: {}", r.warnings.join("; "))
            },
            PLAN_TTL.as_secs() / 60
        );
        Ok(answer(
            summary,
            json!({
                "plan_id": plan_id,
                "expires_in_seconds": PLAN_TTL.as_secs(),
                "objects": objects,
                "diff": r.diff,
                "affected_edges": affected,
                "warnings": r.warnings,
            }),
        ))
    }

    #[tool(
        description = "Plan a Linkerd AuthorizationPolicy change without making it: validation, \
            an RBAC check as you, a server-side dry-run, the diff, and which observed edges \
            would become allowed or denied and how much traffic that is. Give a manifest (one \
            AuthorizationPolicy plus the MeshTLSAuthentication, NetworkAuthentication and \
            Server it needs) or a spec: {namespace, name, target_kind (Server, HTTPRoute, \
            GRPCRoute, Namespace), target_name, service_accounts, identities, networks, server: \
            {pod_selector, port, proxy_protocol}}. Returns a plan id for apply_plan.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn plan_authorization_policy(
        &self,
        Parameters(a): Parameters<PlanArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, String> {
        self.plan(Rpc::AuthorizationPolicy, a, &ctx).await
    }

    #[tool(
        description = "Plan a Linkerd HTTPRoute change without making it (as \
            plan_authorization_policy). Give a manifest or a spec: {namespace, name, \
            parent_kind (Server or Service), parent_name, port (Service only), matches: \
            [{path_prefix or path_exact, method}], timeout}. Returns a plan id for apply_plan.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn plan_http_route(
        &self,
        Parameters(a): Parameters<PlanArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, String> {
        self.plan(Rpc::HttpRoute, a, &ctx).await
    }

    #[tool(
        description = "An approval request apply_plan made: its state (pending, applying, \
            applied, stale, failed, unknown, rejected, expired), who approved so far of how \
            many needed, and once applied the audit id.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn get_approval(
        &self,
        Parameters(a): Parameters<ApprovalArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, String> {
        self.approval(&self.who(&ctx), a.id).await
    }

    #[tool(
        description = "Approval requests, newest first: optionally only one state (pending, \
            applied, rejected, ...) or one namespace.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn list_approvals(
        &self,
        Parameters(a): Parameters<ListApprovalsArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, String> {
        let states = match a.state.as_deref() {
            None | Some("") => Vec::new(),
            Some(w) => vec![
                mesh_proto::approval_state_of(w)
                    .ok_or_else(|| format!("state: {w:?} is not an approval state"))?
                    .into(),
            ],
        };
        let l = self
            .backend
            .list_approvals(
                &self.who(&ctx),
                pb::ListApprovalsRequest {
                    states,
                    namespace: a.namespace.unwrap_or_default(),
                    limit: 50,
                },
            )
            .await
            .map_err(|s| status_text(&s))?;
        let rows: Vec<Value> = l.approvals.iter().map(approval_json).collect();
        Ok(answer(
            format!("{} approval request(s)", rows.len()),
            json!({ "approvals": rows }),
        ))
    }

    #[tool(
        description = "Apply a plan made by plan_authorization_policy or plan_http_route, as you, \
            exactly as reviewed: refused when the plan expired, was already applied, was made \
            by someone else, or when its object changed since it was planned. Changes the \
            cluster: show the plan's diff and affected edges to the user first. Where the \
            approval policy wants people to approve (always, for agents, where it says agents \
            only propose), nothing is applied yet: it returns an approval request (state \
            pending) that people approve in chat or with meshctl; follow it with get_approval. \
            Give a one-line reason: the approvers see it.",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn apply_plan(
        &self,
        Parameters(a): Parameters<ApplyPlanArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, String> {
        let who = self.who(&ctx);
        let refuse = |m: String| Err(m);
        // Single use: taken out of the store before it is applied.
        let bytes = match mesh_store::PlanStore::take_plan(&self.plans, &a.plan_id, &who.key).await
        {
            Ok(mesh_store::Taken::Plan(b)) => b,
            Ok(mesh_store::Taken::NotYours) => {
                return refuse(format!(
                    "{} was planned by another identity; plan it yourself",
                    a.plan_id
                ));
            }
            Ok(mesh_store::Taken::Missing) => {
                return refuse(format!(
                    "no plan {}: it expired, was applied already, or never existed",
                    a.plan_id
                ));
            }
            Err(e) => return refuse(format!("the plan store cannot be read: {e}")),
        };
        let plan: Plan = match serde_json::from_slice(&bytes) {
            Ok(p) => p,
            Err(e) => return refuse(format!("plan {} is unreadable: {e}", a.plan_id)),
        };
        let rpc = if plan.http_route {
            Rpc::HttpRoute
        } else {
            Rpc::AuthorizationPolicy
        };
        match self.backend.apply(&who, rpc, plan.request.clone()).await {
            Err(s) if mesh_proto::needs_approval(&s) => {
                // The approval policy wants people first: the plan becomes a request they see
                // (in chat, meshctl approvals), applied as this caller once they approve.
                let mut change = plan.request;
                change.reason = a
                    .reason
                    .unwrap_or_default()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                let ap = self
                    .backend
                    .request_approval(
                        &who,
                        pb::RequestApprovalRequest {
                            kind: if rpc == Rpc::HttpRoute {
                                pb::ChangeKind::HttpRoute
                            } else {
                                pb::ChangeKind::AuthorizationPolicy
                            }
                            .into(),
                            change: Some(change),
                            agent: who.agent.clone(),
                            front_end: "mcp".into(),
                        },
                    )
                    .await
                    .map_err(|s| status_text(&s))?;
                let summary = format!(
                    "not applied yet: {} needs {} approval(s) under {} ({}); approval {} is \
                     waiting for people. Tell the user, and check it with get_approval; do \
                     not plan it again.",
                    a.plan_id,
                    ap.needed,
                    ap.rule,
                    s.message(),
                    ap.id
                );
                Ok(answer(summary, json!({ "approval": approval_json(&ap) })))
            }
            Ok(r) => {
                let objects: Vec<Value> = r
                    .objects
                    .iter()
                    .map(|o| json!({"kind": o.kind, "namespace": o.namespace, "name": o.name, "action": o.action}))
                    .collect();
                let summary = format!("applied {}; audit id {}", a.plan_id, r.audit_id);
                Ok(answer(
                    summary,
                    json!({"audit_id": r.audit_id, "objects": objects, "warnings": r.warnings}),
                ))
            }
            Err(s) => Err(status_text(&s)),
        }
    }
}

impl MeshAgent {
    /// The approval tools' shared body: one request, as the service holds it now.
    async fn approval(&self, who: &Who, id: String) -> Result<CallToolResult, String> {
        let ap = self
            .backend
            .get_approval(who, id)
            .await
            .map_err(|s| status_text(&s))?;
        let summary = format!(
            "approval {}: {}, {} of {} approval(s){}{}",
            ap.id,
            mesh_proto::approval_state_word(ap.state),
            ap.approvals.len(),
            ap.needed,
            if ap.audit_id.is_empty() {
                String::new()
            } else {
                format!("; applied, audit id {}", ap.audit_id)
            },
            if ap.outcome.is_empty() {
                String::new()
            } else {
                format!("; {}", ap.outcome)
            }
        );
        Ok(answer(summary, json!({ "approval": approval_json(&ap) })))
    }
}

/// An approval request as agents read it.
fn approval_json(a: &pb::Approval) -> Value {
    let time = |t: &Option<pbjson_types::Timestamp>| {
        t.as_ref()
            .and_then(|t| mesh_proto::timestamp_from_pb(t).ok())
            .map(|t| humantime::format_rfc3339_seconds(t).to_string())
    };
    json!({
        "id": a.id,
        "state": mesh_proto::approval_state_word(a.state),
        "needed": a.needed,
        "approved_by": a.approvals.iter().map(|v| v.user.as_str()).collect::<Vec<_>>(),
        "rule": a.rule,
        "requested_by": a.requested_by,
        "on_behalf_of": a.on_behalf_of.as_ref().map(|i| i.user.as_str()),
        "agent": a.agent,
        "reason": a.reason,
        "namespaces": a.namespaces,
        "objects": a
            .objects
            .iter()
            .map(|o| {
                let action = mesh_proto::approval_action(a.state, &o.action);
                format!("{action} {} {}/{}", o.kind, o.namespace, o.name)
            })
            .collect::<Vec<_>>(),
        "created_at": time(&a.created_at),
        "expires_at": time(&a.expires_at),
        "rejected_by": a.rejected_by,
        "audit_id": a.audit_id,
        "outcome": a.outcome,
    })
}

#[prompt_router]
#[allow(
    missing_docs,
    reason = "rmcp's prompt macro adds an undocumented public accessor"
)]
impl MeshAgent {
    /// Walks an agent through a security and reliability review of the mesh.
    #[prompt(
        name = "audit-mesh",
        description = "Find unencrypted, failing or policy-contradicting traffic and propose \
            Linkerd policies to fix it (planned, never applied without review)."
    )]
    async fn audit_mesh(&self, Parameters(a): Parameters<AuditArgs>) -> Vec<PromptMessage> {
        let scope = a.namespace.map_or_else(
            || "the whole mesh".to_owned(),
            |ns| format!("namespace {ns}"),
        );
        vec![PromptMessage::new_text(
            Role::User,
            format!(
                "Audit {scope} of this Linkerd service mesh. 1. Call get_mesh_graph for a summary. \
                 2. Call find_plaintext_edges and find_failing_edges and report each finding with \
                 its traffic. 3. For edges whose policy verdict is unknown or that disagree with what \
                 the proxies report, call explain_access. 4. Where a workload accepts callers it \
                 should not, propose an AuthorizationPolicy with plan_authorization_policy (a spec \
                 naming the allowed service accounts) and show its diff and affected edges. Never \
                 call apply_plan without the user's explicit approval."
            ),
        )]
    }
}

/// The browser origins `/mcp` accepts when none are configured.
const LOOPBACK_ORIGINS: [&str; 6] = [
    "http://localhost:*",
    "http://127.0.0.1:*",
    "http://[::1]:*",
    "https://localhost:*",
    "https://127.0.0.1:*",
    "https://[::1]:*",
];

/// `/mcp` (streamable HTTP) serving `agent`, answering only `Host` names in `allowed_hosts`
/// (empty: loopback names) and browser `Origin`s in `allowed_origins` (empty: loopback pages).
/// Requests without an `Origin` (every non-browser client) pass. No authentication: the caller
/// layers it.
pub fn router(
    agent: MeshAgent,
    allowed_hosts: &[String],
    allowed_origins: &[String],
) -> axum::Router {
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
    };
    let mut config = StreamableHttpServerConfig::default();
    if !allowed_hosts.is_empty() {
        config = config.with_allowed_hosts(allowed_hosts.to_vec());
    }
    // The SDK lets every origin through unless some are listed; a page on another site must
    // not drive a local MCP server (the specification asks servers to check Origin), so the
    // default mirrors the Host default: loopback pages only.
    config = if allowed_origins.is_empty() {
        config.with_allowed_origins(LOOPBACK_ORIGINS)
    } else {
        config.with_allowed_origins(allowed_origins.to_vec())
    }
    .enforce_origin_validation();
    let mcp = StreamableHttpService::new(
        move || Ok(agent.clone()),
        LocalSessionManager::default().into(),
        config,
    );
    axum::Router::new().nest_service("/mcp", mcp)
}

/// The MCP session a request belongs to (stdio has one).
fn session_of(ctx: &RequestContext<RoleServer>) -> String {
    ctx.extensions
        .get::<axum::http::request::Parts>()
        .and_then(|p| p.headers.get("mcp-session-id"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("stdio")
        .to_owned()
}

fn resource_json(uri: &str, v: &Value) -> ReadResourceResponse {
    ReadResourceResult::new(vec![
        ResourceContents::text(v.to_string(), uri.to_owned()).with_mime_type("application/json"),
    ])
    .into()
}

#[tool_handler(router = self.tool_router)]
#[prompt_handler(router = self.prompt_router)]
impl ServerHandler for MeshAgent {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_prompts()
                .enable_resources()
                .enable_resources_subscribe()
                .build(),
        )
        .with_server_info(Implementation::new(
            "linkerd-mcp",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions(
            "Answers questions about a Linkerd service mesh (who calls whom, how fast, over mTLS \
             or not, and which policy admits it) and plans policy changes. Start with \
             get_mesh_graph; workloads are namespace/name. Changes are planned first and applied \
             only with apply_plan after the user reviewed the plan.",
        )
    }

    #[allow(deprecated, reason = "clients before 2026-07-28 subscribe this way")]
    async fn subscribe(
        &self,
        req: SubscribeRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        if !known_resource(&req.uri) {
            return Err(McpError::resource_not_found(
                format!("no resource at {}", req.uri),
                None,
            ));
        }
        let session = session_of(&ctx);
        let mut subs = self.subscriptions.lock().await;
        if !subs.iter().any(|(s, u, _)| *s == session && *u == req.uri) {
            subs.push((session, req.uri, ctx.peer));
        }
        Ok(())
    }

    #[allow(deprecated, reason = "clients before 2026-07-28 unsubscribe this way")]
    async fn unsubscribe(
        &self,
        req: UnsubscribeRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let session = session_of(&ctx);
        self.subscriptions
            .lock()
            .await
            .retain(|(s, u, _)| !(*s == session && *u == req.uri));
        Ok(())
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        let mut accepted = requested.supported_by(&self.get_info().capabilities);
        if let Some(uris) = &mut accepted.resource_subscriptions {
            uris.retain(|u| known_resource(u));
        }
        Some(accepted)
    }

    async fn listen(&self, ctx: SubscriptionContext) -> Result<(), McpError> {
        let uris = ctx
            .accepted()
            .resource_subscriptions
            .clone()
            .unwrap_or_default();
        let mut changes = self.changes.clone();
        changes.borrow_and_update();
        loop {
            tokio::select! {
                r = changes.changed() => {
                    if r.is_err() {
                        return Ok(());
                    }
                    for u in &uris {
                        if ctx.sink().notify_resource_updated(u.clone()).await.is_err() {
                            return Ok(());
                        }
                    }
                }
                () = ctx.cancelled() => return Ok(()),
            }
        }
    }

    async fn list_resources(
        &self,
        _r: Option<PaginatedRequestParams>,
        _c: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        Ok(ListResourcesResult::with_all_items(vec![
            Resource::new("mesh://graph", "mesh-graph")
                .with_description("The whole mesh graph: workloads, edges, verdicts (JSON)")
                .with_mime_type("application/json"),
        ]))
    }

    async fn list_resource_templates(
        &self,
        _r: Option<PaginatedRequestParams>,
        _c: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new("mesh://workload/{namespace}/{name}", "workload")
                .with_description("One workload and its edges (JSON)")
                .with_mime_type("application/json"),
        ]))
    }

    async fn read_resource(
        &self,
        req: ReadResourceRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let who = self.who(&ctx);
        let (filter, workload) = if req.uri == "mesh://graph" {
            (pb::GetMeshGraphRequest::default(), None)
        } else if let Some(w) = req
            .uri
            .strip_prefix("mesh://workload/")
            .filter(|w| w.split('/').count() == 2)
        {
            (
                pb::GetMeshGraphRequest {
                    workload: w.to_owned(),
                    ..Default::default()
                },
                Some(w.to_owned()),
            )
        } else {
            return Err(McpError::resource_not_found(
                format!("no resource at {}", req.uri),
                None,
            ));
        };
        let g = self
            .backend
            .graph(&who, filter)
            .await
            .map_err(|s| McpError::internal_error(s.message().to_owned(), None))?;
        let edges: Vec<Value> = g.edges.iter().map(edge_row).collect();
        let v = json!({
            "version": g.version,
            "workload": workload,
            "workloads": g.workloads.iter().map(|w| json!({
                "workload": id(w.r#ref.as_ref()),
                "meshed": w.meshed,
                "identity": w.identity,
            })).collect::<Vec<_>>(),
            "edges": edges,
        });
        Ok(resource_json(&req.uri, &v))
    }
}
