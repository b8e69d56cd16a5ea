//! Built-in topologies and generated meshes of any size.
//!
//! Generated meshes are layered like real service graphs: edge gateways call front ends, which
//! call a few back ends, which call data stores. Most calls stay in their namespace; some cross.
//! A few percent of edges are plaintext and a few stores are unmeshed, so the graph has what
//! users hunt for. The same `(n, seed)` always gives the same mesh.

use rand::{Rng, SeedableRng, seq::IndexedRandom};
use rand_chacha::ChaCha8Rng;

use crate::topology::{EdgeSpec, Latency, Topology, TopologyError, WorkloadSpec};

/// Names of the built-in topologies.
pub const BUILTINS: [&str; 2] = ["emojivoto", "booksapp"];

/// A built-in topology by name.
pub fn builtin(name: &str) -> Option<Topology> {
    let text = match name {
        "emojivoto" => include_str!("builtin/emojivoto.yaml"),
        "booksapp" => include_str!("builtin/booksapp.yaml"),
        _ => return None,
    };
    Some(Topology::from_yaml(text).expect("built-in topologies are valid"))
}

/// Workloads per namespace in generated meshes.
const PER_NAMESPACE: usize = 25;
/// Tiers: 0 gateways, 1 front ends, 2 back ends, 3 stores.
const TIER_SHARE: [f64; 4] = [0.05, 0.25, 0.45, 0.25];

/// Generates a mesh of `n` workloads.
pub fn generate(n: usize, seed: u64) -> Result<Topology, TopologyError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let namespaces = n.div_ceil(PER_NAMESPACE).max(1);
    let mut workloads = Vec::with_capacity(n);
    let mut tiers: [Vec<usize>; 4] = Default::default();
    for i in 0..n {
        let tier = tier_of(i, n);
        let ns = format!("ns-{:03}", i % namespaces);
        let (kind, meshed) = match tier {
            3 if rng.random_bool(0.2) => ("StatefulSet", false),
            3 => ("StatefulSet", true),
            _ if rng.random_bool(0.04) => ("DaemonSet", true),
            _ => ("Deployment", true),
        };
        let prefix = ["gw", "web", "api", "db"][tier];
        workloads.push(WorkloadSpec {
            namespace: ns,
            name: format!("{prefix}-{i:05}"),
            kind: kind.into(),
            service_account: None,
            meshed,
            replicas: rng.random_range(1..=3),
            service: None,
        });
        tiers[tier].push(i);
    }

    let mut edges = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (tier, members) in tiers.iter().enumerate().take(3) {
        let next = &tiers[tier + 1];
        if next.is_empty() {
            continue;
        }
        for &src in members {
            if !workloads[src].meshed {
                continue;
            }
            let fan_out = rng.random_range(1..=4);
            for _ in 0..fan_out {
                // Prefer a callee in the same namespace (four tries), else anywhere.
                let same_ns = (0..4)
                    .filter_map(|_| next.choose(&mut rng).copied())
                    .find(|&d| workloads[d].namespace == workloads[src].namespace);
                let dst = match same_ns {
                    Some(d) if rng.random_bool(0.8) => d,
                    _ => *next.choose(&mut rng).expect("non-empty"),
                };
                let protocol = match (tier, rng.random_range(0..10)) {
                    (2, 0..=5) => "tcp",
                    (_, 0..=5) => "http",
                    (_, 6..=8) => "grpc",
                    _ => "tcp",
                };
                if !seen.insert((src, dst, protocol)) {
                    continue;
                }
                let both_meshed = workloads[dst].meshed;
                let plaintext = both_meshed && rng.random_bool(0.03);
                let p50 = rng.random_range(0.5..20.0);
                let success_rate = if rng.random_bool(0.05) {
                    rng.random_range(0.6..0.98)
                } else {
                    1.0
                };
                edges.push(EdgeSpec {
                    from: id(&workloads[src]),
                    to: id(&workloads[dst]),
                    protocol: protocol.into(),
                    rps: (rng.random_range(0.0..4.0f64)).exp() / 4.0,
                    success_rate,
                    latency_ms: Latency {
                        p50,
                        p95: p50 * rng.random_range(2.0..5.0),
                        p99: p50 * rng.random_range(5.0..10.0),
                    },
                    tls: Some(both_meshed && !plaintext),
                    no_tls_reason: None,
                    tcp_connections: rng.random_range(1..=4),
                    port: if protocol == "tcp" { 5432 } else { 8080 },
                    routes: Vec::new(),
                });
            }
        }
    }
    let t = Topology {
        workloads,
        edges,
        egress: Vec::new(),
    };
    t.validate()?;
    Ok(t)
}

fn tier_of(i: usize, n: usize) -> usize {
    let x = (i as f64 + 0.5) / n as f64;
    let mut acc = 0.0;
    for (tier, share) in TIER_SHARE.iter().enumerate() {
        acc += share;
        if x < acc {
            return tier;
        }
    }
    TIER_SHARE.len() - 1
}

fn id(w: &WorkloadSpec) -> String {
    format!("{}/{}", w.namespace, w.name)
}
