//! Two-person approval of policy changes: a dry-run as the requester, a card, and an apply as
//! the requester once someone allowed to approve clicks. Pending approvals live in the store
//! with a TTL; every state change is one atomic transition, so a second click, a click on an
//! expired card or a restart of the bot never applies twice.

use std::{
    fmt::Write as _,
    sync::Arc,
    time::{Duration, SystemTime},
};

use mesh_model::{
    Clock, SystemClock,
    approval::{self, ApplyOutcome, ApprovalEvent, ApprovalState, Refusal},
};
use mesh_proto::pb;
use mesh_store::{ApprovalStore, Transition};
use serde::{Deserialize, Serialize};

use crate::{
    command::ApplyKind,
    core::{Mcp, status_reply},
    identity::{Identities, KubeIdentity, Platform},
    mcp_error::McpError,
    metrics::Metrics,
    reply::{Button, ButtonStyle, Reply, Tone},
};

/// Largest manifest accepted from a form (a policy change is a few objects, not a chart).
pub const MAX_MANIFEST: usize = 16 * 1024;

/// A requested change, as stored while it waits.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Approval {
    /// Its id (in button values).
    pub id: String,
    /// Which RPC applies it.
    pub kind: ApplyKind,
    /// The manifest, exactly as dry-run.
    pub manifest: String,
    /// Why, as the requester said.
    pub reason: String,
    /// Where it was asked.
    pub platform: Platform,
    /// The requester's chat user id.
    pub requester_chat: String,
    /// The requester's Kubernetes identity (the change is made as it).
    pub requester: KubeIdentity,
    /// The main object's namespace.
    pub namespace: String,
    /// Every namespace the change writes to: an approver must be allowed in each.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// The main object: `Kind namespace/name`.
    pub target: String,
    /// Its resourceVersion when dry-run (empty: it did not exist).
    pub expected_resource_version: String,
    /// What the dry-run would do to each object.
    pub actions: Vec<String>,
    /// The unified diff.
    pub diff: String,
    /// The what-if: edges whose decision changes, with their rates.
    pub affected: Vec<String>,
    /// Warnings from the dry-run.
    pub warnings: Vec<String>,
    /// Audit id of the dry-run.
    pub dry_run_audit_id: String,
    /// When it stops being approvable (seconds since the epoch).
    pub expires_at: u64,
    /// Every other object of the change as the dry-run found it (an empty resourceVersion:
    /// absent). The approved apply fails if any of them moved.
    #[serde(default)]
    pub reviewed: Vec<pb::ObjectPrecondition>,
    /// A rollout step rather than a manifest: applied with `AdvanceRollout`.
    #[serde(default)]
    pub rollout: Option<crate::rollouts::RolloutStep>,
}

/// What a click does.
#[derive(Clone, Debug, Default)]
pub struct ClickOutcome {
    /// The card, redrawn (outcome, expiry); `None`: leave it.
    pub card: Option<Reply>,
    /// A reply only the clicker sees (why nothing happened).
    pub private: Option<Reply>,
    /// A new message in the channel (the approval card of a rollout step).
    pub post: Option<Reply>,
}

impl ClickOutcome {
    /// Redraws the card as `r`.
    pub(crate) fn card(r: Reply) -> Self {
        Self {
            card: Some(r),
            ..Self::default()
        }
    }
    /// Answers the clicker alone with `r`.
    pub(crate) fn private(r: Reply) -> Self {
        Self {
            private: Some(r),
            ..Self::default()
        }
    }
}

/// The approval flow over a store.
#[derive(Clone)]
pub struct Approvals<S> {
    store: S,
    mcp: Mcp,
    identities: Identities,
    metrics: Metrics,
    retry_after: Duration,
    clock: Arc<dyn Clock>,
}

pub(crate) fn new_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let salt = std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), nanos);
    format!("a{salt:016x}")
}

/// A record's `expires_at` (seconds since the epoch) as a time.
fn unix(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn who(k: &KubeIdentity) -> String {
    if k.groups.is_empty() {
        k.user.clone()
    } else {
        format!("{} [{}]", k.user, k.groups.join(", "))
    }
}

fn decision(d: i32) -> &'static str {
    match pb::policy_verdict::Decision::try_from(d).unwrap_or_default() {
        pb::policy_verdict::Decision::Allowed => "allowed",
        pb::policy_verdict::Decision::Denied => "DENIED",
        pb::policy_verdict::Decision::Audit => "audit",
        _ => "unknown",
    }
}

/// Every namespace a dry-run's change writes to, and `main`'s: an approver must be allowed in
/// each.
pub(crate) fn written_namespaces(dry: &pb::ApplyResponse, main: &str) -> Vec<String> {
    let mut ns: Vec<String> = dry.objects.iter().map(|o| o.namespace.clone()).collect();
    ns.push(main.to_owned());
    ns.sort();
    ns.dedup();
    ns
}

/// The what-if of a dry-run, one line per observed edge whose decision changes.
pub(crate) fn affected_lines(dry: &pb::ApplyResponse) -> Vec<String> {
    dry.affected_edges
        .iter()
        .map(|e| {
            format!(
                "{}  {} -> {}  {:.2} rps",
                e.edge.as_ref().map(edge_name).unwrap_or_default(),
                decision(e.before),
                decision(e.after),
                e.rps
            )
        })
        .collect()
}

fn edge_name(e: &pb::EdgeRef) -> String {
    let w = |r: &Option<pb::WorkloadRef>| {
        r.as_ref()
            .map(|r| format!("{}/{}", r.namespace, r.name))
            .unwrap_or_default()
    };
    let dst = if e.dst.is_some() {
        w(&e.dst)
    } else {
        e.dst_authority.clone()
    };
    format!("{} -> {dst}", w(&e.src))
}

impl<S: ApprovalStore + Clone> Approvals<S> {
    /// The flow over `store`, calling `mcp`, with users and approvers from `identities`.
    pub fn new(store: S, mcp: Mcp, identities: Identities, metrics: Metrics) -> Self {
        Self {
            store,
            mcp,
            identities,
            metrics,
            retry_after: Duration::from_secs(120),
            clock: Arc::new(SystemClock),
        }
    }

    /// Reads the time from `clock` (expiry of approvals) instead of the wall clock.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn now_unix(&self) -> u64 {
        self.clock
            .now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
    }

    /// An approval left `applying` this long (its replica died mid-apply) is applied again on
    /// the next Approve click, under the same preconditions, so it is never stuck and never
    /// applied twice. Longer than a change's deadline.
    #[must_use]
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = after;
        self
    }

    /// The Kubernetes identity of a chat user, or the reply telling them they are not mapped.
    pub fn identity(
        &self,
        platform: Platform,
        chat_user: &str,
    ) -> Result<KubeIdentity, Box<Reply>> {
        self.identities
            .borrow()
            .lookup(platform, chat_user)
            .cloned()
            .ok_or_else(|| {
                Box::new(Reply::refusal(
                    "You are not mapped to a Kubernetes identity",
                    format!(
                        "Your {platform} user id {chat_user} is not in the bot's identity map, so \
                         nothing runs for you. Ask the platform team to add you."
                    ),
                ))
            })
    }

    /// A change asked for in chat: an approval request of mesh-mcp, made for the requester
    /// (dry-run as them; refusals come back at once and no card is posted). Returns the card,
    /// and the request's id when it is one (for the card to be kept current).
    pub async fn request(
        &self,
        platform: Platform,
        chat_user: &str,
        kind: ApplyKind,
        manifest: &str,
        reason: &str,
    ) -> (Reply, Option<String>) {
        let requester = match self.identity(platform, chat_user) {
            Ok(k) => k,
            Err(r) => return (*r, None),
        };
        if manifest.trim().is_empty() {
            return (
                Reply::refusal(
                    "No manifest",
                    "The form was empty: paste the YAML of the change.",
                ),
                None,
            );
        }
        if manifest.len() > MAX_MANIFEST {
            return (
                Reply::refusal(
                    "Manifest too large",
                    format!(
                        "The manifest is {} bytes; at most {MAX_MANIFEST}. One policy change at a time.",
                        manifest.len()
                    ),
                ),
                None,
            );
        }
        // One line: mesh-mcp refuses control characters in what reaches the audit trail.
        let reason = reason
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .take(200)
            .collect::<String>();
        let req = pb::RequestApprovalRequest {
            kind: match kind {
                ApplyKind::Authz => pb::ChangeKind::AuthorizationPolicy,
                ApplyKind::Route => pb::ChangeKind::HttpRoute,
            }
            .into(),
            change: Some(pb::ApplyRequest {
                source: Some(pb::apply_request::Source::Manifest(manifest.to_owned())),
                on_behalf_of: Some(pb::Identity {
                    user: requester.user.clone(),
                    groups: requester.groups.clone(),
                }),
                reason: if reason.is_empty() {
                    format!("asked in {platform}")
                } else {
                    reason
                },
                ..Default::default()
            }),
            agent: String::new(),
            front_end: "chat".into(),
        };
        let mcp = self.mcp.clone();
        let asked = match mcp.change_request(req) {
            Ok(r) => mcp
                .client()
                .request_approval(r)
                .await
                .map(tonic::Response::into_inner)
                .map_err(McpError::from),
            Err(e) => Err(e),
        };
        match asked {
            Ok(a) => {
                self.metrics.approval("requested");
                (crate::requests::card(&a), Some(a.id))
            }
            Err(e) if e.message().starts_with("no change") => {
                let r = Reply::new("No change: the cluster already holds this")
                    .text("The dry-run changed nothing, so there is nothing to approve.");
                (r, None)
            }
            Err(e) => {
                self.metrics.approval("refused_at_dry_run");
                (
                    status_reply("Your change was refused at the dry-run (as you)", &e),
                    None,
                )
            }
        }
    }

    /// Stores a dry-run change as a pending approval (expiring after the map's TTL) and
    /// returns its card; a change that changes nothing, or a store that does not answer, is
    /// the reply instead.
    pub(crate) async fn put_pending(&self, mut a: Approval) -> Result<Reply, Reply> {
        let map = self.identities.borrow().clone();
        a.expires_at = self.now_unix() + map.approval_ttl.as_secs();
        if a.actions.iter().all(|x| x.starts_with("unchanged")) {
            return Err(
                Reply::new(format!("No change: {} is already as written", a.target))
                    .text("The dry-run changed nothing, so there is nothing to approve."),
            );
        }
        let record = serde_json::to_vec(&a)
            .map_err(|e| Reply::refusal("Could not record the request", e.to_string()))?;
        if let Err(e) = self
            .store
            .put_approval(&a.id, record, map.approval_ttl)
            .await
        {
            return Err(Reply::refusal(
                "Could not record the request",
                format!("The store is unavailable ({e}); nothing was changed. Try again shortly."),
            ));
        }
        self.metrics.approval("requested");
        Ok(pending_card(&a, map.approval_ttl))
    }

    /// The mesh service this flow calls.
    pub(crate) fn mcp(&self) -> &Mcp {
        &self.mcp
    }

    /// The bot's metrics.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The identity map in force.
    pub(crate) fn identities(&self) -> &Identities {
        &self.identities
    }

    /// A button click: `approve`, `reject` or `redo` on approval `id`.
    pub async fn click(
        &self,
        platform: Platform,
        chat_user: &str,
        action: &str,
        id: &str,
    ) -> ClickOutcome {
        if id.starts_with(crate::requests::ID_PREFIX) {
            return self.decide(platform, chat_user, action, id).await;
        }
        let clicker = match self.identity(platform, chat_user) {
            Ok(k) => k,
            Err(r) => return ClickOutcome::private(*r),
        };
        if let Some(step) = action.strip_prefix("rollout-") {
            return self
                .rollout_click(platform, chat_user, clicker, step, id)
                .await;
        }
        let entry = match self.store.get_approval(id).await {
            Ok(Some(e)) => e,
            Ok(None) => {
                self.metrics.approval("expired_click");
                return ClickOutcome::card(expired_card());
            }
            Err(e) => {
                return ClickOutcome::private(store_down(&e));
            }
        };
        let a: Approval = match serde_json::from_slice(&entry.record) {
            Ok(a) => a,
            Err(e) => {
                return ClickOutcome::private(Reply::refusal("Unreadable request", e.to_string()));
            }
        };
        let Some(state) = ApprovalState::parse(&entry.state) else {
            return ClickOutcome::private(unknown_state(&entry.state));
        };
        if approval::expired(unix(a.expires_at), self.clock.now()) {
            return self.refused(Refusal::Expired, "");
        }
        let map = self.identities.borrow().clone();
        let is_requester = clicker.user == a.requester.user;
        let namespaces = if a.namespaces.is_empty() {
            std::slice::from_ref(&a.namespace)
        } else {
            a.namespaces.as_slice()
        };
        let denied_in: Vec<&str> = namespaces
            .iter()
            .filter(|ns| !map.may_approve(&clicker, ns))
            .map(String::as_str)
            .collect();
        let approver = denied_in.is_empty();
        match action {
            "approve" if a.rollout.is_none() => ClickOutcome::private(Reply::refusal(
                "Ask again",
                "This card predates mesh-mcp's approval requests, which every change now goes \
                 through; nothing was applied. Ask again with `/mesh authz apply` or \
                 `/mesh route apply`.",
            )),
            "approve" => {
                if is_requester && !map.allow_self_approval {
                    self.metrics.approval("self_approval_refused");
                    return ClickOutcome::private(Reply::refusal(
                        "You cannot approve your own change",
                        "Someone else allowed to approve must click Approve.",
                    ));
                }
                if !approver {
                    self.metrics.approval("approver_refused");
                    return ClickOutcome::private(Reply::refusal(
                        "You may not approve this",
                        format!(
                            "{} is not an approver for namespace {} (the change writes to {}).",
                            clicker.user,
                            denied_in.join(", "),
                            namespaces.join(", ")
                        ),
                    ));
                }
                // Made as the requester as the map knows them now: someone removed from it,
                // or given other groups, since asking must not act with what they had then.
                let mut a = a;
                match map.lookup(a.platform, &a.requester_chat) {
                    Some(now) if now.user == a.requester.user => a.requester = now.clone(),
                    Some(now) => {
                        self.metrics.approval("requester_changed");
                        return ClickOutcome::private(Reply::refusal(
                            "The requester's identity changed",
                            format!(
                                "{} asked as {}, but the identity map now maps them to {}; \
                                 nothing was applied. They can ask again.",
                                a.requester_chat, a.requester.user, now.user
                            ),
                        ));
                    }
                    None => {
                        self.metrics.approval("requester_unmapped");
                        return ClickOutcome::private(Reply::refusal(
                            "The requester is no longer mapped",
                            format!(
                                "{} ({}) is no longer in the bot's identity map, so the change \
                                 cannot be made as them; nothing was applied.",
                                a.requester.user, a.requester_chat
                            ),
                        ));
                    }
                }
                self.approve(a, &clicker, state, &entry.by).await
            }
            "reject" => {
                if !is_requester && !approver {
                    return ClickOutcome::private(Reply::refusal(
                        "You may not reject this",
                        "Only the requester or an approver can.",
                    ));
                }
                match self
                    .advance(
                        id,
                        state,
                        ApprovalEvent::Reject {
                            expires_at: unix(a.expires_at),
                        },
                        &clicker.user,
                        &entry.by,
                    )
                    .await
                {
                    Ok(_) => {
                        self.metrics.approval(ApprovalState::Rejected.as_str());
                        let mut r = base_card(&a, format!("Rejected: {}", a.target))
                            .field("Rejected by", clicker.user.clone())
                            .text("Nothing was applied.");
                        r.tone = Tone::Bad;
                        ClickOutcome::card(r)
                    }
                    Err(refused) => refused,
                }
            }
            "redo" => {
                if !is_requester && !approver {
                    return ClickOutcome::private(Reply::refusal(
                        "You may not do this",
                        "Only the requester or an approver can ask for a fresh dry-run.",
                    ));
                }
                match self
                    .advance(
                        id,
                        state,
                        ApprovalEvent::Redo {
                            expires_at: unix(a.expires_at),
                        },
                        &clicker.user,
                        &entry.by,
                    )
                    .await
                {
                    Ok(_) if let Some(step) = a.rollout.clone() => {
                        let again = self
                            .rollout_click(
                                a.platform,
                                &a.requester_chat,
                                a.requester.clone(),
                                &step.action,
                                &step.id,
                            )
                            .await;
                        ClickOutcome {
                            card: again.post,
                            private: again.private,
                            post: None,
                        }
                    }
                    Ok(_) => ClickOutcome::card(
                        self.request(
                            a.platform,
                            &a.requester_chat,
                            a.kind,
                            &a.manifest,
                            &a.reason,
                        )
                        .await
                        .0,
                    ),
                    Err(refused) => refused,
                }
            }
            other => ClickOutcome::private(Reply::refusal(
                "Unknown button",
                format!(
                    "`{}` is not an action of this bot.",
                    crate::command::clip(other)
                ),
            )),
        }
    }

    /// Makes what `event` does to the approval in `state` happen in the store, atomically; on a
    /// lost race (another click, another replica) says what won. Returns the transition made.
    async fn advance(
        &self,
        id: &str,
        state: ApprovalState,
        event: ApprovalEvent,
        by: &str,
        was_by: &str,
    ) -> Result<approval::Transition, ClickOutcome> {
        let t =
            approval::step(state, event, self.clock.now()).map_err(|r| self.refused(r, was_by))?;
        match self
            .store
            .transition_after(id, t.from.as_str(), t.to.as_str(), by, t.min_age)
            .await
        {
            Ok(Transition::Moved(_)) => Ok(t),
            Ok(Transition::Now { state, by }) => Err(match ApprovalState::parse(&state) {
                Some(now_in) => self.refused(approval::refusal_after_race(now_in, t), &by),
                None => ClickOutcome::private(unknown_state(&state)),
            }),
            Ok(Transition::Missing) => Err(self.refused(Refusal::Expired, "")),
            Err(e) => Err(ClickOutcome::private(store_down(&e))),
        }
    }

    /// What a click that moved nothing shows, and counts.
    fn refused(&self, r: Refusal, by: &str) -> ClickOutcome {
        self.metrics.approval(r.metric_label());
        match r {
            Refusal::Expired => ClickOutcome::card(expired_card()),
            Refusal::InProgress => ClickOutcome::private(Reply::refusal(
                "Already being applied",
                format!(
                    "{by} approved it and it is being applied; nothing more was done. If no \
                     outcome appears within {}, click Approve again to retry it safely.",
                    humantime::format_duration(self.retry_after)
                ),
            )),
            Refusal::Decided(state) => ClickOutcome::private(Reply::refusal(
                "Already decided",
                format!("This request is {state} (by {by}); nothing more was done."),
            )),
            Refusal::NothingToRedo(state) => ClickOutcome::private(Reply::refusal(
                "Nothing to redo",
                format!("This request is {state} already."),
            )),
            Refusal::NotApplying(state) => ClickOutcome::private(Reply::refusal(
                "Nothing is being applied",
                format!("This request is {state}; nothing more was done."),
            )),
        }
    }

    async fn approve(
        &self,
        a: Approval,
        approver: &KubeIdentity,
        state: ApprovalState,
        was_by: &str,
    ) -> ClickOutcome {
        // Taken over only when the earlier attempt has gone unconfirmed for longer than a
        // change may take: its replica died. The preconditions make a second apply safe: an
        // object the first attempt changed or created is refused as changed.
        let t = match self
            .advance(
                &a.id,
                state,
                ApprovalEvent::Approve {
                    expires_at: unix(a.expires_at),
                    retry_after: self.retry_after,
                },
                &approver.user,
                was_by,
            )
            .await
        {
            Ok(t) => t,
            Err(refused) => return refused,
        };
        let earlier = t.is_take_over().then(|| was_by.to_owned());
        let reason = if a.reason.is_empty() {
            format!("approved in {} by {}", a.platform, approver.user)
        } else {
            format!(
                "{} (approved in {} by {})",
                a.reason, a.platform, approver.user
            )
        };
        let req = pb::ApplyRequest {
            source: Some(pb::apply_request::Source::Manifest(a.manifest.clone())),
            dry_run: false,
            expected_resource_version: a.expected_resource_version.clone(),
            // A new object must still be new: nobody created it since the dry-run.
            expect_absent: a.expected_resource_version.is_empty(),
            on_behalf_of: Some(pb::Identity {
                user: a.requester.user.clone(),
                groups: a.requester.groups.clone(),
            }),
            approved_by: approver.user.clone(),
            reason,
            preconditions: a.reviewed.clone(),
            ..Default::default()
        };
        let res = match &a.rollout {
            Some(step) => self.apply_step(step, req).await,
            // Other changes are mesh-mcp's approval requests now (`click` sends such a card's
            // Approve there); a card from before that has nothing to apply here.
            None => Err(McpError::Refused(
                "this card predates mesh-mcp's approval requests: ask again with /mesh authz apply"
                    .into(),
            )),
        };
        let (outcome, card) = match res {
            Ok(r) => {
                let mut c = base_card(&a, format!("Applied: {}", a.target))
                    .field("Approved by", approver.user.clone())
                    .field("Audit id", r.audit_id.clone());
                let done: String = r.objects.iter().fold(String::new(), |mut s, o| {
                    let _ = writeln!(s, "{} {} {}/{}", o.action, o.kind, o.namespace, o.name);
                    s
                });
                c = c.code(done, "applied.txt");
                c.tone = Tone::Good;
                (ApplyOutcome::Applied, c)
            }
            Err(e @ McpError::Stale(_)) => {
                let mut c = base_card(&a, format!("Not applied: {} changed", a.target))
                    .field("Approved by", approver.user.clone())
                    .text(
                        "The object changed since the dry-run that was reviewed, so nothing was \
                         applied. Ask for a fresh dry-run to review the change again.",
                    )
                    .code(e.message().to_owned(), "error.txt");
                c.tone = Tone::Bad;
                c.buttons.push(Button {
                    label: "Dry-run again".into(),
                    action: "redo".into(),
                    value: a.id.clone(),
                    style: ButtonStyle::Plain,
                });
                (ApplyOutcome::Stale, c)
            }
            Err(e) if e.outcome_unknown() => {
                // The request may have been applied: say so, never "nothing happened".
                let mut c = base_card(&a, format!("Outcome unknown: {}", a.target))
                    .field("Approved by", approver.user.clone())
                    .text(
                        "The mesh service did not confirm the apply, so it may or may not have \
                         happened. Check the object's linkerd-mcp.io/approved-by annotation or \
                         mesh-mcp's audit log before asking again.",
                    )
                    .code(e.message().to_owned(), "error.txt");
                c.tone = Tone::Warn;
                (ApplyOutcome::Unknown, c)
            }
            Err(s) => {
                let mut c = base_card(&a, format!("Not applied: {}", a.target))
                    .field("Approved by", approver.user.clone())
                    .text("The apply was refused; nothing was left half-done.")
                    .code(s.message().to_owned(), "error.txt");
                c.tone = Tone::Bad;
                (ApplyOutcome::Failed, c)
            }
        };
        self.metrics.approval(outcome.state().as_str());
        let card = match &earlier {
            Some(by) => card.note(format!(
                "An earlier attempt approved by {by} was never confirmed; this click applied it \
                 again under the same preconditions (if that attempt did change the object, it \
                 shows as changed here)."
            )),
            None => card,
        };
        let recorded = self
            .advance(
                &a.id,
                ApprovalState::Applying,
                ApprovalEvent::Outcome(outcome),
                &approver.user,
                was_by,
            )
            .await;
        if recorded.is_err() {
            tracing::error!(id = %a.id, state = %outcome.state(), "could not record the outcome of an approval");
        }
        ClickOutcome::card(card)
    }
}

fn base_card(a: &Approval, title: String) -> Reply {
    Reply::new(title)
        .field(
            "Requested by",
            format!("{} ({} {})", a.requester.user, a.platform, a.requester_chat),
        )
        .field("Acts as", who(&a.requester))
        .field("Target", a.target.clone())
}

/// The card asking for approval.
pub fn pending_card(a: &Approval, ttl: Duration) -> Reply {
    let mut r = base_card(a, format!("Approval needed: {}", a.target))
        .field("Expires in", humantime::format_duration(ttl).to_string());
    if !a.reason.is_empty() {
        r = r.field("Reason", a.reason.clone());
    }
    r = r.code(a.actions.join("\n"), "objects.txt");
    if a.affected.is_empty() {
        r = r.text("What-if: no observed edge changes its decision.");
    } else {
        r = r
            .text("What-if: observed edges whose decision changes")
            .code(a.affected.join("\n"), "affected-edges.txt");
    }
    for w in &a.warnings {
        r = r.note(format!("Warning: {w}"));
    }
    r = r.code(a.diff.clone(), "diff.txt");
    r.tone = if a.warnings.is_empty() {
        Tone::Info
    } else {
        Tone::Warn
    };
    r.buttons = decision_buttons(&a.id);
    r.note(format!(
        "Dry-run audit id {}. An approver other than the requester applies it as the requester.",
        a.dry_run_audit_id
    ))
}

/// Approve and Reject for approval `id`.
pub(crate) fn decision_buttons(id: &str) -> Vec<Button> {
    vec![
        Button {
            label: "Approve".into(),
            action: "approve".into(),
            value: id.to_owned(),
            style: ButtonStyle::Good,
        },
        Button {
            label: "Reject".into(),
            action: "reject".into(),
            value: id.to_owned(),
            style: ButtonStyle::Danger,
        },
    ]
}

/// Why a click did nothing while the store did not answer.
fn store_down(e: &mesh_store::StoreError) -> Reply {
    Reply::refusal(
        "Try again shortly",
        format!("The store is unavailable ({e}); nothing was changed."),
    )
}

/// Why a click did nothing on an approval in a state this bot does not know.
fn unknown_state(state: &str) -> Reply {
    Reply::refusal(
        "Unreadable request",
        format!("Unknown approval state {state:?}."),
    )
}

fn expired_card() -> Reply {
    let mut r = Reply::new("This approval has expired")
        .text("Nothing was applied. Ask again with `/mesh authz apply` or `/mesh route apply`.");
    r.tone = Tone::Bad;
    r
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
    use mesh_store::Backend;

    use super::*;
    use crate::{core::Token, identity::IdentityMap};

    /// A clock stopped at one moment.
    struct At(SystemTime);

    impl Clock for At {
        fn now(&self) -> SystemTime {
            self.0
        }
    }

    const MAP: &str = "users:\n  \
        - { slack: U0ALICE, kubernetes: { user: alice, groups: [devs] } }\n  \
        - { slack: U0BOB, kubernetes: { user: bob, groups: [mesh-admins] } }\n\
        approvers: { groups: [mesh-admins] }\n";

    /// Alice's pending approval that expires at `expires_at`, in a store, and the flow over it
    /// reading the time from `clock`. The mesh service is never reached by these clicks.
    async fn pending(expires_at: u64, clock: SystemTime) -> (Approvals<Backend>, String) {
        let store = Backend::memory();
        let alice = KubeIdentity {
            user: "alice".into(),
            groups: vec!["devs".into()],
        };
        let a = Approval {
            id: "a1".into(),
            kind: ApplyKind::Authz,
            manifest: String::new(),
            reason: String::new(),
            platform: Platform::Slack,
            requester_chat: "U0ALICE".into(),
            requester: alice,
            namespace: "shop".into(),
            namespaces: vec!["shop".into()],
            target: "AuthorizationPolicy shop/web".into(),
            expected_resource_version: String::new(),
            actions: Vec::new(),
            diff: String::new(),
            affected: Vec::new(),
            warnings: Vec::new(),
            dry_run_audit_id: String::new(),
            expires_at,
            reviewed: Vec::new(),
            rollout: None,
        };
        let ttl = Duration::from_secs(3600);
        store
            .put_approval(&a.id, serde_json::to_vec(&a).unwrap(), ttl)
            .await
            .unwrap();
        let mcp = Mcp::new("127.0.0.1:1", Token::None, Duration::from_secs(1)).unwrap();
        let identities = tokio::sync::watch::channel(Arc::new(IdentityMap::parse(MAP).unwrap())).1;
        let flow = Approvals::new(store, mcp, identities, Metrics::default())
            .with_clock(Arc::new(At(clock)));
        (flow, a.id)
    }

    #[tokio::test]
    async fn expiry_is_decided_by_the_injected_clock_without_waiting() {
        let deadline = 1_000_000;
        // One second before the deadline the requester may still reject it.
        let (flow, id) = pending(deadline, unix(deadline - 1)).await;
        let c = flow.click(Platform::Slack, "U0ALICE", "reject", &id).await;
        assert_eq!(
            c.card.unwrap().title,
            "Rejected: AuthorizationPolicy shop/web"
        );
        // At the deadline, the store still holding it, an approver's click finds it expired.
        let (flow, id) = pending(deadline, unix(deadline)).await;
        let c = flow.click(Platform::Slack, "U0BOB", "approve", &id).await;
        assert_eq!(c.card.unwrap().title, "This approval has expired");
    }
}
