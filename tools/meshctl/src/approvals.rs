//! `meshctl approvals`: the approval requests of mesh-mcp for people without chat
//! (`ListApprovals`, `GetApproval`, `Approve`, `Reject`). Each decision is made as the token's
//! identity and checked by mesh-mcp against its approval policy.

use std::{fmt::Write as _, time::Duration};

use clap::Subcommand;
use mesh_proto::pb;

use crate::{Failure, connect, server_failure, with_token};

/// `meshctl approvals` subcommands.
#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// Approval requests, newest first: who asked (or which agent, for whom), what, how many
    /// approvals of how many needed.
    List(ListArgs),
    /// One request: the change (objects, diff, what-if), the rule, every approval and the
    /// outcome.
    Show(ShowArgs),
    /// Approve as your token's identity; the approval that meets the threshold applies the
    /// change (as its requester) and prints the outcome.
    Approve(IdArgs),
    /// Reject (the requester withdraws, or an approver turns it down).
    Reject(IdArgs),
}

/// Where mesh-mcp is, and how to print.
#[derive(Debug, clap::Args)]
pub struct Server {
    /// mesh-mcp gRPC address.
    #[arg(long, env = "MESH_SERVER")]
    pub server: String,
    /// Bearer token.
    #[arg(long, env = "MESH_TOKEN")]
    pub token: Option<String>,
    /// `text` or `json` (the proto3 JSON of the answer).
    #[arg(short = 'o', long, env = "MESH_OUTPUT", default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
}

/// `meshctl approvals list` flags.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Where mesh-mcp is, and how to print.
    #[command(flatten)]
    pub server: Server,
    /// Only requests in this state (pending, applying, applied, stale, failed, unknown,
    /// rejected, expired).
    #[arg(long)]
    pub state: Option<String>,
    /// Only requests writing this namespace.
    #[arg(long, short = 'n', env = "MESH_NAMESPACE")]
    pub namespace: Option<String>,
}

/// `meshctl approvals show` flags.
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// Where mesh-mcp is, and how to print.
    #[command(flatten)]
    pub server: Server,
    /// The approval id (`meshctl apply` and `meshctl approvals list` print it).
    pub id: String,
}

/// Flags of a decision on one request.
#[derive(Debug, clap::Args)]
pub struct IdArgs {
    /// Where mesh-mcp is, and how to print.
    #[command(flatten)]
    pub server: Server,
    /// The approval id (`meshctl apply` and `meshctl approvals list` print it).
    pub id: String,
    /// Why (recorded with the approval or the rejection).
    #[arg(long)]
    pub reason: Option<String>,
}

/// Runs one `meshctl approvals` subcommand.
pub async fn approvals(cmd: ApprovalsCommand) -> Result<(), Failure> {
    match cmd {
        ApprovalsCommand::List(a) => {
            let states = match a.state.as_deref() {
                None => Vec::new(),
                Some(w) => vec![
                    mesh_proto::approval_state_of(w)
                        .ok_or_else(|| {
                            Failure::new(
                                crate::EXIT_USAGE,
                                format!(
                                    "--state {w}: one of {}",
                                    mesh_proto::APPROVAL_STATES
                                        .iter()
                                        .map(|(_, w)| *w)
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                ),
                            )
                        })?
                        .into(),
                ],
            };
            let s = &a.server;
            let mut c = connect(&s.server, Duration::from_secs(10)).await?;
            let req = pb::ListApprovalsRequest {
                states,
                namespace: a.namespace.clone().unwrap_or_default(),
                limit: 0,
            };
            let l = c
                .list_approvals(with_token(
                    req,
                    s.token.as_deref(),
                    Some(Duration::from_secs(30)),
                )?)
                .await
                .map_err(|e| server_failure(&s.server, &e))?
                .into_inner();
            if s.output == "json" {
                return print_json(&l);
            }
            print!("{}", table(&l.approvals));
            Ok(())
        }
        ApprovalsCommand::Show(a) => {
            let s = &a.server;
            let mut c = connect(&s.server, Duration::from_secs(10)).await?;
            let req = pb::GetApprovalRequest { id: a.id.clone() };
            let ap = c
                .get_approval(with_token(
                    req,
                    s.token.as_deref(),
                    Some(Duration::from_secs(30)),
                )?)
                .await
                .map_err(|e| server_failure(&s.server, &e))?
                .into_inner();
            show(s, &ap)
        }
        ApprovalsCommand::Approve(a) => decide(&a, true).await,
        ApprovalsCommand::Reject(a) => decide(&a, false).await,
    }
}

/// Approves (`approve`) or rejects approval `a.id` as the token's identity.
async fn decide(a: &IdArgs, approve: bool) -> Result<(), Failure> {
    let s = &a.server;
    let mut c = connect(&s.server, Duration::from_secs(10)).await?;
    // The last approval applies the change: the apply's time on top of the call's.
    let limit = Duration::from_secs(if approve { 90 } else { 30 });
    let req = with_token(decision(a), s.token.as_deref(), Some(limit))?;
    let ap = if approve {
        c.approve(req).await
    } else {
        c.reject(req).await
    }
    .map_err(|e| server_failure(&s.server, &e))?
    .into_inner();
    show(s, &ap)
}

fn decision(a: &IdArgs) -> pb::DecideApprovalRequest {
    pb::DecideApprovalRequest {
        id: a.id.clone(),
        on_behalf_of: None,
        reason: a.reason.clone().unwrap_or_default(),
        front_end: "cli".into(),
    }
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(v)
        .map_err(|e| Failure::new(1, format!("cannot encode the answer: {e}")))?;
    println!("{text}");
    Ok(())
}

fn show(s: &Server, ap: &pb::Approval) -> Result<(), Failure> {
    print_approval(&s.output, ap)
}

/// One request as `output` (`json`: `{"approval": ...}`, its proto3 JSON; else in words).
pub(crate) fn print_approval(output: &str, ap: &pb::Approval) -> Result<(), Failure> {
    if output == "json" {
        return print_json(&serde_json::json!({ "approval": ap }));
    }
    print!("{}", detail(ap));
    Ok(())
}

/// The list as a table.
pub fn table(list: &[pb::Approval]) -> String {
    let mut out = String::new();
    if list.is_empty() {
        out.push_str("No approval requests.\n");
        return out;
    }
    let rows: Vec<[String; 5]> = list
        .iter()
        .map(|a| {
            [
                a.id.clone(),
                mesh_proto::approval_state_word(a.state).to_owned(),
                mesh_proto::approval_tally(a),
                mesh_proto::approval_requester(a),
                mesh_proto::approval_target(a).unwrap_or_default(),
            ]
        })
        .collect();
    let head = ["ID", "STATE", "APPROVALS", "REQUESTED BY", "CHANGE"];
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([head[i].len()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..5).map(width).collect();
    let line = |cells: [&str; 5], out: &mut String| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            let _ = write!(l, "{c:<w$}  ", w = widths[i]);
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(head, &mut out);
    for r in &rows {
        line(
            [
                r[0].as_str(),
                r[1].as_str(),
                r[2].as_str(),
                r[3].as_str(),
                r[4].as_str(),
            ],
            &mut out,
        );
    }
    out
}

/// One request in full.
pub fn detail(ap: &pb::Approval) -> String {
    let time = |t: &Option<pbjson_types::Timestamp>| {
        t.as_ref()
            .and_then(|t| mesh_proto::timestamp_from_pb(t).ok())
            .map(|t| humantime::format_rfc3339_seconds(t).to_string())
            .unwrap_or_default()
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "approval {}: {}",
        ap.id,
        mesh_proto::approval_state_word(ap.state)
    );
    let _ = writeln!(
        out,
        "requested by {} ({})",
        mesh_proto::approval_requester(ap),
        ap.front_end
    );
    if !ap.reason.is_empty() {
        let _ = writeln!(out, "reason: {}", ap.reason);
    }
    let _ = writeln!(out, "rule: {}", ap.rule);
    let _ = writeln!(out, "approvals: {}", mesh_proto::approval_tally(ap));
    let _ = writeln!(
        out,
        "created {}, expires {}",
        time(&ap.created_at),
        time(&ap.expires_at)
    );
    for o in &ap.objects {
        let action = mesh_proto::approval_action(ap.state, &o.action);
        let _ = writeln!(out, "  {action} {} {}/{}", o.kind, o.namespace, o.name);
    }
    for e in &ap.affected_edges {
        let edge = e.edge.clone().unwrap_or_default();
        let name = |r: Option<pb::WorkloadRef>| {
            r.map(|r| format!("{}/{}", r.namespace, r.name))
                .unwrap_or_default()
        };
        let _ = writeln!(
            out,
            "  edge {} -> {}  {:.2} rps  {} -> {}",
            name(edge.src),
            name(edge.dst),
            e.rps,
            e.before().as_str_name().to_ascii_lowercase(),
            e.after().as_str_name().to_ascii_lowercase()
        );
    }
    if !ap.diff.is_empty() {
        out.push('\n');
        out.push_str(&ap.diff);
        if !ap.diff.ends_with('\n') {
            out.push('\n');
        }
    }
    if !ap.rejected_by.is_empty() {
        let _ = writeln!(
            out,
            "rejected by {}{}",
            ap.rejected_by,
            if ap.rejection_reason.is_empty() {
                String::new()
            } else {
                format!(": {}", ap.rejection_reason)
            }
        );
    }
    if !ap.outcome.is_empty() {
        let _ = writeln!(out, "outcome: {}", ap.outcome);
    }
    if !ap.audit_id.is_empty() {
        let _ = writeln!(out, "applied; audit id {}", ap.audit_id);
    }
    out
}
