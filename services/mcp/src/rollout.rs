//! Staged rollouts of least-privilege policy: `StartRollout`, `GetRollout`, `ListRollouts` and
//! `AdvanceRollout`. The state machine and the gate are `mesh_model::rollout`'s; this module
//! keeps each rollout in the store (`<prefix>rollouts:<id>`, compare-and-set on its revision),
//! reads the gate's evidence from Prometheus, and runs every phase change through the
//! policy-change pipeline as the requester.
//!
//! ```text
//!  StartRollout ─> ProposePolicy (audit form) ─> stored, proposed
//!  AdvanceRollout(AUDIT|ENFORCE|ROLLBACK) ─> step() ─> CAS to moving ─> pipeline (or delete)
//!       ─> CAS to the target phase (applied) or back (refused), with the history
//!  AdvanceRollout(REPROPOSE) ─> ProposePolicy again ─> the plan, merged, CAS (nothing applied)
//! ```

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime},
};

use mesh_model::rollout::{self, Action, Event, Gate, Phase, RolloutState, WouldBeDenied};
use mesh_proto::pb::{self, advance_rollout_request::Action as PbAction};
use mesh_store::{RecordStore, Shelf, Updated};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tonic::Status;

use crate::{Caller, GraphService};

/// How long an audit phase must show no would-be denials, unless the rollout says otherwise.
pub const DEFAULT_OBSERVE: Duration = Duration::from_secs(30 * 60);

/// The longest observation a rollout may ask for.
const MAX_OBSERVE: Duration = Duration::from_secs(30 * 24 * 3600);

/// The first moments after an apply are not evidence: the proxies take a moment to receive the
/// new policy, and Prometheus a scrape to see them count under it.
pub const SETTLE: Duration = Duration::from_secs(10);

/// A move left unconfirmed this long (its replica died mid-apply) may be made again.
const RETRY_AFTER: Duration = Duration::from_secs(120);

/// The clock rollouts are stamped and gated with (the wall clock unless a test chooses).
#[derive(Clone)]
pub struct SharedClock(pub std::sync::Arc<dyn mesh_model::Clock>);

impl Default for SharedClock {
    fn default() -> Self {
        Self(std::sync::Arc::new(mesh_model::SystemClock))
    }
}

impl std::fmt::Debug for SharedClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedClock")
    }
}

impl SharedClock {
    pub(crate) fn now(&self) -> SystemTime {
        self.0.now()
    }
}

/// A rollout as stored (JSON under `<prefix>rollouts:<id>`; the state is the entry's own).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Record {
    id: String,
    namespace: String,
    workload: String,
    requested_by: String,
    created_ms: u64,
    observe_for_secs: u64,
    /// Per-route authorizations, also when re-proposed.
    #[serde(default)]
    per_route: bool,
    /// The plan, in audit form, in apply order.
    plan: Vec<pb::ProposedObject>,
    needs_action: Vec<pb::CallerNeedingAction>,
    notes: Vec<String>,
    /// Bumped by each re-proposal that changed the plan.
    plan_revision: u64,
    /// The plan revision last applied; behind `plan_revision`: a re-proposal waits.
    applied_plan_revision: u64,
    /// `Kind namespace/name` -> the resourceVersion this rollout last wrote.
    written: BTreeMap<String, String>,
    /// Objects the rollout created (withdrawing deletes them).
    created: Vec<String>,
    observing_since_ms: Option<u64>,
    moving_since_ms: Option<u64>,
    history: Vec<pb::RolloutStep>,
    last_error: String,
}

fn key(kind: &str, namespace: &str, name: &str) -> String {
    format!("{kind} {namespace}/{name}")
}

/// Milliseconds since the epoch (how records keep their times).
pub(crate) fn ms(t: SystemTime) -> u64 {
    u64::try_from(
        t.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(u64::MAX)
}

/// The time a record's milliseconds since the epoch name.
pub(crate) fn at_ms(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

fn timestamp(ms: u64) -> pbjson_types::Timestamp {
    pbjson_types::Timestamp {
        seconds: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
        nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
    }
}

fn duration(d: Duration) -> pbjson_types::Duration {
    pbjson_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: 0,
    }
}

fn store_error(e: &mesh_store::StoreError) -> Status {
    Status::unavailable(format!("the rollout store is unavailable: {e}"))
}

fn new_id(namespace: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let salt = std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), nanos);
    format!("{namespace}-{:08x}", salt & 0xffff_ffff)
}

/// A proposal's notes, with every observed call it would deny first-class among them.
fn plan_notes(notes: Vec<String>, newly_denied: &[String]) -> Vec<String> {
    notes
        .into_iter()
        .chain(
            newly_denied
                .iter()
                .map(|d| format!("WOULD DENY OBSERVED TRAFFIC: {d}")),
        )
        .collect()
}

/// Why a request moves nothing, as the caller's status.
fn refusal(r: &rollout::Refusal) -> Status {
    match r {
        rollout::Refusal::InProgress(_) => Status::aborted(r.to_string()),
        _ => Status::failed_precondition(r.to_string()),
    }
}

/// The plan in `phase`'s form: Servers the rollout proposed at `accessPolicy` audit or deny.
fn phase_manifest(plan: &[pb::ProposedObject], phase: Phase) -> Result<String, Status> {
    let access = if phase == Phase::Enforced {
        "deny"
    } else {
        "audit"
    };
    let mut docs = Vec::with_capacity(plan.len());
    for o in plan {
        let mut v: Value = serde_json::from_str(&o.manifest_json).map_err(|e| {
            Status::internal(format!("the stored plan's {} {}: {e}", o.kind, o.name))
        })?;
        if o.kind == "Server" {
            v["spec"]["accessPolicy"] = json!(access);
        }
        docs.push(v.to_string());
    }
    Ok(docs.join("\n---\n"))
}

impl Record {
    /// Each plan object held to what this rollout last wrote, or to being absent.
    fn preconditions(&self, only: Option<&[String]>) -> Vec<pb::ObjectPrecondition> {
        self.plan
            .iter()
            .filter(|o| only.is_none_or(|keys| keys.contains(&key(&o.kind, &o.namespace, &o.name))))
            .map(|o| pb::ObjectPrecondition {
                kind: o.kind.clone(),
                namespace: o.namespace.clone(),
                name: o.name.clone(),
                resource_version: self
                    .written
                    .get(&key(&o.kind, &o.namespace, &o.name))
                    .cloned()
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// A re-proposed plan waits to be applied (nothing applied yet is not "re-proposed").
    fn plan_pending(&self) -> bool {
        self.applied_plan_revision > 0 && self.plan_revision > self.applied_plan_revision
    }

    fn step(&mut self, now: SystemTime, from: &str, to: &str, by: &str, approved_by: &str) {
        self.history.push(pb::RolloutStep {
            at: Some(timestamp(ms(now))),
            from: from.to_owned(),
            to: to.to_owned(),
            by: by.to_owned(),
            approved_by: approved_by.to_owned(),
            ..Default::default()
        });
    }

    fn to_pb(
        &self,
        state: RolloutState,
        revision: u64,
        gate: Option<pb::RolloutGate>,
    ) -> pb::Rollout {
        let next: Vec<String> = match state {
            RolloutState::Moving { .. } => Vec::new(),
            RolloutState::At(Phase::Proposed) => {
                vec!["audit".into(), "repropose".into(), "rollback".into()]
            }
            RolloutState::At(Phase::Audit) => {
                let mut n = vec!["enforce".into(), "repropose".into(), "rollback".into()];
                if self.plan_pending() {
                    n.insert(0, "audit".into());
                }
                n
            }
            RolloutState::At(Phase::Enforced) => {
                let mut n = vec!["repropose".into(), "rollback".into()];
                if self.plan_pending() {
                    n.insert(0, "enforce".into());
                }
                n
            }
            RolloutState::At(Phase::Withdrawn) => Vec::new(),
        };
        let yaml = std::iter::once(format!(
            "# Rollout {} of {}: the plan in audit form (ENFORCE switches its Servers to deny).\n",
            self.id,
            self.target()
        ))
        .chain(self.needs_action.iter().map(|n| {
            let callee = n
                .callee
                .as_ref()
                .map(|c| format!("{}/{}", c.namespace, c.name))
                .unwrap_or_default();
            format!(
                "# needs action: {} -> {callee} ({:.2} rps): {}\n",
                n.caller, n.rps, n.advice
            )
        }))
        .chain(self.plan.iter().map(|o| {
            let why: String = o.justification.iter().map(|w| format!("# {w}\n")).collect();
            let v: Value = serde_json::from_str(&o.manifest_json).unwrap_or_default();
            format!(
                "---\n{why}{}",
                serde_yaml_ng::to_string(&v).unwrap_or_default()
            )
        }))
        .collect();
        pb::Rollout {
            id: self.id.clone(),
            namespace: self.namespace.clone(),
            workload: self.workload.clone(),
            phase: state.word(),
            revision,
            objects: self.plan.clone(),
            needs_action: self.needs_action.clone(),
            gate,
            history: self.history.clone(),
            requested_by: self.requested_by.clone(),
            observe_for: Some(duration(Duration::from_secs(self.observe_for_secs))),
            observing_since: self.observing_since_ms.map(timestamp),
            notes: self.notes.clone(),
            yaml,
            last_error: self.last_error.clone(),
            next,
            plan_pending: self.plan_pending(),
        }
    }

    fn target(&self) -> String {
        if self.workload.is_empty() {
            format!("namespace {}", self.namespace)
        } else {
            format!("{}/{}", self.namespace, self.workload)
        }
    }

    /// Whether traffic into `dst` is this rollout's to watch.
    fn covers(&self, dst: &mesh_model::WorkloadRef) -> bool {
        dst.namespace == self.namespace && (self.workload.is_empty() || dst.name == self.workload)
    }
}

/// The gate, as the wire shows it.
fn gate_pb(g: &Gate, source: String) -> pb::RolloutGate {
    use pb::rollout_gate::Status as S;
    let (status, observed, remaining, callers) = match g {
        Gate::NotObserving => (S::NotObserving, None, None, &[][..]),
        Gate::Waiting {
            observed,
            remaining,
        } => (S::Waiting, Some(*observed), Some(*remaining), &[][..]),
        Gate::Open { observed } => (S::Open, Some(*observed), None, &[][..]),
        Gate::Blocked { callers, observed } => {
            (S::Blocked, Some(*observed), None, callers.as_slice())
        }
    };
    pb::RolloutGate {
        status: status.into(),
        summary: g.summary(),
        would_be_denied: callers
            .iter()
            .map(|c| pb::WouldBeDenied {
                caller: c.caller.clone(),
                callee: c.callee.clone(),
                count: c.count,
            })
            .collect(),
        observed: observed.map(duration),
        remaining: remaining.map(duration),
        source,
    }
}

impl GraphService {
    fn rollout_caller(
        &self,
        caller: Option<Caller>,
        on_behalf_of: Option<pb::Identity>,
    ) -> Result<(Caller, pb::Identity), Status> {
        let caller = caller.ok_or_else(|| {
            Status::unauthenticated(
                "rollouts need an authenticated caller; this server runs with --insecure-no-auth",
            )
        })?;
        let applier = self
            .applier
            .as_ref()
            .map_err(|why| Status::unavailable(format!("rollouts need the cluster: {why}")))?;
        let id = applier
            .identity(&caller, on_behalf_of)
            .map_err(Status::from)?;
        Ok((caller, id))
    }

    async fn load(&self, id: &str) -> Result<(RolloutState, u64, Record), Status> {
        if id.is_empty()
            || id.len() > 100
            || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(Status::invalid_argument(format!(
                "id: {id:?} is not a rollout id"
            )));
        }
        let entry = self
            .records
            .get_record(Shelf::Rollouts, id)
            .await
            .map_err(|e| store_error(&e))?
            .ok_or_else(|| Status::not_found(format!("no rollout {id}")))?;
        let state = RolloutState::parse(&entry.state).ok_or_else(|| {
            Status::internal(format!(
                "rollout {id} is in an unknown state {:?}",
                entry.state
            ))
        })?;
        let rec: Record = serde_json::from_slice(&entry.record)
            .map_err(|e| Status::internal(format!("rollout {id} is unreadable: {e}")))?;
        Ok((state, entry.revision, rec))
    }

    /// Stores `rec` in `state` if the rollout is still at `revision`.
    async fn save(&self, revision: u64, state: RolloutState, rec: &Record) -> Result<u64, Status> {
        let bytes = serde_json::to_vec(rec).map_err(|e| Status::internal(e.to_string()))?;
        match self
            .records
            .update_record(Shelf::Rollouts, &rec.id, revision, &state.word(), bytes)
            .await
            .map_err(|e| store_error(&e))?
        {
            Updated::Written(r) => Ok(r),
            Updated::Now(now) => Err(Status::aborted(format!(
                "rollout {} changed meanwhile (revision {revision} then, {} now, {}): look again",
                rec.id, now.revision, now.state
            ))),
            Updated::Missing => Err(Status::not_found(format!("no rollout {}", rec.id))),
        }
    }

    /// Stores a staged rollout of the proposal for a namespace or workload; applies nothing.
    pub async fn start_rollout(
        &self,
        caller: Option<Caller>,
        r: pb::StartRolloutRequest,
    ) -> Result<pb::Rollout, Status> {
        let (_, id) = self.rollout_caller(caller, r.on_behalf_of.clone())?;
        let observe_for = match r.observe_for {
            Some(d) if d.seconds > 0 => Duration::from_secs(u64::try_from(d.seconds).unwrap_or(0)),
            Some(d) if d.seconds < 0 || d.nanos != 0 => {
                return Err(Status::invalid_argument(
                    "observe_for: whole seconds above zero",
                ));
            }
            _ => DEFAULT_OBSERVE,
        };
        if observe_for > MAX_OBSERVE {
            return Err(Status::invalid_argument("observe_for: at most 30 days"));
        }
        let p = self
            .propose(pb::ProposePolicyRequest {
                namespace: r.namespace.clone(),
                workload: r.workload.clone(),
                since: r.since,
                audit: true,
                per_route: r.per_route,
            })
            .await?;
        if p.objects.is_empty() {
            return Err(Status::failed_precondition(format!(
                "nothing to roll out for {}{}: {}",
                r.namespace,
                if r.workload.is_empty() {
                    String::new()
                } else {
                    format!("/{}", r.workload)
                },
                if p.notes.is_empty() {
                    "no observed traffic to admit".to_owned()
                } else {
                    p.notes.join("; ")
                }
            )));
        }
        let now = self.clock.now();
        let mut rec = Record {
            id: new_id(&r.namespace),
            namespace: r.namespace,
            workload: r.workload,
            requested_by: id.user.clone(),
            created_ms: ms(now),
            observe_for_secs: observe_for.as_secs(),
            per_route: r.per_route,
            plan: p.objects,
            needs_action: p.needs_action,
            notes: plan_notes(p.notes, &p.newly_denied),
            plan_revision: 1,
            ..Record::default()
        };
        rec.step(now, "", Phase::Proposed.as_str(), &id.user, "");
        if let Some(s) = rec.history.last_mut() {
            s.outcome = format!("proposed {} objects", rec.plan.len());
        }
        let bytes = serde_json::to_vec(&rec).map_err(|e| Status::internal(e.to_string()))?;
        let created = self
            .records
            .create_record(Shelf::Rollouts, &rec.id, Phase::Proposed.as_str(), bytes)
            .await
            .map_err(|e| store_error(&e))?;
        if !created {
            return Err(Status::aborted(
                "a rollout with this id exists; start again",
            ));
        }
        tracing::info!(target: "audit", rollout = %rec.id, by = %id.user, objects = rec.plan.len(), "rollout started");
        let state = RolloutState::At(Phase::Proposed);
        Ok(rec.to_pb(state, 1, Some(gate_pb(&Gate::NotObserving, String::new()))))
    }

    /// A rollout with its gate evaluated now.
    pub async fn get_rollout(&self, r: pb::GetRolloutRequest) -> Result<pb::Rollout, Status> {
        let (state, revision, rec) = self.load(&r.id).await?;
        let gate = match self.gate(&rec, state).await {
            Ok((g, source)) => gate_pb(&g, source),
            Err(why) => pb::RolloutGate {
                summary: format!("the gate's evidence could not be read: {why}"),
                ..Default::default()
            },
        };
        Ok(rec.to_pb(state, revision, Some(gate)))
    }

    /// Every rollout, newest first (gates not evaluated).
    pub async fn list_rollouts(&self) -> Result<pb::ListRolloutsResponse, Status> {
        let ids = self
            .records
            .record_ids(Shelf::Rollouts)
            .await
            .map_err(|e| store_error(&e))?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids.iter().rev().take(200) {
            if let Ok((state, revision, rec)) = self.load(id).await {
                out.push(rec.to_pb(state, revision, None));
            }
        }
        Ok(pb::ListRolloutsResponse { rollouts: out })
    }

    /// The gate of `rec` in `state` now, and where its evidence came from.
    async fn gate(&self, rec: &Record, state: RolloutState) -> Result<(Gate, String), String> {
        let now = self.clock.now();
        let observed = match (state, rec.observing_since_ms) {
            (RolloutState::At(Phase::Audit), Some(since)) => {
                now.duration_since(at_ms(since)).unwrap_or_default()
            }
            _ => return Ok((Gate::NotObserving, String::new())),
        };
        let required = Duration::from_secs(rec.observe_for_secs);
        let counted = observed.saturating_sub(SETTLE);
        if counted < Duration::from_secs(1) {
            return Ok((
                rollout::gate(Some(observed), required, Vec::new()),
                format!(
                    "the first {}s after an apply are not counted",
                    SETTLE.as_secs()
                ),
            ));
        }
        let (seen, source) = self.would_be_denied(rec, counted, now).await?;
        Ok((rollout::gate(Some(observed), required, seen), source))
    }

    /// What the audit-mode proxies admitted into the rollout's workloads only because of audit
    /// mode over the last `window` (`authz_kind="default",authz_name="audit"`): from Prometheus
    /// when this server reads one, else from the served graph's window.
    async fn would_be_denied(
        &self,
        rec: &Record,
        window: Duration,
        now: SystemTime,
    ) -> Result<(Vec<WouldBeDenied>, String), String> {
        let cluster = self
            .applier
            .as_ref()
            .map_err(Clone::clone)?
            .ready_cluster()
            .map_err(|e| e.to_string())?;
        let Some(url) = self.prometheus.as_deref() else {
            let g = crate::service::current(&self.graph).map_err(|s| s.message().to_owned())?;
            let secs = g.window.as_secs_f64();
            let seen = g
                .edges
                .values()
                .filter_map(|e| {
                    let mesh_model::Destination::Workload(dst) = &e.key.dst else {
                        return None;
                    };
                    let audit = e.policy.observed_audit_rps.unwrap_or(0.0);
                    (rec.covers(dst) && audit > 0.0).then(|| WouldBeDenied {
                        caller: e.key.src.to_string(),
                        callee: dst.to_string(),
                        count: audit * secs,
                    })
                })
                .collect();
            return Ok((
                seen,
                format!(
                    "the served graph's {}s window (mesh-mcp reads no --prometheus-url)",
                    g.window.as_secs()
                ),
            ));
        };
        let source = mesh_prometheus::PrometheusSource::new(url, window, Duration::from_secs(10))
            .map_err(|e| e.to_string())?
            .into_namespace(&rec.namespace);
        let authz = match source.observe(now).await {
            Ok(o) => o.authz,
            // No traffic at all in the window: nothing was audited either.
            Err(mesh_prometheus::PromError::NoData { .. }) => Vec::new(),
            Err(e) => return Err(e.to_string()),
        };
        let mut by: BTreeMap<(String, String), f64> = BTreeMap::new();
        for s in authz
            .iter()
            .filter(|s| s.audit && s.allowed && rec.covers(&s.dst))
        {
            *by.entry((s.client_id.clone(), s.dst.to_string()))
                .or_default() += s.count;
        }
        let seen =
            by.into_iter()
                .map(|((client, callee), count)| {
                    let caller = if client.is_empty() {
                        "a client without an mTLS identity".to_owned()
                    } else {
                        mesh_model::service_account_of(&client)
                            .and_then(|(sa, ns)| {
                                let mut of = cluster.workloads.iter().filter(|(w, cw)| {
                                    w.namespace == ns && cw.service_account == sa
                                });
                                match (of.next(), of.next()) {
                                    (Some((w, _)), None) => Some(w.to_string()),
                                    _ => None,
                                }
                            })
                            .unwrap_or(client)
                    };
                    WouldBeDenied {
                        caller,
                        callee,
                        count,
                    }
                })
                .collect();
        Ok((
            seen,
            format!(
                "Prometheus over the last {}s of the observation",
                window.as_secs()
            ),
        ))
    }

    /// A phase change through the pipeline (or its dry-run), or a re-proposal.
    pub async fn advance_rollout(
        &self,
        caller: Option<Caller>,
        r: pb::AdvanceRolloutRequest,
    ) -> Result<pb::AdvanceRolloutResponse, Status> {
        let change = r.change.clone().unwrap_or_default();
        if change.source.is_some()
            || !change.preconditions.is_empty()
            || change.expect_absent
            || !change.expected_resource_version.is_empty()
            || change.force
        {
            return Err(Status::invalid_argument(
                "change: a rollout holds its objects and their preconditions; set only dry_run, \
                 on_behalf_of, approved_by and reason",
            ));
        }
        let action = match r.action() {
            PbAction::Audit => Some(Action::Audit),
            PbAction::Enforce => Some(Action::Enforce),
            PbAction::Rollback => Some(Action::Rollback),
            PbAction::Repropose => None,
            PbAction::Unspecified => {
                return Err(Status::invalid_argument(
                    "action: one of AUDIT, ENFORCE, ROLLBACK, REPROPOSE",
                ));
            }
        };
        let (caller, id) = self.rollout_caller(caller, change.on_behalf_of.clone())?;
        let (state, revision, mut rec) = self.load(&r.id).await?;
        if r.expected_revision != 0 && r.expected_revision != revision {
            return Err(Status::failed_precondition(format!(
                "rollout {} changed since it was reviewed (revision {} then, {revision} now, {}): review it again",
                rec.id, r.expected_revision, state
            )));
        }
        let Some(action) = action else {
            return self
                .repropose(r, change.dry_run, &id, state, revision, rec)
                .await;
        };
        let now = self.clock.now();
        let gate = if action == Action::Enforce && state == RolloutState::At(Phase::Audit) {
            if rec.plan_pending() {
                return Err(Status::failed_precondition(format!(
                    "rollout {}: the plan was re-proposed and is not applied yet: apply it in audit \
                     (AUDIT) and observe it before enforcing",
                    rec.id
                )));
            }
            self.gate(&rec, state)
                .await
                .map_err(|why| {
                    Status::unavailable(format!("the gate's evidence could not be read: {why}"))
                })?
                .0
        } else {
            Gate::NotObserving
        };
        let moving_for = rec
            .moving_since_ms
            .map(|since| now.duration_since(at_ms(since)).unwrap_or_default())
            .unwrap_or_default();
        let next = rollout::step(
            state,
            Event::Ask {
                action,
                gate,
                moving_for,
                retry_after: RETRY_AFTER,
            },
        )
        .map_err(|e| refusal(&e))?;
        let (from, to) = match next {
            RolloutState::Moving { from, to } => (from, to),
            RolloutState::At(p) => {
                // Withdrawn before anything was applied: nothing to undo.
                if change.dry_run {
                    return Ok(pb::AdvanceRolloutResponse {
                        rollout: Some(rec.to_pb(state, revision, None)),
                        change: None,
                        summary: format!("dry-run: {state} -> {p}; nothing applied to undo"),
                    });
                }
                rec.step(
                    now,
                    &state.word(),
                    p.as_str(),
                    &id.user,
                    &change.approved_by,
                );
                if let Some(s) = rec.history.last_mut() {
                    s.outcome = "withdrawn: nothing had been applied".into();
                }
                let rev = self.save(revision, next, &rec).await?;
                return Ok(pb::AdvanceRolloutResponse {
                    rollout: Some(rec.to_pb(next, rev, None)),
                    change: None,
                    summary: format!("{state} -> {p}: nothing had been applied"),
                });
            }
        };
        let applier = self
            .applier
            .as_ref()
            .map_err(|why| Status::unavailable(format!("rollouts need the cluster: {why}")))?;
        let note = format!("rollout {}: {from} -> {to}", rec.id);
        let withdrawing = to == Phase::Withdrawn;
        let manifest = if withdrawing {
            let created: Vec<pb::ProposedObject> = rec
                .plan
                .iter()
                .filter(|o| rec.created.contains(&key(&o.kind, &o.namespace, &o.name)))
                .cloned()
                .collect();
            phase_manifest(&created, Phase::Audit)?
        } else {
            phase_manifest(&rec.plan, to)?
        };
        let req = pb::ApplyRequest {
            source: Some(pb::apply_request::Source::Manifest(manifest.clone())),
            dry_run: change.dry_run,
            on_behalf_of: change.on_behalf_of.clone(),
            approved_by: change.approved_by.clone(),
            reason: change.reason.clone(),
            preconditions: rec.preconditions(withdrawing.then_some(rec.created.as_slice())),
            ..Default::default()
        };
        let run = |req: pb::ApplyRequest| async {
            if withdrawing {
                if manifest.is_empty() {
                    return Ok(pb::ApplyResponse {
                        dry_run: req.dry_run,
                        warnings: vec!["the rollout created nothing: nothing to delete".into()],
                        ..Default::default()
                    });
                }
                applier
                    .delete(Some(caller.clone()), &manifest, req, &note)
                    .await
            } else {
                applier.apply_phase(Some(caller.clone()), req, &note).await
            }
        };
        if change.dry_run {
            let res = run(req).await.map_err(Status::from)?;
            return Ok(pb::AdvanceRolloutResponse {
                rollout: Some(rec.to_pb(state, revision, None)),
                change: Some(res),
                summary: format!("dry-run: {from} -> {to}"),
            });
        }
        // Claimed before the apply: of two approvals of the same step, one applies.
        rec.moving_since_ms = Some(ms(now));
        let rev = self.save(revision, next, &rec).await?;
        let res = run(req).await;
        let done = self.clock.now();
        let landed = rollout::step(next, Event::Outcome(res.is_ok())).map_err(|e| refusal(&e))?;
        rec.moving_since_ms = None;
        rec.step(
            done,
            &from.to_string(),
            &landed.word(),
            &id.user,
            &change.approved_by,
        );
        match &res {
            Ok(applied) => {
                let changed = applied.objects.iter().any(|o| o.action != "unchanged");
                for o in &applied.objects {
                    let k = key(&o.kind, &o.namespace, &o.name);
                    if withdrawing {
                        rec.written.remove(&k);
                        rec.created.retain(|c| *c != k);
                        continue;
                    }
                    let v: Value = serde_json::from_str(&o.object).unwrap_or_default();
                    if let Some(rv) = v["metadata"]["resourceVersion"].as_str() {
                        rec.written.insert(k.clone(), rv.to_owned());
                    }
                    if o.action == "created" && !rec.created.contains(&k) {
                        rec.created.push(k);
                    }
                }
                if !withdrawing {
                    rec.applied_plan_revision = rec.plan_revision;
                }
                rec.observing_since_ms = match to {
                    Phase::Audit if changed || from != Phase::Audit => Some(ms(done)),
                    Phase::Audit => rec.observing_since_ms,
                    _ => None,
                };
                rec.last_error.clear();
                if let Some(s) = rec.history.last_mut() {
                    s.audit_id = applied.audit_id.clone();
                    s.outcome = "applied".into();
                }
            }
            Err(e) => {
                rec.last_error = e.message().to_owned();
                if let Some(s) = rec.history.last_mut() {
                    s.outcome = format!("refused: {}", e.message());
                }
            }
        }
        let saved = self.save(rev, landed, &rec).await;
        tracing::info!(target: "audit", rollout = %rec.id, by = %id.user, approved_by = %change.approved_by, from = %from, to = %landed, "rollout phase change");
        let res = res.map_err(Status::from)?;
        let rev = saved?;
        Ok(pb::AdvanceRolloutResponse {
            rollout: Some(rec.to_pb(landed, rev, None)),
            change: Some(res),
            summary: format!("applied: {from} -> {to}"),
        })
    }

    /// Proposes again from the traffic now and merges the result into the plan (the same
    /// objects by kind and name replaced, new ones added); applies nothing.
    async fn repropose(
        &self,
        r: pb::AdvanceRolloutRequest,
        dry_run: bool,
        id: &pb::Identity,
        state: RolloutState,
        revision: u64,
        mut rec: Record,
    ) -> Result<pb::AdvanceRolloutResponse, Status> {
        match state {
            RolloutState::At(Phase::Withdrawn) => {
                return Err(refusal(&rollout::Refusal::Finished));
            }
            RolloutState::Moving { .. } => {
                return Err(refusal(&rollout::Refusal::InProgress(state)));
            }
            RolloutState::At(_) => {}
        }
        let p = self
            .propose(pb::ProposePolicyRequest {
                namespace: rec.namespace.clone(),
                workload: rec.workload.clone(),
                since: r.since,
                audit: true,
                per_route: rec.per_route,
            })
            .await?;
        let same = |a: &pb::ProposedObject, b: &pb::ProposedObject| {
            (&a.kind, &a.namespace, &a.name) == (&b.kind, &b.namespace, &b.name)
        };
        let mut changed = Vec::new();
        for o in p.objects {
            let manifest = |x: &pb::ProposedObject| {
                serde_json::from_str::<Value>(&x.manifest_json).unwrap_or_default()
            };
            match rec.plan.iter_mut().find(|x| same(x, &o)) {
                Some(x) if manifest(x) == manifest(&o) => {}
                Some(x) => {
                    changed.push(format!("changed {} {}", o.kind, o.name));
                    *x = o;
                }
                None => {
                    changed.push(format!("added {} {}", o.kind, o.name));
                    rec.plan.push(o);
                }
            }
        }
        // Apply order: Servers, then authentications, then authorizations.
        let rank = |k: &str| match k {
            "Server" => 0,
            "HTTPRoute" => 1,
            "AuthorizationPolicy" => 3,
            _ => 2,
        };
        rec.plan.sort_by_key(|o| rank(&o.kind));
        rec.needs_action = p.needs_action;
        rec.notes = plan_notes(p.notes, &p.newly_denied);
        let summary = if changed.is_empty() {
            "re-proposed: the plan already admits every caller observed".to_owned()
        } else {
            format!("re-proposed: {}", changed.join(", "))
        };
        if dry_run || changed.is_empty() {
            return Ok(pb::AdvanceRolloutResponse {
                rollout: Some(rec.to_pb(state, revision, None)),
                change: None,
                summary: if dry_run {
                    format!("dry-run: {summary}")
                } else {
                    summary
                },
            });
        }
        rec.plan_revision += 1;
        let now = self.clock.now();
        rec.step(now, &state.word(), &state.word(), &id.user, "");
        if let Some(s) = rec.history.last_mut() {
            s.outcome = summary.clone();
        }
        let rev = self.save(revision, state, &rec).await?;
        tracing::info!(target: "audit", rollout = %rec.id, by = %id.user, %summary, "rollout re-proposed");
        Ok(pb::AdvanceRolloutResponse {
            rollout: Some(rec.to_pb(state, rev, None)),
            change: None,
            summary,
        })
    }
}
