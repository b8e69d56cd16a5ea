//! Publishing builds: each new build is diffed against what readers hold ([`PublishedView`])
//! and written to the store as the new snapshot plus the delta, in one atomic step.

use mesh_model::{GraphDelta, MeshGraph, MetricTolerance, PublishedView};
use mesh_store::{GraphStore, Lease, Publication, StoreError};
use prost::Message;

/// Writes builds to a store under one epoch.
#[derive(Debug)]
pub struct Publisher<S> {
    store: S,
    epoch: u64,
    lease: Option<String>,
    tolerance: MetricTolerance,
    view: Option<PublishedView>,
}

fn encode(g: &MeshGraph) -> Vec<u8> {
    mesh_proto::pb::MeshGraph::from(g).encode_to_vec()
}

impl<S: GraphStore> Publisher<S> {
    /// Takes over the store: starts a new epoch. Versions continue from the stored snapshot,
    /// so they only ever grow.
    pub async fn start(store: S, tolerance: MetricTolerance) -> Result<Self, StoreError> {
        let epoch = store.next_epoch().await?;
        Ok(Self {
            store,
            epoch,
            lease: None,
            tolerance,
            view: None,
        })
    }

    /// Publishes under a held leader lease: its epoch, and every write refused by the store
    /// unless the lease is still the one held. The first publication is a full snapshot.
    pub fn lead(store: S, lease: &Lease, tolerance: MetricTolerance) -> Self {
        Self {
            store,
            epoch: lease.epoch,
            lease: Some(lease.token()),
            tolerance,
            view: None,
        }
    }

    /// The epoch this publisher writes under.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// What readers hold, once something was published.
    pub fn published(&self) -> Option<&MeshGraph> {
        self.view.as_ref().map(PublishedView::graph)
    }

    /// Publishes a build; returns the new version, or `None` when nothing readers see changed.
    pub async fn publish(&mut self, build: MeshGraph) -> Result<Option<u64>, StoreError> {
        let Some(view) = &mut self.view else {
            // First publication in this epoch: a full snapshot, and the delta from the previous
            // writer's snapshot, so readers tailing the stream learn of the new epoch at once
            // (they reload on it) even when nothing else changes for a while.
            let previous = self.store.load().await?;
            let from_version = previous.as_ref().map_or(0, |s| s.version);
            let mut first = build;
            first.version = from_version + 1;
            first.epoch = self.epoch;
            let delta = previous.and_then(|s| {
                let wire = mesh_proto::pb::MeshGraph::decode(s.graph.as_slice()).ok()?;
                let before = MeshGraph::try_from(wire).ok()?;
                let d = GraphDelta::between(&before, &first, &MetricTolerance::EXACT);
                Some(mesh_proto::pb::GraphDelta::from(&d).encode_to_vec())
            });
            self.store
                .publish(Publication {
                    epoch: self.epoch,
                    from_version,
                    to_version: first.version,
                    snapshot: encode(&first),
                    delta,
                    lease: self.lease.clone(),
                })
                .await?;
            let version = first.version;
            self.view = Some(PublishedView::new(first, self.tolerance));
            return Ok(Some(version));
        };
        let before = view.clone();
        let Some(delta) = view.advance(build) else {
            return Ok(None);
        };
        let p = Publication {
            epoch: self.epoch,
            from_version: delta.from_version,
            to_version: delta.to_version,
            snapshot: encode(view.graph()),
            delta: Some(mesh_proto::pb::GraphDelta::from(&delta).encode_to_vec()),
            lease: self.lease.clone(),
        };
        if let Err(e) = self.store.publish(p).await {
            // Readers never saw it: keep the view where they are.
            *view = before;
            return Err(e);
        }
        Ok(Some(delta.to_version))
    }
}
