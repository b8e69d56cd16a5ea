//! The in-process store, for the all-in-one mode and for tests: same contract as Redis.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use tokio::{
    sync::{Mutex, Notify},
    time::Instant,
};

use crate::{
    Entry, GraphStore, Lease, PlanStore, Publication, Result, STREAM_START, Snapshot, StoreError,
    Taken, id_key,
};

#[derive(Debug, Default)]
struct State {
    snapshot: Option<Snapshot>,
    entries: VecDeque<Entry>,
    next_seq: u64,
    epoch: u64,
    /// The lease token and when it lapses.
    leader: Option<(String, Instant)>,
    /// Plans: owner, plan, and when it lapses.
    plans: std::collections::HashMap<String, (String, Vec<u8>, Instant)>,
    // The entry, when it expires, and when it entered its state.
    approvals: std::collections::HashMap<String, (crate::ApprovalEntry, Instant, Instant)>,
    subscriptions: std::collections::BTreeMap<String, Vec<u8>>,
    sets: std::collections::HashMap<String, std::collections::BTreeSet<String>>,
    /// Records by shelf and id, and each shelf's ids in creation order.
    records: std::collections::HashMap<(crate::Shelf, String), crate::RecordEntry>,
    record_order: std::collections::HashMap<crate::Shelf, Vec<String>>,
    /// The change log: stream id (ms, seq), key and record.
    changes: VecDeque<((u64, u64), String, String)>,
    /// The objects as last logged.
    logged: std::collections::BTreeMap<String, String>,
    /// Since when (ms) the log is complete: its first write, or its oldest change kept.
    changes_since: Option<u64>,
}

impl State {
    fn held(&mut self) -> Option<&str> {
        if self
            .leader
            .as_ref()
            .is_some_and(|(_, until)| *until <= Instant::now())
        {
            self.leader = None;
        }
        self.leader.as_ref().map(|(t, _)| t.as_str())
    }
}

/// A store in this process's memory, keeping the newest `max_len` deltas.
#[derive(Clone, Debug)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    max_len: usize,
}

impl MemoryStore {
    /// An empty store keeping `max_len` deltas.
    pub fn new(max_len: usize) -> Self {
        Self {
            state: Arc::new(Mutex::new(State::default())),
            changed: Arc::new(Notify::new()),
            max_len: max_len.max(1),
        }
    }
}

impl GraphStore for MemoryStore {
    async fn publish(&self, p: Publication) -> Result<String> {
        let mut st = self.state.lock().await;
        let lease_lapsed = p
            .lease
            .as_deref()
            .is_some_and(|token| st.held() != Some(token));
        if p.epoch < st.epoch || lease_lapsed {
            return Err(StoreError::Fenced {
                writer: p.epoch,
                current: st.epoch,
            });
        }
        let id = match p.delta {
            Some(delta) => {
                st.next_seq += 1;
                let id = format!("{}-0", st.next_seq);
                st.entries.push_back(Entry {
                    id: id.clone(),
                    epoch: p.epoch,
                    from_version: p.from_version,
                    to_version: p.to_version,
                    delta,
                });
                while st.entries.len() > self.max_len {
                    st.entries.pop_front();
                }
                id
            }
            None => st
                .entries
                .back()
                .map_or_else(|| STREAM_START.to_owned(), |e| e.id.clone()),
        };
        st.snapshot = Some(Snapshot {
            graph: p.snapshot,
            version: p.to_version,
            epoch: p.epoch,
            stream_id: id.clone(),
        });
        drop(st);
        self.changed.notify_waiters();
        Ok(id)
    }

    async fn load(&self) -> Result<Option<Snapshot>> {
        Ok(self.state.lock().await.snapshot.clone())
    }

    async fn tail(&self, after: &str, block: Duration, max: usize) -> Result<Vec<Entry>> {
        let after = id_key(after);
        let deadline = tokio::time::Instant::now() + block;
        loop {
            // Register interest before looking, so a publish in between is not missed.
            let notified = self.changed.notified();
            {
                let st = self.state.lock().await;
                let out: Vec<Entry> = st
                    .entries
                    .iter()
                    .filter(|e| id_key(&e.id) > after)
                    .take(max)
                    .cloned()
                    .collect();
                if !out.is_empty() {
                    return Ok(out);
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn next_epoch(&self) -> Result<u64> {
        let mut st = self.state.lock().await;
        st.epoch += 1;
        Ok(st.epoch)
    }

    async fn epoch(&self) -> Result<u64> {
        Ok(self.state.lock().await.epoch)
    }

    async fn acquire(&self, holder: &str, ttl: Duration, at_least: u64) -> Result<Option<Lease>> {
        let mut st = self.state.lock().await;
        if st.held().is_some() {
            return Ok(None);
        }
        let snapshot_epoch = st.snapshot.as_ref().map_or(0, |s| s.epoch);
        st.epoch = st.epoch.max(snapshot_epoch).max(at_least) + 1;
        let lease = Lease {
            holder: holder.to_owned(),
            epoch: st.epoch,
        };
        st.leader = Some((lease.token(), Instant::now() + ttl));
        Ok(Some(lease))
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool> {
        let mut st = self.state.lock().await;
        let token = lease.token();
        if st.held() != Some(token.as_str()) {
            return Ok(false);
        }
        st.leader = Some((token, Instant::now() + ttl));
        Ok(true)
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let mut st = self.state.lock().await;
        if st.held() == Some(lease.token().as_str()) {
            st.leader = None;
        }
        Ok(())
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl crate::HistoryStore for MemoryStore {
    async fn append_changes(
        &self,
        lease: &Lease,
        entries: Vec<crate::LogEntry>,
        keep: crate::Retention,
    ) -> Result<()> {
        let mut st = self.state.lock().await;
        let token = lease.token();
        if lease.epoch < st.epoch || st.held() != Some(token.as_str()) {
            return Err(StoreError::Fenced {
                writer: lease.epoch,
                current: st.epoch,
            });
        }
        let now = now_ms();
        st.changes_since.get_or_insert(now);
        for e in entries {
            // Ids as Redis makes them: the clock's ms, a sequence within one ms.
            let id = match st.changes.back() {
                Some(((ms, seq), ..)) if *ms >= now => (*ms, seq + 1),
                _ => (now, 0),
            };
            st.changes.push_back((id, e.key.clone(), e.record));
            match e.after {
                Some(after) => st.logged.insert(e.key, after),
                None => st.logged.remove(&e.key),
            };
        }
        let oldest =
            now.saturating_sub(u64::try_from(keep.max_age.as_millis()).unwrap_or(u64::MAX));
        while st
            .changes
            .front()
            .is_some_and(|(id, ..)| st.changes.len() > keep.max_entries.max(1) || id.0 < oldest)
        {
            st.changes.pop_front();
            if let Some(((ms, _), ..)) = st.changes.front() {
                let ms = *ms;
                st.changes_since = st.changes_since.max(Some(ms));
            }
        }
        Ok(())
    }

    async fn logged_objects(&self) -> Result<Vec<(String, String)>> {
        let st = self.state.lock().await;
        Ok(st
            .logged
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    async fn changes_after(&self, after: &str, max: usize) -> Result<Vec<crate::LoggedChange>> {
        let after = id_key(after);
        let st = self.state.lock().await;
        Ok(st
            .changes
            .iter()
            .filter(|(id, ..)| *id > after)
            .take(max.max(1))
            .map(|((ms, seq), key, record)| crate::LoggedChange {
                id: format!("{ms}-{seq}"),
                at: std::time::UNIX_EPOCH + Duration::from_millis(*ms),
                key: key.clone(),
                record: record.clone(),
            })
            .collect())
    }

    async fn history_start(&self) -> Result<Option<std::time::SystemTime>> {
        let st = self.state.lock().await;
        Ok(st
            .changes_since
            .map(|ms| std::time::UNIX_EPOCH + Duration::from_millis(ms)))
    }
}

impl PlanStore for MemoryStore {
    async fn put_plan(&self, id: &str, owner: &str, plan: Vec<u8>, ttl: Duration) -> Result<()> {
        let mut st = self.state.lock().await;
        let now = Instant::now();
        st.plans.retain(|_, (_, _, until)| *until > now);
        st.plans
            .insert(id.to_owned(), (owner.to_owned(), plan, now + ttl));
        Ok(())
    }

    async fn take_plan(&self, id: &str, owner: &str) -> Result<Taken> {
        let mut st = self.state.lock().await;
        let now = Instant::now();
        st.plans.retain(|_, (_, _, until)| *until > now);
        match st.plans.get(id) {
            None => Ok(Taken::Missing),
            Some((o, _, _)) if o != owner => Ok(Taken::NotYours),
            Some(_) => Ok(st
                .plans
                .remove(id)
                .map_or(Taken::Missing, |(_, plan, _)| Taken::Plan(plan))),
        }
    }
}

impl crate::ApprovalStore for MemoryStore {
    async fn put_approval(&self, id: &str, record: Vec<u8>, ttl: Duration) -> Result<()> {
        let mut st = self.state.lock().await;
        let now = Instant::now();
        st.approvals.retain(|_, (_, until, _)| *until > now);
        let entry = crate::ApprovalEntry {
            state: "pending".into(),
            by: String::new(),
            record,
        };
        st.approvals.insert(id.to_owned(), (entry, now + ttl, now));
        Ok(())
    }

    async fn get_approval(&self, id: &str) -> Result<Option<crate::ApprovalEntry>> {
        let mut st = self.state.lock().await;
        let now = Instant::now();
        st.approvals.retain(|_, (_, until, _)| *until > now);
        Ok(st.approvals.get(id).map(|(e, _, _)| e.clone()))
    }

    async fn transition_after(
        &self,
        id: &str,
        from: &str,
        to: &str,
        by: &str,
        min_age: Duration,
    ) -> Result<crate::Transition> {
        let mut st = self.state.lock().await;
        let now = Instant::now();
        st.approvals.retain(|_, (_, until, _)| *until > now);
        Ok(match st.approvals.get_mut(id) {
            None => crate::Transition::Missing,
            Some((e, _, since)) if e.state != from || now.duration_since(*since) < min_age => {
                crate::Transition::Now {
                    state: e.state.clone(),
                    by: e.by.clone(),
                }
            }
            Some((e, _, since)) => {
                e.state = to.to_owned();
                e.by = by.to_owned();
                *since = now;
                crate::Transition::Moved(e.record.clone())
            }
        })
    }
}

impl crate::AlertStore for MemoryStore {
    async fn set_subscription(&self, target: &str, filter: Option<Vec<u8>>) -> Result<()> {
        let mut st = self.state.lock().await;
        match filter {
            Some(f) => st.subscriptions.insert(target.to_owned(), f),
            None => st.subscriptions.remove(target),
        };
        Ok(())
    }

    async fn subscriptions(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let st = self.state.lock().await;
        Ok(st
            .subscriptions
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    async fn mark(&self, set: &str, member: &str, present: bool) -> Result<bool> {
        let mut st = self.state.lock().await;
        let s = st.sets.entry(set.to_owned()).or_default();
        Ok(if present {
            s.insert(member.to_owned())
        } else {
            s.remove(member)
        })
    }

    async fn members(&self, set: &str) -> Result<Vec<String>> {
        let st = self.state.lock().await;
        Ok(st
            .sets
            .get(set)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default())
    }
}

impl crate::RecordStore for MemoryStore {
    async fn create_record(
        &self,
        shelf: crate::Shelf,
        id: &str,
        state: &str,
        record: Vec<u8>,
    ) -> Result<bool> {
        let mut st = self.state.lock().await;
        let key = (shelf, id.to_owned());
        if st.records.contains_key(&key) {
            return Ok(false);
        }
        let entry = crate::RecordEntry {
            state: state.to_owned(),
            revision: 1,
            record,
        };
        st.records.insert(key, entry);
        st.record_order
            .entry(shelf)
            .or_default()
            .push(id.to_owned());
        Ok(true)
    }

    async fn get_record(
        &self,
        shelf: crate::Shelf,
        id: &str,
    ) -> Result<Option<crate::RecordEntry>> {
        Ok(self
            .state
            .lock()
            .await
            .records
            .get(&(shelf, id.to_owned()))
            .cloned())
    }

    async fn update_record(
        &self,
        shelf: crate::Shelf,
        id: &str,
        revision: u64,
        state: &str,
        record: Vec<u8>,
    ) -> Result<crate::Updated> {
        let mut st = self.state.lock().await;
        Ok(match st.records.get_mut(&(shelf, id.to_owned())) {
            None => crate::Updated::Missing,
            Some(e) if e.revision != revision => crate::Updated::Now(e.clone()),
            Some(e) => {
                e.revision += 1;
                e.state = state.to_owned();
                e.record = record;
                crate::Updated::Written(e.revision)
            }
        })
    }

    async fn record_ids(&self, shelf: crate::Shelf) -> Result<Vec<String>> {
        Ok(self
            .state
            .lock()
            .await
            .record_order
            .get(&shelf)
            .cloned()
            .unwrap_or_default())
    }

    async fn remove_record(&self, shelf: crate::Shelf, id: &str) -> Result<()> {
        let mut st = self.state.lock().await;
        st.records.remove(&(shelf, id.to_owned()));
        if let Some(order) = st.record_order.get_mut(&shelf) {
            order.retain(|x| x != id);
        }
        Ok(())
    }
}
