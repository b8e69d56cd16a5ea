//! The one choice every service makes the same way: shared state in Redis/Valkey, or in this
//! process. [`StoreArgs`] are the flags (flattened into each binary's command line) and
//! [`Backend`] is the choice, usable wherever a plan, approval or alert store is.

use std::{path::PathBuf, sync::Arc, time::Duration};

use crate::{
    AlertStore, ApprovalEntry, ApprovalStore, MemoryStore, PlanStore, RecordEntry, RecordStore,
    RedisStore, Result, Shelf, Taken, Transition, Updated,
};

/// Where shared state lives, as every binary reads it from its command line.
#[derive(Clone, Debug, clap::Args)]
pub struct StoreArgs {
    /// Redis/Valkey URL (`redis://` or `rediss://`; user and password in the URL). Each binary
    /// says what it keeps there (`mut_arg` on its command).
    #[arg(long, env = "MESH_REDIS_URL")]
    pub redis_url: Option<String>,
    /// CA certificate (PEM) of a `rediss://` server, instead of the system's roots.
    #[arg(
        long,
        env = "MESH_REDIS_CA",
        value_name = "FILE",
        requires = "redis_url"
    )]
    pub redis_ca: Option<PathBuf>,
    /// Key prefix in Redis (on Redis Cluster, with a hash tag: `{mesh}:`).
    #[arg(long, env = "MESH_KEY_PREFIX", default_value = "mesh:")]
    pub key_prefix: String,
}

impl StoreArgs {
    /// The Redis/Valkey store named by the flags, under the key prefix followed by `sub` (an
    /// empty `sub` for the shared keys), keeping about `max_len` deltas, with `timeout` on every
    /// call; `None` without `--redis-url`. Errors name the flag at fault.
    pub fn redis(
        &self,
        sub: &str,
        max_len: usize,
        timeout: Duration,
    ) -> std::result::Result<Option<RedisStore>, String> {
        let Some(url) = &self.redis_url else {
            return Ok(None);
        };
        let ca = match &self.redis_ca {
            Some(f) => {
                Some(std::fs::read(f).map_err(|e| format!("--redis-ca {}: {e}", f.display()))?)
            }
            None => None,
        };
        let prefix = format!("{}{sub}", self.key_prefix);
        RedisStore::with_ca(url, ca, &prefix, max_len, timeout)
            .map(Some)
            .map_err(|e| format!("--redis-url: {e}"))
    }
}

/// Plans, approvals and alert state: in Redis/Valkey, shared by every replica, or in this
/// process (one replica; lost on restart).
#[derive(Clone, Debug)]
pub enum Backend {
    /// In this process.
    Memory(Arc<MemoryStore>),
    /// Redis or Valkey.
    Redis(Arc<RedisStore>),
}

impl Backend {
    /// Redis/Valkey when `args` name it (keys under its prefix followed by `sub`), else memory.
    pub fn open(
        args: &StoreArgs,
        sub: &str,
        timeout: Duration,
    ) -> std::result::Result<Self, String> {
        Ok(match args.redis(sub, 1, timeout)? {
            Some(r) => Self::Redis(Arc::new(r)),
            None => Self::memory(),
        })
    }

    /// A store in this process.
    pub fn memory() -> Self {
        Self::Memory(Arc::new(MemoryStore::new(1)))
    }
}

impl PlanStore for Backend {
    async fn put_plan(&self, id: &str, owner: &str, plan: Vec<u8>, ttl: Duration) -> Result<()> {
        match self {
            Self::Memory(s) => s.put_plan(id, owner, plan, ttl).await,
            Self::Redis(s) => s.put_plan(id, owner, plan, ttl).await,
        }
    }
    async fn take_plan(&self, id: &str, owner: &str) -> Result<Taken> {
        match self {
            Self::Memory(s) => s.take_plan(id, owner).await,
            Self::Redis(s) => s.take_plan(id, owner).await,
        }
    }
}

impl ApprovalStore for Backend {
    async fn put_approval(&self, id: &str, record: Vec<u8>, ttl: Duration) -> Result<()> {
        match self {
            Self::Memory(s) => s.put_approval(id, record, ttl).await,
            Self::Redis(s) => s.put_approval(id, record, ttl).await,
        }
    }
    async fn get_approval(&self, id: &str) -> Result<Option<ApprovalEntry>> {
        match self {
            Self::Memory(s) => s.get_approval(id).await,
            Self::Redis(s) => s.get_approval(id).await,
        }
    }
    async fn transition_after(
        &self,
        id: &str,
        from: &str,
        to: &str,
        by: &str,
        min_age: Duration,
    ) -> Result<Transition> {
        match self {
            Self::Memory(s) => s.transition_after(id, from, to, by, min_age).await,
            Self::Redis(s) => s.transition_after(id, from, to, by, min_age).await,
        }
    }
}

impl AlertStore for Backend {
    async fn set_subscription(&self, target: &str, filter: Option<Vec<u8>>) -> Result<()> {
        match self {
            Self::Memory(s) => s.set_subscription(target, filter).await,
            Self::Redis(s) => s.set_subscription(target, filter).await,
        }
    }
    async fn subscriptions(&self) -> Result<Vec<(String, Vec<u8>)>> {
        match self {
            Self::Memory(s) => s.subscriptions().await,
            Self::Redis(s) => s.subscriptions().await,
        }
    }
    async fn mark(&self, set: &str, member: &str, present: bool) -> Result<bool> {
        match self {
            Self::Memory(s) => s.mark(set, member, present).await,
            Self::Redis(s) => s.mark(set, member, present).await,
        }
    }
    async fn members(&self, set: &str) -> Result<Vec<String>> {
        match self {
            Self::Memory(s) => s.members(set).await,
            Self::Redis(s) => s.members(set).await,
        }
    }
}

impl RecordStore for Backend {
    async fn create_record(
        &self,
        shelf: Shelf,
        id: &str,
        state: &str,
        record: Vec<u8>,
    ) -> Result<bool> {
        match self {
            Self::Memory(s) => s.create_record(shelf, id, state, record).await,
            Self::Redis(s) => s.create_record(shelf, id, state, record).await,
        }
    }
    async fn get_record(&self, shelf: Shelf, id: &str) -> Result<Option<RecordEntry>> {
        match self {
            Self::Memory(s) => s.get_record(shelf, id).await,
            Self::Redis(s) => s.get_record(shelf, id).await,
        }
    }
    async fn update_record(
        &self,
        shelf: Shelf,
        id: &str,
        revision: u64,
        state: &str,
        record: Vec<u8>,
    ) -> Result<Updated> {
        match self {
            Self::Memory(s) => s.update_record(shelf, id, revision, state, record).await,
            Self::Redis(s) => s.update_record(shelf, id, revision, state, record).await,
        }
    }
    async fn record_ids(&self, shelf: Shelf) -> Result<Vec<String>> {
        match self {
            Self::Memory(s) => s.record_ids(shelf).await,
            Self::Redis(s) => s.record_ids(shelf).await,
        }
    }
    async fn remove_record(&self, shelf: Shelf, id: &str) -> Result<()> {
        match self {
            Self::Memory(s) => s.remove_record(shelf, id).await,
            Self::Redis(s) => s.remove_record(shelf, id).await,
        }
    }
}

impl crate::HistoryStore for Backend {
    async fn append_changes(
        &self,
        lease: &crate::Lease,
        entries: Vec<crate::LogEntry>,
        keep: crate::Retention,
    ) -> Result<()> {
        match self {
            Self::Memory(s) => s.append_changes(lease, entries, keep).await,
            Self::Redis(s) => s.append_changes(lease, entries, keep).await,
        }
    }
    async fn logged_objects(&self) -> Result<Vec<(String, String)>> {
        match self {
            Self::Memory(s) => s.logged_objects().await,
            Self::Redis(s) => s.logged_objects().await,
        }
    }
    async fn changes_after(&self, after: &str, max: usize) -> Result<Vec<crate::LoggedChange>> {
        match self {
            Self::Memory(s) => s.changes_after(after, max).await,
            Self::Redis(s) => s.changes_after(after, max).await,
        }
    }
    async fn history_start(&self) -> Result<Option<std::time::SystemTime>> {
        match self {
            Self::Memory(s) => s.history_start().await,
            Self::Redis(s) => s.history_start().await,
        }
    }
}
