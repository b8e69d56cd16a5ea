//! Following the published graph: load the snapshot, then apply deltas from the stream.
//!
//! ```text
//!   load() ──> graph@v (stream id s) ──tail(s)──> Δ(v→v+1) Δ(v+1→v+2) ...
//!                 ▲                                  │ from_version != our version,
//!                 └──────── reload the snapshot ─────┘ or a newer epoch took over
//! ```
//!
//! Deltas from an older epoch (a deposed writer) are ignored, unless the snapshot went back to
//! an older epoch too (the store restarted empty); a newer epoch or a version gap
//! (the stream was trimmed past us) reloads the snapshot, so the copy never silently diverges.

use std::time::Duration;

use mesh_model::{GraphDelta, MeshGraph};
use mesh_store::{GraphStore, STREAM_START, StoreError};
use prost::Message;

/// Why following failed.
#[derive(Debug, thiserror::Error)]
pub enum FollowerError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store held bytes that are not a graph or delta.
    #[error("undecodable {what} at version {version}: {reason}")]
    Decode {
        /// `snapshot` or `delta`.
        what: &'static str,
        /// Where.
        version: u64,
        /// Why.
        reason: String,
    },
}

/// What one step did.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Nothing new arrived.
    Idle,
    /// Deltas were applied, in order.
    Applied(Vec<GraphDelta>),
    /// The snapshot was (re)loaded: continuity could not be proven.
    Reloaded,
}

/// An in-memory copy of the published graph.
#[derive(Debug)]
pub struct Follower<S> {
    store: S,
    graph: Option<MeshGraph>,
    stream_id: String,
}

fn decode_graph(bytes: &[u8], version: u64) -> Result<MeshGraph, FollowerError> {
    let wire = mesh_proto::pb::MeshGraph::decode(bytes).map_err(|e| FollowerError::Decode {
        what: "snapshot",
        version,
        reason: e.to_string(),
    })?;
    MeshGraph::try_from(wire).map_err(|e| FollowerError::Decode {
        what: "snapshot",
        version,
        reason: e.to_string(),
    })
}

fn decode_delta(bytes: &[u8], version: u64) -> Result<GraphDelta, FollowerError> {
    let wire = mesh_proto::pb::GraphDelta::decode(bytes).map_err(|e| FollowerError::Decode {
        what: "delta",
        version,
        reason: e.to_string(),
    })?;
    GraphDelta::try_from(wire).map_err(|e| FollowerError::Decode {
        what: "delta",
        version,
        reason: e.to_string(),
    })
}

impl<S: GraphStore> Follower<S> {
    /// A follower with nothing loaded yet.
    pub fn new(store: S) -> Self {
        Self {
            store,
            graph: None,
            stream_id: STREAM_START.to_owned(),
        }
    }

    /// The current copy, once loaded.
    pub fn graph(&self) -> Option<&MeshGraph> {
        self.graph.as_ref()
    }

    /// Loads the snapshot (and where to tail from). Returns whether one exists.
    pub async fn reload(&mut self) -> Result<bool, FollowerError> {
        match self.store.load().await? {
            Some(s) => {
                self.graph = Some(decode_graph(&s.graph, s.version)?);
                self.stream_id = s.stream_id;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Waits up to `block` for deltas and applies them (or reloads when continuity breaks).
    pub async fn step(&mut self, block: Duration) -> Result<Step, FollowerError> {
        if self.graph.is_none() {
            return Ok(if self.reload().await? {
                Step::Reloaded
            } else {
                Step::Idle
            });
        }
        let entries = self.store.tail(&self.stream_id, block, 1000).await?;
        let mut applied = Vec::new();
        for e in entries {
            let graph = self.graph.as_mut().expect("loaded above");
            if e.epoch < graph.epoch {
                // A deposed writer's late write (skip it), or a store that restarted empty and
                // counts epochs anew (reload): the snapshot's epoch tells which.
                let reset = self
                    .store
                    .load()
                    .await?
                    .is_some_and(|s| s.epoch < graph.epoch);
                if reset {
                    self.reload().await?;
                    return Ok(Step::Reloaded);
                }
                self.stream_id = e.id;
                continue;
            }
            if e.epoch > graph.epoch || e.from_version != graph.version {
                self.reload().await?;
                return Ok(Step::Reloaded);
            }
            let delta = decode_delta(&e.delta, e.to_version)?;
            if delta.apply(graph).is_err() {
                self.reload().await?;
                return Ok(Step::Reloaded);
            }
            self.stream_id = e.id;
            applied.push(delta);
        }
        Ok(if applied.is_empty() {
            Step::Idle
        } else {
            Step::Applied(applied)
        })
    }
}
