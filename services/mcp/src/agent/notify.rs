//! Resource subscriptions: legacy `resources/subscribe` peers told when the graph changes.

use super::*;

/// Legacy (`resources/subscribe`) subscriptions: session, resource URI, and whom to tell.
pub(super) type Subscriptions = Arc<Mutex<Vec<(String, String, Peer<RoleServer>)>>>;

/// A counter that moves each time the served graph changes.
pub(super) fn graph_changes(backend: &Backend) -> watch::Receiver<u64> {
    let (tx, rx) = watch::channel(0u64);
    match backend {
        Backend::Local(s) => {
            let mut graph = s.graph_watch();
            tokio::spawn(async move {
                while graph.changed().await.is_ok() {
                    tx.send_modify(|n| *n += 1);
                }
            });
        }
        Backend::Remote { client, token } => {
            let (client, token) = (client.clone(), token.clone());
            tokio::spawn(async move {
                let mut backoff = Duration::from_secs(1);
                while !tx.is_closed() {
                    let mut r = Request::new(pb::WatchMeshGraphRequest::default());
                    if let Ok(v) = format!("Bearer {token}").parse() {
                        r.metadata_mut().insert("authorization", v);
                    }
                    match client.clone().watch_mesh_graph(r).await {
                        Ok(stream) => {
                            backoff = Duration::from_secs(1);
                            let mut stream = stream.into_inner();
                            while let Ok(Some(ev)) = stream.message().await {
                                if !matches!(
                                    ev.event,
                                    Some(pb::mesh_graph_event::Event::Heartbeat(_))
                                ) {
                                    tx.send_modify(|n| *n += 1);
                                }
                            }
                        }
                        Err(e) => tracing::debug!(error = %e, "watching the remote graph"),
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            });
        }
    }
    rx
}

/// Tells every legacy subscriber of every resource when the graph changes; drops the ones
/// whose session is gone.
pub(super) fn notify_subscribers(subs: Subscriptions, mut changes: watch::Receiver<u64>) {
    tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            let current = subs.lock().await.clone();
            let mut gone = Vec::new();
            for (i, (_, uri, peer)) in current.iter().enumerate() {
                let sent = peer
                    .notify_resource_updated(ResourceUpdatedNotificationParam::new(uri.clone()))
                    .await;
                if sent.is_err() {
                    gone.push(i);
                }
            }
            if !gone.is_empty() {
                let mut subs = subs.lock().await;
                subs.retain(|(s, u, _)| {
                    !gone
                        .iter()
                        .any(|&i| current[i].0 == *s && current[i].1 == *u)
                });
            }
        }
    });
}

pub(super) fn known_resource(uri: &str) -> bool {
    uri == "mesh://graph"
        || uri
            .strip_prefix("mesh://workload/")
            .is_some_and(|w| w.split('/').count() == 2)
}
