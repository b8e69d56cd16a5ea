//! `meshctl rollout`: staged, audit-first rollouts of least-privilege policy through mesh-mcp
//! (`StartRollout`, `GetRollout`, `ListRollouts`, `AdvanceRollout`).

use std::{io::Write, time::Duration};

use clap::Subcommand;
use mesh_prometheus::parse_window;
use mesh_proto::pb::{self, advance_rollout_request::Action};

use crate::{Failure, connect, server_failure, with_token};

/// `meshctl rollout` subcommands.
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Propose least-privilege policy from observed traffic and store it as a rollout in phase
    /// `proposed`; nothing is applied.
    Start(StartArgs),
    /// A rollout: phase, gate (would-be denials while in audit), plan and history; without an
    /// id, every rollout.
    Status(StatusArgs),
    /// Move a rollout to its next phase: proposed -> audit, audit -> enforced (only when the
    /// gate is open), or apply a re-proposed plan. Every step runs through mesh-mcp's pipeline
    /// as you (RBAC, dry-run, what-if, audit).
    Advance(AdvanceArgs),
    /// Back one phase: enforced -> audit, audit -> withdrawn (deletes what the rollout created).
    Rollback(StepArgs),
    /// Propose again from the traffic now, adding callers that appeared (e.g. the ones the gate
    /// names); applies nothing: `advance` applies the new plan.
    Repropose(ReproposeArgs),
}

/// Where mesh-mcp is.
#[derive(Debug, clap::Args)]
pub struct Server {
    /// mesh-mcp gRPC address.
    #[arg(long, env = "MESH_SERVER")]
    pub server: String,
    /// Bearer token.
    #[arg(long, env = "MESH_TOKEN")]
    pub token: Option<String>,
    /// `table`, `yaml` (the plan, for `meshctl validate -f`) or `json` (the RPC's answer).
    #[arg(short = 'o', long, env = "MESH_OUTPUT", default_value = "table", value_parser = ["table", "yaml", "json"])]
    pub output: String,
}

/// `meshctl rollout start` flags.
#[derive(Debug, clap::Args)]
pub struct StartArgs {
    /// Where mesh-mcp is, and how to print.
    #[command(flatten)]
    pub server: Server,
    /// The namespace to lock down.
    #[arg(long, short = 'n', env = "MESH_NAMESPACE")]
    pub namespace: String,
    /// Only this workload of the namespace.
    #[arg(long, env = "MESH_WORKLOAD")]
    pub workload: Option<String>,
    /// How far back to look at traffic, e.g. 7d (mesh-mcp reads its Prometheus); default: the
    /// window of the graph mesh-mcp serves.
    #[arg(long, value_parser = parse_window)]
    pub since: Option<Duration>,
    /// How long audit must show no would-be-denied traffic before enforcing (default 30m).
    #[arg(long, value_parser = parse_window)]
    pub observe: Option<Duration>,
    /// Authorize each observed HTTPRoute on its own where every call went through one.
    #[arg(long)]
    pub per_route: bool,
}

/// `meshctl rollout status` flags.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Where mesh-mcp is, and how to print.
    #[command(flatten)]
    pub server: Server,
    /// The rollout; none: list every rollout.
    pub id: Option<String>,
}

/// Flags of a phase change.
#[derive(Debug, clap::Args)]
pub struct StepArgs {
    /// Where mesh-mcp is, and how to print.
    #[command(flatten)]
    pub server: Server,
    /// The rollout.
    pub id: String,
    /// Check RBAC, dry-run and show the what-if; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Refuse unless the rollout is still at this revision (the one you reviewed).
    #[arg(long)]
    pub revision: Option<u64>,
    /// Act as this user (only when your token's identity is a configured delegator).
    #[arg(long = "as")]
    pub as_user: Option<String>,
    /// Who approved it (recorded in the audit trail; only a delegator's token may set it).
    #[arg(long)]
    pub approved_by: Option<String>,
    /// Why (recorded in the audit trail; only a delegator's token may set it).
    #[arg(long)]
    pub reason: Option<String>,
}

/// `meshctl rollout advance` flags.
#[derive(Debug, clap::Args)]
pub struct AdvanceArgs {
    /// The rollout and how the step runs.
    #[command(flatten)]
    pub step: StepArgs,
    /// The phase to move to; default: the next one the rollout allows.
    #[arg(long, value_parser = ["audit", "enforce"])]
    pub to: Option<String>,
}

/// `meshctl rollout repropose` flags.
#[derive(Debug, clap::Args)]
pub struct ReproposeArgs {
    /// Where mesh-mcp is, and how to print.
    #[command(flatten)]
    pub server: Server,
    /// The rollout.
    pub id: String,
    /// How far back to look at traffic; default: the window of the graph mesh-mcp serves.
    #[arg(long, value_parser = parse_window)]
    pub since: Option<Duration>,
    /// Show the new plan; store nothing.
    #[arg(long)]
    pub dry_run: bool,
}

fn pb_duration(d: Duration) -> pbjson_types::Duration {
    pbjson_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: 0,
    }
}

type Client = pb::mesh_service_client::MeshServiceClient<tonic::transport::Channel>;

/// Runs a `meshctl rollout` subcommand.
pub async fn rollout(cmd: RolloutCommand) -> Result<(), Failure> {
    let text = match cmd {
        RolloutCommand::Start(a) => {
            let s = &a.server;
            let mut c = connect(&s.server, Duration::from_secs(10)).await?;
            let req = pb::StartRolloutRequest {
                namespace: a.namespace.clone(),
                workload: a.workload.clone().unwrap_or_default(),
                since: a.since.map(pb_duration),
                observe_for: a.observe.map(pb_duration),
                on_behalf_of: None,
                per_route: a.per_route,
            };
            let r = c
                .start_rollout(with_token(
                    req,
                    s.token.as_deref(),
                    Some(Duration::from_secs(90)),
                )?)
                .await
                .map_err(|e| server_failure(&s.server, &e))?
                .into_inner();
            render(&s.output, &r, &r)?
        }
        RolloutCommand::Status(a) => {
            let s = &a.server;
            let mut c = connect(&s.server, Duration::from_secs(10)).await?;
            match &a.id {
                Some(id) => {
                    let r = get(&mut c, s, id).await?;
                    render(&s.output, &r, &r)?
                }
                None => {
                    let r = c
                        .list_rollouts(with_token(
                            pb::ListRolloutsRequest {},
                            s.token.as_deref(),
                            Some(Duration::from_secs(30)),
                        )?)
                        .await
                        .map_err(|e| server_failure(&s.server, &e))?
                        .into_inner();
                    match s.output.as_str() {
                        "json" => json(&r)?,
                        _ => list_table(&r.rollouts),
                    }
                }
            }
        }
        RolloutCommand::Advance(a) => {
            let s = &a.step.server;
            let mut c = connect(&s.server, Duration::from_secs(10)).await?;
            let action = match a.to.as_deref() {
                Some("audit") => Action::Audit,
                Some("enforce") => Action::Enforce,
                _ => next_action(&get(&mut c, s, &a.step.id).await?)?,
            };
            step(&mut c, &a.step, action, None).await?
        }
        RolloutCommand::Rollback(a) => {
            let mut c = connect(&a.server.server, Duration::from_secs(10)).await?;
            step(&mut c, &a, Action::Rollback, None).await?
        }
        RolloutCommand::Repropose(a) => {
            let s = &a.server;
            let mut c = connect(&s.server, Duration::from_secs(10)).await?;
            let args = StepArgs {
                server: Server {
                    server: s.server.clone(),
                    token: s.token.clone(),
                    output: s.output.clone(),
                },
                id: a.id.clone(),
                dry_run: a.dry_run,
                revision: None,
                as_user: None,
                approved_by: None,
                reason: None,
            };
            step(&mut c, &args, Action::Repropose, a.since).await?
        }
    };
    std::io::stdout()
        .write_all(text.as_bytes())
        .map_err(|e| Failure::new(1, format!("cannot write output: {e}")))
}

async fn get(c: &mut Client, s: &Server, id: &str) -> Result<pb::Rollout, Failure> {
    c.get_rollout(with_token(
        pb::GetRolloutRequest { id: id.to_owned() },
        s.token.as_deref(),
        Some(Duration::from_secs(30)),
    )?)
    .await
    .map_err(|e| server_failure(&s.server, &e))
    .map(tonic::Response::into_inner)
}

/// The step `advance` takes when not told: the first applying step the rollout allows.
fn next_action(r: &pb::Rollout) -> Result<Action, Failure> {
    r.next
        .iter()
        .find_map(|n| match n.as_str() {
            "audit" => Some(Action::Audit),
            "enforce" => Some(Action::Enforce),
            _ => None,
        })
        .ok_or_else(|| {
            Failure::new(
                1,
                format!(
                    "rollout {} is {}: nothing to advance to (allowed now: {})",
                    r.id,
                    r.phase,
                    if r.next.is_empty() {
                        "nothing".to_owned()
                    } else {
                        r.next.join(", ")
                    }
                ),
            )
        })
}

async fn step(
    c: &mut Client,
    a: &StepArgs,
    action: Action,
    since: Option<Duration>,
) -> Result<String, Failure> {
    let s = &a.server;
    let req = pb::AdvanceRolloutRequest {
        id: a.id.clone(),
        action: action.into(),
        expected_revision: a.revision.unwrap_or(0),
        change: Some(pb::ApplyRequest {
            dry_run: a.dry_run,
            on_behalf_of: a.as_user.clone().map(|user| pb::Identity {
                user,
                groups: Vec::new(),
            }),
            approved_by: a.approved_by.clone().unwrap_or_default(),
            reason: a.reason.clone().unwrap_or_default(),
            ..Default::default()
        }),
        since: since.map(pb_duration),
    };
    let r = c
        .advance_rollout(with_token(
            req,
            s.token.as_deref(),
            Some(Duration::from_secs(120)),
        )?)
        .await
        .map_err(|e| server_failure(&s.server, &e))?
        .into_inner();
    let rollout = r.rollout.clone().unwrap_or_default();
    match s.output.as_str() {
        "json" => json(&r),
        "yaml" => Ok(rollout.yaml),
        _ => {
            let mut out = format!("{}\n", r.summary);
            if let Some(change) = &r.change {
                for o in &change.objects {
                    out.push_str(&format!(
                        "  {} {} {}/{}\n",
                        o.action, o.kind, o.namespace, o.name
                    ));
                }
                for w in &change.warnings {
                    out.push_str(&format!("warning: {w}\n"));
                }
                if !change.audit_id.is_empty() {
                    out.push_str(&format!("audit id {}\n", change.audit_id));
                }
            }
            out.push_str(&table(&rollout));
            Ok(out)
        }
    }
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, Failure> {
    let mut s = serde_json::to_string_pretty(v)
        .map_err(|e| Failure::new(1, format!("cannot encode the answer: {e}")))?;
    s.push('\n');
    Ok(s)
}

fn render(output: &str, r: &pb::Rollout, whole: &pb::Rollout) -> Result<String, Failure> {
    match output {
        "json" => json(whole),
        "yaml" => Ok(r.yaml.clone()),
        _ => Ok(table(r)),
    }
}

fn when(t: Option<&pbjson_types::Timestamp>) -> String {
    t.and_then(|t| u64::try_from(t.seconds).ok())
        .map(|s| {
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(s))
                .to_string()
        })
        .unwrap_or_default()
}

/// One rollout as an operator reads it: where it is, what the gate says, what it may do next,
/// the plan and the history.
pub fn table(r: &pb::Rollout) -> String {
    let target = if r.workload.is_empty() {
        format!("namespace {}", r.namespace)
    } else {
        format!("{}/{}", r.namespace, r.workload)
    };
    let mut out = format!(
        "rollout {}  {target}  phase {}  revision {}\n",
        r.id, r.phase, r.revision
    );
    if let Some(g) = &r.gate {
        out.push_str(&format!("gate: {}\n", g.summary));
        if !g.source.is_empty() {
            out.push_str(&format!("  evidence: {}\n", g.source));
        }
        for w in &g.would_be_denied {
            out.push_str(&format!(
                "  would be denied: {} -> {} ({:.0} in the observation)\n",
                w.caller, w.callee, w.count
            ));
        }
    }
    if r.plan_pending {
        out.push_str("the plan was re-proposed and is not applied yet\n");
    }
    if !r.last_error.is_empty() {
        out.push_str(&format!("last change refused: {}\n", r.last_error));
    }
    out.push_str(&format!(
        "next: {}\n",
        if r.next.is_empty() {
            "nothing (final)".to_owned()
        } else {
            r.next.join(", ")
        }
    ));
    out.push_str(&crate::objects_table(&r.objects));
    out.push_str(&crate::needs_action_lines(&r.needs_action));
    if !r.history.is_empty() {
        out.push_str("history:\n");
        for h in &r.history {
            let approved = if h.approved_by.is_empty() {
                String::new()
            } else {
                format!(", approved by {}", h.approved_by)
            };
            out.push_str(&format!(
                "  {}  {} -> {}  by {}{approved}: {}\n",
                when(h.at.as_ref()),
                if h.from.is_empty() { "start" } else { &h.from },
                h.to,
                h.by,
                h.outcome
            ));
        }
    }
    out
}

fn list_table(rs: &[pb::Rollout]) -> String {
    if rs.is_empty() {
        return "no rollouts\n".into();
    }
    let mut rows = vec![
        [
            "ID",
            "NAMESPACE",
            "WORKLOAD",
            "PHASE",
            "OBJECTS",
            "REQUESTED BY",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for r in rs {
        rows.push(vec![
            r.id.clone(),
            r.namespace.clone(),
            if r.workload.is_empty() {
                "*".into()
            } else {
                r.workload.clone()
            },
            r.phase.clone(),
            r.objects.len().to_string(),
            r.requested_by.clone(),
        ]);
    }
    mesh_render::columns(&rows, "  ")
}
