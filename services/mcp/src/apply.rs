//! The mutation pipeline: `ApplyAuthorizationPolicy` and `ApplyHTTPRoute`.
//!
//! ```text
//!  caller ─> identity (self, or on_behalf_of for delegators) ─> validate (model's admission rules)
//!    ─> SubjectAccessReview per object (the write and its undo) ─> server-side dry-run as the
//!    identity (impersonation, fieldManager linkerd-mcp) ─> diff + what-if on the live graph
//!    ─> unless dry_run or nothing changes: apply in dependency order as the identity (rolling
//!    back what was applied when a later object fails) ─> audit (annotations, Event, log line)
//! ```
//!
//! mesh-mcp's own identity only reviews access, reads, impersonates and records Events; every
//! write is made as the requester, so the API server enforces RBAC and admission itself.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, SystemTime},
};

use kube::{
    Api, Client,
    api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PatchParams, PostParams},
};
use mesh_model::{Decision, MeshGraph};
use mesh_policy::approval::{ApprovalPolicy, Gate, Subject};
use mesh_policy::cluster::Cluster;
use mesh_policy::{Manifests, resources::Resource};
use mesh_proto::pb;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::Caller;

mod error;
mod steps;

pub use self::{
    error::ApplyError,
    steps::{ApiServer, ApiSteps, Target},
};

/// The field manager of every write.
pub const FIELD_MANAGER: &str = "linkerd-mcp";
/// How a dry-run's warning that the change waits for approvals begins (an approval request
/// drops it: it is the asking).
pub const NEEDS_APPROVALS: &str = "making this change needs";
/// Annotation prefix of the audit trail on applied objects.
pub const AUDIT_PREFIX: &str = "linkerd-mcp.io/";

/// Who may act for others, and as which groups.
#[derive(Clone, Debug, Default)]
pub struct Delegation {
    /// Users (e.g. `system:serviceaccount:linkerd-mcp:chatbot`) that may set `on_behalf_of`.
    pub delegators: Vec<String>,
    /// Groups a delegated identity may carry; `system:*` never.
    pub allowed_groups: Vec<String>,
}

/// The resourceVersion a reviewer saw for `o`, when there is one to hold the write to: the
/// API server then refuses the write if the object changed in between (optimistic
/// concurrency), closing the window after [`check_preconditions`]'s read.
fn reviewed_version<'a>(req: &'a pb::ApplyRequest, o: &Obj, main: bool) -> Option<&'a str> {
    if main && !req.expected_resource_version.is_empty() {
        return Some(req.expected_resource_version.as_str());
    }
    req.preconditions
        .iter()
        .find(|p| o.is(p))
        .map(|p| p.resource_version.as_str())
        .filter(|v| !v.is_empty())
}

/// Every object's state now against what was reviewed (`preconditions`): an approval must not
/// revert a change to a supporting object that the reviewer never saw.
fn check_preconditions(
    req: &pb::ApplyRequest,
    objects: &[Obj],
    before: &[Option<DynamicObject>],
) -> Result<(), ApplyError> {
    let shown = |v: &str| {
        if v.is_empty() {
            "absent".to_owned()
        } else {
            format!("resourceVersion {v}")
        }
    };
    // Every precondition must name an object of the request before any is compared.
    let mut at = Vec::with_capacity(req.preconditions.len());
    for p in &req.preconditions {
        let i = objects.iter().position(|o| o.is(p)).ok_or_else(|| {
            invalid(format!(
                "preconditions: {} {}/{} is not an object of this request",
                p.kind, p.namespace, p.name
            ))
        })?;
        at.push((p, i));
    }
    for (p, i) in at {
        let now = before[i]
            .as_ref()
            .and_then(|b| b.metadata.resource_version.clone())
            .unwrap_or_default();
        if now != p.resource_version {
            let by = before[i]
                .as_ref()
                .and_then(last_manager)
                .map(|m| format!(", last written by {m}"))
                .unwrap_or_default();
            return Err(ApplyError::Stale(format!(
                "{} changed since the change was reviewed ({} then, {} now{by}): review it again",
                objects[i].describe(),
                shown(&p.resource_version),
                shown(&now)
            )));
        }
    }
    Ok(())
}

/// The audit log's record of a change: one JSON object, whose values are escaped, so none (a
/// reason, a diff) can forge another field or another line.
fn audit_record(
    audit: &str,
    caller: &Caller,
    id: &pb::Identity,
    req: &pb::ApplyRequest,
    objects: &[pb::AppliedObject],
    diff: &str,
    grant: Option<&Grant>,
) -> Value {
    json!({
        "audit_id": audit,
        "requested_by": caller.user,
        "agent": grant.and_then(|g| g.agent.as_deref()).or(caller.agent.as_deref()),
        "acted_as": id.user,
        "groups": id.groups,
        "approved_by": req.approved_by,
        "approvers": grant.map(|g| g.approvers.clone()).unwrap_or_default(),
        "approval_id": grant.map(|g| g.approval_id.as_str()),
        "approval_rule": grant.map(|g| g.rule.as_str()),
        "reason": req.reason,
        "dry_run": req.dry_run,
        "objects": objects
            .iter()
            .map(|a| format!("{} {}/{}: {}", a.kind, a.namespace, a.name, a.action))
            .collect::<Vec<_>>(),
        "diff": diff,
    })
}

/// The caller of a change, which must be known: changes are made as someone.
fn authenticated(caller: Option<Caller>) -> Result<Caller, ApplyError> {
    caller.ok_or_else(|| {
        ApplyError::Unauthenticated(
            "changes need an authenticated caller; this server runs with --insecure-no-auth".into(),
        )
    })
}

/// A caller as the approval policy sees it.
pub fn subject(c: &Caller) -> Subject {
    Subject {
        user: c.user.clone(),
        groups: c.groups.clone(),
    }
}

/// Puts the server's own `note` (checked by nobody: it is not the caller's) before the
/// requester's reason, once that reason has passed [`Applier::audit_fields`].
fn with_note(req: &mut pb::ApplyRequest, note: Option<&str>) {
    if let Some(note) = note.filter(|n| !n.is_empty()) {
        req.reason = if req.reason.is_empty() {
            note.to_owned()
        } else {
            format!("{note}: {}", req.reason)
        };
    }
}

/// The field manager that wrote `o` last (by its managed fields' times): who to ask about a
/// change nobody reviewed.
fn last_manager(o: &DynamicObject) -> Option<String> {
    o.metadata
        .managed_fields
        .as_ref()?
        .iter()
        .filter(|m| m.manager.is_some())
        .max_by_key(|m| m.time.as_ref().map(|t| t.0))
        .and_then(|m| m.manager.clone())
}

/// Which RPC: decides the one main kind a request must hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rpc {
    /// `ApplyAuthorizationPolicy`.
    AuthorizationPolicy,
    /// `ApplyHTTPRoute`.
    HttpRoute,
}

/// What a request may hold: one RPC's main object with what it needs, or a rollout's phase
/// (`AdvanceRollout`): any number of Servers, authentications and AuthorizationPolicies, each
/// held to its own precondition, with no main object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    One(Rpc),
    Rollout,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Self::One(rpc) => rpc.name(),
            Self::Rollout => "AdvanceRollout",
        }
    }

    fn main_kind(self) -> &'static str {
        match self {
            Self::One(rpc) => rpc.main_kind(),
            Self::Rollout => "AuthorizationPolicy",
        }
    }

    /// Most objects one request may carry: a rollout's phase covers a whole namespace.
    fn max_objects(self) -> usize {
        match self {
            Self::One(_) => MAX_OBJECTS,
            Self::Rollout => MAX_ROLLOUT_OBJECTS,
        }
    }
}

impl Rpc {
    fn name(self) -> &'static str {
        match self {
            Self::AuthorizationPolicy => "ApplyAuthorizationPolicy",
            Self::HttpRoute => "ApplyHTTPRoute",
        }
    }

    fn main_kind(self) -> &'static str {
        match self {
            Self::AuthorizationPolicy => "AuthorizationPolicy",
            Self::HttpRoute => "HTTPRoute",
        }
    }
}

/// Most objects one request may carry.
const MAX_OBJECTS: usize = 16;

/// Most objects one rollout phase may carry (three per workload port).
pub const MAX_ROLLOUT_OBJECTS: usize = 600;

/// How long parsing one request's manifest may take (bounded documents take milliseconds).
const PARSE_DEADLINE: Duration = Duration::from_secs(5);

/// Objects applied before the main one, in this order: authentications, then Servers.
const SUPPORTING: [&str; 3] = ["MeshTLSAuthentication", "NetworkAuthentication", "Server"];

/// One object of a request, as it will be sent.
#[derive(Clone, Debug)]
struct Obj {
    group: String,
    version: String,
    kind: String,
    plural: &'static str,
    namespace: String,
    name: String,
    body: Value,
}

impl Obj {
    /// Whether `p` names this object.
    fn is(&self, p: &pb::ObjectPrecondition) -> bool {
        (&self.kind, &self.namespace, &self.name) == (&p.kind, &p.namespace, &p.name)
    }

    fn api(&self, client: Client) -> Api<DynamicObject> {
        let gvk = GroupVersionKind::gvk(&self.group, &self.version, &self.kind);
        Api::namespaced_with(
            client,
            &self.namespace,
            &ApiResource::from_gvk_with_plural(&gvk, self.plural),
        )
    }

    fn describe(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace, self.name)
    }

    fn target(&self) -> Target<'_> {
        Target {
            group: &self.group,
            kind: &self.kind,
            plural: self.plural,
            namespace: &self.namespace,
            name: &self.name,
        }
    }

    fn resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// Runs the pipeline.
#[derive(Clone)]
pub struct Applier {
    config: kube::Config,
    client: Client,
    delegation: Arc<Delegation>,
    cluster: watch::Receiver<Arc<Cluster>>,
    graph: crate::GraphWatch,
    steps: Arc<dyn ApiSteps>,
    errors: Family<ReasonLabel, Counter>,
    /// Who must approve which writes (reloaded with its file).
    policy: watch::Receiver<Arc<ApprovalPolicy>>,
    /// The time freezes are judged by.
    clock: Arc<dyn mesh_model::Clock>,
}

/// The approvals an approved change was granted: lets its apply past the approval gate, and
/// goes into its audit trail.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grant {
    /// The approval request's id.
    pub approval_id: String,
    /// Every approver, in the order they approved.
    pub approvers: Vec<String>,
    /// The approval policy rules that applied.
    pub rule: String,
    /// The agent that proposed the change, if one did.
    pub agent: Option<String>,
    /// Why, as the requester (or their agent) said when asking.
    pub reason: String,
}

/// Every namespace a change's objects are in, sorted once each: an approver must be allowed in
/// each, and each namespace's rule applies.
pub fn written_namespaces(objects: &[pb::AppliedObject]) -> Vec<String> {
    let mut ns: Vec<String> = objects.iter().map(|o| o.namespace.clone()).collect();
    ns.sort();
    ns.dedup();
    ns
}

/// The `reason` label of `mesh_mcp_apply_errors_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

impl std::fmt::Debug for Applier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applier")
            .field("delegation", &self.delegation)
            .finish_non_exhaustive()
    }
}

fn invalid(m: impl Into<String>) -> ApplyError {
    ApplyError::Invalid(m.into())
}

/// Maps an API server refusal to the status a caller can act on.
fn api_error(what: &str, acting: &str, e: &kube::Error) -> ApplyError {
    match e {
        // mesh-mcp's own reads and reviews: a refusal is its deployment's RBAC, not the caller's.
        kube::Error::Api(s) if s.code == 403 && acting == "mesh-mcp" => {
            ApplyError::Precondition(format!(
                "{what}: mesh-mcp's own Kubernetes identity lacks a permission it needs (see \"mesh-mcp's own RBAC\" in docs/guide/policy-changes.md): {}",
                s.message
            ))
        }
        kube::Error::Api(s) if s.code == 413 || s.code == 429 => {
            ApplyError::Exhausted(format!("{what}: {}", s.message))
        }
        kube::Error::Api(s) => match s.code {
            403 => ApplyError::Forbidden(format!(
                "the API server refused {what} as {acting}: {}",
                s.message
            )),
            409 => ApplyError::Conflict(format!("{what}: {}", s.message)),
            400 | 422 => invalid(format!("{what}: {}", s.message)),
            404 => ApplyError::Precondition(format!(
                "{what}: {} (are the Linkerd CRDs installed?)",
                s.message
            )),
            _ => ApplyError::Unavailable(format!("{what}: {}", s.message)),
        },
        other => ApplyError::Unavailable(format!("{what}: {other}")),
    }
}

/// The object as a reader reviews it: no server bookkeeping, no audit annotations.
fn reviewable(v: &Value) -> String {
    let mut v = v.clone();
    if let Some(m) = v["metadata"].as_object_mut() {
        for k in [
            "managedFields",
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
        ] {
            m.remove(k);
        }
        if let Some(a) = m.get_mut("annotations").and_then(Value::as_object_mut) {
            a.retain(|k, _| !k.starts_with(AUDIT_PREFIX));
            if a.is_empty() {
                m.remove("annotations");
            }
        }
    }
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
    }
    serde_yaml_ng::to_string(&v).unwrap_or_default()
}

fn unified(before: &str, after: &str, name: &str) -> String {
    if before == after {
        return String::new();
    }
    similar::TextDiff::from_lines(before, after)
        .unified_diff()
        .context_radius(3)
        .header(&format!("{name} (before)"), &format!("{name} (after)"))
        .to_string()
}

fn audit_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let salt = std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), nanos);
    format!("{:016x}", salt)
}

impl Applier {
    /// A pipeline writing through `config` (mesh-mcp's own kube configuration, from which
    /// impersonating clients are made), answering what-if on `graph` with `cluster`.
    pub fn new(
        config: kube::Config,
        delegation: Delegation,
        cluster: watch::Receiver<Arc<Cluster>>,
        graph: crate::GraphWatch,
    ) -> Result<Self, String> {
        let client = Client::try_from(config.clone()).map_err(|e| e.to_string())?;
        Ok(Self {
            config,
            client,
            delegation: Arc::new(delegation),
            cluster,
            graph,
            steps: Arc::new(ApiServer),
            errors: Family::default(),
            policy: watch::channel(Arc::new(ApprovalPolicy::default())).1,
            clock: Arc::new(mesh_model::SystemClock),
        })
    }

    /// Holds writes to `policy` (who must approve what, kept current by its file watcher),
    /// judging freezes by `clock`.
    #[must_use]
    pub fn with_approval_policy(
        mut self,
        policy: watch::Receiver<Arc<ApprovalPolicy>>,
        clock: Arc<dyn mesh_model::Clock>,
    ) -> Self {
        self.policy = policy;
        self.clock = clock;
        self
    }

    /// The time freezes and approval deadlines are judged by.
    pub fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// The approval policy in force now.
    pub fn approval_policy(&self) -> Arc<ApprovalPolicy> {
        self.policy.borrow().clone()
    }

    /// Whether `caller` may act for others (a configured delegator, e.g. the chatbot).
    pub fn is_delegator(&self, caller: &Caller) -> bool {
        self.delegation.delegators.contains(&caller.user)
    }

    /// Whether `caller` counts as an agent: it calls through an agent front end, or the
    /// approval policy lists it as one.
    pub fn is_agent(&self, caller: &Caller) -> bool {
        caller.agent.is_some() || self.approval_policy().is_agent(&subject(caller))
    }

    /// The approval gate of a rollout step (a phase applied, or what it created withdrawn).
    /// Its steps are approved one at a time on the chatbot's rollout cards, which send the
    /// approver (a delegator's `approved_by`, someone other than the requester): that is one
    /// approval. A step where the policy wants none goes through; where it wants one, only so
    /// approved; where it wants more, or for an agent that only proposes, it is refused.
    fn rollout_gate(
        &self,
        caller: &Caller,
        id: &pb::Identity,
        req: &pb::ApplyRequest,
        objects: &[pb::AppliedObject],
    ) -> Result<(), ApplyError> {
        let needed = match self.gate(caller, id, objects)? {
            Gate::Direct => return Ok(()),
            Gate::Approval { needed } => needed,
        };
        let approved_once = self.is_delegator(caller)
            && !req.approved_by.is_empty()
            && req.approved_by != id.user
            && !self.is_agent(caller);
        if needed == 1 && approved_once {
            return Ok(());
        }
        Err(ApplyError::NeedsApproval(format!(
            "{}: {} wants {needed} approval(s) for this rollout step; nothing was written. \
             Advance it from chat, where each step is approved on its card{}",
            mesh_proto::APPROVAL_REQUIRED,
            self.approval_policy()
                .requirement(&written_namespaces(objects))
                .names(),
            if needed > 1 {
                " (rollout steps collect one approval: where a rule wants more, apply the phases \
                 with meshctl apply, which asks for them)"
            } else {
                ""
            }
        )))
    }

    /// The approval gate of a write by `caller` as `id` to `objects`: straight through, or
    /// refused with the rule that wants approvals (or that does not let the requester ask).
    fn gate(
        &self,
        caller: &Caller,
        id: &pb::Identity,
        objects: &[pb::AppliedObject],
    ) -> Result<Gate, ApplyError> {
        let policy = self.approval_policy();
        let need = policy.requirement(&written_namespaces(objects));
        let requester = Subject {
            user: id.user.clone(),
            groups: id.groups.clone(),
        };
        need.gate(&requester, self.is_agent(caller), self.clock.now())
            .map_err(|e| ApplyError::Forbidden(e.to_string()))
    }

    /// Asks `steps` instead of the API server whether a write is allowed, and writes through
    /// it (see [`ApiSteps`]).
    #[must_use]
    pub fn with_api_steps(mut self, steps: Arc<dyn ApiSteps>) -> Self {
        self.steps = steps;
        self
    }

    fn as_identity(&self, id: &pb::Identity) -> Result<Client, ApplyError> {
        let mut c = self.config.clone();
        c.auth_info.impersonate = Some(id.user.clone());
        c.auth_info.impersonate_groups = (!id.groups.is_empty()).then(|| id.groups.clone());
        Client::try_from(c).map_err(|e| ApplyError::Internal(format!("impersonating client: {e}")))
    }

    /// The audit fields a request may carry: `approved_by` and `reason` only from delegators
    /// (the chatbot sets them after a real approval; anyone else could forge a second person),
    /// and never with control characters, which would forge lines in Events and logs.
    fn audit_fields(&self, caller: &Caller, req: &pb::ApplyRequest) -> Result<(), ApplyError> {
        self.audit_field(caller, "approved_by", &req.approved_by)?;
        self.audit_field(caller, "reason", &req.reason)
    }

    /// One audit field, as [`Applier::audit_fields`] checks them.
    fn audit_field(&self, caller: &Caller, field: &str, value: &str) -> Result<(), ApplyError> {
        let delegator = self.delegation.delegators.contains(&caller.user);
        let max = if field == "approved_by" { 253 } else { 1024 };
        if value.is_empty() {
            return Ok(());
        }
        if !delegator {
            return Err(ApplyError::Forbidden(format!(
                "{field}: only a delegator (--delegator, e.g. the chatbot after an approval) may \
                 set it; {} is not one",
                caller.user
            )));
        }
        if value.chars().any(char::is_control) {
            return Err(invalid(format!(
                "{field}: control characters (newlines, tabs, escapes) are not allowed"
            )));
        }
        if value.chars().count() > max {
            return Err(invalid(format!("{field}: at most {max} characters")));
        }
        Ok(())
    }

    /// Who asks and whom the change is made as, with the audit fields checked and the
    /// server's own `note` put before the reason.
    fn requester(
        &self,
        caller: Option<Caller>,
        req: &mut pb::ApplyRequest,
        note: Option<&str>,
    ) -> Result<(Caller, pb::Identity), ApplyError> {
        let caller = authenticated(caller)?;
        let id = self.identity(&caller, req.on_behalf_of.clone())?;
        self.audit_fields(&caller, req)?;
        with_note(req, note);
        Ok((caller, id))
    }

    /// Step 1: whom the change is made as.
    pub(crate) fn identity(
        &self,
        caller: &Caller,
        on_behalf_of: Option<pb::Identity>,
    ) -> Result<pb::Identity, ApplyError> {
        let Some(id) = on_behalf_of.filter(|i| !i.user.is_empty() || !i.groups.is_empty()) else {
            return Ok(pb::Identity {
                user: caller.user.clone(),
                groups: caller.groups.clone(),
            });
        };
        if !self.delegation.delegators.contains(&caller.user) {
            return Err(ApplyError::Forbidden(format!(
                "{} may not act on behalf of another identity: only configured delegators (--delegator) may",
                caller.user
            )));
        }
        if id.user.is_empty() {
            return Err(invalid(
                "on_behalf_of.user: required when acting for someone",
            ));
        }
        // Kubernetes trims header values: " system:x" would arrive as "system:x".
        for name in std::iter::once(&id.user).chain(&id.groups) {
            if name.trim() != name || name.chars().any(char::is_control) || name.is_empty() {
                return Err(invalid(format!(
                    "on_behalf_of: {name:?} is not a valid user or group name"
                )));
            }
        }
        if id.user.starts_with("system:") {
            return Err(ApplyError::Forbidden(format!(
                "on_behalf_of.user {:?}: system identities cannot be delegated",
                id.user
            )));
        }
        for g in &id.groups {
            if g.starts_with("system:") || !self.delegation.allowed_groups.contains(g) {
                return Err(ApplyError::Forbidden(format!(
                    "on_behalf_of.groups: {g:?} may not be delegated (allowed: {})",
                    self.delegation.allowed_groups.join(", ")
                )));
            }
        }
        Ok(id)
    }

    /// Step 2: the request's objects, validated, in apply order (the main object last).
    fn objects(rpc: Shape, manifest: &str) -> Result<Vec<Obj>, ApplyError> {
        if manifest.trim().is_empty() {
            return Err(invalid("manifest: empty"));
        }
        let (docs, problems) = mesh_policy::document::parse_text("manifest", manifest);
        let m = Manifests::from_documents(docs, problems);
        let problems = m.validate();
        if !problems.is_empty() {
            let lines: Vec<String> = problems
                .iter()
                .map(|p| {
                    let field = if p.field.is_empty() {
                        String::new()
                    } else {
                        format!(" {}", p.field)
                    };
                    let what = if p.object.is_empty() {
                        &p.location
                    } else {
                        &p.object
                    };
                    format!("{what}{field}: {}", p.message)
                })
                .collect();
            return Err(invalid(lines.join("; ")));
        }
        let mut out = Vec::new();
        for (doc, r) in &m.resources {
            let v = &doc.value;
            let kind = v["kind"].as_str().unwrap_or_default();
            let api_version = v["apiVersion"].as_str().unwrap_or_default();
            let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
            let main = kind == rpc.main_kind();
            // A rollout's per-route plan holds inbound HTTPRoutes on its Servers.
            let allowed = main
                || SUPPORTING.contains(&kind)
                || (rpc == Shape::Rollout && kind == "HTTPRoute" && group == "policy.linkerd.io");
            let Some(plural) = mesh_policy::kinds::find(group, kind)
                .map(|k| k.plural)
                .filter(|_| allowed && !matches!(r, Resource::Other))
            else {
                return Err(invalid(format!(
                    "{}: {} cannot be applied through {} (it takes one {} and the \
                     MeshTLSAuthentication, NetworkAuthentication and Server objects it needs)",
                    doc.describe(),
                    kind,
                    rpc.name(),
                    rpc.main_kind()
                )));
            };
            let namespace = v["metadata"]["namespace"].as_str().unwrap_or_default();
            if namespace.is_empty() {
                return Err(invalid(format!(
                    "{}: metadata.namespace is required",
                    doc.describe()
                )));
            }
            let name = v["metadata"]["name"].as_str().unwrap_or_default();
            if !mesh_model::is_dns_subdomain(name)
                || !mesh_model::is_dns_subdomain(namespace)
                || namespace.len() > 63
            {
                return Err(invalid(format!(
                    "{}: metadata.name and metadata.namespace must be DNS names (lower case, digits, '-', '.')",
                    doc.describe()
                )));
            }
            if let Some(a) = v["metadata"]["annotations"].as_object()
                && let Some(k) = a.keys().find(|k| k.starts_with(AUDIT_PREFIX))
            {
                return Err(invalid(format!(
                    "{}: metadata.annotations.{k}: the audit trail is written by linkerd-mcp, not by requests",
                    doc.describe()
                )));
            }
            out.push(Obj {
                group: group.to_owned(),
                version: version.to_owned(),
                kind: kind.to_owned(),
                plural,
                namespace: namespace.to_owned(),
                name: v["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                body: v.clone(),
            });
        }
        if out.len() > rpc.max_objects() {
            return Err(invalid(format!(
                "manifest: {} objects; one request takes at most {}",
                out.len(),
                rpc.max_objects()
            )));
        }
        for (i, o) in out.iter().enumerate() {
            if out[..i]
                .iter()
                .any(|p| (&p.kind, &p.namespace, &p.name) == (&o.kind, &o.namespace, &o.name))
            {
                return Err(invalid(format!("manifest: {} appears twice", o.describe())));
            }
        }
        let mains = out.iter().filter(|o| o.kind == rpc.main_kind()).count();
        if mains != 1 && rpc != Shape::Rollout {
            return Err(invalid(format!(
                "manifest: {} takes exactly one {}, found {mains}",
                rpc.name(),
                rpc.main_kind()
            )));
        }
        out.sort_by_key(|o| {
            SUPPORTING
                .iter()
                .position(|k| *k == o.kind)
                .unwrap_or(SUPPORTING.len())
        });
        Ok(out)
    }

    /// Step 3: may the identity make this change, and undo it? (See `verbs` below.)
    async fn review(&self, id: &pb::Identity, o: &Obj, exists: bool) -> Result<(), ApplyError> {
        // What the write needs, and what undoing it would need (rollback must not fail for
        // want of a right the write did not check).
        let verbs: &[&str] = if exists {
            &["patch", "update"]
        } else {
            &["patch", "create", "delete"]
        };
        for verb in verbs {
            self.review_verb(id, o, verb).await?;
        }
        Ok(())
    }

    /// May the identity `verb` the object? (A `SubjectAccessReview` as mesh-mcp.)
    async fn review_verb(&self, id: &pb::Identity, o: &Obj, verb: &str) -> Result<(), ApplyError> {
        let allowed = self
            .steps
            .may(&self.client, id, verb, o.target())
            .await
            .map_err(|e| api_error("SubjectAccessReview", "mesh-mcp", &e))?;
        if !allowed {
            return Err(ApplyError::Forbidden(format!(
                "{} may not {verb} {} in namespace {} (needed to change {})",
                id.user,
                o.resource(),
                o.namespace,
                o.describe()
            )));
        }
        Ok(())
    }

    /// The cluster view, once it has been read at least once.
    pub fn ready_cluster(&self) -> Result<Arc<Cluster>, ApplyError> {
        let cluster = self.cluster.borrow().clone();
        if !cluster.health.ok && cluster.health.last_success.is_none() {
            return Err(ApplyError::Unavailable(format!(
                "the cluster view is not ready: {}",
                cluster.health.error
            )));
        }
        Ok(cluster)
    }

    /// Linkerd's inbound authorization for one request from workload `from` to workload `to`
    /// (`namespace/name`), as the cluster's policy stands now: traffic or not.
    pub fn explain(&self, req: &pb::ExplainAccessRequest) -> Result<pb::PolicyVerdict, ApplyError> {
        use mesh_policy::eval::{AccessRequest, ClientInfo};
        let cluster = self.cluster.borrow().clone();
        if !cluster.health.ok && cluster.health.last_success.is_none() {
            return Err(ApplyError::Unavailable(format!(
                "the cluster view is not ready: {}",
                cluster.health.error
            )));
        }
        let find = |field: &str, id: &str| {
            let (ns, name) = id
                .split_once('/')
                .ok_or_else(|| invalid(format!("{field}: {id:?} is not namespace/name")))?;
            cluster
                .workloads
                .iter()
                .find(|(w, _)| w.namespace == ns && w.name == name)
                .map(|(w, cw)| (w.clone(), cw.clone()))
                .ok_or_else(|| {
                    ApplyError::NotFound(format!(
                        "{field}: no Deployment, StatefulSet or DaemonSet {id} in the cluster"
                    ))
                })
        };
        let (src, client) = find("from", &req.from)?;
        let (dst, server) = find("to", &req.to)?;
        let port = match u16::try_from(req.port) {
            Ok(0) => server
                .port
                .ok_or_else(|| invalid(format!("port: {} has no known port; give one", req.to)))?,
            Ok(p) => p,
            Err(_) => return Err(invalid(format!("port: {} is not a port", req.port))),
        };
        let mut chain = Vec::new();
        if !server.meshed {
            chain.push(format!(
                "{dst} has no Linkerd proxy, so Linkerd policy does not apply"
            ));
            return Ok(pb::PolicyVerdict::from(&mesh_model::PolicyVerdict {
                chain,
                ..Default::default()
            }));
        }
        let identity = client.meshed.then(|| {
            cluster
                .policy
                .sa_identity(&client.service_account, &src.namespace)
        });
        if identity.is_none() {
            chain.push(format!(
                "{src} has no Linkerd proxy: it connects without an identity"
            ));
        }
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let request = AccessRequest {
            client: ClientInfo {
                identity,
                ip: None,
                in_cluster: true,
            },
            pod: server.pod.clone(),
            port,
            method: non_empty(&req.method),
            path: non_empty(&req.path),
        };
        Ok(pb::PolicyVerdict::from(
            &mesh_policy::overlay::explain_request(&cluster, &dst.namespace, &request, chain),
        ))
    }

    /// Runs the pipeline for `caller` (None: the server has no authentication). Refusals are
    /// counted by kind (`mesh_mcp_apply_errors_total{reason}`).
    pub async fn apply(
        &self,
        caller: Option<Caller>,
        rpc: Rpc,
        req: pb::ApplyRequest,
    ) -> Result<pb::ApplyResponse, ApplyError> {
        self.counted(self.run(caller, Shape::One(rpc), req, None, None).await)
    }

    /// Runs the pipeline for a change its approvers approved (`grant`): past the approval
    /// gate, with every approver in its audit trail. Everything else is checked again (RBAC,
    /// admission, the reviewed versions): approval is not a way around them.
    pub async fn apply_granted(
        &self,
        caller: Caller,
        rpc: Rpc,
        req: pb::ApplyRequest,
        grant: &Grant,
    ) -> Result<pb::ApplyResponse, ApplyError> {
        self.counted(
            self.run(Some(caller), Shape::One(rpc), req, None, Some(grant))
                .await,
        )
    }

    /// Runs the pipeline for a rollout's phase: `req.source` is the phase's manifest (Servers,
    /// authentications, AuthorizationPolicies), every object held to its precondition. `note`
    /// (which rollout, which step) is the server's own, put before the requester's reason in
    /// the audit trail.
    pub async fn apply_phase(
        &self,
        caller: Option<Caller>,
        req: pb::ApplyRequest,
        note: &str,
    ) -> Result<pb::ApplyResponse, ApplyError> {
        self.counted(
            self.run(caller, Shape::Rollout, req, Some(note), None)
                .await,
        )
    }

    /// Counts a refusal by kind (`mesh_mcp_apply_errors_total{reason}`).
    fn counted<T>(&self, done: Result<T, ApplyError>) -> Result<T, ApplyError> {
        if let Err(e) = &done {
            self.errors
                .get_or_create(&ReasonLabel {
                    reason: e.metric_label(),
                })
                .inc();
        }
        done
    }

    /// Deletes the objects of `manifest` as the requester, each only if it is still at the
    /// resourceVersion its precondition names (what a rollout wrote): a rollout withdrawn from
    /// audit removes what it created, never an edit someone made since. Reviewed like a write
    /// (identity, audit fields, RBAC `delete`, a server-side dry-run), and audited.
    pub async fn delete(
        &self,
        caller: Option<Caller>,
        manifest: &str,
        req: pb::ApplyRequest,
        note: &str,
    ) -> Result<pb::ApplyResponse, ApplyError> {
        self.counted(self.run_delete(caller, manifest, req, note).await)
    }

    async fn run_delete(
        &self,
        caller: Option<Caller>,
        manifest: &str,
        mut req: pb::ApplyRequest,
        note: &str,
    ) -> Result<pb::ApplyResponse, ApplyError> {
        let (caller, id) = self.requester(caller, &mut req, Some(note))?;
        let mut objects = Self::objects(Shape::Rollout, manifest)?;
        if !req.dry_run {
            let named: Vec<pb::AppliedObject> = objects
                .iter()
                .map(|o| pb::AppliedObject {
                    namespace: o.namespace.clone(),
                    ..Default::default()
                })
                .collect();
            self.rollout_gate(&caller, &id, &req, &named)?;
        }
        // What names others goes first: authorizations, then authentications and Servers.
        objects.reverse();
        let mut report = Vec::with_capacity(objects.len());
        let as_id = self.as_identity(&id)?;
        let audit = audit_id();
        for dry in [true, false] {
            if !dry && req.dry_run {
                break;
            }
            report.clear();
            for o in &objects {
                let want = reviewed_version(&req, o, false).unwrap_or_default();
                let current = o
                    .api(self.client.clone())
                    .get_opt(&o.name)
                    .await
                    .map_err(|e| api_error(&format!("reading {}", o.describe()), "mesh-mcp", &e))?;
                let Some(current) = current else {
                    report.push(pb::AppliedObject {
                        kind: o.kind.clone(),
                        namespace: o.namespace.clone(),
                        name: o.name.clone(),
                        action: "unchanged".into(),
                        ..Default::default()
                    });
                    continue;
                };
                let now = current
                    .metadata
                    .resource_version
                    .clone()
                    .unwrap_or_default();
                if !want.is_empty() && now != want {
                    let by = last_manager(&current)
                        .map(|m| format!(", last written by {m}"))
                        .unwrap_or_default();
                    return Err(ApplyError::Stale(format!(
                        "{} changed since linkerd-mcp wrote it (resourceVersion {want} then, {now} now{by}): \
                         it is left alone; review it and remove it by hand if it should go",
                        o.describe()
                    )));
                }
                if dry {
                    self.review_verb(&id, o, "delete").await?;
                }
                let dp = DeleteParams {
                    dry_run: dry,
                    preconditions: Some(kube::api::Preconditions {
                        resource_version: Some(now.clone()),
                        uid: current.metadata.uid.clone(),
                    }),
                    ..DeleteParams::default()
                };
                o.api(as_id.clone())
                    .delete(&o.name, &dp)
                    .await
                    .map_err(|e| api_error(&format!("deleting {}", o.describe()), &id.user, &e))?;
                report.push(pb::AppliedObject {
                    kind: o.kind.clone(),
                    namespace: o.namespace.clone(),
                    name: o.name.clone(),
                    action: if dry { "would delete" } else { "deleted" }.into(),
                    diff: unified(
                        &reviewable(&serde_json::to_value(&current).unwrap_or_default()),
                        "",
                        &o.describe(),
                    ),
                    resource_version_before: now,
                    ..Default::default()
                });
            }
        }
        let diff: String = report.iter().map(|a| a.diff.clone()).collect();
        let record = audit_record(&audit, &caller, &id, &req, &report, &diff, None);
        tracing::info!(target: "audit", record = %record, "policy deletion");
        Ok(pb::ApplyResponse {
            dry_run: req.dry_run,
            diff,
            audit_id: audit,
            objects: report,
            acted_as: Some(id),
            ..Default::default()
        })
    }

    /// Counts refused changes by kind into `registry` (`mesh_mcp_apply_errors_total`).
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "mesh_mcp_apply_errors",
            "Policy changes refused or failed, by reason (invalid, forbidden, stale, ...)",
            self.errors.clone(),
        );
    }

    async fn run(
        &self,
        caller: Option<Caller>,
        rpc: Shape,
        mut req: pb::ApplyRequest,
        note: Option<&str>,
        grant: Option<&Grant>,
    ) -> Result<pb::ApplyResponse, ApplyError> {
        let caller = authenticated(caller)?;
        let id = self.identity(&caller, req.on_behalf_of.clone())?;
        // Who approved is checked at once; the reason once the approval gate has spoken
        // (below): a change that waits for approvals takes its requester's reason with the
        // approval request instead.
        if grant.is_none() {
            self.audit_field(&caller, "approved_by", &req.approved_by)?;
        }
        if rpc == Shape::Rollout && (req.expect_absent || !req.expected_resource_version.is_empty())
        {
            return Err(invalid(
                "a rollout phase has no main object: every object's state goes in preconditions",
            ));
        }
        let manifest = match &req.source {
            Some(pb::apply_request::Source::Manifest(m)) => std::borrow::Cow::Borrowed(m),
            Some(pb::apply_request::Source::Spec(spec)) => match rpc {
                Shape::Rollout => {
                    return Err(invalid("a rollout holds its objects: it takes no spec"));
                }
                Shape::One(rpc) => {
                    let cluster = self.cluster.borrow().clone();
                    std::borrow::Cow::Owned(crate::spec::manifest(rpc, spec, |sa, ns| {
                        cluster.policy.sa_identity(sa, ns)
                    })?)
                }
            },
            None => return Err(invalid("a manifest or a spec is required")),
        };
        // Bounded before parsing, and parsed off the async workers with a deadline: a hostile
        // document must not stall the graph reads and probes served by the same runtime.
        mesh_model::input::check(&manifest, mesh_model::input::InputLimits::MANIFEST)
            .map_err(|e| invalid(format!("manifest: {e}")))?;
        let text = manifest.into_owned();
        let objects = tokio::time::timeout(
            PARSE_DEADLINE,
            tokio::task::spawn_blocking(move || Self::objects(rpc, &text)),
        )
        .await
        .map_err(|_| {
            ApplyError::Timeout(format!(
                "manifest: not parsed within {}s",
                PARSE_DEADLINE.as_secs()
            ))
        })?
        .map_err(|e| ApplyError::Internal(format!("manifest parser: {e}")))??;

        // What is there now (mesh-mcp's own read access), and may the identity change it?
        // Objects are independent here, so they are asked about at once; the first failure in
        // request order is the one reported.
        let id_ref = &id;
        let checks = objects.iter().map(|o| async move {
            let current = o
                .api(self.client.clone())
                .get_opt(&o.name)
                .await
                .map_err(|e| api_error(&format!("reading {}", o.describe()), "mesh-mcp", &e))?;
            self.review(id_ref, o, current.is_some()).await?;
            Ok::<_, ApplyError>(current)
        });
        let before: Vec<Option<DynamicObject>> = futures_util::future::join_all(checks)
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;

        // Server-side dry-run of every object, as the identity.
        let as_id = self.as_identity(&id)?;
        let main = objects.len() - 1;
        if req.expect_absent
            && let Some(now) = &before[main]
        {
            return Err(ApplyError::Stale(format!(
                "{} did not exist when the change was reviewed, but exists now \
                 (resourceVersion {}): review it again",
                objects[main].describe(),
                now.metadata.resource_version.as_deref().unwrap_or("?")
            )));
        }
        if !req.expected_resource_version.is_empty() && before[main].is_none() {
            return Err(ApplyError::Stale(format!(
                "{} was reviewed at resourceVersion {}, but it does not exist now",
                objects[main].describe(),
                req.expected_resource_version
            )));
        }
        check_preconditions(&req, &objects, &before)?;
        // Dry-runs check each object on its own (the API server has no references between
        // them), so they run at once too.
        let dry_runs = objects.iter().enumerate().map(|(i, o)| {
            let (as_id, before, id, req) = (as_id.clone(), &before, &id, &req);
            async move {
                let mut body = o.body.clone();
                if let Some(rv) = reviewed_version(req, o, i == main) {
                    body["metadata"]["resourceVersion"] = json!(rv);
                }
                let mut pp = PatchParams::apply(FIELD_MANAGER)
                    .dry_run()
                    .validation_strict();
                if req.force {
                    pp = pp.force();
                }
                let api = o.api(as_id);
                let after = self
                    .steps
                    .apply(&api, o.target(), &body, &pp)
                    .await
                    .map_err(|e| {
                        api_error(&format!("dry-run of {}", o.describe()), &id.user, &e)
                    })?;
                let after = serde_json::to_value(&after).unwrap_or_default();
                let old = before[i]
                    .as_ref()
                    .map(|b| reviewable(&serde_json::to_value(b).unwrap_or_default()))
                    .unwrap_or_default();
                let diff = unified(&old, &reviewable(&after), &o.describe());
                Ok::<_, ApplyError>((diff, after))
            }
        });
        let results: Vec<(String, Value)> = futures_util::future::join_all(dry_runs)
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;

        // The what-if reads the objects as the server would store them (fields other managers
        // own kept), not the manifest alone.
        let merged: Vec<Value> = results.iter().map(|(_, after)| after.clone()).collect();
        let (affected, mut warnings) = self.what_if(merged);
        let audit = audit_id();
        let changed = results.iter().any(|(d, _)| !d.is_empty());
        let mut applied: Vec<pb::AppliedObject> = Vec::new();
        let dry = req.dry_run;
        for (o, (diff, after)) in objects.iter().zip(&results) {
            let i = applied.len();
            applied.push(pb::AppliedObject {
                kind: o.kind.clone(),
                namespace: o.namespace.clone(),
                name: o.name.clone(),
                action: match (diff.is_empty(), before[i].is_some(), dry) {
                    (true, _, _) => "unchanged",
                    (false, false, true) => "would create",
                    (false, true, true) => "would update",
                    (false, false, false) => "created",
                    (false, true, false) => "updated",
                }
                .into(),
                diff: diff.clone(),
                object: after.to_string(),
                resource_version_before: before[i]
                    .as_ref()
                    .and_then(|b| b.metadata.resource_version.clone())
                    .unwrap_or_default(),
            });
        }
        if !dry && !changed {
            warnings.push("nothing to change: the cluster already holds this".into());
        }
        if changed && rpc == Shape::Rollout && !dry {
            self.rollout_gate(&caller, &id, &req, &applied)?;
        }
        if changed && grant.is_none() && rpc != Shape::Rollout {
            match self.gate(&caller, &id, &applied) {
                Ok(Gate::Direct) => {}
                Ok(Gate::Approval { needed }) if dry => warnings.push(format!(
                    "{NEEDS_APPROVALS} {needed} approval(s) under {}: ask with RequestApproval",
                    self.approval_policy()
                        .requirement(&written_namespaces(&applied))
                        .names()
                )),
                Ok(Gate::Approval { needed }) => {
                    return Err(ApplyError::NeedsApproval(format!(
                        "{}: {} wants {needed} approval(s) for this change{}; \
                         nothing was written. Ask with RequestApproval (`meshctl apply` does, \
                         and prints the approval id; the MCP tool apply_plan does for agents)",
                        mesh_proto::APPROVAL_REQUIRED,
                        self.approval_policy()
                            .requirement(&written_namespaces(&applied))
                            .names(),
                        if self.is_agent(&caller) {
                            " made by an agent"
                        } else {
                            ""
                        }
                    )));
                }
                Err(e) if dry => warnings.push(e.message().to_owned()),
                Err(e) => return Err(e),
            }
        }
        match grant {
            Some(g) => {
                // The service's own record of who approved and why, never a caller's.
                req.approved_by = g.approvers.join(",");
                req.reason.clone_from(&g.reason);
            }
            None => {
                self.audit_field(&caller, "reason", &req.reason)?;
                with_note(&mut req, note);
            }
        }
        if !dry && changed {
            self.write(
                &id,
                &caller,
                &req,
                &objects,
                &before,
                &audit,
                &mut applied,
                grant,
            )
            .await?;
        }
        let diff: String = applied.iter().map(|a| a.diff.clone()).collect();
        let record = audit_record(&audit, &caller, &id, &req, &applied, &diff, grant);
        tracing::info!(target: "audit", record = %record, "policy change");
        Ok(pb::ApplyResponse {
            dry_run: dry,
            object: applied.last().map(|a| a.object.clone()).unwrap_or_default(),
            diff,
            warnings,
            audit_id: audit,
            affected_edges: affected,
            objects: applied,
            acted_as: Some(id),
        })
    }

    /// Step 6 and 7: apply in order as the identity, rolling back on failure; then audit.
    #[allow(
        clippy::too_many_arguments,
        reason = "one pipeline step's whole context"
    )]
    async fn write(
        &self,
        id: &pb::Identity,
        caller: &Caller,
        req: &pb::ApplyRequest,
        objects: &[Obj],
        before: &[Option<DynamicObject>],
        audit: &str,
        report: &mut [pb::AppliedObject],
        grant: Option<&Grant>,
    ) -> Result<(), ApplyError> {
        let as_id = self.as_identity(id)?;
        let main = objects.len() - 1;
        let mut annotations = BTreeMap::from([
            (format!("{AUDIT_PREFIX}requested-by"), caller.user.clone()),
            (format!("{AUDIT_PREFIX}acted-as"), id.user.clone()),
            (format!("{AUDIT_PREFIX}audit-id"), audit.to_owned()),
        ]);
        if !req.approved_by.is_empty() {
            annotations.insert(
                format!("{AUDIT_PREFIX}approved-by"),
                req.approved_by.clone(),
            );
        }
        if !req.reason.is_empty() {
            annotations.insert(format!("{AUDIT_PREFIX}reason"), req.reason.clone());
        }
        if let Some(g) = grant {
            annotations.insert(format!("{AUDIT_PREFIX}approval-id"), g.approval_id.clone());
            annotations.insert(format!("{AUDIT_PREFIX}approval-rule"), g.rule.clone());
            if let Some(agent) = &g.agent {
                annotations.insert(format!("{AUDIT_PREFIX}proposed-by"), agent.clone());
            }
        }
        let mut written: Vec<(usize, DynamicObject)> = Vec::new();
        for (i, o) in objects.iter().enumerate() {
            if report[i].action == "unchanged" {
                continue;
            }
            let mut body = o.body.clone();
            for (k, v) in &annotations {
                body["metadata"]["annotations"][k] = json!(v);
            }
            if let Some(rv) = reviewed_version(req, o, i == main) {
                body["metadata"]["resourceVersion"] = json!(rv);
            }
            let mut pp = PatchParams::apply(FIELD_MANAGER).validation_strict();
            if req.force {
                pp = pp.force();
            }
            let api = o.api(as_id.clone());
            match self.steps.apply(&api, o.target(), &body, &pp).await {
                Ok(after) => {
                    report[i].object = serde_json::to_value(&after).unwrap_or_default().to_string();
                    written.push((i, after));
                }
                Err(e) => {
                    let status = api_error(&format!("applying {}", o.describe()), &id.user, &e);
                    report[i].action = "not applied".into();
                    let mut undone = Vec::new();
                    for (j, ours) in written.iter().rev() {
                        let (o, api) = (&objects[*j], objects[*j].api(as_id.clone()));
                        // Preconditions on what we wrote: a change someone made since is
                        // reported, never overwritten.
                        let r = match &before[*j] {
                            None => {
                                let dp = DeleteParams {
                                    preconditions: Some(kube::api::Preconditions {
                                        resource_version: ours.metadata.resource_version.clone(),
                                        uid: ours.metadata.uid.clone(),
                                    }),
                                    ..DeleteParams::default()
                                };
                                api.delete(&o.name, &dp)
                                    .await
                                    .map(|_| "deleted by rollback")
                            }
                            Some(prev) => {
                                let mut prev = prev.clone();
                                prev.metadata.managed_fields = None;
                                prev.metadata.resource_version =
                                    ours.metadata.resource_version.clone();
                                api.replace(&o.name, &PostParams::default(), &prev)
                                    .await
                                    .map(|_| "rolled back")
                            }
                        };
                        let what = match r {
                            Ok(a) => a.to_owned(),
                            Err(e) => format!("rollback FAILED: {e}"),
                        };
                        report[*j].action = what.clone();
                        undone.push(format!("{}: {what}", o.describe()));
                    }
                    let msg = if undone.is_empty() {
                        status.message().to_owned()
                    } else {
                        format!(
                            "{}; earlier objects of this request: {}",
                            status.message(),
                            undone.join(", ")
                        )
                    };
                    let record = json!({"audit_id": audit, "acted_as": id.user, "error": msg});
                    tracing::warn!(target: "audit", record = %record, "policy change failed");
                    return Err(status.with_message(msg));
                }
            }
        }
        // Events only once every write stood (a rolled-back change has none).
        for (i, after) in &written {
            self.event(&objects[*i], after, caller, id, req, audit, grant)
                .await;
        }
        Ok(())
    }

    /// A Kubernetes Event on the applied object (mesh-mcp's own identity; best effort).
    #[allow(
        clippy::too_many_arguments,
        reason = "one pipeline step's whole context, as write's"
    )]
    async fn event(
        &self,
        o: &Obj,
        after: &DynamicObject,
        caller: &Caller,
        id: &pb::Identity,
        req: &pb::ApplyRequest,
        audit: &str,
        grant: Option<&Grant>,
    ) {
        use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        );
        let approved = match grant {
            Some(g) => format!(
                ", approved by {} under {} (approval {}){}",
                g.approvers.join(", "),
                g.rule,
                g.approval_id,
                g.agent
                    .as_ref()
                    .map(|a| format!(", proposed by agent {a}"))
                    .unwrap_or_default()
            ),
            None if req.approved_by.is_empty() => String::new(),
            None => format!(", approved by {}", req.approved_by),
        };
        let ev = Event {
            metadata: kube::api::ObjectMeta {
                // Unique per object and change, within the 253 characters a name may have.
                name: Some(format!(
                    "{}.{}.{audit}",
                    o.name.chars().take(200).collect::<String>(),
                    o.kind.to_ascii_lowercase()
                )),
                namespace: Some(o.namespace.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some(if o.group.is_empty() {
                    o.version.clone()
                } else {
                    format!("{}/{}", o.group, o.version)
                }),
                kind: Some(o.kind.clone()),
                name: Some(o.name.clone()),
                namespace: Some(o.namespace.clone()),
                uid: after.metadata.uid.clone(),
                resource_version: after.metadata.resource_version.clone(),
                ..Default::default()
            },
            reason: Some("PolicyApplied".into()),
            message: Some(format!(
                "applied by linkerd-mcp as {} for {}{approved} (audit id {audit}){}",
                id.user,
                caller.user,
                if req.reason.is_empty() {
                    String::new()
                } else {
                    format!(": {}", req.reason)
                }
            )),
            type_: Some("Normal".into()),
            source: Some(EventSource {
                component: Some("linkerd-mcp".into()),
                ..Default::default()
            }),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            ..Default::default()
        };
        if let Err(e) = Api::<Event>::namespaced(self.client.clone(), &o.namespace)
            .create(&PostParams::default(), &ev)
            .await
        {
            tracing::warn!(error = %e, "could not record the Kubernetes Event for an applied change");
        }
    }

    /// Step 5: which observed edges the change would allow or deny.
    fn what_if(&self, objects: Vec<Value>) -> (Vec<pb::AffectedEdge>, Vec<String>) {
        let cluster = self.cluster.borrow().clone();
        let Some(graph): Option<Arc<MeshGraph>> = self.graph.borrow().clone() else {
            return (
                Vec::new(),
                vec!["no graph yet: the what-if could not be computed".into()],
            );
        };
        let mut warnings = Vec::new();
        if !cluster.health.ok {
            warnings.push(format!(
                "the Kubernetes view is stale ({}): the what-if may be off",
                cluster.health.error
            ));
        }
        let docs = objects
            .into_iter()
            .map(|value| mesh_policy::document::Document {
                file: "dry-run".into(),
                line: 0,
                value,
            })
            .collect();
        let proposed = Manifests::from_documents(docs, Vec::new()).policy_set();
        let next = cluster.with_proposed(&proposed);
        let namespaces = cluster.namespaces_affected_by(&proposed);
        let mut out = Vec::new();
        for e in graph.edges.values().filter(|e| {
            matches!(&e.key.dst, mesh_model::Destination::Workload(d) if namespaces.contains(&d.namespace))
        }) {
            let was = mesh_policy::overlay::verdict_of(&cluster, e).decision;
            let will = mesh_policy::overlay::verdict_of(&next, e).decision;
            if was == will {
                continue;
            }
            if will == Decision::Denied && e.metrics.rps > 0.0 {
                warnings.push(format!(
                    "would deny {} -> {}: {:.2} rps observed in the window",
                    e.key.src, e.key.dst, e.metrics.rps
                ));
            }
            let wire = pb::Edge::from(e);
            out.push(pb::AffectedEdge {
                edge: Some(pb::EdgeRef {
                    src: wire.src,
                    dst: wire.dst,
                    dst_authority: wire.dst_authority,
                    protocol: wire.protocol,
                }),
                before: mesh_proto::decision_to_pb(was).into(),
                after: mesh_proto::decision_to_pb(will).into(),
                rps: e.metrics.rps,
            });
        }
        (out, warnings)
    }
}
