//! Replays the wire decoders' fuzz inputs (`tools/fuzz/seeds/proto_graph/` and
//! `tools/fuzz/corpus/proto_graph/`, grown by `make fuzz`), then every prefix and many
//! single-byte corruptions of a real encoded graph and delta: decoding and mapping onto the
//! model refuse or succeed, never panic.

use std::time::{Duration, UNIX_EPOCH};

use mesh_model as model;
use mesh_proto::pb;
use prost::Message;

fn decode_all(data: &[u8]) {
    if let Ok(g) = pb::MeshGraph::decode(data) {
        let _ = model::MeshGraph::try_from(g);
    }
    if let Ok(d) = pb::GraphDelta::decode(data) {
        let _ = model::GraphDelta::try_from(d);
    }
    let _ = pb::MeshGraphEvent::decode(data);
}

fn sample() -> model::MeshGraph {
    let mut g = model::MeshGraph::empty(Duration::from_secs(60), UNIX_EPOCH);
    let w = |ns: &str, name: &str| model::WorkloadRef {
        namespace: ns.into(),
        kind: "Deployment".into(),
        name: name.into(),
    };
    for name in ["web", "api", "db"] {
        let id = w("shop", name);
        let workload = model::Workload {
            id: id.clone(),
            ..Default::default()
        };
        g.workloads.insert(id, workload);
    }
    let mut e = model::Edge::new(model::EdgeKey {
        src: w("shop", "web"),
        dst: model::Destination::Workload(w("shop", "api")),
        protocol: model::Protocol::Http,
    });
    e.metrics.rps = 12.5;
    e.metrics.success_rate = Some(0.99);
    e.tls = model::TlsStatus::Mtls;
    g.edges.insert(e.key.clone(), e);
    g.version = 7;
    g
}

#[test]
fn the_wire_corpus_and_corrupted_graphs_decode_without_a_panic() {
    for (_, bytes) in mesh_testkit::fuzz_inputs("proto_graph") {
        decode_all(&bytes);
    }
    let g = sample();
    let graph = pb::MeshGraph::from(&g).encode_to_vec();
    let back = model::MeshGraph::try_from(pb::MeshGraph::decode(graph.as_slice()).unwrap());
    assert_eq!(back.unwrap(), g, "the uncorrupted graph reads back");
    let mut next = g.clone();
    next.version = 8;
    next.edges.values_mut().for_each(|e| e.metrics.rps = 3.0);
    let delta = pb::GraphDelta::from(&model::GraphDelta::between(
        &g,
        &next,
        &model::MetricTolerance::EXACT,
    ))
    .encode_to_vec();
    for bytes in [graph, delta] {
        for cut in 0..bytes.len() {
            decode_all(&bytes[..cut]);
        }
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] ^= flip;
                decode_all(&b);
            }
        }
    }
}
