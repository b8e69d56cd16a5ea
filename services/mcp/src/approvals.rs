//! Approvals of policy changes: one store and one state machine for every front end (MCP
//! agents, chat, gRPC, meshctl). The decisions are the approval policy's
//! (`mesh_policy::approval`), the states and moves `mesh_model::approval`'s; this module keeps
//! each request in the store (`<prefix>requests:<id>`, compare-and-set on its revision) and
//! runs the approved change through the policy-change pipeline as the requester.
//!
//! ```text
//!  RequestApproval ─> dry-run as the requester (RBAC, admission, diff, what-if) ─> the rules
//!     of every namespace written ─> stored pending, with the reviewed resourceVersions
//!  Approve ─> the approver checked (not the requester nor their agent, allowed under every
//!     rule, not twice, no freeze) ─> step_vote ─> CAS: one more vote (still pending), or the
//!     last one: applying ─> pipeline as the requester, with every approver ─> CAS: outcome
//!  Reject ─> the requester or an approver ─> CAS: rejected
//! ```

use std::{
    collections::HashMap,
    pin::Pin,
    time::{Duration, SystemTime},
};

use futures_util::Stream;
use mesh_model::approval::{self, ApplyOutcome, ApprovalEvent, ApprovalState, Refusal};
use mesh_policy::approval::{Gate, Requested, Subject};
use mesh_proto::pb;
use mesh_store::{RecordEntry, RecordStore, Shelf, Updated};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tonic::Status;

use crate::{
    Caller, GraphService,
    apply::{Applier, ApplyError, Grant, Rpc, subject, written_namespaces},
    auth::agent_name,
    rollout::{at_ms, ms},
};

/// Decided (or expired) requests are kept this long for `GetApproval` and the audit.
const KEEP_DECIDED: Duration = Duration::from_secs(7 * 24 * 3600);
/// An apply left unconfirmed this long (its replica died mid-apply) is retried by the next
/// approval, under the same preconditions: never stuck, never applied twice.
const RETRY_AFTER: Duration = Duration::from_secs(120);
/// Most requests one list answers.
const MAX_LIST: usize = 200;
/// Most ids one list reads (newest first) before it stops looking.
const MAX_SCAN: usize = 1000;
/// Compare-and-set attempts before a busy request is reported as such.
const RACES: usize = 8;
/// Longest reason kept.
const MAX_REASON: usize = 1024;
/// How often a watch looks for other replicas' changes.
const WATCH_POLL: Duration = Duration::from_secs(1);

/// One approver's approval, as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Vote {
    user: String,
    at_ms: u64,
    front_end: String,
    #[serde(default)]
    reason: String,
}

/// A request as stored (JSON under `<prefix>requests:<id>`; the state is the entry's own).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Stored {
    id: String,
    http_route: bool,
    /// The authenticated caller that asked, and its groups (the apply is made through it).
    requested_by: String,
    requested_groups: Vec<String>,
    /// Whom the change is made as.
    acted_as: pb::Identity,
    agent: Option<String>,
    front_end: String,
    reason: String,
    rule: String,
    needed: u32,
    namespaces: Vec<String>,
    votes: Vec<Vote>,
    rejected_by: String,
    rejection_reason: String,
    created_ms: u64,
    expires_ms: u64,
    applying_since_ms: u64,
    decided_ms: u64,
    /// The change as it will be applied: held to the reviewed resourceVersions.
    change: pb::ApplyRequest,
    /// The reviewed dry-run.
    review: pb::ApplyResponse,
    audit_id: String,
    outcome: String,
}

fn store_error(e: &mesh_store::StoreError) -> Status {
    Status::unavailable(format!("the approval store is unavailable: {e}"))
}

fn new_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let salt = std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), nanos);
    format!("ap-{salt:016x}")
}

/// The front end a request or decision names: one of the known words (default `grpc`);
/// `chat` only from a delegator (the chatbot), so nobody hides a request from chat's cards.
fn front_end(word: &str, delegator: bool) -> Result<String, Status> {
    match word {
        "" => Ok("grpc".into()),
        "chat" if !delegator => Err(Status::permission_denied(
            "front_end: chat is the chatbot's (a delegator's) to name",
        )),
        "mcp" | "chat" | "cli" | "grpc" | "web" => Ok(word.to_owned()),
        other => Err(Status::invalid_argument(format!(
            "front_end: {other:?}; one of mcp, chat, cli, grpc, web"
        ))),
    }
}

/// A reason as the audit keeps it: one line, bounded, no control characters.
fn reason(text: &str) -> Result<String, Status> {
    if text.chars().count() > MAX_REASON {
        return Err(Status::invalid_argument(format!(
            "reason: at most {MAX_REASON} characters"
        )));
    }
    if text.chars().any(char::is_control) {
        return Err(Status::invalid_argument(
            "reason: control characters (newlines, tabs, escapes) are not allowed",
        ));
    }
    Ok(text.trim().to_owned())
}

fn refusal_status(r: Refusal) -> Status {
    match r {
        Refusal::Expired => Status::failed_precondition(
            "the approval request has expired: nothing was changed; ask again",
        ),
        other => Status::failed_precondition(other.to_string()),
    }
}

fn state_pb(s: ApprovalState, expired: bool) -> pb::ApprovalState {
    use pb::ApprovalState as P;
    match s {
        ApprovalState::Pending if expired => P::Expired,
        ApprovalState::Pending => P::Pending,
        ApprovalState::Applying => P::Applying,
        ApprovalState::Applied => P::Applied,
        ApprovalState::Stale | ApprovalState::Redone => P::Stale,
        ApprovalState::Failed => P::Failed,
        ApprovalState::Unknown => P::Unknown,
        ApprovalState::Rejected => P::Rejected,
    }
}

impl Stored {
    fn rpc(&self) -> Rpc {
        if self.http_route {
            Rpc::HttpRoute
        } else {
            Rpc::AuthorizationPolicy
        }
    }

    fn approvers(&self) -> Vec<String> {
        self.votes.iter().map(|v| v.user.clone()).collect()
    }

    fn requester(&self) -> Subject {
        Subject {
            user: self.acted_as.user.clone(),
            groups: self.acted_as.groups.clone(),
        }
    }

    /// The agent's own identity, when an agent proposed the change under one of its own (not
    /// as the person it works for).
    fn proposer(&self) -> Option<&str> {
        (self.agent.is_some() && self.requested_by != self.acted_as.user)
            .then_some(self.requested_by.as_str())
    }

    fn expired(&self, now: SystemTime) -> bool {
        approval::expired(at_ms(self.expires_ms), now)
    }

    fn to_pb(&self, state: ApprovalState, revision: u64, now: SystemTime) -> pb::Approval {
        let ts = |m: u64| Some(mesh_proto::timestamp_to_pb(at_ms(m)));
        pb::Approval {
            id: self.id.clone(),
            state: state_pb(state, self.expired(now)).into(),
            kind: if self.http_route {
                pb::ChangeKind::HttpRoute
            } else {
                pb::ChangeKind::AuthorizationPolicy
            }
            .into(),
            requested_by: self.requested_by.clone(),
            on_behalf_of: Some(self.acted_as.clone()),
            agent: self.agent.clone().unwrap_or_default(),
            front_end: self.front_end.clone(),
            reason: self.reason.clone(),
            rule: self.rule.clone(),
            needed: self.needed,
            approvals: self
                .votes
                .iter()
                .map(|v| pb::ApprovalVote {
                    user: v.user.clone(),
                    at: ts(v.at_ms),
                    front_end: v.front_end.clone(),
                    reason: v.reason.clone(),
                })
                .collect(),
            rejected_by: self.rejected_by.clone(),
            rejection_reason: self.rejection_reason.clone(),
            created_at: ts(self.created_ms),
            expires_at: ts(self.expires_ms),
            namespaces: self.namespaces.clone(),
            objects: self.review.objects.clone(),
            diff: self.review.diff.clone(),
            affected_edges: self.review.affected_edges.clone(),
            warnings: self.review.warnings.clone(),
            dry_run_audit_id: self.review.audit_id.clone(),
            audit_id: self.audit_id.clone(),
            outcome: self.outcome.clone(),
            revision,
        }
    }

    /// Whether the request is over (decided, or expired unanswered) and was so before `cutoff`.
    fn finished_before(&self, state: ApprovalState, cutoff: SystemTime) -> bool {
        match state {
            ApprovalState::Pending => at_ms(self.expires_ms) < cutoff,
            ApprovalState::Applying => at_ms(self.applying_since_ms) < cutoff,
            _ => at_ms(self.decided_ms.max(self.created_ms)) < cutoff,
        }
    }
}

/// The audit log's line for an approval event (one JSON object: no value can forge a field).
fn audit(event: &str, rec: &Stored, by: &str) {
    let record = json!({
        "approval_id": rec.id,
        "event": event,
        "by": by,
        "requested_by": rec.requested_by,
        "acted_as": rec.acted_as.user,
        "agent": rec.agent,
        "front_end": rec.front_end,
        "rule": rec.rule,
        "needed": rec.needed,
        "approvers": rec.approvers(),
        "namespaces": rec.namespaces,
        "reason": rec.reason,
        "audit_id": rec.audit_id,
        "outcome": rec.outcome,
    });
    tracing::info!(target: "audit", record = %record, "approval");
}

/// The stream of `WatchApprovals`.
pub(crate) type ApprovalStream = Pin<Box<dyn Stream<Item = Result<pb::Approval, Status>> + Send>>;

impl GraphService {
    fn approvals_applier(&self) -> Result<&Applier, Status> {
        self.applier
            .as_ref()
            .map_err(|why| Status::unavailable(format!("approvals need the cluster: {why}")))
    }

    /// The time of approvals (expiry, freezes): the applier's clock, so a test moves both.
    fn approval_now(&self) -> SystemTime {
        self.applier
            .as_ref()
            .map_or_else(|_| SystemTime::now(), Applier::now)
    }

    fn approvals_notify(&self) {
        self.approvals_changed
            .send_modify(|n| *n = n.wrapping_add(1));
    }

    async fn load_approval(&self, id: &str) -> Result<(RecordEntry, Stored), Status> {
        if id.is_empty()
            || id.len() > 64
            || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(Status::invalid_argument(format!(
                "id: {id:?} is not an approval id"
            )));
        }
        let entry = self
            .records
            .get_record(Shelf::Approvals, id)
            .await
            .map_err(|e| store_error(&e))?
            .ok_or_else(|| Status::not_found(format!("no approval request {id}")))?;
        let rec: Stored = serde_json::from_slice(&entry.record)
            .map_err(|e| Status::internal(format!("approval request {id} is unreadable: {e}")))?;
        Ok((entry, rec))
    }

    fn state_of(entry: &RecordEntry) -> Result<ApprovalState, Status> {
        ApprovalState::parse(&entry.state).ok_or_else(|| {
            Status::internal(format!(
                "an approval request in an unknown state {:?}",
                entry.state
            ))
        })
    }

    /// Writes `next` in state `to` if the request is still at `revision`.
    async fn put_next(
        &self,
        next: &Stored,
        revision: u64,
        to: ApprovalState,
    ) -> Result<Updated, Status> {
        let bytes = serde_json::to_vec(next).map_err(|e| Status::internal(e.to_string()))?;
        self.records
            .update_record(Shelf::Approvals, &next.id, revision, to.as_str(), bytes)
            .await
            .map_err(|e| store_error(&e))
    }

    /// Stores a change to be made once enough people approve: dry-run as the requester now
    /// (refusals come back at once and nothing is stored), held to what was reviewed.
    pub async fn request_approval(
        &self,
        caller: Option<Caller>,
        r: pb::RequestApprovalRequest,
    ) -> Result<pb::Approval, Status> {
        let applier = self.approvals_applier()?;
        let caller = caller.ok_or_else(|| {
            Status::unauthenticated(
                "approval requests need an authenticated caller; this server runs with \
                 --insecure-no-auth",
            )
        })?;
        let rpc = match pb::ChangeKind::try_from(r.kind) {
            Ok(pb::ChangeKind::AuthorizationPolicy) => Rpc::AuthorizationPolicy,
            Ok(pb::ChangeKind::HttpRoute) => Rpc::HttpRoute,
            _ => {
                return Err(Status::invalid_argument(
                    "kind: CHANGE_KIND_AUTHORIZATION_POLICY or CHANGE_KIND_HTTP_ROUTE",
                ));
            }
        };
        let mut change = r
            .change
            .ok_or_else(|| Status::invalid_argument("change: required"))?;
        if !change.approved_by.is_empty() {
            return Err(Status::invalid_argument(
                "change.approved_by: the approval service records its approvers itself; leave \
                 it empty",
            ));
        }
        let front_end = front_end(&r.front_end, applier.is_delegator(&caller))?;
        let why = reason(&change.reason)?;
        // The requester's reason is theirs to give here: it is kept with the request and put
        // in the audit trail by the service, not passed as a delegator's field.
        change.reason.clear();
        let policy = applier.approval_policy();
        let agent = agent_name(&r.agent)
            .or_else(|| caller.agent.clone())
            .or_else(|| {
                policy
                    .is_agent(&subject(&caller))
                    .then(|| caller.user.clone())
            });
        let caller = Caller {
            agent: agent.clone(),
            ..caller
        };
        change.dry_run = true;
        change.force = false;
        let mut review = applier
            .apply(Some(caller.clone()), rpc, change.clone())
            .await
            .map_err(Status::from)?;
        review
            .warnings
            .retain(|w| !w.starts_with(crate::apply::NEEDS_APPROVALS));
        if review.objects.iter().all(|o| o.action == "unchanged") {
            return Err(Status::failed_precondition(
                "no change: the cluster already holds this, so there is nothing to approve",
            ));
        }
        let acted_as = review.acted_as.clone().unwrap_or_default();
        let namespaces = written_namespaces(&review.objects);
        let need = policy.requirement(&namespaces);
        let now = self.approval_now();
        let requester = Subject {
            user: acted_as.user.clone(),
            groups: acted_as.groups.clone(),
        };
        let needed = match need.gate(&requester, agent.is_some(), now) {
            Ok(Gate::Direct) => 1,
            Ok(Gate::Approval { needed }) => needed,
            Err(e) => return Err(Status::permission_denied(e.to_string())),
        };
        if let Some(rule) = need
            .rules
            .iter()
            .find(|r| r.approvers.users.is_empty() && r.approvers.groups.is_empty())
        {
            return Err(Status::failed_precondition(format!(
                "nobody may approve changes under {}: the approval policy lists no approvers \
                 there (mesh-mcp --approval-policy)",
                rule.name
            )));
        }
        // Held to the reviewed versions of every object (the main one is last). Preconditions
        // the caller gave (a plan's) were checked by the dry-run, so these are the same.
        let main = review.objects.last();
        change.dry_run = false;
        change.expected_resource_version = main
            .map(|o| o.resource_version_before.clone())
            .unwrap_or_default();
        change.expect_absent = change.expected_resource_version.is_empty();
        change.preconditions = review
            .objects
            .iter()
            .take(review.objects.len().saturating_sub(1))
            .map(pb::ObjectPrecondition::from)
            .collect();
        let created = ms(now);
        let rec = Stored {
            id: new_id(),
            http_route: rpc == Rpc::HttpRoute,
            requested_by: caller.user.clone(),
            requested_groups: caller.groups.clone(),
            acted_as,
            agent,
            front_end,
            reason: why,
            rule: need.names(),
            needed,
            namespaces,
            votes: Vec::new(),
            rejected_by: String::new(),
            rejection_reason: String::new(),
            created_ms: created,
            expires_ms: created
                .saturating_add(u64::try_from(need.ttl().as_millis()).unwrap_or(u64::MAX)),
            applying_since_ms: 0,
            decided_ms: 0,
            change,
            review,
            audit_id: String::new(),
            outcome: String::new(),
        };
        let bytes = serde_json::to_vec(&rec).map_err(|e| Status::internal(e.to_string()))?;
        let made = self
            .records
            .create_record(
                Shelf::Approvals,
                &rec.id,
                ApprovalState::Pending.as_str(),
                bytes,
            )
            .await
            .map_err(|e| store_error(&e))?;
        if !made {
            return Err(Status::aborted("approval id collision; ask again"));
        }
        self.approvals_notify();
        audit("requested", &rec, &rec.requested_by);
        Ok(rec.to_pb(ApprovalState::Pending, 1, now))
    }

    /// One request, as it is now.
    pub async fn get_approval(&self, id: &str) -> Result<pb::Approval, Status> {
        let (entry, rec) = self.load_approval(id).await?;
        Ok(rec.to_pb(Self::state_of(&entry)?, entry.revision, self.approval_now()))
    }

    /// Requests, newest first, filtered; requests over for longer than a week are pruned.
    pub async fn list_approvals(
        &self,
        r: &pb::ListApprovalsRequest,
    ) -> Result<pb::ListApprovalsResponse, Status> {
        if r.states.len() > mesh_proto::APPROVAL_STATES.len() {
            return Err(Status::invalid_argument(format!(
                "states: at most {} (there are no more)",
                mesh_proto::APPROVAL_STATES.len()
            )));
        }
        let limit = match usize::try_from(r.limit).unwrap_or(MAX_LIST) {
            0 => MAX_LIST,
            n => n.min(MAX_LIST),
        };
        let ids = self
            .records
            .record_ids(Shelf::Approvals)
            .await
            .map_err(|e| store_error(&e))?;
        let now = self.approval_now();
        let cutoff = now
            .checked_sub(KEEP_DECIDED)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        // The oldest few are looked at too, so that requests beyond the newest scanned are
        // still pruned once their week is over.
        for id in ids.iter().take(ids.len().saturating_sub(MAX_SCAN).min(20)) {
            if let Ok(Some(entry)) = self.records.get_record(Shelf::Approvals, id).await
                && let (Ok(rec), Some(state)) = (
                    serde_json::from_slice::<Stored>(&entry.record),
                    ApprovalState::parse(&entry.state),
                )
                && rec.finished_before(state, cutoff)
            {
                let _ = self.records.remove_record(Shelf::Approvals, id).await;
            }
        }
        let mut out = Vec::new();
        for id in ids.iter().rev().take(MAX_SCAN) {
            let Some(entry) = self
                .records
                .get_record(Shelf::Approvals, id)
                .await
                .map_err(|e| store_error(&e))?
            else {
                continue;
            };
            let Ok(rec) = serde_json::from_slice::<Stored>(&entry.record) else {
                continue;
            };
            let state = Self::state_of(&entry)?;
            if rec.finished_before(state, cutoff) {
                // Best effort: a failed prune is retried by the next list.
                let _ = self.records.remove_record(Shelf::Approvals, id).await;
                continue;
            }
            let a = rec.to_pb(state, entry.revision, now);
            if (!r.states.is_empty() && !r.states.contains(&a.state))
                || (!r.namespace.is_empty() && !rec.namespaces.contains(&r.namespace))
            {
                continue;
            }
            out.push(a);
            if out.len() == limit {
                break;
            }
        }
        Ok(pb::ListApprovalsResponse { approvals: out })
    }

    /// Who decides: the caller, or (delegators only) the person it acts for; never an agent.
    fn decider(
        applier: &Applier,
        caller: Option<Caller>,
        on_behalf_of: Option<pb::Identity>,
    ) -> Result<(Subject, Caller), Status> {
        let caller = caller.ok_or_else(|| {
            Status::unauthenticated(
                "approvals need an authenticated caller; this server runs with \
                 --insecure-no-auth",
            )
        })?;
        let id = applier
            .identity(&caller, on_behalf_of)
            .map_err(Status::from)?;
        Ok((
            Subject {
                user: id.user,
                groups: id.groups,
            },
            caller,
        ))
    }

    /// Counts an approval; the one that meets the threshold applies the change as the
    /// requester and answers with the outcome.
    pub async fn approve(
        &self,
        caller: Option<Caller>,
        r: pb::DecideApprovalRequest,
    ) -> Result<pb::Approval, Status> {
        let applier = self.approvals_applier()?;
        let (approver, caller) = Self::decider(applier, caller, r.on_behalf_of)?;
        if let Some(agent) = &caller.agent {
            return Err(Status::permission_denied(format!(
                "agents propose, people approve: {agent} (calling as {}) may not approve",
                caller.user
            )));
        }
        let front_end = front_end(&r.front_end, applier.is_delegator(&caller))?;
        let said = reason(&r.reason)?;
        if approver.user.contains(',') || approver.user.starts_with("system:") {
            return Err(Status::permission_denied(format!(
                "{:?} cannot approve: system identities never approve, and approver names hold \
                 no commas (the approved-by annotation lists them comma-separated)",
                approver.user
            )));
        }
        for _ in 0..RACES {
            let (entry, rec) = self.load_approval(&r.id).await?;
            let state = Self::state_of(&entry)?;
            let now = self.approval_now();
            let policy = applier.approval_policy();
            let need = policy.requirement(&rec.namespaces);
            // A policy tightened since the request applies; a loosened one does not.
            let needed = rec.needed.max(need.approvals()).max(1);
            if state == ApprovalState::Pending && !rec.expired(now) {
                if approver.user == rec.requested_by {
                    return Err(Status::permission_denied(
                        mesh_policy::approval::VoteRefused::OwnRequest(approver.user.clone())
                            .to_string(),
                    ));
                }
                need.check_approver(
                    &policy,
                    &approver,
                    &Requested {
                        requester: &rec.requester(),
                        proposer: rec.proposer(),
                    },
                    &rec.approvers(),
                    now,
                )
                .map_err(|e| Status::permission_denied(e.to_string()))?;
            }
            // Retrying an apply its replica abandoned is an approver's to do, not anyone's.
            if state == ApprovalState::Applying
                && !need.rules.iter().all(|x| x.approvers.admits(&approver))
            {
                return Err(Status::permission_denied(format!(
                    "{} is not an approver under {}",
                    approver.user, rec.rule
                )));
            }
            let have = u32::try_from(rec.votes.len() + 1).unwrap_or(u32::MAX);
            let event = ApprovalEvent::Approve {
                // A take-over finishes what was approved in time: its deadline is not the
                // request's.
                expires_at: if state == ApprovalState::Applying {
                    SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(u32::MAX))
                } else {
                    at_ms(rec.expires_ms)
                },
                retry_after: RETRY_AFTER,
            };
            let t = approval::step_vote(state, have, needed, event, now).map_err(refusal_status)?;
            if t.is_take_over()
                && now
                    .duration_since(at_ms(rec.applying_since_ms))
                    .unwrap_or_default()
                    < t.min_age
            {
                return Err(refusal_status(Refusal::InProgress));
            }
            let mut next = rec.clone();
            if state == ApprovalState::Pending {
                next.votes.push(Vote {
                    user: approver.user.clone(),
                    at_ms: ms(now),
                    front_end: front_end.clone(),
                    reason: said.clone(),
                });
            }
            if t.to == ApprovalState::Applying {
                next.applying_since_ms = ms(now);
            }
            match self.put_next(&next, entry.revision, t.to).await? {
                Updated::Written(rev) => {
                    self.approvals_notify();
                    audit("approved", &next, &approver.user);
                    if t.to == ApprovalState::Pending {
                        return Ok(next.to_pb(ApprovalState::Pending, rev, now));
                    }
                    // Run to its end even if the caller goes away: a change half-written and
                    // an outcome never recorded would be worse than a late answer.
                    let (me, applier) = (self.clone(), applier.clone());
                    return tokio::spawn(async move { me.make(&applier, next, rev).await })
                        .await
                        .map_err(|e| Status::internal(format!("the apply task failed: {e}")))?;
                }
                // Someone else moved it meanwhile: judge again on what it is now.
                Updated::Now(_) => {}
                Updated::Missing => {
                    return Err(Status::not_found(format!("no approval request {}", r.id)));
                }
            }
        }
        Err(Status::aborted(
            "the approval request changed too often meanwhile; try again",
        ))
    }

    /// The approved change, applied as the requester with every approver; its outcome stored.
    async fn make(
        &self,
        applier: &Applier,
        rec: Stored,
        mut revision: u64,
    ) -> Result<pb::Approval, Status> {
        let grant = Grant {
            approval_id: rec.id.clone(),
            approvers: rec.approvers(),
            rule: rec.rule.clone(),
            agent: rec.agent.clone(),
            reason: rec.reason.clone(),
        };
        let caller = Caller {
            user: rec.requested_by.clone(),
            groups: rec.requested_groups.clone(),
            agent: rec.agent.clone(),
        };
        let done = applier
            .apply_granted(caller, rec.rpc(), rec.change.clone(), &grant)
            .await;
        let (outcome, audit_id, why) = match &done {
            Ok(r) => (ApplyOutcome::Applied, r.audit_id.clone(), String::new()),
            Err(ApplyError::Stale(m)) => (ApplyOutcome::Stale, String::new(), m.clone()),
            Err(e @ (ApplyError::Unavailable(_) | ApplyError::Timeout(_))) => {
                (ApplyOutcome::Unknown, String::new(), e.message().to_owned())
            }
            Err(e) => (ApplyOutcome::Failed, String::new(), e.message().to_owned()),
        };
        let mut rec = rec;
        for _ in 0..RACES {
            let now = self.approval_now();
            let t = approval::step(
                ApprovalState::Applying,
                ApprovalEvent::Outcome(outcome),
                now,
            )
            .map_err(refusal_status)?;
            rec.audit_id.clone_from(&audit_id);
            rec.outcome.clone_from(&why);
            rec.decided_ms = ms(now);
            match self.put_next(&rec, revision, t.to).await? {
                Updated::Written(rev) => {
                    self.approvals_notify();
                    audit(t.to.as_str(), &rec, "mesh-mcp");
                    return Ok(rec.to_pb(t.to, rev, now));
                }
                Updated::Now(now_entry) => {
                    // Another attempt of the same change (a take-over, under the same
                    // preconditions) recorded first. It stands, unless it could not tell and
                    // this one applied: what happened beats "may or may not have".
                    let theirs_state = Self::state_of(&now_entry)?;
                    let unsure =
                        matches!(theirs_state, ApprovalState::Unknown | ApprovalState::Failed);
                    if theirs_state == ApprovalState::Applying
                        || (unsure && outcome == ApplyOutcome::Applied)
                    {
                        revision = now_entry.revision;
                        continue;
                    }
                    let theirs: Stored = serde_json::from_slice(&now_entry.record)
                        .map_err(|e| Status::internal(e.to_string()))?;
                    return Ok(theirs.to_pb(theirs_state, now_entry.revision, now));
                }
                Updated::Missing => {
                    return Err(Status::not_found(format!("no approval request {}", rec.id)));
                }
            }
        }
        Err(Status::aborted(
            "the outcome could not be recorded: the approval request kept changing",
        ))
    }

    /// Rejects a pending request: its requester (or the caller that asked) withdraws it, or an
    /// approver allowed under every rule turns it down.
    pub async fn reject(
        &self,
        caller: Option<Caller>,
        r: pb::DecideApprovalRequest,
    ) -> Result<pb::Approval, Status> {
        let applier = self.approvals_applier()?;
        let delegated = r.on_behalf_of.is_some();
        let (who, caller) = Self::decider(applier, caller, r.on_behalf_of)?;
        let why = reason(&r.reason)?;
        front_end(&r.front_end, applier.is_delegator(&caller))?;
        for _ in 0..RACES {
            let (entry, rec) = self.load_approval(&r.id).await?;
            let state = Self::state_of(&entry)?;
            let now = self.approval_now();
            let policy = applier.approval_policy();
            let need = policy.requirement(&rec.namespaces);
            // The person it is made as withdraws it; so does the caller that asked, unless that
            // caller acts for others (the chatbot): then only the person it acted for.
            let own =
                who.user == rec.acted_as.user || (caller.user == rec.requested_by && !delegated);
            let approver = !policy.is_agent(&who)
                && caller.agent.is_none()
                && need.rules.iter().all(|x| x.approvers.admits(&who));
            if !own && !approver {
                return Err(Status::permission_denied(format!(
                    "{} may not reject this: only its requester or an approver under {} may",
                    who.user, rec.rule
                )));
            }
            let t = approval::step(
                state,
                ApprovalEvent::Reject {
                    expires_at: at_ms(rec.expires_ms),
                },
                now,
            )
            .map_err(refusal_status)?;
            let mut next = rec.clone();
            next.rejected_by.clone_from(&who.user);
            next.rejection_reason.clone_from(&why);
            next.decided_ms = ms(now);
            match self.put_next(&next, entry.revision, t.to).await? {
                Updated::Written(rev) => {
                    self.approvals_notify();
                    audit("rejected", &next, &who.user);
                    return Ok(next.to_pb(t.to, rev, now));
                }
                Updated::Now(_) => {}
                Updated::Missing => {
                    return Err(Status::not_found(format!("no approval request {}", r.id)));
                }
            }
        }
        Err(Status::aborted(
            "the approval request changed too often meanwhile; try again",
        ))
    }

    /// Every pending request now, then every new request and every change of one (this
    /// replica's at once, other replicas' within a second).
    pub fn watch_approvals(&self, r: pb::WatchApprovalsRequest) -> ApprovalStream {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::Approval, Status>>(64);
        let me = self.clone();
        let mut changed = self.approvals_changed.subscribe();
        tokio::spawn(async move {
            // What the watcher has been sent (or told is history): id -> (revision, state).
            let mut seen: HashMap<String, (u64, i32)> = HashMap::new();
            let recent = pb::ListApprovalsRequest {
                namespace: r.namespace,
                ..Default::default()
            };
            let pending: i32 = pb::ApprovalState::Pending.into();
            let mut first = true;
            loop {
                match me.list_approvals(&recent).await {
                    Ok(l) => {
                        // Oldest first, as they happened. The first answer is one snapshot:
                        // what is pending is sent, the rest is history, not news.
                        for a in l.approvals.into_iter().rev() {
                            let key = (a.revision, a.state);
                            if seen.get(&a.id) == Some(&key) {
                                continue;
                            }
                            seen.insert(a.id.clone(), key);
                            if (!first || a.state == pending) && tx.send(Ok(a)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
                first = false;
                // Bounded: what fell out of the newest answers is forgotten.
                if seen.len() > 4 * MAX_LIST {
                    seen.clear();
                    first = true;
                }
                tokio::select! {
                    () = tx.closed() => return,
                    r = changed.changed() => if r.is_err() { return },
                    () = tokio::time::sleep(WATCH_POLL) => {}
                }
            }
        });
        Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }))
    }
}
