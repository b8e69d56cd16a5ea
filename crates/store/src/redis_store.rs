//! The Redis/Valkey store: `<prefix>snapshot` (a hash), `<prefix>deltas` (a stream trimmed with
//! `MAXLEN ~`), `<prefix>epoch` (a counter), `<prefix>leader` (the lease). Every network call
//! has a timeout; a failed connection is dropped and made again on the next call, so an outage
//! heals by itself. The scripts touch several keys: on Redis/Valkey Cluster, give the prefix a
//! hash tag (`{mesh}:`) so they share a slot.

use std::{collections::HashMap, time::Duration};

use redis::{
    AsyncCommands, Script, Value,
    aio::{ConnectionManager, ConnectionManagerConfig},
    streams::{StreamReadOptions, StreamReadReply},
};
use tokio::sync::Mutex;

use crate::{
    Entry, GraphStore, Keys, Lease, PlanStore, Publication, Result, STREAM_START, Snapshot,
    StoreError, Taken,
};

/// Appends the delta and replaces the snapshot in one step, refusing stale epochs and, when
/// the writer names its lease (ARGV[7]), any write whose lease is not the one held now.
const PUBLISH: &str = r"
local current = tonumber(redis.call('GET', KEYS[3]) or '0')
if tonumber(ARGV[1]) < current then
  return redis.error_reply('FENCED ' .. current)
end
if ARGV[7] ~= '' and redis.call('GET', KEYS[4]) ~= ARGV[7] then
  return redis.error_reply('FENCED ' .. current)
end
local id = '0-0'
if ARGV[5] ~= '' then
  id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*',
    'epoch', ARGV[1], 'from', ARGV[2], 'to', ARGV[3], 'delta', ARGV[5])
else
  local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
  if #last > 0 then id = last[1][1] end
end
redis.call('HSET', KEYS[1], 'graph', ARGV[4], 'version', ARGV[3], 'epoch', ARGV[1], 'stream_id', id)
if tonumber(ARGV[8]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[8])
end
return id
";

/// Takes the lease when free; the new epoch is past the counter, the snapshot's epoch (an
/// asynchronous replica promoted by Sentinel may have lost the latest increment, but not
/// necessarily the snapshot written after it) and the caller's newest known epoch (ARGV[3]).
const ACQUIRE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  return false
end
local counter = tonumber(redis.call('GET', KEYS[2]) or '0')
local snap = tonumber(redis.call('HGET', KEYS[3], 'epoch') or '0')
local epoch = math.max(counter, snap, tonumber(ARGV[3])) + 1
redis.call('SET', KEYS[2], epoch)
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. epoch, 'PX', ARGV[2])
return epoch
";

/// Extends the lease only if it is still ours, and with it the snapshot's TTL (ARGV[3], 0:
/// none): a leader with nothing new to publish still vouches for what is there.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  if tonumber(ARGV[3]) > 0 then
    redis.call('PEXPIRE', KEYS[2], ARGV[3])
  end
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Takes a plan if its owner asks: the hash's fields are `owner` and `plan`.
const TAKE_PLAN: &str = r"
local owner = redis.call('HGET', KEYS[1], 'owner')
if not owner then
  return {0}
end
if owner ~= ARGV[1] then
  return {2}
end
local plan = redis.call('HGET', KEYS[1], 'plan')
redis.call('DEL', KEYS[1])
return {1, plan}
";

/// Moves an approval between states only from the expected one, and only once it has been
/// there `ARGV[4]` ms (by the server's clock); of two clicks, one wins.
const TRANSITION: &str = r"
local s = redis.call('HMGET', KEYS[1], 'state', 'by', 'record', 'at')
if not s[1] then
  return {0}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if s[1] ~= ARGV[1] or now - tonumber(s[4] or '0') < tonumber(ARGV[4]) then
  return {2, s[1], s[2] or ''}
end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'by', ARGV[3], 'at', now)
return {1, s[3]}
";

/// Creates a rollout at revision 1 unless it exists.
const CREATE_ROLLOUT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'rev', 1, 'record', ARGV[2])
return 1
";

/// Replaces a rollout's state and record only at the expected revision; otherwise answers
/// what it holds.
const UPDATE_ROLLOUT: &str = r"
local s = redis.call('HMGET', KEYS[1], 'state', 'rev', 'record')
if not s[1] then
  return {0}
end
if tonumber(s[2]) ~= tonumber(ARGV[1]) then
  return {2, s[1], s[2], s[3]}
end
local rev = tonumber(s[2]) + 1
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'rev', rev, 'record', ARGV[3])
return {1, rev}
";

/// Appends change records (ARGV[5..], triples of key, state, record; a state of `-` is a
/// deletion) and the objects' new states, only under the lease held now (ARGV[2]) and an
/// epoch not older than the store's; then trims the log to ARGV[3] entries and ARGV[4] ms of
/// age, by the server's clock, and moves the log's start (KEYS[3]) to the oldest change kept.
const APPEND_CHANGES: &str = r"
local current = tonumber(redis.call('GET', KEYS[4]) or '0')
if tonumber(ARGV[1]) < current or redis.call('GET', KEYS[5]) ~= ARGV[2] then
  return redis.error_reply('FENCED ' .. current)
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[3], now, 'NX')
for i = 5, #ARGV, 3 do
  redis.call('XADD', KEYS[1], '*', 'key', ARGV[i], 'rec', ARGV[i + 2])
  if ARGV[i + 1] == '-' then
    redis.call('HDEL', KEYS[2], ARGV[i])
  else
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  end
end
local trimmed = redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', ARGV[3])
  + redis.call('XTRIM', KEYS[1], 'MINID', '~', math.max(0, now - tonumber(ARGV[4])))
if trimmed > 0 then
  -- Complete only from the oldest change kept on.
  local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
  local ms = tonumber(string.match(first[1][1], '^(%d+)'))
  if ms > tonumber(redis.call('GET', KEYS[3])) then
    redis.call('SET', KEYS[3], ms)
  end
end
return 1
";

/// Gives the lease up only if it is still ours.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// A store on Redis or Valkey.
pub struct RedisStore {
    client: redis::Client,
    keys: Keys,
    max_len: usize,
    timeout: Duration,
    conn: Mutex<Option<ConnectionManager>>,
    // Blocking XREADs get their own connection so they never delay other commands.
    tail_conn: Mutex<Option<redis::aio::MultiplexedConnection>>,
    publish: Script,
    // Built once: each holds the script's SHA, computed from its text.
    acquire: Script,
    renew: Script,
    release: Script,
    take_plan: Script,
    transition: Script,
    create_rollout: Script,
    update_rollout: Script,
    append_changes: Script,
    snapshot_ttl: Duration,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("keys", &self.keys)
            .field("max_len", &self.max_len)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: &redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl RedisStore {
    /// A store at `url` (`redis://`, or `rediss://` trusting the system's roots; user and
    /// password in the URL) under `prefix`, keeping about `max_len` deltas, with `timeout` on
    /// every call. Connects lazily.
    pub fn new(url: &str, prefix: &str, max_len: usize, timeout: Duration) -> Result<Self> {
        Self::with_ca(url, None, prefix, max_len, timeout)
    }

    /// As [`RedisStore::new`], trusting `ca_pem` (PEM) for a `rediss://` server instead of the
    /// system's roots.
    pub fn with_ca(
        url: &str,
        ca_pem: Option<Vec<u8>>,
        prefix: &str,
        max_len: usize,
        timeout: Duration,
    ) -> Result<Self> {
        let invalid = |e: redis::RedisError| {
            StoreError::Unavailable(format!("invalid Redis URL {url:?}: {e}"))
        };
        if url.starts_with("rediss://") {
            // rustls needs one process-wide provider; a no-op when one is installed already.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = match ca_pem {
            Some(root_cert) if url.starts_with("rediss://") => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                },
            )
            .map_err(invalid)?,
            Some(_) => {
                return Err(StoreError::Unavailable(format!(
                    "a CA certificate was given for {url:?}, which is not a rediss:// URL"
                )));
            }
            None => redis::Client::open(url).map_err(invalid)?,
        };
        Ok(Self {
            client,
            keys: Keys::new(prefix),
            max_len: max_len.max(1),
            timeout,
            conn: Mutex::new(None),
            tail_conn: Mutex::new(None),
            publish: Script::new(PUBLISH),
            acquire: Script::new(ACQUIRE),
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
            take_plan: Script::new(TAKE_PLAN),
            transition: Script::new(TRANSITION),
            create_rollout: Script::new(CREATE_ROLLOUT),
            update_rollout: Script::new(UPDATE_ROLLOUT),
            append_changes: Script::new(APPEND_CHANGES),
            snapshot_ttl: Duration::ZERO,
        })
    }

    /// Lets the snapshot expire `ttl` after the last write (zero: never), so a system whose
    /// writers all died stops serving an ancient graph as if it were current.
    #[must_use]
    pub fn with_snapshot_ttl(mut self, ttl: Duration) -> Self {
        self.snapshot_ttl = ttl;
        self
    }

    fn millis(d: Duration) -> u64 {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
    }

    /// The key names used.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    async fn conn(&self) -> Result<ConnectionManager> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1);
        let c = tokio::time::timeout(
            self.timeout,
            ConnectionManager::new_with_config(self.client.clone(), cfg),
        )
        .await
        .map_err(|_| {
            StoreError::Unavailable(format!("no answer from Redis within {:?}", self.timeout))
        })?
        .map_err(|e| unavailable(&e))?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Runs `f` on a connection with the store's timeout; a failure drops the connection.
    async fn with<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let c = self.conn().await?;
        match tokio::time::timeout(self.timeout, f(c)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if e.code() == Some("FENCED") => {
                let current = e.detail().and_then(|d| d.trim().parse().ok()).unwrap_or(0);
                Err(StoreError::Fenced { writer: 0, current })
            }
            Ok(Err(e)) => {
                *self.conn.lock().await = None;
                Err(unavailable(&e))
            }
            Err(_) => {
                *self.conn.lock().await = None;
                Err(StoreError::Unavailable(format!(
                    "no answer from Redis within {:?}",
                    self.timeout
                )))
            }
        }
    }
}

fn field<'a>(m: &'a HashMap<String, Value>, k: &str) -> Result<&'a Value> {
    m.get(k)
        .ok_or_else(|| StoreError::Corrupt(format!("stream entry without {k}")))
}

fn num(v: &Value) -> Result<u64> {
    redis::from_redis_value::<String>(v.clone())
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| StoreError::Corrupt(format!("not a number: {v:?}")))
}

impl GraphStore for RedisStore {
    async fn publish(&self, p: Publication) -> Result<String> {
        let keys = [
            &self.keys.snapshot,
            &self.keys.deltas,
            &self.keys.epoch,
            &self.keys.leader,
        ];
        let script = &self.publish;
        let max_len = self.max_len;
        let ttl_ms = if self.snapshot_ttl.is_zero() {
            0
        } else {
            Self::millis(self.snapshot_ttl)
        };
        let epoch = p.epoch;
        let r = self
            .with(|mut c| async move {
                let mut inv = script.prepare_invoke();
                for k in keys {
                    inv.key(k);
                }
                inv.arg(p.epoch)
                    .arg(p.from_version)
                    .arg(p.to_version)
                    .arg(p.snapshot)
                    .arg(p.delta.unwrap_or_default())
                    .arg(max_len)
                    .arg(p.lease.unwrap_or_default())
                    .arg(ttl_ms);
                inv.invoke_async::<String>(&mut c).await
            })
            .await;
        r.map_err(|e| match e {
            StoreError::Fenced { current, .. } => StoreError::Fenced {
                writer: epoch,
                current,
            },
            other => other,
        })
    }

    async fn load(&self) -> Result<Option<Snapshot>> {
        let key = self.keys.snapshot.clone();
        let m: HashMap<String, Vec<u8>> = self
            .with(|mut c| async move { c.hgetall(key).await })
            .await?;
        if m.is_empty() {
            return Ok(None);
        }
        let text = |k: &str| {
            m.get(k)
                .and_then(|v| String::from_utf8(v.clone()).ok())
                .ok_or_else(|| StoreError::Corrupt(format!("snapshot without {k}")))
        };
        let parse = |k: &str| {
            text(k).and_then(|t| {
                t.parse::<u64>()
                    .map_err(|_| StoreError::Corrupt(format!("snapshot {k} is not a number")))
            })
        };
        Ok(Some(Snapshot {
            graph: m
                .get("graph")
                .cloned()
                .ok_or_else(|| StoreError::Corrupt("snapshot without graph".into()))?,
            version: parse("version")?,
            epoch: parse("epoch")?,
            stream_id: text("stream_id")?,
        }))
    }

    async fn tail(&self, after: &str, block: Duration, max: usize) -> Result<Vec<Entry>> {
        let mut slot = self.tail_conn.lock().await;
        let mut c = match slot.as_ref() {
            Some(c) => c.clone(),
            None => {
                // No response timeout of the client's own (redis-rs defaults to 500 ms, which
                // cut every XREAD BLOCK longer than that short as a failure): the call below is
                // bounded by the block time plus the store's timeout.
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(None);
                let c = tokio::time::timeout(
                    self.timeout,
                    self.client
                        .get_multiplexed_async_connection_with_config(&config),
                )
                .await
                .map_err(|_| {
                    StoreError::Unavailable(format!(
                        "no answer from Redis within {:?}",
                        self.timeout
                    ))
                })?
                .map_err(|e| unavailable(&e))?;
                *slot = Some(c.clone());
                c
            }
        };
        let block_ms = usize::try_from(block.as_millis())
            .unwrap_or(usize::MAX)
            .max(1);
        let opts = StreamReadOptions::default()
            .block(block_ms)
            .count(max.max(1));
        let after = if after.is_empty() {
            STREAM_START
        } else {
            after
        };
        let (keys, ids) = ([&self.keys.deltas], [after]);
        let call = c.xread_options::<_, _, Option<StreamReadReply>>(&keys, &ids, &opts);
        let reply = match tokio::time::timeout(block + self.timeout, call).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                *slot = None;
                return Err(unavailable(&e));
            }
            Err(_) => {
                *slot = None;
                return Err(StoreError::Unavailable(format!(
                    "no answer from Redis within {:?}",
                    block + self.timeout
                )));
            }
        };
        let mut out = Vec::new();
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            for id in key.ids {
                out.push(Entry {
                    epoch: num(field(&id.map, "epoch")?)?,
                    from_version: num(field(&id.map, "from")?)?,
                    to_version: num(field(&id.map, "to")?)?,
                    delta: redis::from_redis_value(field(&id.map, "delta")?.clone())
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    id: id.id,
                });
            }
        }
        Ok(out)
    }

    async fn next_epoch(&self) -> Result<u64> {
        let key = self.keys.epoch.clone();
        self.with(|mut c| async move { c.incr(key, 1u64).await })
            .await
    }

    async fn epoch(&self) -> Result<u64> {
        let key = self.keys.epoch.clone();
        let v: Option<u64> = self.with(|mut c| async move { c.get(key).await }).await?;
        Ok(v.unwrap_or(0))
    }

    async fn acquire(&self, holder: &str, ttl: Duration, at_least: u64) -> Result<Option<Lease>> {
        let keys = [&self.keys.leader, &self.keys.epoch, &self.keys.snapshot];
        let epoch: Option<u64> = self
            .with(|mut c| async move {
                let mut inv = self.acquire.prepare_invoke();
                for k in keys {
                    inv.key(k);
                }
                inv.arg(holder).arg(Self::millis(ttl)).arg(at_least);
                inv.invoke_async(&mut c).await
            })
            .await?;
        Ok(epoch.map(|epoch| Lease {
            holder: holder.to_owned(),
            epoch,
        }))
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool> {
        let (key, snapshot) = (&self.keys.leader, &self.keys.snapshot);
        let token = lease.token();
        let snapshot_ttl = if self.snapshot_ttl.is_zero() {
            0
        } else {
            Self::millis(self.snapshot_ttl)
        };
        let n: i64 = self
            .with(|mut c| async move {
                self.renew
                    .key(key)
                    .key(snapshot)
                    .arg(token)
                    .arg(Self::millis(ttl))
                    .arg(snapshot_ttl)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(n == 1)
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let key = &self.keys.leader;
        let token = lease.token();
        let _: i64 = self
            .with(
                |mut c| async move { self.release.key(key).arg(token).invoke_async(&mut c).await },
            )
            .await?;
        Ok(())
    }
}

/// Most changes one append script carries: a takeover that logs thousands of objects writes
/// them in pieces, so no single script holds Redis for long.
const APPEND_BATCH: usize = 256;

impl crate::HistoryStore for RedisStore {
    async fn append_changes(
        &self,
        lease: &Lease,
        entries: Vec<crate::LogEntry>,
        keep: crate::Retention,
    ) -> Result<()> {
        let keys = [
            &self.keys.changes,
            &self.keys.changes_objects,
            &self.keys.changes_since,
            &self.keys.epoch,
            &self.keys.leader,
        ];
        let token = lease.token();
        let age_ms = Self::millis(keep.max_age);
        for batch in entries.chunks(APPEND_BATCH) {
            let token = token.clone();
            let r: Result<i64> = self
                .with(|mut c| async move {
                    let mut inv = self.append_changes.prepare_invoke();
                    for k in keys {
                        inv.key(k);
                    }
                    inv.arg(lease.epoch)
                        .arg(token)
                        .arg(keep.max_entries.max(1))
                        .arg(age_ms);
                    for e in batch {
                        inv.arg(&e.key)
                            .arg(e.after.as_deref().unwrap_or("-"))
                            .arg(&e.record);
                    }
                    inv.invoke_async(&mut c).await
                })
                .await;
            r.map_err(|e| match e {
                StoreError::Fenced { current, .. } => StoreError::Fenced {
                    writer: lease.epoch,
                    current,
                },
                other => other,
            })?;
        }
        Ok(())
    }

    async fn logged_objects(&self) -> Result<Vec<(String, String)>> {
        let key = self.keys.changes_objects.clone();
        let m: HashMap<String, String> = self
            .with(|mut c| async move { c.hgetall(key).await })
            .await?;
        Ok(m.into_iter().collect())
    }

    async fn changes_after(&self, after: &str, max: usize) -> Result<Vec<crate::LoggedChange>> {
        let key = self.keys.changes.clone();
        // Exclusive start: `(id`.
        let start = format!(
            "({}",
            if after.is_empty() {
                STREAM_START
            } else {
                after
            }
        );
        let reply: redis::streams::StreamRangeReply = self
            .with(|mut c| async move { c.xrange_count(key, start, "+", max.max(1)).await })
            .await?;
        reply
            .ids
            .into_iter()
            .map(|id| {
                let text = |k: &str| {
                    field(&id.map, k).and_then(|v| {
                        redis::from_redis_value::<String>(v.clone())
                            .map_err(|e| StoreError::Corrupt(e.to_string()))
                    })
                };
                Ok(crate::LoggedChange {
                    at: crate::history::time_of(&id.id),
                    key: text("key")?,
                    record: text("rec")?,
                    id: id.id.clone(),
                })
            })
            .collect()
    }

    async fn history_start(&self) -> Result<Option<std::time::SystemTime>> {
        let since = self.keys.changes_since.clone();
        let ms: Option<u64> = self.with(|mut c| async move { c.get(since).await }).await?;
        Ok(ms.map(|ms| std::time::SystemTime::UNIX_EPOCH + Duration::from_millis(ms)))
    }
}

impl PlanStore for RedisStore {
    async fn put_plan(&self, id: &str, owner: &str, plan: Vec<u8>, ttl: Duration) -> Result<()> {
        let key = format!("{}{id}", self.keys.plan);
        let ms = Self::millis(ttl);
        self.with(|mut c| async move {
            redis::pipe()
                .atomic()
                .hset_multiple(&key, &[("owner", owner.as_bytes()), ("plan", &plan)])
                .ignore()
                .pexpire(&key, i64::try_from(ms).unwrap_or(i64::MAX))
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    async fn take_plan(&self, id: &str, owner: &str) -> Result<Taken> {
        let key = format!("{}{id}", self.keys.plan);
        let reply: Vec<Value> = self
            .with(|mut c| async move {
                self.take_plan
                    .key(&key)
                    .arg(owner)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        match reply.as_slice() {
            [code] if num(code)? == 0 => Ok(Taken::Missing),
            [code] if num(code)? == 2 => Ok(Taken::NotYours),
            [_, plan] => Ok(Taken::Plan(
                redis::from_redis_value(plan.clone())
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            )),
            other => Err(StoreError::Corrupt(format!("take plan answered {other:?}"))),
        }
    }
}

impl crate::ApprovalStore for RedisStore {
    async fn put_approval(&self, id: &str, record: Vec<u8>, ttl: Duration) -> Result<()> {
        let key = format!("{}{id}", self.keys.approval);
        let ms = Self::millis(ttl);
        self.with(|mut c| async move {
            redis::pipe()
                .atomic()
                .del(&key)
                .ignore()
                .hset_multiple(
                    &key,
                    &[
                        ("state", b"pending".as_slice()),
                        ("by", b"".as_slice()),
                        ("record", &record),
                    ],
                )
                .ignore()
                .pexpire(&key, i64::try_from(ms).unwrap_or(i64::MAX))
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    async fn get_approval(&self, id: &str) -> Result<Option<crate::ApprovalEntry>> {
        let key = format!("{}{id}", self.keys.approval);
        let (state, by, record): (Option<String>, Option<String>, Option<Vec<u8>>) = self
            .with(|mut c| async move {
                redis::cmd("HMGET")
                    .arg(&key)
                    .arg("state")
                    .arg("by")
                    .arg("record")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(match (state, record) {
            (Some(state), Some(record)) => Some(crate::ApprovalEntry {
                state,
                by: by.unwrap_or_default(),
                record,
            }),
            _ => None,
        })
    }

    async fn transition_after(
        &self,
        id: &str,
        from: &str,
        to: &str,
        by: &str,
        min_age: Duration,
    ) -> Result<crate::Transition> {
        let key = format!("{}{id}", self.keys.approval);
        let min_age = u64::try_from(min_age.as_millis()).unwrap_or(u64::MAX);
        let reply: Vec<Value> = self
            .with(|mut c| async move {
                self.transition
                    .key(&key)
                    .arg(from)
                    .arg(to)
                    .arg(by)
                    .arg(min_age)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let text = |v: &Value| -> Result<String> {
            redis::from_redis_value(v.clone()).map_err(|e| StoreError::Corrupt(e.to_string()))
        };
        match reply.as_slice() {
            [code] if num(code)? == 0 => Ok(crate::Transition::Missing),
            [code, state, who] if num(code)? == 2 => Ok(crate::Transition::Now {
                state: text(state)?,
                by: text(who)?,
            }),
            [code, record] if num(code)? == 1 => Ok(crate::Transition::Moved(
                redis::from_redis_value(record.clone())
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            )),
            other => Err(StoreError::Corrupt(format!(
                "transition answered {other:?}"
            ))),
        }
    }
}

impl crate::RecordStore for RedisStore {
    async fn create_record(
        &self,
        shelf: crate::Shelf,
        id: &str,
        state: &str,
        record: Vec<u8>,
    ) -> Result<bool> {
        let (prefix, index) = self.keys.shelf(shelf);
        let key = format!("{prefix}{id}");
        let created: u64 = self
            .with(|mut c| async move {
                self.create_rollout
                    .key(&key)
                    .arg(state)
                    .arg(&record)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        if created == 1 {
            // The index is a listing aid, kept apart from the record's own key (one key per
            // script, as a Redis Cluster needs); a lost index entry hides nothing stored.
            let (index, now) = (
                index.to_owned(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis() as f64,
            );
            self.with(|mut c| {
                let index = index.clone();
                async move {
                    redis::cmd("ZADD")
                        .arg(&index)
                        .arg("NX")
                        .arg(now)
                        .arg(id)
                        .query_async::<()>(&mut c)
                        .await
                }
            })
            .await?;
        }
        Ok(created == 1)
    }

    async fn get_record(
        &self,
        shelf: crate::Shelf,
        id: &str,
    ) -> Result<Option<crate::RecordEntry>> {
        let key = format!("{}{id}", self.keys.shelf(shelf).0);
        let (state, rev, record): (Option<String>, Option<u64>, Option<Vec<u8>>) = self
            .with(|mut c| async move {
                redis::cmd("HMGET")
                    .arg(&key)
                    .arg("state")
                    .arg("rev")
                    .arg("record")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(match (state, rev, record) {
            (Some(state), Some(revision), Some(record)) => Some(crate::RecordEntry {
                state,
                revision,
                record,
            }),
            _ => None,
        })
    }

    async fn update_record(
        &self,
        shelf: crate::Shelf,
        id: &str,
        revision: u64,
        state: &str,
        record: Vec<u8>,
    ) -> Result<crate::Updated> {
        let key = format!("{}{id}", self.keys.shelf(shelf).0);
        let reply: Vec<Value> = self
            .with(|mut c| async move {
                self.update_rollout
                    .key(&key)
                    .arg(revision)
                    .arg(state)
                    .arg(&record)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let corrupt = |e: redis::ParsingError| StoreError::Corrupt(e.to_string());
        match reply.as_slice() {
            [code] if num(code)? == 0 => Ok(crate::Updated::Missing),
            [code, rev] if num(code)? == 1 => Ok(crate::Updated::Written(num(rev)?)),
            [code, state, rev, record] if num(code)? == 2 => {
                Ok(crate::Updated::Now(crate::RecordEntry {
                    state: redis::from_redis_value(state.clone()).map_err(corrupt)?,
                    revision: redis::from_redis_value(rev.clone()).map_err(corrupt)?,
                    record: redis::from_redis_value(record.clone()).map_err(corrupt)?,
                }))
            }
            other => Err(StoreError::Corrupt(format!(
                "rollout update answered {other:?}"
            ))),
        }
    }

    async fn record_ids(&self, shelf: crate::Shelf) -> Result<Vec<String>> {
        let index = self.keys.shelf(shelf).1.to_owned();
        self.with(|mut c| {
            let index = index.clone();
            async move {
                redis::cmd("ZRANGE")
                    .arg(&index)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut c)
                    .await
            }
        })
        .await
    }

    async fn remove_record(&self, shelf: crate::Shelf, id: &str) -> Result<()> {
        let (prefix, index) = self.keys.shelf(shelf);
        let (key, index) = (format!("{prefix}{id}"), index.to_owned());
        // The record first: an index entry without its record is skipped by readers.
        self.with(|mut c| {
            let (key, index) = (key.clone(), index.clone());
            async move {
                c.del::<_, ()>(&key).await?;
                c.zrem::<_, _, ()>(&index, id).await
            }
        })
        .await
    }
}

impl crate::AlertStore for RedisStore {
    async fn set_subscription(&self, target: &str, filter: Option<Vec<u8>>) -> Result<()> {
        let key = &self.keys.alert_subscriptions;
        self.with(|mut c| async move {
            match filter {
                Some(f) => c.hset::<_, _, _, ()>(key, target, f).await,
                None => c.hdel::<_, _, ()>(key, target).await,
            }
        })
        .await
    }

    async fn subscriptions(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let key = &self.keys.alert_subscriptions;
        self.with(|mut c| async move { c.hgetall(key).await }).await
    }

    async fn mark(&self, set: &str, member: &str, present: bool) -> Result<bool> {
        let key = format!("{}{set}", self.keys.alert_set);
        let n: i64 = self
            .with(|mut c| async move {
                if present {
                    c.sadd(&key, member).await
                } else {
                    c.srem(&key, member).await
                }
            })
            .await?;
        Ok(n == 1)
    }

    async fn members(&self, set: &str) -> Result<Vec<String>> {
        let key = format!("{}{set}", self.keys.alert_set);
        self.with(|mut c| async move { c.smembers(&key).await })
            .await
    }
}
