//! A collector's publisher and an mcp follower agree through the store: in process and on a
//! real redis-server.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::time::{Duration, SystemTime};

use mesh_collector::Publisher;
use mesh_mcp::{Follower, Step};
use mesh_model::{MeshGraph, MetricTolerance};
use mesh_store::{GraphStore, MemoryStore, RedisStore};
use meshsim::Topology;

fn build(t: &Topology) -> MeshGraph {
    meshsim::graph(t, Duration::from_secs(60), SystemTime::UNIX_EPOCH)
}

async fn follow_through<S: GraphStore + Clone>(store: S) {
    let mut publisher = Publisher::start(store.clone(), MetricTolerance::default())
        .await
        .unwrap();
    let mut follower = Follower::new(store.clone());
    assert_eq!(
        follower.step(Duration::from_millis(10)).await.unwrap(),
        Step::Idle
    );

    let mut t = meshsim::generate(60, 5).unwrap();
    publisher.publish(build(&t)).await.unwrap();
    assert_eq!(
        follower.step(Duration::from_millis(10)).await.unwrap(),
        Step::Reloaded
    );
    assert_eq!(follower.graph(), publisher.published());

    // Small rate changes are not sent; a plaintext edge and a new edge are.
    for e in &mut t.edges {
        e.rps *= 1.01;
    }
    assert_eq!(publisher.publish(build(&t)).await.unwrap(), None);
    t.edges[0].tls = Some(false);
    t.edges.pop();
    let v = publisher.publish(build(&t)).await.unwrap().unwrap();
    match follower.step(Duration::from_millis(500)).await.unwrap() {
        Step::Applied(d) => {
            assert_eq!(d.len(), 1);
            assert_eq!(d[0].to_version, v);
            assert_eq!(d[0].removed_edges.len(), 1);
        }
        other => panic!("expected a delta, got {other:?}"),
    }
    assert_eq!(follower.graph(), publisher.published());

    // A new writer takes over (new epoch): the follower reloads rather than mixing epochs.
    let mut successor = Publisher::start(store.clone(), MetricTolerance::default())
        .await
        .unwrap();
    successor.publish(build(&t)).await.unwrap();
    t.edges[1].success_rate = 0.5;
    successor.publish(build(&t)).await.unwrap();
    let mut reloaded = false;
    for _ in 0..5 {
        match follower.step(Duration::from_millis(200)).await.unwrap() {
            Step::Reloaded => reloaded = true,
            Step::Idle => break,
            Step::Applied(_) => {}
        }
    }
    assert!(reloaded);
    assert_eq!(follower.graph(), successor.published());
    assert!(
        follower.graph().unwrap().version > v,
        "versions only grow across epochs"
    );
    // The deposed writer is fenced off.
    assert!(
        publisher
            .publish(build(&meshsim::generate(10, 1).unwrap()))
            .await
            .is_err()
    );
    assert_eq!(follower.graph(), successor.published());
}

#[tokio::test]
async fn follower_tracks_the_publisher_in_process() {
    follow_through(MemoryStore::new(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_tracks_the_publisher_through_redis() {
    let redis = mesh_testkit::Redis::start().await;
    follow_through(std::sync::Arc::new(
        RedisStore::new(&redis.url, "mesh:", 1000, Duration::from_secs(2)).unwrap(),
    ))
    .await;
}
