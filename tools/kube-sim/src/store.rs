//! Object storage: one monotonic resourceVersion counter, a bounded history of events for watch
//! replay, and a broadcast of live events.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Arc,
};

use serde_json::Value;
use tokio::sync::broadcast;

/// Identifies a stored object, whatever version it is served in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Key {
    /// API group.
    pub(crate) group: String,
    /// Plural resource name.
    pub(crate) plural: String,
    /// Namespace; empty for cluster-scoped objects.
    pub(crate) namespace: String,
    /// Name.
    pub(crate) name: String,
}

/// A change, as watchers see it.
#[derive(Clone, Debug)]
pub(crate) struct Event {
    /// The resourceVersion the change produced.
    pub(crate) rv: u64,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub(crate) kind: &'static str,
    /// The object.
    pub(crate) key: Key,
    /// The object after the change (before it, for deletions).
    pub(crate) object: Value,
    /// The object before a modification.
    pub(crate) previous: Option<Value>,
}

/// All objects and their history.
#[derive(Debug)]
pub(crate) struct Store {
    objects: BTreeMap<Key, Value>,
    rv: u64,
    history: VecDeque<Arc<Event>>,
    history_limit: usize,
    /// The newest resourceVersion no longer in the history (watches from before it get 410).
    compacted: u64,
    tx: broadcast::Sender<Arc<Event>>,
}

impl Store {
    /// An empty store keeping `history_limit` events for watch replay.
    pub(crate) fn new(history_limit: usize) -> Self {
        let (tx, _) = broadcast::channel(4096);
        Self {
            objects: BTreeMap::new(),
            rv: 0,
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted: 0,
            tx,
        }
    }

    /// The current resourceVersion.
    pub(crate) fn rv(&self) -> u64 {
        self.rv
    }

    /// The newest version watches can no longer resume from.
    pub(crate) fn compacted(&self) -> u64 {
        self.compacted
    }

    /// An object.
    pub(crate) fn get(&self, key: &Key) -> Option<&Value> {
        self.objects.get(key)
    }

    /// Objects of a resource, in one namespace or all.
    pub(crate) fn list<'a>(
        &'a self,
        group: &'a str,
        plural: &'a str,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a Key, &'a Value)> + 'a {
        self.objects.iter().filter(move |(k, _)| {
            k.group == group && k.plural == plural && namespace.is_none_or(|n| k.namespace == n)
        })
    }

    /// Every stored key.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &Key> {
        self.objects.keys()
    }

    /// Stores an object (a create or an update), stamping the next resourceVersion.
    pub(crate) fn put(&mut self, key: Key, mut object: Value) -> Value {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = Value::String(self.rv.to_string());
        let previous = self.objects.insert(key.clone(), object.clone());
        let kind = if previous.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.record(Event {
            rv: self.rv,
            kind,
            key,
            object: object.clone(),
            previous,
        });
        object
    }

    /// Deletes an object, stamping the next resourceVersion on the deletion event.
    pub(crate) fn delete(&mut self, key: &Key) -> Option<Value> {
        let mut object = self.objects.remove(key)?;
        self.rv += 1;
        object["metadata"]["resourceVersion"] = Value::String(self.rv.to_string());
        self.record(Event {
            rv: self.rv,
            kind: "DELETED",
            key: key.clone(),
            object: object.clone(),
            previous: None,
        });
        Some(object)
    }

    fn record(&mut self, e: Event) {
        let e = Arc::new(e);
        self.history.push_back(e.clone());
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.rv;
            }
        }
        // No receiver is fine: nobody is watching.
        let _ = self.tx.send(e);
    }

    /// Events after `rv` still in the history.
    pub(crate) fn since(&self, rv: u64) -> Vec<Arc<Event>> {
        self.history.iter().filter(|e| e.rv > rv).cloned().collect()
    }

    /// A receiver of live events.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}
