use std::time::{Duration, SystemTime};

use proptest::prelude::*;

use super::*;
use crate::graph::{Destination, GraphFilter, Protocol, TlsStatus};

fn wref(ns: &str, name: &str) -> WorkloadRef {
    WorkloadRef {
        namespace: ns.to_owned(),
        kind: "Deployment".to_owned(),
        name: name.to_owned(),
    }
}

fn edge(src: &WorkloadRef, dst: &WorkloadRef, rps: f64) -> Edge {
    let mut e = Edge::new(EdgeKey {
        src: src.clone(),
        dst: Destination::Workload(dst.clone()),
        protocol: Protocol::Http,
    });
    e.tls = TlsStatus::Mtls;
    e.metrics.rps = rps;
    e.metrics.success_rate = Some(1.0);
    e
}

fn graph(edges: Vec<Edge>) -> MeshGraph {
    let mut g = MeshGraph::empty(Duration::from_secs(60), SystemTime::UNIX_EPOCH);
    for e in edges {
        for w in [Some(&e.key.src), dest(&e.key.dst)].into_iter().flatten() {
            g.workloads.insert(
                w.clone(),
                Workload {
                    id: w.clone(),
                    meshed: true,
                    ..Workload::default()
                },
            );
        }
        g.edges.insert(e.key.clone(), e);
    }
    g
}

fn dest(d: &Destination) -> Option<&WorkloadRef> {
    match d {
        Destination::Workload(w) => Some(w),
        Destination::Authority(_) => None,
    }
}

#[test]
fn metric_only_change_under_threshold_emits_nothing() {
    let (a, b) = (wref("ns", "a"), wref("ns", "b"));
    let mut view = PublishedView::new(graph(vec![edge(&a, &b, 100.0)]), MetricTolerance::default());
    assert_eq!(view.advance(graph(vec![edge(&a, &b, 102.0)])), None);
    assert_eq!(view.graph().version, 0);
}

#[test]
fn metric_change_over_threshold_upserts_the_edge() {
    let (a, b) = (wref("ns", "a"), wref("ns", "b"));
    let mut view = PublishedView::new(graph(vec![edge(&a, &b, 100.0)]), MetricTolerance::default());
    let d = view
        .advance(graph(vec![edge(&a, &b, 110.0)]))
        .expect("delta");
    assert_eq!((d.from_version, d.to_version), (0, 1));
    assert_eq!(d.upserted_edges.len(), 1);
    assert!(d.upserted_workloads.is_empty());
}

#[test]
fn small_steps_cannot_add_up_past_the_threshold() {
    // Each build moves 3% from the previous one: under the 5% threshold step by step, but the
    // view must be re-sent once the total drift passes 5%.
    let (a, b) = (wref("ns", "a"), wref("ns", "b"));
    let tol = MetricTolerance::default();
    let mut view = PublishedView::new(graph(vec![edge(&a, &b, 100.0)]), tol);
    let mut rps = 100.0;
    let mut sent = 0;
    for _ in 0..20 {
        rps *= 1.03;
        let build = graph(vec![edge(&a, &b, rps)]);
        if view.advance(build.clone()).is_some() {
            sent += 1;
        }
        let held = &view.graph().edges.values().next().unwrap().metrics;
        let newest = &build.edges.values().next().unwrap().metrics;
        assert!(
            tol.metrics_within(held, newest),
            "{} vs {}",
            held.rps,
            newest.rps
        );
    }
    assert!(sent >= 5, "sent {sent}");
}

#[test]
fn tls_change_is_sent_even_when_metrics_are_equal() {
    let (a, b) = (wref("ns", "a"), wref("ns", "b"));
    let mut view = PublishedView::new(graph(vec![edge(&a, &b, 1.0)]), MetricTolerance::default());
    let mut e = edge(&a, &b, 1.0);
    e.tls = TlsStatus::Plaintext;
    e.no_tls_reason = "disabled".into();
    let d = view.advance(graph(vec![e])).expect("delta");
    assert_eq!(d.upserted_edges[0].tls, TlsStatus::Plaintext);
}

#[test]
fn removals_are_sent() {
    let (a, b, c) = (wref("ns", "a"), wref("ns", "b"), wref("other", "c"));
    let mut view = PublishedView::new(
        graph(vec![edge(&a, &b, 1.0), edge(&a, &c, 1.0)]),
        MetricTolerance::default(),
    );
    let d = view.advance(graph(vec![edge(&a, &b, 1.0)])).expect("delta");
    assert_eq!(d.removed_edges.len(), 1);
    assert_eq!(d.removed_workloads, vec![c]);
}

#[test]
fn apply_refuses_a_version_gap_and_leaves_the_graph_alone() {
    let (a, b) = (wref("ns", "a"), wref("ns", "b"));
    let old = graph(vec![edge(&a, &b, 1.0)]);
    let mut new = graph(vec![]);
    new.version = 7;
    let d = GraphDelta::between(&old, &new, &MetricTolerance::EXACT);
    let mut other = old.clone();
    other.version = 3;
    assert_eq!(
        d.apply(&mut other),
        Err(DeltaError::VersionGap { from: 0, have: 3 })
    );
    assert_eq!(other.edges.len(), 1);
}

#[test]
fn source_health_change_alone_is_published() {
    let (a, b) = (wref("ns", "a"), wref("ns", "b"));
    let mut view = PublishedView::new(graph(vec![edge(&a, &b, 1.0)]), MetricTolerance::default());
    let mut g = graph(vec![edge(&a, &b, 1.0)]);
    g.sources.push(SourceHealth {
        source: "prometheus".into(),
        ok: false,
        last_success: None,
        error: "connection refused".into(),
        detail: String::new(),
    });
    let d = view.advance(g).expect("delta");
    assert!(d.is_topology_empty());
    assert_eq!(view.graph().sources.len(), 1);
}

// === property tests ===

const NAMES: [&str; 6] = ["a", "b", "c", "d", "e", "f"];

fn arb_edges() -> impl Strategy<Value = Vec<(usize, usize, bool, f64, f64, f64)>> {
    prop::collection::vec(
        (
            0..NAMES.len(),
            0..NAMES.len(),
            any::<bool>(),
            0.0..1000.0f64,
            0.0..1.0f64,
            0.1..500.0f64,
        ),
        0..20,
    )
}

fn arb_graph() -> impl Strategy<Value = MeshGraph> {
    arb_edges().prop_map(|rows| {
        let edges = rows
            .into_iter()
            .map(|(s, d, grpc, rps, sr, p99)| {
                let mut e = edge(&wref("ns", NAMES[s]), &wref("ns2", NAMES[d]), rps);
                if grpc {
                    e.key.protocol = Protocol::Grpc;
                    e.tls = TlsStatus::Plaintext;
                }
                e.metrics.success_rate = Some(sr);
                e.metrics.latency_p99_ms = Some(p99);
                e
            })
            .collect();
        graph(edges)
    })
}

/// `b` is `a` with some edges' metrics nudged (often under the threshold) plus random changes.
fn arb_pair() -> impl Strategy<Value = (MeshGraph, MeshGraph)> {
    (
        arb_graph(),
        arb_graph(),
        prop::collection::vec(-0.08..0.08f64, 20),
    )
        .prop_map(|(a, extra, nudges)| {
            let mut b = a.clone();
            for (e, n) in b.edges.values_mut().zip(nudges) {
                e.metrics.rps *= 1.0 + n;
                e.metrics.success_rate = e
                    .metrics
                    .success_rate
                    .map(|s| (s + n / 10.0).clamp(0.0, 1.0));
            }
            for (k, e) in extra.edges.into_iter().take(3) {
                b.edges.insert(k, e);
            }
            b.workloads.extend(extra.workloads);
            if let Some(k) = b.edges.keys().next().cloned() {
                b.edges.remove(&k);
            }
            (a, b)
        })
}

fn topology(g: &MeshGraph) -> (Vec<&WorkloadRef>, Vec<(&EdgeKey, TlsStatus)>) {
    (
        g.workloads.keys().collect(),
        g.edges.iter().map(|(k, e)| (k, e.tls)).collect(),
    )
}

proptest! {
    #[test]
    fn apply_between_reproduces_topology_and_bounds_metrics((a, b) in arb_pair()) {
        let tol = MetricTolerance::default();
        let mut b = b;
        b.version = a.version + 1;
        let d = GraphDelta::between(&a, &b, &tol);
        let mut c = a.clone();
        d.apply(&mut c).unwrap();
        prop_assert_eq!(topology(&c), topology(&b));
        prop_assert_eq!(c.version, b.version);
        for (k, e) in &c.edges {
            let want = &b.edges[k];
            prop_assert!(tol.metrics_within(&e.metrics, &want.metrics), "{:?} vs {:?}", e.metrics, want.metrics);
        }
    }

    #[test]
    fn exact_tolerance_reproduces_the_graph((a, b) in arb_pair()) {
        let mut b = b;
        b.version = a.version + 1;
        let d = GraphDelta::between(&a, &b, &MetricTolerance::EXACT);
        let mut c = a.clone();
        d.apply(&mut c).unwrap();
        prop_assert_eq!(c, b);
    }

    #[test]
    fn catch_up_takes_a_filtered_reader_from_any_kept_version_to_now(
        builds in prop::collection::vec(arb_pair(), 2..6),
        start in 0usize..4,
        tls_only in any::<bool>(),
    ) {
        let filter = GraphFilter {
            namespaces: vec!["ns2".into()],
            tls: tls_only.then_some(TlsStatus::Mtls),
            ..GraphFilter::default()
        };
        // The whole graph's history, as the follower keeps it.
        let mut g = builds[0].0.clone();
        let mut history = vec![(g.clone(), None)];
        for (_, b) in &builds {
            let mut b = b.clone();
            b.version = g.version + 1;
            let d = GraphDelta::between(&g, &b, &MetricTolerance::EXACT);
            d.apply(&mut g).unwrap();
            history.push((g.clone(), Some(d)));
        }
        let start = start.min(history.len() - 1);
        let mut reader = filter.apply(&history[start].0);
        let deltas: Vec<&GraphDelta> = history[start + 1..].iter().filter_map(|(_, d)| d.as_ref()).collect();
        let now = filter.apply(&g);
        GraphDelta::catch_up(reader.version, deltas, &now).apply(&mut reader).unwrap();
        prop_assert_eq!(reader, now);
    }

    #[test]
    fn a_chain_of_builds_never_drifts_past_the_tolerance(builds in prop::collection::vec(arb_pair(), 1..6)) {
        let tol = MetricTolerance::default();
        let mut view = PublishedView::new(builds[0].0.clone(), tol);
        let mut reader = view.graph().clone();
        for (_, b) in builds {
            if let Some(d) = view.advance(b.clone()) {
                d.apply(&mut reader).unwrap();
            }
            prop_assert_eq!(topology(&reader), topology(&b));
            for (k, e) in &reader.edges {
                prop_assert!(tol.metrics_within(&e.metrics, &b.edges[k].metrics));
            }
        }
    }
}

#[test]
fn filters_keep_matching_edges_and_the_workloads_they_touch() {
    let (a, b, c) = (wref("ns", "a"), wref("ns", "b"), wref("other", "c"));
    let mut plain = edge(&a, &c, 0.5);
    plain.tls = TlsStatus::Plaintext;
    let g = graph(vec![edge(&a, &b, 10.0), plain]);
    let f = crate::GraphFilter {
        namespaces: vec!["other".into()],
        ..Default::default()
    };
    let v = f.apply(&g);
    assert_eq!(v.edges.len(), 1);
    assert_eq!(
        v.workloads.keys().cloned().collect::<Vec<_>>(),
        vec![a.clone(), c.clone()]
    );
    let f = crate::GraphFilter {
        tls: Some(TlsStatus::Mtls),
        min_rps: 1.0,
        ..Default::default()
    };
    assert_eq!(f.apply(&g).edges.len(), 1);
    let f = crate::GraphFilter {
        workload: Some(("ns".into(), "b".into())),
        ..Default::default()
    };
    let v = f.apply(&g);
    assert_eq!((v.edges.len(), v.workloads.len()), (1, 2));
    // A filtered view's diff reports an edge leaving the filter as a removal.
    let mut next = g.clone();
    next.version = 1;
    next.edges
        .values_mut()
        .for_each(|e| e.tls = TlsStatus::Plaintext);
    let only_mtls = crate::GraphFilter {
        tls: Some(TlsStatus::Mtls),
        ..Default::default()
    };
    let d = GraphDelta::between(
        &only_mtls.apply(&g),
        &only_mtls.apply(&next),
        &MetricTolerance::EXACT,
    );
    assert_eq!(d.removed_edges.len(), 1);
    assert!(d.upserted_edges.is_empty());
}
