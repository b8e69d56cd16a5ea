//! The build loop: every interval, read Prometheus, build the graph, publish what changed.
//! When Prometheus fails, the last known graph stays published with the source marked stale
//! (and since when), so readers keep answering and can tell.

use std::time::{Duration, SystemTime};

use mesh_model::{MetricTolerance, SourceHealth};
use mesh_store::GraphStore;

use crate::{PrometheusSource, Publisher};

/// Runs until `shutdown` resolves.
pub async fn run<S: GraphStore + Clone>(
    source: PrometheusSource,
    store: S,
    interval: Duration,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(200);
    let mut publisher = loop {
        match Publisher::start(store.clone(), MetricTolerance::default()).await {
            Ok(p) => break p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot start publishing; retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = &mut shutdown => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    };
    let mut last_success: Option<SystemTime> = None;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = &mut shutdown => return,
        }
        let now = SystemTime::now();
        let (mut build, error) = match source.graph(now).await {
            Ok(g) => {
                last_success = Some(now);
                (g, String::new())
            }
            Err(e) => {
                tracing::warn!(error = %e, "Prometheus read failed; publishing the last known graph as stale");
                // What readers hold already, so only the source health changes.
                let Some(g) = publisher.published().cloned() else {
                    continue;
                };
                (g, e.to_string())
            }
        };
        build.sources = vec![SourceHealth {
            source: "prometheus".into(),
            ok: error.is_empty(),
            last_success,
            error,
        }];
        match publisher.publish(build).await {
            Ok(Some(v)) => tracing::debug!(version = v, "published"),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "publish failed; will retry with the next build"),
        }
    }
}
