//! Rollouts in chat: `/mesh rollout start` and `/mesh rollout <id>` post a rollout card (phase,
//! gate, plan, history, a button per allowed step); a step's button dry-runs it as the clicker
//! and posts an ordinary approval card, which a second person approves; the cards the bot
//! posted are redrawn as the gate's evidence changes ("audit: 0 would-be denials in 30m —
//! ready to enforce"), by the replica holding the alert lease.

use std::{collections::HashMap, fmt::Write as _, sync::Arc, time::Duration};

use mesh_proto::pb::{self, advance_rollout_request::Action};
use mesh_store::{AlertStore, ApprovalStore};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::{
    approvals::{Approval, Approvals, ClickOutcome},
    command::{ApplyKind, RolloutCommand},
    core::status_reply,
    identity::{KubeIdentity, Platform},
    mcp_error::McpError,
    reply::{Button, ButtonStyle, Reply, Tone},
};

/// The store set of rollout cards to keep current: `<target>|<message>|<rollout id>`.
pub const CARDS: &str = "rollout-cards";

/// A rollout step waiting for approval (kept in its [`Approval`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutStep {
    /// The rollout.
    pub id: String,
    /// `audit`, `enforce` or `rollback`.
    pub action: String,
    /// The revision the dry-run reviewed: the step is refused if the rollout moved since.
    pub revision: u64,
}

fn action_of(word: &str) -> Option<Action> {
    match word {
        "audit" => Some(Action::Audit),
        "enforce" => Some(Action::Enforce),
        "rollback" => Some(Action::Rollback),
        "repropose" => Some(Action::Repropose),
        _ => None,
    }
}

fn pb_duration(d: Duration) -> pbjson_types::Duration {
    pbjson_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: 0,
    }
}

fn identity(k: &KubeIdentity) -> pb::Identity {
    pb::Identity {
        user: k.user.clone(),
        groups: k.groups.clone(),
    }
}

/// Rollout `id`, with its gate evaluated now.
async fn fetch(mcp: &crate::core::Mcp, id: &str) -> Result<pb::Rollout, McpError> {
    mcp.client()
        .get_rollout(mcp.request(pb::GetRolloutRequest { id: id.to_owned() })?)
        .await
        .map(tonic::Response::into_inner)
        .map_err(McpError::from)
}

/// A rollout as a card: where it is, what the gate says, and a button per allowed step.
pub fn rollout_card(r: &pb::Rollout) -> Reply {
    let target = if r.workload.is_empty() {
        format!("namespace {}", r.namespace)
    } else {
        format!("{}/{}", r.namespace, r.workload)
    };
    let gate = r.gate.clone().unwrap_or_default();
    let mut c = Reply::new(format!("Rollout {}: {}", r.id, r.phase))
        .field("Target", target)
        .field("Requested by", r.requested_by.clone())
        .field("Objects", r.objects.len().to_string())
        .field("Revision", r.revision.to_string());
    use pb::rollout_gate::Status;
    c.tone = match gate.status() {
        Status::Open => Tone::Good,
        Status::Blocked => Tone::Warn,
        _ if r.phase == "enforced" => Tone::Good,
        _ => Tone::Info,
    };
    if !gate.summary.is_empty() {
        c = c.text(gate.summary.clone());
    }
    if !gate.would_be_denied.is_empty() {
        let lines: String = gate.would_be_denied.iter().fold(String::new(), |mut s, w| {
            let _ = writeln!(
                s,
                "{} -> {}  {:.0} would-be denials",
                w.caller, w.callee, w.count
            );
            s
        });
        c = c
            .code(lines, "would-be-denied.txt")
            .text("Enforcing would break these callers. Re-propose to admit them (it goes through approval again), or mesh them.");
    }
    if r.plan_pending {
        c = c.text("The plan was re-proposed: apply it in audit to observe it.");
    }
    if !r.last_error.is_empty() {
        c = c.note(format!("Last step refused: {}", r.last_error));
    }
    for n in &r.needs_action {
        let callee = n
            .callee
            .as_ref()
            .map_or_else(String::new, |w| format!("{}/{}", w.namespace, w.name));
        c = c.text(format!(
            "Needs action: {} -> {callee}: {}",
            n.caller, n.advice
        ));
    }
    let plan: String = r.objects.iter().fold(String::new(), |mut s, o| {
        let why = o.justification.first().cloned().unwrap_or_default();
        let _ = writeln!(s, "{} {}/{}  {why}", o.kind, o.namespace, o.name);
        s
    });
    c = c.code(plan, "plan.txt");
    let history: String = r.history.iter().fold(String::new(), |mut s, h| {
        let approved = if h.approved_by.is_empty() {
            String::new()
        } else {
            format!(", approved by {}", h.approved_by)
        };
        let from = if h.from.is_empty() { "start" } else { &h.from };
        let _ = writeln!(s, "{from} -> {} by {}{approved}: {}", h.to, h.by, h.outcome);
        s
    });
    c = c.code(history, "history.txt");
    for n in &r.next {
        let (label, style) = match n.as_str() {
            "audit" => ("Apply in audit", ButtonStyle::Good),
            "enforce" => ("Enforce", ButtonStyle::Good),
            "rollback" => ("Roll back", ButtonStyle::Danger),
            "repropose" => ("Re-propose", ButtonStyle::Plain),
            _ => continue,
        };
        c.buttons.push(Button {
            label: label.into(),
            action: format!("rollout-{n}"),
            value: r.id.clone(),
            style,
        });
    }
    if !r.next.is_empty() {
        c.buttons.push(Button {
            label: "Refresh".into(),
            action: "rollout-refresh".into(),
            value: r.id.clone(),
            style: ButtonStyle::Plain,
        });
    }
    c.note("Audit, enforce and rollback are dry-run as you and need a second person's approval.")
}

impl<S: ApprovalStore + Clone> Approvals<S> {
    /// `/mesh rollout ...` from `chat_user`: the rollout card and the rollout's id (or why
    /// not, and no id).
    pub async fn rollout(
        &self,
        platform: Platform,
        chat_user: &str,
        cmd: &RolloutCommand,
    ) -> (Reply, Option<String>) {
        let requester = match self.identity(platform, chat_user) {
            Ok(k) => k,
            Err(r) => return (*r, None),
        };
        let mcp = self.mcp().clone();
        let res = async {
            match cmd {
                RolloutCommand::Start {
                    namespace,
                    workload,
                    since,
                    observe,
                } => {
                    let req = pb::StartRolloutRequest {
                        namespace: namespace.clone(),
                        workload: workload.clone().unwrap_or_default(),
                        since: since.map(pb_duration),
                        observe_for: observe.map(pb_duration),
                        on_behalf_of: Some(identity(&requester)),
                        per_route: false,
                    };
                    mcp.client()
                        .start_rollout(mcp.change_request(req)?)
                        .await
                        .map(tonic::Response::into_inner)
                        .map_err(McpError::from)
                }
                RolloutCommand::Show { id } => fetch(&mcp, id).await,
            }
        }
        .await;
        match res {
            Ok(r) => (rollout_card(&r), Some(r.id)),
            Err(e) => (status_reply("The rollout could not be shown", &e), None),
        }
    }

    async fn advance_call(
        &self,
        req: pb::AdvanceRolloutRequest,
    ) -> Result<pb::AdvanceRolloutResponse, McpError> {
        let mcp = self.mcp().clone();
        let mut c = mcp.client();
        c.advance_rollout(mcp.change_request(req)?)
            .await
            .map(tonic::Response::into_inner)
            .map_err(McpError::from)
    }

    /// The apply of an approved rollout step, as the requester: `req` carries the approval's
    /// identity, approver and reason; the rollout holds the objects.
    pub(crate) async fn apply_step(
        &self,
        step: &RolloutStep,
        req: pb::ApplyRequest,
    ) -> Result<pb::ApplyResponse, McpError> {
        let action = action_of(&step.action)
            .ok_or_else(|| McpError::Invalid(format!("unknown rollout step {}", step.action)))?;
        let r = self
            .advance_call(pb::AdvanceRolloutRequest {
                id: step.id.clone(),
                action: action.into(),
                expected_revision: step.revision,
                change: Some(pb::ApplyRequest {
                    dry_run: req.dry_run,
                    on_behalf_of: req.on_behalf_of,
                    approved_by: req.approved_by,
                    reason: req.reason,
                    ..Default::default()
                }),
                since: None,
            })
            .await?;
        Ok(r.change.unwrap_or_default())
    }

    /// A rollout card's button: `refresh`, `repropose` (no approval: nothing is applied), or a
    /// step (`audit`, `enforce`, `rollback`) dry-run as the clicker and posted for approval.
    pub(crate) async fn rollout_click(
        &self,
        platform: Platform,
        chat_user: &str,
        clicker: KubeIdentity,
        step: &str,
        id: &str,
    ) -> ClickOutcome {
        let mcp = self.mcp().clone();
        let card = |r: Option<pb::Rollout>, note: String| {
            let mut c = rollout_card(&r.unwrap_or_default());
            if !note.is_empty() {
                c = c.note(note);
            }
            ClickOutcome {
                card: Some(c),
                ..ClickOutcome::default()
            }
        };
        let private = |title: &str, e: &McpError| ClickOutcome {
            private: Some(status_reply(title, e)),
            ..ClickOutcome::default()
        };
        if step == "refresh" {
            return match fetch(&mcp, id).await {
                Ok(r) => card(Some(r), String::new()),
                Err(e) => private("The rollout could not be read", &e),
            };
        }
        let Some(action) = action_of(step) else {
            return ClickOutcome {
                private: Some(Reply::refusal(
                    "Unknown button",
                    format!("`{}` is not a rollout step.", crate::command::clip(step)),
                )),
                ..ClickOutcome::default()
            };
        };
        let change = pb::ApplyRequest {
            dry_run: action != Action::Repropose,
            on_behalf_of: Some(identity(&clicker)),
            ..Default::default()
        };
        let res = self
            .advance_call(pb::AdvanceRolloutRequest {
                id: id.to_owned(),
                action: action.into(),
                change: Some(change),
                ..Default::default()
            })
            .await;
        let r = match res {
            Ok(r) => r,
            Err(e) => {
                self.metrics().approval("refused_at_dry_run");
                return private(&format!("The rollout's {step} was refused (as you)"), &e);
            }
        };
        if action == Action::Repropose {
            return card(r.rollout, format!("{} (by {})", r.summary, clicker.user));
        }
        let rollout = r.rollout.clone().unwrap_or_default();
        let dry = r.change.unwrap_or_default();
        match self
            .request_step(
                platform, chat_user, clicker, &rollout, step, &r.summary, dry,
            )
            .await
        {
            Ok(pending) => ClickOutcome {
                post: Some(pending),
                ..ClickOutcome::default()
            },
            Err(refusal) => ClickOutcome {
                private: Some(refusal),
                ..ClickOutcome::default()
            },
        }
    }

    /// Records the dry-run of a rollout step as an approval and returns its card.
    #[allow(clippy::too_many_arguments, reason = "one step's whole review")]
    async fn request_step(
        &self,
        platform: Platform,
        chat_user: &str,
        requester: KubeIdentity,
        r: &pb::Rollout,
        step: &str,
        summary: &str,
        dry: pb::ApplyResponse,
    ) -> Result<Reply, Reply> {
        let to = summary.strip_prefix("dry-run: ").unwrap_or(summary);
        let a = Approval {
            id: crate::approvals::new_id(),
            kind: ApplyKind::Authz,
            manifest: String::new(),
            reason: String::new(),
            platform,
            requester_chat: chat_user.to_owned(),
            requester,
            namespace: r.namespace.clone(),
            namespaces: crate::approvals::written_namespaces(&dry, &r.namespace),
            target: format!("rollout {} ({step}: {to})", r.id),
            expected_resource_version: String::new(),
            actions: dry
                .objects
                .iter()
                .map(|o| format!("{} {} {}/{}", o.action, o.kind, o.namespace, o.name))
                .collect(),
            diff: dry.diff.clone(),
            affected: crate::approvals::affected_lines(&dry),
            warnings: dry.warnings.clone(),
            dry_run_audit_id: dry.audit_id.clone(),
            expires_at: 0,
            reviewed: Vec::new(),
            rollout: Some(RolloutStep {
                id: r.id.clone(),
                action: step.to_owned(),
                revision: r.revision,
            }),
        };
        self.put_pending(a).await
    }
}

/// Remembers that `message` in `target` (`slack:C1`, `discord:123`) shows rollout `id`, so
/// that [`keep_cards_current`] redraws it.
pub async fn track_card(app: &crate::app::App, target: &str, message: &str, id: &str) {
    let member = format!("{target}|{message}|{id}");
    if let Err(e) = app.store.mark(CARDS, &member, true).await {
        tracing::warn!(%e, rollout = id, "could not remember a rollout card: it will not be kept current");
    }
}

/// Keeps the rollout cards the bot posted current while this replica holds the alert lease:
/// every `every`, each card whose rollout changed (phase, revision, gate, would-be denials, or
/// another minute observed) is redrawn; a withdrawn rollout's card is redrawn once more and
/// then left alone.
pub async fn keep_cards_current(
    app: Arc<crate::app::App>,
    leader: watch::Receiver<bool>,
    every: Duration,
) {
    let mut shown: HashMap<String, String> = HashMap::new();
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        if !*leader.borrow() {
            continue;
        }
        let Ok(cards) = app.store.members(CARDS).await else {
            continue;
        };
        // Bounded per tick; the rest wait for the next.
        for member in cards.iter().take(50) {
            let mut parts = member.splitn(3, '|');
            let (Some(target), Some(message), Some(id)) =
                (parts.next(), parts.next(), parts.next())
            else {
                let _ = app.store.mark(CARDS, member, false).await;
                continue;
            };
            let r = match fetch(&app.mcp, id).await {
                Ok(r) => r,
                Err(McpError::NotFound(_)) => {
                    let _ = app.store.mark(CARDS, member, false).await;
                    continue;
                }
                Err(_) => continue,
            };
            let gate = r.gate.clone().unwrap_or_default();
            let minutes = gate.observed.as_ref().map_or(0, |d| d.seconds / 60);
            let print = format!(
                "{}|{}|{}|{:?}|{minutes}|{}",
                r.phase,
                r.revision,
                gate.status,
                gate.would_be_denied
                    .iter()
                    .map(|w| (&w.caller, &w.callee))
                    .collect::<Vec<_>>(),
                r.last_error
            );
            if shown.get(member) == Some(&print) {
                continue;
            }
            match app.edit_card(target, message, &rollout_card(&r)).await {
                Ok(()) => {
                    shown.insert(member.clone(), print);
                }
                Err(e) => tracing::warn!(%e, rollout = id, "could not redraw a rollout card"),
            }
            if r.phase == "withdrawn" {
                let _ = app.store.mark(CARDS, member, false).await;
            }
        }
    }
}
