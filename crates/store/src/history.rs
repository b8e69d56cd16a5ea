//! The change log's contract: what the leader collector appends (fenced like every write) and
//! what readers ask of it. The store keeps records and the objects as last logged as opaque
//! text; what they mean is the policy core's business (`mesh_policy::history`).

use std::time::{Duration, SystemTime};

use crate::{Lease, Result};

/// One change to append: the object's key, the object as it is now (`None`: deleted) and the
/// record describing the change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// `group/kind/namespace/name`.
    pub key: String,
    /// The object as it is after the change, as logged; `None` when it was deleted.
    pub after: Option<String>,
    /// The change record (JSON).
    pub record: String,
}

/// A change as the log holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedChange {
    /// Its stream id (`<ms>-<seq>`): the log's order.
    pub id: String,
    /// When it was appended (the store's clock).
    pub at: SystemTime,
    /// `group/kind/namespace/name`.
    pub key: String,
    /// The change record (JSON).
    pub record: String,
}

/// How much of the log is kept: changes older than `max_age`, and past the newest
/// `max_entries`, are dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Oldest change kept.
    pub max_age: Duration,
    /// Most changes kept (about: Redis trims whole stream nodes).
    pub max_entries: usize,
}

impl Default for Retention {
    /// 7 days, and at most 1,000,000 changes.
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(7 * 86_400),
            max_entries: 1_000_000,
        }
    }
}

/// The change log: a stream of change records and the objects as last logged.
pub trait HistoryStore: Send + Sync + 'static {
    /// Appends `entries` in order and records each object's new state, in one step, and trims
    /// what `keep` no longer keeps. Refused with [`crate::StoreError::Fenced`] unless `lease`
    /// is the lease held now.
    fn append_changes(
        &self,
        lease: &Lease,
        entries: Vec<LogEntry>,
        keep: Retention,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Every object as last logged: `(key, object)`.
    fn logged_objects(&self) -> impl Future<Output = Result<Vec<(String, String)>>> + Send;

    /// Changes appended after stream id `after` (`0-0`: from the start), oldest first, at
    /// most `max`.
    fn changes_after(
        &self,
        after: &str,
        max: usize,
    ) -> impl Future<Output = Result<Vec<LoggedChange>>> + Send;

    /// From when on the log is complete: its first append, or just after the newest change
    /// trimmed away. `None` while it is empty and never written.
    fn history_start(&self) -> impl Future<Output = Result<Option<SystemTime>>> + Send;
}

/// The stream id after every change appended in `t`'s millisecond: reading after it gives the
/// changes that came after `t`.
pub fn id_after(t: SystemTime) -> String {
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{ms}-{}", u64::MAX)
}

/// When a change with stream id `id` was appended.
pub fn time_of(id: &str) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(crate::id_key(id).0)
}

/// A shared history store is a history store.
impl<S: HistoryStore> HistoryStore for std::sync::Arc<S> {
    fn append_changes(
        &self,
        lease: &Lease,
        entries: Vec<LogEntry>,
        keep: Retention,
    ) -> impl Future<Output = Result<()>> + Send {
        (**self).append_changes(lease, entries, keep)
    }
    fn logged_objects(&self) -> impl Future<Output = Result<Vec<(String, String)>>> + Send {
        (**self).logged_objects()
    }
    fn changes_after(
        &self,
        after: &str,
        max: usize,
    ) -> impl Future<Output = Result<Vec<LoggedChange>>> + Send {
        (**self).changes_after(after, max)
    }
    fn history_start(&self) -> impl Future<Output = Result<Option<SystemTime>>> + Send {
        (**self).history_start()
    }
}
