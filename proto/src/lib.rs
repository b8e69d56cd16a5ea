//! The `linkerd.mcp.v1` wire types (prost + tonic, generated at build time with a vendored
//! protoc), their proto3-canonical JSON (pbjson), and the conversions to and from `mesh-model`.
//!
//! Validation of incoming messages happens once, here at the boundary: `TryFrom<pb::X>` refuses
//! what the domain cannot represent with an [`InvalidMessage`] naming the field.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_model as model;

/// Generated code for package `linkerd.mcp.v1`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
#[rustfmt::skip]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/linkerd.mcp.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/linkerd.mcp.v1.serde.rs"));
}

/// The `MeshService` server as mesh-mcp implements it: the same service and wire format as
/// [`pb::mesh_service_server`], except that `GetMeshGraph` answers with an [`EncodedGraph`], so
/// the server encodes a graph once per version and filter, not once per request.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
#[rustfmt::skip]
pub mod server {
    include!(concat!(env!("OUT_DIR"), "/server/linkerd.mcp.v1.rs"));
}

/// A `linkerd.mcp.v1.MeshGraph` already encoded: the graph's bytes, shared by every answer of
/// the same version and filter, followed by fields of this answer only (its sources' health).
/// Protobuf merges fields that come later, so a client reads one `MeshGraph`. Only ever sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EncodedGraph {
    graph: prost::bytes::Bytes,
    extra: prost::bytes::Bytes,
}

impl EncodedGraph {
    /// `graph`, encoded once (share it: cloning is a reference count), and `sources` for this
    /// answer (an encoded `graph` must have none of its own).
    pub fn new(graph: prost::bytes::Bytes, sources: Vec<pb::SourceHealth>) -> Self {
        let extra = if sources.is_empty() {
            prost::bytes::Bytes::new()
        } else {
            prost::Message::encode_to_vec(&pb::MeshGraph {
                sources,
                ..Default::default()
            })
            .into()
        };
        Self { graph, extra }
    }

    /// The whole message's bytes (a copy; for tests and logs).
    pub fn to_vec(&self) -> Vec<u8> {
        [self.graph.as_ref(), self.extra.as_ref()].concat()
    }
}

impl prost::Message for EncodedGraph {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        buf.put_slice(&self.graph);
        buf.put_slice(&self.extra);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        // Never decoded: mesh-mcp only sends it. A decoder skips what it cannot keep.
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.graph.len() + self.extra.len()
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

/// A `linkerd.mcp.v1.MeshGraphEvent` as a watch stream sends it: a delta shared by every watch
/// of the same filter, encoded once so that each stream writes the same bytes, or an event of
/// one stream (a heartbeat, a snapshot), encoded as it is sent. Only ever sent.
#[derive(Clone, Debug, PartialEq)]
pub enum EncodedEvent {
    /// Encoded once, for many streams (cloning is a reference count).
    Shared(prost::bytes::Bytes),
    /// One stream's event.
    Own(Box<pb::MeshGraphEvent>),
}

impl Default for EncodedEvent {
    fn default() -> Self {
        Self::Shared(prost::bytes::Bytes::new())
    }
}

impl EncodedEvent {
    /// `event`, encoded now to be sent on many streams.
    pub fn shared(event: &pb::MeshGraphEvent) -> Self {
        Self::Shared(prost::Message::encode_to_vec(event).into())
    }

    /// `event`, for one stream.
    pub fn own(event: pb::MeshGraphEvent) -> Self {
        Self::Own(Box::new(event))
    }
}

impl prost::Message for EncodedEvent {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        match self {
            Self::Shared(b) => buf.put_slice(b),
            Self::Own(e) => e.encode_raw(buf),
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        // Never decoded: mesh-mcp only sends it.
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        match self {
            Self::Shared(b) => b.len(),
            Self::Own(e) => e.encoded_len(),
        }
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

/// The encoded `FileDescriptorSet` of the API, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/mesh_descriptor.bin"));

/// Ways a wire message can fail to map onto the domain.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidMessage {
    /// A required field is absent.
    #[error("missing field `{0}`")]
    Missing(&'static str),
    /// A field has a value the domain does not know.
    #[error("field `{field}`: {reason}")]
    Invalid {
        /// The field path.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

fn timestamp(t: SystemTime) -> pbjson_types::Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    pbjson_types::Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

fn system_time(t: &pbjson_types::Timestamp) -> Result<SystemTime, InvalidMessage> {
    let invalid = |reason: &str| InvalidMessage::Invalid {
        field: "timestamp",
        reason: reason.into(),
    };
    let secs = u64::try_from(t.seconds).map_err(|_| invalid("before 1970"))?;
    // Timestamps of callers are input: out of range is an answer, never a panic.
    let nanos = u32::try_from(t.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)
        .ok_or_else(|| invalid("nanos outside 0..1e9"))?;
    UNIX_EPOCH
        .checked_add(Duration::new(secs, nanos))
        .ok_or_else(|| invalid("too far in the future"))
}

// === WorkloadRef, Workload ===

impl From<&model::WorkloadRef> for pb::WorkloadRef {
    fn from(w: &model::WorkloadRef) -> Self {
        Self {
            namespace: w.namespace.clone(),
            kind: w.kind.clone(),
            name: w.name.clone(),
        }
    }
}

impl From<pb::WorkloadRef> for model::WorkloadRef {
    fn from(w: pb::WorkloadRef) -> Self {
        Self {
            namespace: w.namespace,
            kind: w.kind,
            name: w.name,
        }
    }
}

impl From<&model::Workload> for pb::Workload {
    fn from(w: &model::Workload) -> Self {
        Self {
            r#ref: Some((&w.id).into()),
            service_account: w.service_account.clone(),
            identity: w.identity.clone(),
            meshed: w.meshed,
            ready_replicas: w.ready_replicas,
        }
    }
}

impl TryFrom<pb::Workload> for model::Workload {
    type Error = InvalidMessage;
    fn try_from(w: pb::Workload) -> Result<Self, InvalidMessage> {
        Ok(Self {
            id: w
                .r#ref
                .ok_or(InvalidMessage::Missing("workload.ref"))?
                .into(),
            service_account: w.service_account,
            identity: w.identity,
            meshed: w.meshed,
            ready_replicas: w.ready_replicas,
        })
    }
}

// === Edge ===

impl From<model::TlsStatus> for pb::TlsStatus {
    fn from(t: model::TlsStatus) -> Self {
        match t {
            model::TlsStatus::Mtls => Self::Mtls,
            model::TlsStatus::Plaintext => Self::Plaintext,
            model::TlsStatus::Unknown => Self::Unknown,
        }
    }
}

/// How every refusal of a write that waits for approvals begins (`FAILED_PRECONDITION`): front
/// ends that can ask for the approval instead (`meshctl apply`, the MCP `apply_plan`) look for it.
pub const APPROVAL_REQUIRED: &str = "approval required";

/// Whether `s` refuses a write because it needs approvals first.
pub fn needs_approval(s: &tonic::Status) -> bool {
    s.code() == tonic::Code::FailedPrecondition && s.message().starts_with(APPROVAL_REQUIRED)
}

/// Every approval state with its word, as people read and type it.
pub const APPROVAL_STATES: [(pb::ApprovalState, &str); 8] = [
    (pb::ApprovalState::Pending, "pending"),
    (pb::ApprovalState::Applying, "applying"),
    (pb::ApprovalState::Applied, "applied"),
    (pb::ApprovalState::Stale, "stale"),
    (pb::ApprovalState::Failed, "failed"),
    (pb::ApprovalState::Unknown, "unknown"),
    (pb::ApprovalState::Rejected, "rejected"),
    (pb::ApprovalState::Expired, "expired"),
];

/// The word for an approval state (`pending`, `applied`, ...); `unspecified` for others.
pub fn approval_state_word(state: i32) -> &'static str {
    APPROVAL_STATES
        .iter()
        .find(|(s, _)| *s as i32 == state)
        .map_or("unspecified", |(_, w)| w)
}

/// An object's action as a request shows it: its dry-run's "would create" reads "created" once
/// the request is applied.
pub fn approval_action(state: i32, action: &str) -> &str {
    if state != pb::ApprovalState::Applied as i32 {
        return action;
    }
    match action {
        "would create" => "created",
        "would update" => "updated",
        other => other,
    }
}

/// Who asked for an approval request: the person it is made for ("alice"), or the agent and
/// that person ("copilot for alice").
pub fn approval_requester(a: &pb::Approval) -> String {
    let person = a
        .on_behalf_of
        .as_ref()
        .map_or(a.requested_by.as_str(), |i| i.user.as_str());
    if a.agent.is_empty() {
        person.to_owned()
    } else {
        format!("{} for {person}", a.agent)
    }
}

/// An approval request's approvals so far, as people read them: "1 of 2: bob".
pub fn approval_tally(a: &pb::Approval) -> String {
    let names: Vec<&str> = a.approvals.iter().map(|v| v.user.as_str()).collect();
    if names.is_empty() {
        format!("0 of {}", a.needed)
    } else {
        format!("{} of {}: {}", names.len(), a.needed, names.join(", "))
    }
}

/// The main object of an approval request's change ("AuthorizationPolicy ns/name"): the last
/// one its review lists.
pub fn approval_target(a: &pb::Approval) -> Option<String> {
    a.objects
        .last()
        .map(|o| format!("{} {}/{}", o.kind, o.namespace, o.name))
}

/// The approval state a word names.
pub fn approval_state_of(word: &str) -> Option<pb::ApprovalState> {
    APPROVAL_STATES
        .iter()
        .find(|(_, w)| w.eq_ignore_ascii_case(word))
        .map(|(s, _)| *s)
}

/// Maps the wire TLS status; `None` for `TLS_STATUS_UNSPECIFIED` (useful as "no filter").
pub fn tls_status(t: pb::TlsStatus) -> Option<model::TlsStatus> {
    match t {
        pb::TlsStatus::Unspecified => None,
        pb::TlsStatus::Mtls => Some(model::TlsStatus::Mtls),
        pb::TlsStatus::Plaintext => Some(model::TlsStatus::Plaintext),
        pb::TlsStatus::Unknown => Some(model::TlsStatus::Unknown),
    }
}

/// The wire form of a decision.
pub fn decision_to_pb(d: model::Decision) -> pb::policy_verdict::Decision {
    use pb::policy_verdict::Decision as D;
    match d {
        model::Decision::Unknown => D::Unknown,
        model::Decision::Allowed => D::Allowed,
        model::Decision::Denied => D::Denied,
        model::Decision::Audit => D::Audit,
    }
}

fn decision_from_pb(d: i32) -> model::Decision {
    use pb::policy_verdict::Decision as D;
    match D::try_from(d) {
        Ok(D::Allowed) => model::Decision::Allowed,
        Ok(D::Denied) => model::Decision::Denied,
        Ok(D::Audit) => model::Decision::Audit,
        _ => model::Decision::Unknown,
    }
}

impl From<&model::PolicyVerdict> for pb::PolicyVerdict {
    fn from(p: &model::PolicyVerdict) -> Self {
        Self {
            decision: decision_to_pb(p.decision).into(),
            server: p.server.clone(),
            default_policy: p.default_policy.clone(),
            authorization_policies: p.authorization_policies.clone(),
            http_route: p.http_route.clone(),
            chain: p.chain.clone(),
            observed_allow_rps: p.observed_allow_rps,
            observed_deny_rps: p.observed_deny_rps,
            observed_audit_rps: p.observed_audit_rps,
            rate_limit: p.rate_limit.clone(),
            observed_rate_limited_rps: p.observed_rate_limited_rps,
            disagreement: p.disagreement.clone(),
        }
    }
}

impl From<pb::PolicyVerdict> for model::PolicyVerdict {
    fn from(p: pb::PolicyVerdict) -> Self {
        Self {
            decision: decision_from_pb(p.decision),
            server: p.server,
            default_policy: p.default_policy,
            authorization_policies: p.authorization_policies,
            http_route: p.http_route,
            chain: p.chain,
            observed_allow_rps: p.observed_allow_rps,
            observed_deny_rps: p.observed_deny_rps,
            observed_audit_rps: p.observed_audit_rps,
            rate_limit: p.rate_limit,
            observed_rate_limited_rps: p.observed_rate_limited_rps,
            disagreement: p.disagreement,
        }
    }
}

impl From<&model::EdgeMetrics> for pb::EdgeMetrics {
    fn from(m: &model::EdgeMetrics) -> Self {
        Self {
            rps: m.rps,
            success_rate: m.success_rate,
            latency_p50_ms: m.latency_p50_ms,
            latency_p95_ms: m.latency_p95_ms,
            latency_p99_ms: m.latency_p99_ms,
            tcp_open_connections: m.tcp_open_connections,
            read_bytes_per_sec: m.read_bytes_per_sec,
            write_bytes_per_sec: m.write_bytes_per_sec,
        }
    }
}

impl From<pb::EdgeMetrics> for model::EdgeMetrics {
    fn from(m: pb::EdgeMetrics) -> Self {
        Self {
            rps: m.rps,
            success_rate: m.success_rate,
            latency_p50_ms: m.latency_p50_ms,
            latency_p95_ms: m.latency_p95_ms,
            latency_p99_ms: m.latency_p99_ms,
            tcp_open_connections: m.tcp_open_connections,
            read_bytes_per_sec: m.read_bytes_per_sec,
            write_bytes_per_sec: m.write_bytes_per_sec,
        }
    }
}

fn dst_to_pb(d: &model::Destination) -> (Option<pb::WorkloadRef>, String) {
    match d {
        model::Destination::Workload(w) => (Some(w.into()), String::new()),
        model::Destination::Authority(a) => (None, a.clone()),
    }
}

fn edge_key_from_pb(
    src: Option<pb::WorkloadRef>,
    dst: Option<pb::WorkloadRef>,
    authority: String,
    protocol: &str,
) -> Result<model::EdgeKey, InvalidMessage> {
    let src = src.ok_or(InvalidMessage::Missing("edge.src"))?.into();
    let dst = match (dst, authority.is_empty()) {
        (Some(d), _) => model::Destination::Workload(d.into()),
        (None, false) => model::Destination::Authority(authority),
        (None, true) => return Err(InvalidMessage::Missing("edge.dst or edge.dst_authority")),
    };
    let protocol = model::Protocol::parse(protocol).ok_or_else(|| InvalidMessage::Invalid {
        field: "edge.protocol",
        reason: format!("{protocol:?} is not one of http, grpc, tcp"),
    })?;
    Ok(model::EdgeKey { src, dst, protocol })
}

impl From<&model::EdgeKey> for pb::EdgeRef {
    fn from(k: &model::EdgeKey) -> Self {
        let (dst, dst_authority) = dst_to_pb(&k.dst);
        Self {
            src: Some((&k.src).into()),
            dst,
            dst_authority,
            protocol: k.protocol.as_str().to_owned(),
        }
    }
}

impl TryFrom<pb::EdgeRef> for model::EdgeKey {
    type Error = InvalidMessage;
    fn try_from(k: pb::EdgeRef) -> Result<Self, InvalidMessage> {
        edge_key_from_pb(k.src, k.dst, k.dst_authority, &k.protocol)
    }
}

impl From<&model::Edge> for pb::Edge {
    fn from(e: &model::Edge) -> Self {
        let (dst, dst_authority) = dst_to_pb(&e.key.dst);
        let mut out = Self {
            src: Some((&e.key.src).into()),
            dst,
            dst_authority,
            protocol: e.key.protocol.as_str().to_owned(),
            tls: 0,
            no_tls_reason: e.no_tls_reason.clone(),
            client_identity: e.client_identity.clone(),
            server_identity: e.server_identity.clone(),
            metrics: Some((&e.metrics).into()),
            policy: Some((&e.policy).into()),
            routes: e.routes.iter().map(Into::into).collect(),
        };
        out.set_tls(e.tls.into());
        out
    }
}

impl From<&model::RouteStats> for pb::RouteStats {
    fn from(r: &model::RouteStats) -> Self {
        Self {
            route_kind: r.id.kind.clone(),
            route_namespace: r.id.namespace.clone(),
            route_name: r.id.name.clone(),
            parent: r.id.parent.clone(),
            rps: r.rps,
            success_rate: r.success_rate,
            latency_p50_ms: r.latency_p50_ms,
            latency_p95_ms: r.latency_p95_ms,
            latency_p99_ms: r.latency_p99_ms,
            status_rps: r.status_rps.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            rate_limited_rps: r.rate_limited_rps,
        }
    }
}

impl From<pb::RouteStats> for model::RouteStats {
    fn from(r: pb::RouteStats) -> Self {
        Self {
            id: model::RouteId {
                kind: r.route_kind,
                namespace: r.route_namespace,
                name: r.route_name,
                parent: r.parent,
            },
            rps: r.rps,
            success_rate: r.success_rate,
            latency_p50_ms: r.latency_p50_ms,
            latency_p95_ms: r.latency_p95_ms,
            latency_p99_ms: r.latency_p99_ms,
            status_rps: r.status_rps.into_iter().collect(),
            rate_limited_rps: r.rate_limited_rps,
        }
    }
}

impl TryFrom<pb::Edge> for model::Edge {
    type Error = InvalidMessage;
    fn try_from(e: pb::Edge) -> Result<Self, InvalidMessage> {
        let tls = tls_status(e.tls()).unwrap_or_default();
        let key = edge_key_from_pb(e.src, e.dst, e.dst_authority, &e.protocol)?;
        Ok(Self {
            key,
            tls,
            no_tls_reason: e.no_tls_reason,
            client_identity: e.client_identity,
            server_identity: e.server_identity,
            metrics: e.metrics.map(Into::into).unwrap_or_default(),
            policy: e.policy.map(Into::into).unwrap_or_default(),
            routes: e.routes.into_iter().map(Into::into).collect(),
        })
    }
}

// === Policy objects, source health ===

impl From<&model::PolicyObject> for pb::PolicyObject {
    fn from(p: &model::PolicyObject) -> Self {
        Self {
            api_version: p.api_version.clone(),
            kind: p.key.kind.clone(),
            namespace: p.key.namespace.clone(),
            name: p.key.name.clone(),
            resource_version: p.resource_version.clone(),
            spec_json: p.spec_json.clone(),
        }
    }
}

impl From<pb::PolicyObject> for model::PolicyObject {
    fn from(p: pb::PolicyObject) -> Self {
        Self {
            api_version: p.api_version,
            key: model::PolicyKey {
                kind: p.kind,
                namespace: p.namespace,
                name: p.name,
            },
            resource_version: p.resource_version,
            spec_json: p.spec_json,
        }
    }
}

impl From<&model::PolicyKey> for pb::PolicyRef {
    fn from(k: &model::PolicyKey) -> Self {
        Self {
            kind: k.kind.clone(),
            namespace: k.namespace.clone(),
            name: k.name.clone(),
        }
    }
}

impl From<pb::PolicyRef> for model::PolicyKey {
    fn from(k: pb::PolicyRef) -> Self {
        Self {
            kind: k.kind,
            namespace: k.namespace,
            name: k.name,
        }
    }
}

/// Holds an object at the state a (dry-run) response found it in before the change.
impl From<&pb::AppliedObject> for pb::ObjectPrecondition {
    fn from(o: &pb::AppliedObject) -> Self {
        Self {
            kind: o.kind.clone(),
            namespace: o.namespace.clone(),
            name: o.name.clone(),
            resource_version: o.resource_version_before.clone(),
        }
    }
}

impl From<&model::SourceHealth> for pb::SourceHealth {
    fn from(s: &model::SourceHealth) -> Self {
        Self {
            source: s.source.clone(),
            ok: s.ok,
            last_success: s.last_success.map(timestamp),
            error: s.error.clone(),
            detail: s.detail.clone(),
        }
    }
}

impl TryFrom<pb::SourceHealth> for model::SourceHealth {
    type Error = InvalidMessage;
    fn try_from(s: pb::SourceHealth) -> Result<Self, InvalidMessage> {
        Ok(Self {
            source: s.source,
            ok: s.ok,
            last_success: s.last_success.as_ref().map(system_time).transpose()?,
            error: s.error,
            detail: s.detail,
        })
    }
}

// === MeshGraph, GraphDelta ===

impl From<&model::MeshGraph> for pb::MeshGraph {
    fn from(g: &model::MeshGraph) -> Self {
        Self {
            version: g.version,
            epoch: g.epoch,
            generated_at: Some(timestamp(g.generated_at)),
            window: Some(pbjson_types::Duration {
                seconds: i64::try_from(g.window.as_secs()).unwrap_or(i64::MAX),
                nanos: i32::try_from(g.window.subsec_nanos()).unwrap_or(0),
            }),
            workloads: g.workloads.values().map(Into::into).collect(),
            edges: g.edges.values().map(Into::into).collect(),
            policies: g.policies.values().map(Into::into).collect(),
            sources: g.sources.iter().map(Into::into).collect(),
            point_in_time: None,
        }
    }
}

impl TryFrom<pb::MeshGraph> for model::MeshGraph {
    type Error = InvalidMessage;
    fn try_from(g: pb::MeshGraph) -> Result<Self, InvalidMessage> {
        let window = g.window.unwrap_or_default();
        let window = Duration::new(
            u64::try_from(window.seconds).map_err(|_| InvalidMessage::Invalid {
                field: "window",
                reason: "negative".into(),
            })?,
            u32::try_from(window.nanos).unwrap_or(0),
        );
        let mut out =
            model::MeshGraph::empty(window, system_time(&g.generated_at.unwrap_or_default())?);
        out.version = g.version;
        out.epoch = g.epoch;
        for w in g.workloads {
            let w = model::Workload::try_from(w)?;
            out.workloads.insert(w.id.clone(), w);
        }
        for e in g.edges {
            let e = model::Edge::try_from(e)?;
            out.edges.insert(e.key.clone(), e);
        }
        for p in g.policies {
            let p = model::PolicyObject::from(p);
            out.policies.insert(p.key.clone(), p);
        }
        out.sources = g
            .sources
            .into_iter()
            .map(TryInto::try_into)
            .collect::<Result<_, _>>()?;
        Ok(out)
    }
}

impl From<&model::GraphDelta> for pb::GraphDelta {
    fn from(d: &model::GraphDelta) -> Self {
        Self {
            from_version: d.from_version,
            to_version: d.to_version,
            upserted_workloads: d.upserted_workloads.iter().map(Into::into).collect(),
            removed_workloads: d.removed_workloads.iter().map(Into::into).collect(),
            upserted_edges: d.upserted_edges.iter().map(Into::into).collect(),
            removed_edges: d.removed_edges.iter().map(Into::into).collect(),
            upserted_policies: d.upserted_policies.iter().map(Into::into).collect(),
            removed_policies: d.removed_policies.iter().map(Into::into).collect(),
            sources: d.sources.iter().map(Into::into).collect(),
            generated_at: Some(timestamp(d.generated_at)),
            epoch: d.epoch,
        }
    }
}

impl TryFrom<pb::GraphDelta> for model::GraphDelta {
    type Error = InvalidMessage;
    fn try_from(d: pb::GraphDelta) -> Result<Self, InvalidMessage> {
        Ok(Self {
            from_version: d.from_version,
            to_version: d.to_version,
            epoch: d.epoch,
            generated_at: system_time(&d.generated_at.unwrap_or_default())?,
            upserted_workloads: d
                .upserted_workloads
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_, _>>()?,
            removed_workloads: d.removed_workloads.into_iter().map(Into::into).collect(),
            upserted_edges: d
                .upserted_edges
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_, _>>()?,
            removed_edges: d
                .removed_edges
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_, _>>()?,
            upserted_policies: d.upserted_policies.into_iter().map(Into::into).collect(),
            removed_policies: d.removed_policies.into_iter().map(Into::into).collect(),
            sources: d
                .sources
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_, _>>()?,
        })
    }
}

#[cfg(test)]
mod tests;

// === History: changes between two moments ===

/// The wire form of a timestamp.
pub fn timestamp_to_pb(t: SystemTime) -> pbjson_types::Timestamp {
    timestamp(t)
}

/// A wire timestamp as a time; refused before 1970.
pub fn timestamp_from_pb(t: &pbjson_types::Timestamp) -> Result<SystemTime, InvalidMessage> {
    system_time(t)
}

impl From<&model::history::ObjectChange> for pb::ObjectChange {
    fn from(c: &model::history::ObjectChange) -> Self {
        Self {
            group: c.group.clone(),
            kind: c.kind.clone(),
            namespace: c.namespace.clone(),
            name: c.name.clone(),
            operation: c.operation.as_str().to_owned(),
            resource_version: c.resource_version.clone(),
            field_manager: c.field_manager.clone(),
            requested_by: c.requested_by.clone(),
            via: c.via.clone(),
            approved_by: c.approved_by.clone(),
            audit_id: c.audit_id.clone(),
            diff: c.diff.clone(),
        }
    }
}

impl TryFrom<pb::ObjectChange> for model::history::ObjectChange {
    type Error = InvalidMessage;
    fn try_from(c: pb::ObjectChange) -> Result<Self, InvalidMessage> {
        let operation = model::history::Operation::parse(&c.operation).ok_or_else(|| {
            InvalidMessage::Invalid {
                field: "object.operation",
                reason: format!("{:?} is not one of created, changed, deleted", c.operation),
            }
        })?;
        Ok(Self {
            group: c.group,
            kind: c.kind,
            namespace: c.namespace,
            name: c.name,
            operation,
            resource_version: c.resource_version,
            field_manager: c.field_manager,
            requested_by: c.requested_by,
            via: c.via,
            approved_by: c.approved_by,
            audit_id: c.audit_id,
            diff: c.diff,
        })
    }
}

fn metric_from_pb(m: &str) -> Result<model::history::Metric, InvalidMessage> {
    use model::history::Metric;
    [Metric::SuccessRate, Metric::LatencyP99, Metric::Rps]
        .into_iter()
        .find(|x| x.as_str() == m)
        .ok_or_else(|| InvalidMessage::Invalid {
            field: "regression.metric",
            reason: format!("{m:?} is not one of success_rate, latency_p99_ms, rps"),
        })
}

impl From<&model::history::Change> for pb::GraphChange {
    fn from(c: &model::history::Change) -> Self {
        use model::history::ChangeKind as K;
        use pb::graph_change::Change as C;
        let change = match &c.what {
            K::EdgeAdded(e) => C::EdgeAdded((&**e).into()),
            K::EdgeRemoved(e) => C::EdgeRemoved((&**e).into()),
            K::TlsChanged {
                edge,
                from,
                to,
                reason,
            } => C::TlsChanged(pb::TlsChange {
                edge: Some(edge.into()),
                from: pb::TlsStatus::from(*from).into(),
                to: pb::TlsStatus::from(*to).into(),
                reason: reason.clone(),
            }),
            K::VerdictChanged { edge, from, to, by } => C::VerdictChanged(pb::VerdictChange {
                edge: Some(edge.into()),
                from: decision_to_pb(*from).into(),
                to: decision_to_pb(*to).into(),
                by: by.clone(),
            }),
            K::Regression {
                edge,
                metric,
                from,
                to,
            } => C::Regression(pb::Regression {
                edge: Some(edge.into()),
                metric: metric.as_str().to_owned(),
                from: *from,
                to: *to,
            }),
            K::Object(o) => C::Object((&**o).into()),
        };
        Self {
            at: Some(timestamp(c.at)),
            change: Some(change),
        }
    }
}

impl TryFrom<pb::GraphChange> for model::history::Change {
    type Error = InvalidMessage;
    fn try_from(c: pb::GraphChange) -> Result<Self, InvalidMessage> {
        use model::history::ChangeKind as K;
        use pb::graph_change::Change as C;
        let at = system_time(c.at.as_ref().ok_or(InvalidMessage::Missing("change.at"))?)?;
        let edge = |e: Option<pb::EdgeRef>| -> Result<model::EdgeKey, InvalidMessage> {
            e.ok_or(InvalidMessage::Missing("change.edge"))?.try_into()
        };
        let tls = |t: i32, field: &'static str| {
            pb::TlsStatus::try_from(t)
                .ok()
                .and_then(tls_status)
                .ok_or_else(|| InvalidMessage::Invalid {
                    field,
                    reason: format!("{t} is not a TLS status"),
                })
        };
        let what = match c.change.ok_or(InvalidMessage::Missing("change.change"))? {
            C::EdgeAdded(e) => K::EdgeAdded(Box::new(e.try_into()?)),
            C::EdgeRemoved(e) => K::EdgeRemoved(Box::new(e.try_into()?)),
            C::TlsChanged(t) => K::TlsChanged {
                edge: edge(t.edge)?,
                from: tls(t.from, "tls_changed.from")?,
                to: tls(t.to, "tls_changed.to")?,
                reason: t.reason,
            },
            C::VerdictChanged(v) => K::VerdictChanged {
                edge: edge(v.edge)?,
                from: decision_from_pb(v.from),
                to: decision_from_pb(v.to),
                by: v.by,
            },
            C::Regression(r) => K::Regression {
                edge: edge(r.edge)?,
                metric: metric_from_pb(&r.metric)?,
                from: r.from,
                to: r.to,
            },
            C::Object(o) => K::Object(Box::new(o.try_into()?)),
        };
        Ok(Self { at, what })
    }
}

/// The changes of a diff as the model holds them, earliest first.
pub fn diff_changes(d: &pb::MeshGraphDiff) -> Result<Vec<model::history::Change>, InvalidMessage> {
    d.changes.iter().cloned().map(TryInto::try_into).collect()
}
