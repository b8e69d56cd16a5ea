//! The change log writer: while leading, after each cluster snapshot, appends every object
//! that changed since what the log last recorded (`mesh_policy::history::changes`), under the
//! lease. A new leader first reads what the log last recorded, so a restart or a fail-over
//! continues the log with neither duplicates (an object logged already is unchanged) nor gaps
//! (what changed while nobody led is logged at takeover).

use std::{collections::HashMap, sync::Arc};

use mesh_policy::{
    cluster::Cluster,
    history::{self, Objects},
};
use mesh_store::{HistoryStore, Lease, LogEntry, Retention, StoreError};

/// Appends changes under one lease.
#[derive(Debug)]
pub struct ChangeLog<S> {
    store: S,
    lease: Lease,
    keep: Retention,
    /// What the log last recorded (loaded at the first append of this lease), and whether
    /// the log is still to begin.
    logged: Option<(HashMap<String, String>, bool)>,
    /// The snapshot last logged: an unchanged one costs nothing.
    last: Option<Arc<Objects>>,
}

impl<S: HistoryStore> ChangeLog<S> {
    /// A writer under `lease`, keeping what `keep` says.
    pub fn lead(store: S, lease: &Lease, keep: Retention) -> Self {
        Self {
            store,
            lease: lease.clone(),
            keep,
            logged: None,
            last: None,
        }
    }

    /// The epoch of the lease it writes under.
    pub fn epoch(&self) -> u64 {
        self.lease.epoch
    }

    /// Logs what changed in `cluster` since the log's last record; how many changes. Nothing
    /// is logged before the cluster was listed (every object would read as deleted), and no
    /// deletion while a watch is failing (a kind whose list failed reads as empty): those wait
    /// for a healthy snapshot. A kind this collector may never list reads as empty: a leader
    /// with fewer rights than the last would log its objects deleted, so give every replica
    /// the same RBAC (the chart does).
    pub async fn record(&mut self, cluster: &Cluster) -> Result<usize, StoreError> {
        if cluster.objects.is_empty() && !cluster.health.ok {
            return Ok(0);
        }
        if self
            .last
            .as_ref()
            .is_some_and(|l| Arc::ptr_eq(l, &cluster.objects))
        {
            return Ok(0);
        }
        let (logged, first) = match &mut self.logged {
            Some(l) => l,
            None => {
                let l: HashMap<String, String> =
                    self.store.logged_objects().await?.into_iter().collect();
                let first = l.is_empty() && self.store.history_start().await?.is_none();
                self.logged.insert((l, first))
            }
        };
        let mut changes = match &self.last {
            // The log records the last snapshot: only what differs from it can have changed.
            Some(last) => history::changes_since(logged, last, &cluster.objects),
            None => history::changes(logged, &cluster.objects, *first),
        };
        let deletions = changes
            .iter()
            .filter(|(_, after, _)| after.is_none())
            .count();
        let held_back = !cluster.health.ok && deletions > 0;
        if held_back {
            changes.retain(|(_, after, _)| after.is_some());
        }
        let mut entries = Vec::with_capacity(changes.len());
        for (key, after, record) in &changes {
            let record = serde_json::to_string(record)
                .map_err(|e| StoreError::Corrupt(format!("change record: {e}")))?;
            entries.push(LogEntry {
                key: key.clone(),
                after: after.clone(),
                record,
            });
        }
        let n = entries.len();
        if n > 0 {
            if let Err(e) = self
                .store
                .append_changes(&self.lease, entries, self.keep)
                .await
            {
                // Some pieces may have been written: read back what the log holds next time.
                self.logged = None;
                self.last = None;
                return Err(e);
            }
            for (key, after, _) in changes {
                match after {
                    Some(a) => logged.insert(key, a),
                    None => logged.remove(&key),
                };
            }
            *first = false;
        }
        // With deletions held back, the next snapshot is compared with the whole log again, so
        // they are found once the watches are healthy.
        self.last = (!held_back).then(|| cluster.objects.clone());
        Ok(n)
    }
}
