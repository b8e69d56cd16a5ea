//! mesh-store: where the published mesh graph lives. A snapshot (the encoded graph, its version
//! and epoch, and the id of the last stream entry it includes) plus a stream of encoded deltas,
//! on Redis/Valkey ([`RedisStore`]) or in process ([`MemoryStore`]). Payloads are opaque bytes
//! (the collector encodes `linkerd.mcp.v1` protobuf), so this crate knows nothing of the graph.
//!
//! ```text
//!  writer: publish(snapshot, delta) ──one script──> XADD mesh:deltas + HSET mesh:snapshot{.., stream_id}
//!  reader: load() ──one round trip──> snapshot + stream_id ──tail(stream_id)──> later deltas
//! ```
//!
//! Because the snapshot names the last delta it includes and both are written atomically, a
//! reader that loads the snapshot and tails from its stream id misses nothing and sees nothing
//! twice. Deltas carry `from_version`/`to_version`: a reader that sees a gap (the stream was
//! trimmed past it) reloads the snapshot. Writes are fenced by epoch: a writer whose epoch is
//! older than the store's current one is refused.
//!
//! Leadership is a lease (`<prefix>leader`, `SET NX PX`, renewed by compare-and-extend): each
//! acquisition starts a new epoch, and a write that names a lease is refused unless that lease
//! is the one held now, so a paused or partitioned former leader cannot write a single entry
//! once its lease has lapsed, whoever holds it next.
//!
//! The change log (`<prefix>changes`, see [`HistoryStore`]) is written under the same lease:
//! each change's record in the stream and the object's new state in `<prefix>changes:objects`,
//! in one script.

mod backend;
pub mod history;
mod memory;
mod redis_store;

use std::time::Duration;

pub use self::{
    backend::{Backend, StoreArgs},
    history::{HistoryStore, LogEntry, LoggedChange, Retention},
    memory::MemoryStore,
    redis_store::RedisStore,
};

/// Errors from a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The write came from an epoch older than the store's: another writer leads now.
    #[error("write fenced: epoch {writer} is older than the current epoch {current}")]
    Fenced {
        /// The writer's epoch.
        writer: u64,
        /// The store's epoch.
        current: u64,
    },
    /// The backend failed or did not answer in time.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend answered something this crate did not write.
    #[error("store holds malformed data: {0}")]
    Corrupt(String),
}

/// Result of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A published snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The encoded graph.
    pub graph: Vec<u8>,
    /// Its version.
    pub version: u64,
    /// The writer's epoch.
    pub epoch: u64,
    /// The id of the last stream entry the snapshot includes (`0-0` when none).
    pub stream_id: String,
}

/// One delta in the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Stream id (Redis `ms-seq` form); tail after it to continue.
    pub id: String,
    /// The writer's epoch.
    pub epoch: u64,
    /// Version the delta applies to.
    pub from_version: u64,
    /// Version it produces.
    pub to_version: u64,
    /// The encoded delta.
    pub delta: Vec<u8>,
}

/// What a writer publishes: always the new snapshot, and the delta from the previous version
/// (none for a first or full republication).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publication {
    /// The writer's epoch.
    pub epoch: u64,
    /// The version before.
    pub from_version: u64,
    /// The version after.
    pub to_version: u64,
    /// The encoded graph at `to_version`.
    pub snapshot: Vec<u8>,
    /// The encoded delta `from_version -> to_version`.
    pub delta: Option<Vec<u8>>,
    /// The lease the writer holds ([`Lease::token`]); the write is refused unless it is the
    /// lease held now. `None`: epoch fencing only (a single writer, e.g. tests and tools).
    pub lease: Option<String>,
}

/// A held leader lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Who holds it (e.g. `pod-name/pid`).
    pub holder: String,
    /// The epoch its acquisition started.
    pub epoch: u64,
}

impl Lease {
    /// The value stored under the leader key: holder and epoch, so a renewal or write by an
    /// earlier holding of the same holder never passes for the current one.
    pub fn token(&self) -> String {
        format!("{} {}", self.holder, self.epoch)
    }
}

/// The stream id before any entry.
pub const STREAM_START: &str = "0-0";

/// A snapshot + delta stream store.
pub trait GraphStore: Send + Sync + 'static {
    /// Publishes atomically: appends the delta (if any) and replaces the snapshot, which then
    /// records that entry's id. Refused when `p.epoch` is older than the store's epoch.
    fn publish(&self, p: Publication) -> impl Future<Output = Result<String>> + Send;

    /// The current snapshot, if any, in one round trip.
    fn load(&self) -> impl Future<Output = Result<Option<Snapshot>>> + Send;

    /// Entries after `after`, waiting up to `block` for the first one; at most `max`.
    fn tail(
        &self,
        after: &str,
        block: Duration,
        max: usize,
    ) -> impl Future<Output = Result<Vec<Entry>>> + Send;

    /// Starts a new epoch (a new writer takes over) and returns it.
    fn next_epoch(&self) -> impl Future<Output = Result<u64>> + Send;

    /// The current epoch (0 before any).
    fn epoch(&self) -> impl Future<Output = Result<u64>> + Send;

    /// Takes the leader lease for `ttl` when nobody holds it, starting a new epoch past the
    /// epoch counter, the snapshot's epoch (a promoted replica may have lost the last
    /// increment) and `at_least` (the newest epoch the caller knows of: a store that restarted
    /// empty counts from zero again). `None`: someone else holds it.
    fn acquire(
        &self,
        holder: &str,
        ttl: Duration,
        at_least: u64,
    ) -> impl Future<Output = Result<Option<Lease>>> + Send;

    /// Extends `lease` to `ttl` from now if it is still the one held; `false` when it is not.
    fn renew(&self, lease: &Lease, ttl: Duration) -> impl Future<Output = Result<bool>> + Send;

    /// Gives `lease` up (if still held), so a standby can take over at once.
    fn release(&self, lease: &Lease) -> impl Future<Output = Result<()>> + Send;
}

/// A shared store is a store: readers and writers in one process hold `Arc`s of one.
impl<S: GraphStore> GraphStore for std::sync::Arc<S> {
    fn publish(&self, p: Publication) -> impl Future<Output = Result<String>> + Send {
        (**self).publish(p)
    }
    fn load(&self) -> impl Future<Output = Result<Option<Snapshot>>> + Send {
        (**self).load()
    }
    fn tail(
        &self,
        after: &str,
        block: Duration,
        max: usize,
    ) -> impl Future<Output = Result<Vec<Entry>>> + Send {
        (**self).tail(after, block, max)
    }
    fn next_epoch(&self) -> impl Future<Output = Result<u64>> + Send {
        (**self).next_epoch()
    }
    fn epoch(&self) -> impl Future<Output = Result<u64>> + Send {
        (**self).epoch()
    }
    fn acquire(
        &self,
        holder: &str,
        ttl: Duration,
        at_least: u64,
    ) -> impl Future<Output = Result<Option<Lease>>> + Send {
        (**self).acquire(holder, ttl, at_least)
    }
    fn renew(&self, lease: &Lease, ttl: Duration) -> impl Future<Output = Result<bool>> + Send {
        (**self).renew(lease, ttl)
    }
    fn release(&self, lease: &Lease) -> impl Future<Output = Result<()>> + Send {
        (**self).release(lease)
    }
}

/// What [`PlanStore::take_plan`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Taken {
    /// The plan, now removed: it can be taken once.
    Plan(Vec<u8>),
    /// No such plan: never made, expired, or taken already.
    Missing,
    /// Made by another owner; left in place.
    NotYours,
}

/// Reviewed changes waiting to be applied, shared by every replica that uses the store:
/// single use, expiring, bound to the owner that made them.
pub trait PlanStore: Send + Sync + 'static {
    /// Keeps `plan` under `id` for `ttl`, for `owner` only.
    fn put_plan(
        &self,
        id: &str,
        owner: &str,
        plan: Vec<u8>,
        ttl: Duration,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Removes and returns plan `id` if `owner` made it, atomically: of two concurrent takers,
    /// one gets it.
    fn take_plan(&self, id: &str, owner: &str) -> impl Future<Output = Result<Taken>> + Send;
}

/// A shared plan store is a plan store.
impl<S: PlanStore> PlanStore for std::sync::Arc<S> {
    fn put_plan(
        &self,
        id: &str,
        owner: &str,
        plan: Vec<u8>,
        ttl: Duration,
    ) -> impl Future<Output = Result<()>> + Send {
        (**self).put_plan(id, owner, plan, ttl)
    }
    fn take_plan(&self, id: &str, owner: &str) -> impl Future<Output = Result<Taken>> + Send {
        (**self).take_plan(id, owner)
    }
}

/// What an [`ApprovalStore`] holds for one approval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalEntry {
    /// Its state (`pending`, `applying`, `applied`, ...; the caller's words).
    pub state: String,
    /// Who moved it into that state (empty while pending).
    pub by: String,
    /// The request as the caller stored it.
    pub record: Vec<u8>,
}

/// What [`ApprovalStore::transition`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Moved: the record as stored.
    Moved(Vec<u8>),
    /// Not in the expected state: what it is in, and who put it there.
    Now {
        /// Its state.
        state: String,
        /// Who moved it there.
        by: String,
    },
    /// No such approval: never made, or expired.
    Missing,
}

/// Chat approvals waiting for a click, shared by every bot replica: expiring, and moved
/// between states atomically so that of two clicks exactly one wins.
pub trait ApprovalStore: Send + Sync + 'static {
    /// Keeps `record` under `id` in state `pending` for `ttl`.
    fn put_approval(
        &self,
        id: &str,
        record: Vec<u8>,
        ttl: Duration,
    ) -> impl Future<Output = Result<()>> + Send;

    /// The approval, if it exists.
    fn get_approval(&self, id: &str) -> impl Future<Output = Result<Option<ApprovalEntry>>> + Send;

    /// Moves `id` from state `from` to `to` (recording `by`) only if it is in `from`.
    fn transition(
        &self,
        id: &str,
        from: &str,
        to: &str,
        by: &str,
    ) -> impl Future<Output = Result<Transition>> + Send {
        self.transition_after(id, from, to, by, Duration::ZERO)
    }

    /// As [`ApprovalStore::transition`], and only if it has been in `from` for at least
    /// `min_age` (by the store's clock): how a step abandoned by a replica that died is taken
    /// over, never one still in progress.
    fn transition_after(
        &self,
        id: &str,
        from: &str,
        to: &str,
        by: &str,
        min_age: Duration,
    ) -> impl Future<Output = Result<Transition>> + Send;
}

/// A shared approval store is an approval store.
impl<S: ApprovalStore> ApprovalStore for std::sync::Arc<S> {
    fn put_approval(
        &self,
        id: &str,
        record: Vec<u8>,
        ttl: Duration,
    ) -> impl Future<Output = Result<()>> + Send {
        (**self).put_approval(id, record, ttl)
    }
    fn get_approval(&self, id: &str) -> impl Future<Output = Result<Option<ApprovalEntry>>> + Send {
        (**self).get_approval(id)
    }
    fn transition_after(
        &self,
        id: &str,
        from: &str,
        to: &str,
        by: &str,
        min_age: Duration,
    ) -> impl Future<Output = Result<Transition>> + Send {
        (**self).transition_after(id, from, to, by, min_age)
    }
}

/// The chat bot's shared alert state: which channels want alerts, and which alerts are
/// active (so that of several replicas, and across restarts, each alert is sent once).
pub trait AlertStore: Send + Sync + 'static {
    /// Sets (`Some`) or removes (`None`) the subscription of `target` (`slack:C123`).
    fn set_subscription(
        &self,
        target: &str,
        filter: Option<Vec<u8>>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Every subscription: target and filter.
    fn subscriptions(&self) -> impl Future<Output = Result<Vec<(String, Vec<u8>)>>> + Send;

    /// Adds (`present`) or removes `member` of set `set`; `true` when that changed the set.
    fn mark(
        &self,
        set: &str,
        member: &str,
        present: bool,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// The members of set `set`.
    fn members(&self, set: &str) -> impl Future<Output = Result<Vec<String>>> + Send;
}

/// A shared alert store is an alert store.
impl<S: AlertStore> AlertStore for std::sync::Arc<S> {
    fn set_subscription(
        &self,
        target: &str,
        filter: Option<Vec<u8>>,
    ) -> impl Future<Output = Result<()>> + Send {
        (**self).set_subscription(target, filter)
    }
    fn subscriptions(&self) -> impl Future<Output = Result<Vec<(String, Vec<u8>)>>> + Send {
        (**self).subscriptions()
    }
    fn mark(
        &self,
        set: &str,
        member: &str,
        present: bool,
    ) -> impl Future<Output = Result<bool>> + Send {
        (**self).mark(set, member, present)
    }
    fn members(&self, set: &str) -> impl Future<Output = Result<Vec<String>>> + Send {
        (**self).members(set)
    }
}

/// Which kind of long-lived record: each shelf has its own keys and its own listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shelf {
    /// Staged rollouts (`<prefix>rollouts:<id>`).
    Rollouts,
    /// Approval requests of mesh-mcp, from every front end (`<prefix>requests:<id>`).
    Approvals,
    /// Web console sessions, shared by every mesh-mcp replica (`<prefix>console-sessions:<id>`).
    Sessions,
}

/// What a [`RecordStore`] holds for one record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordEntry {
    /// Its state (the caller's word: `audit`, `moving:audit>enforced`, `pending`, ...).
    pub state: String,
    /// Bumped by every update: what [`RecordStore::update_record`] compares.
    pub revision: u64,
    /// The record as the caller stored it.
    pub record: Vec<u8>,
}

/// What [`RecordStore::update_record`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Updated {
    /// Written: the new revision.
    Written(u64),
    /// Someone else updated it first: what it holds now.
    Now(RecordEntry),
    /// No such record.
    Missing,
}

/// Records that outlive a request (rollouts, approval requests), shared by every replica and
/// kept across restarts: each update is a compare-and-set on the revision, so of two
/// concurrent changes (two phase moves, two approvals) one wins and the other sees it.
pub trait RecordStore: Send + Sync + 'static {
    /// Creates record `id` on `shelf` at revision 1 in `state`; `false` if it exists already.
    fn create_record(
        &self,
        shelf: Shelf,
        id: &str,
        state: &str,
        record: Vec<u8>,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// The record, if it exists.
    fn get_record(
        &self,
        shelf: Shelf,
        id: &str,
    ) -> impl Future<Output = Result<Option<RecordEntry>>> + Send;

    /// Replaces state and record only if the record is still at `revision`.
    fn update_record(
        &self,
        shelf: Shelf,
        id: &str,
        revision: u64,
        state: &str,
        record: Vec<u8>,
    ) -> impl Future<Output = Result<Updated>> + Send;

    /// Every id on `shelf`, oldest first.
    fn record_ids(&self, shelf: Shelf) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// Removes a record (kept past its use: its retention is over).
    fn remove_record(&self, shelf: Shelf, id: &str) -> impl Future<Output = Result<()>> + Send;
}

/// A shared record store is a record store.
impl<S: RecordStore> RecordStore for std::sync::Arc<S> {
    fn create_record(
        &self,
        shelf: Shelf,
        id: &str,
        state: &str,
        record: Vec<u8>,
    ) -> impl Future<Output = Result<bool>> + Send {
        (**self).create_record(shelf, id, state, record)
    }
    fn get_record(
        &self,
        shelf: Shelf,
        id: &str,
    ) -> impl Future<Output = Result<Option<RecordEntry>>> + Send {
        (**self).get_record(shelf, id)
    }
    fn update_record(
        &self,
        shelf: Shelf,
        id: &str,
        revision: u64,
        state: &str,
        record: Vec<u8>,
    ) -> impl Future<Output = Result<Updated>> + Send {
        (**self).update_record(shelf, id, revision, state, record)
    }
    fn record_ids(&self, shelf: Shelf) -> impl Future<Output = Result<Vec<String>>> + Send {
        (**self).record_ids(shelf)
    }
    fn remove_record(&self, shelf: Shelf, id: &str) -> impl Future<Output = Result<()>> + Send {
        (**self).remove_record(shelf, id)
    }
}

/// Key names under a prefix (default `mesh:`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    /// The snapshot hash.
    pub snapshot: String,
    /// The delta stream.
    pub deltas: String,
    /// The epoch counter.
    pub epoch: String,
    /// The leader lease.
    pub leader: String,
    /// Prefix of plan keys (`<prefix>plan:<id>`).
    pub plan: String,
    /// Prefix of chat approval keys (`<prefix>approvals:<id>`).
    pub approval: String,
    /// The chat bot's alert subscriptions (a hash).
    pub alert_subscriptions: String,
    /// Prefix of the chat bot's alert sets (`<prefix>alerts:<set>`).
    pub alert_set: String,
    /// Prefix of rollout keys (`<prefix>rollouts:<id>`).
    pub rollout: String,
    /// The rollouts' ids by creation time (a sorted set).
    pub rollout_index: String,
    /// Prefix of approval request keys (`<prefix>requests:<id>`).
    pub request: String,
    /// The approval requests' ids by creation time (a sorted set).
    pub request_index: String,
    /// Prefix of console session keys (`<prefix>console-sessions:<id>`).
    pub session: String,
    /// The console sessions' ids by creation time (a sorted set).
    pub session_index: String,
    /// The change log (a stream).
    pub changes: String,
    /// The objects as last logged (a hash).
    pub changes_objects: String,
    /// When the change log was first written (ms).
    pub changes_since: String,
}

impl Keys {
    /// Keys under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Self {
            snapshot: format!("{prefix}snapshot"),
            deltas: format!("{prefix}deltas"),
            epoch: format!("{prefix}epoch"),
            leader: format!("{prefix}leader"),
            plan: format!("{prefix}plan:"),
            approval: format!("{prefix}approvals:"),
            alert_subscriptions: format!("{prefix}alert-subscriptions"),
            alert_set: format!("{prefix}alerts:"),
            rollout: format!("{prefix}rollouts:"),
            rollout_index: format!("{prefix}rollouts"),
            request: format!("{prefix}requests:"),
            request_index: format!("{prefix}requests"),
            session: format!("{prefix}console-sessions:"),
            session_index: format!("{prefix}console-sessions"),
            changes: format!("{prefix}changes"),
            changes_objects: format!("{prefix}changes:objects"),
            changes_since: format!("{prefix}changes:since"),
        }
    }
}

impl Keys {
    /// A shelf's key prefix and its index (a sorted set of ids by creation time).
    pub fn shelf(&self, shelf: Shelf) -> (&str, &str) {
        match shelf {
            Shelf::Rollouts => (&self.rollout, &self.rollout_index),
            Shelf::Approvals => (&self.request, &self.request_index),
            Shelf::Sessions => (&self.session, &self.session_index),
        }
    }
}

impl Default for Keys {
    fn default() -> Self {
        Self::new("mesh:")
    }
}

/// Orders stream ids (`ms-seq`) numerically.
pub fn id_key(id: &str) -> (u64, u64) {
    let (a, b) = id.split_once('-').unwrap_or((id, "0"));
    (a.parse().unwrap_or(0), b.parse().unwrap_or(0))
}
