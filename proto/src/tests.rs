use std::time::{Duration, UNIX_EPOCH};

use proptest::prelude::*;

use super::*;

fn arb_ref() -> impl Strategy<Value = model::WorkloadRef> {
    (
        "[a-z]{1,6}",
        prop::sample::select(vec!["Deployment", "StatefulSet"]),
        "[a-z]{1,6}",
    )
        .prop_map(|(namespace, kind, name)| model::WorkloadRef {
            namespace,
            kind: kind.to_owned(),
            name,
        })
}

fn arb_edge() -> impl Strategy<Value = model::Edge> {
    (
        arb_ref(),
        prop::option::of(arb_ref()),
        prop::sample::select(vec![
            model::Protocol::Http,
            model::Protocol::Grpc,
            model::Protocol::Tcp,
        ]),
        prop::sample::select(vec![
            model::TlsStatus::Mtls,
            model::TlsStatus::Plaintext,
            model::TlsStatus::Unknown,
        ]),
        0.0..1e6f64,
        prop::option::of(0.0..1.0f64),
        prop::option::of(0.0..1e4f64),
    )
        .prop_map(|(src, dst, protocol, tls, rps, sr, p99)| {
            let dst = dst.map_or_else(
                || model::Destination::Authority("db.example.com:5432".into()),
                model::Destination::Workload,
            );
            let mut e = model::Edge::new(model::EdgeKey { src, dst, protocol });
            e.tls = tls;
            e.metrics.rps = rps;
            e.metrics.success_rate = sr;
            e.metrics.latency_p99_ms = p99;
            e.policy.decision = model::Decision::Allowed;
            e.policy.chain = vec!["Server emojivoto/voting-grpc selects voting".into()];
            e
        })
}

fn arb_graph() -> impl Strategy<Value = model::MeshGraph> {
    (
        prop::collection::vec(arb_edge(), 0..10),
        0u64..1000,
        0u64..10,
        0u64..2_000_000_000,
    )
        .prop_map(|(edges, version, epoch, secs)| {
            let mut g = model::MeshGraph::empty(
                Duration::from_secs(60),
                UNIX_EPOCH + Duration::from_secs(secs),
            );
            g.version = version;
            g.epoch = epoch;
            for e in edges {
                g.workloads.insert(
                    e.key.src.clone(),
                    model::Workload {
                        id: e.key.src.clone(),
                        meshed: true,
                        identity: "x.ns.serviceaccount.identity.linkerd.cluster.local".into(),
                        ..model::Workload::default()
                    },
                );
                g.edges.insert(e.key.clone(), e);
            }
            g.sources.push(model::SourceHealth {
                source: "prometheus".into(),
                ok: true,
                last_success: Some(UNIX_EPOCH + Duration::from_secs(secs)),
                error: String::new(),
                detail: String::new(),
            });
            g
        })
}

proptest! {
    #[test]
    fn graph_round_trips_through_protobuf_and_json(g in arb_graph()) {
        let wire = pb::MeshGraph::from(&g);
        let json = serde_json::to_string(&wire).unwrap();
        let back: pb::MeshGraph = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&back, &wire);
        let bytes = prost::Message::encode_to_vec(&wire);
        let decoded: pb::MeshGraph = prost::Message::decode(bytes.as_slice()).unwrap();
        prop_assert_eq!(model::MeshGraph::try_from(decoded).unwrap(), g);
    }

    /// A pre-encoded graph with this answer's sources appended reads as the one message a
    /// server encoding it whole would send.
    #[test]
    fn an_encoded_graph_reads_as_the_whole_message(g in arb_graph(), healthy in any::<bool>()) {
        let mut wire = pb::MeshGraph::from(&g);
        wire.sources.clear();
        let shared = prost::bytes::Bytes::from(prost::Message::encode_to_vec(&wire));
        let sources = vec![pb::SourceHealth {
            source: "store".into(),
            ok: healthy,
            error: if healthy { String::new() } else { "down".into() },
            ..Default::default()
        }];
        let sent = EncodedGraph::new(shared, sources.clone());
        let mut bytes = Vec::new();
        prost::Message::encode(&sent, &mut bytes).unwrap();
        prop_assert_eq!(bytes.len(), prost::Message::encoded_len(&sent));
        let read: pb::MeshGraph = prost::Message::decode(bytes.as_slice()).unwrap();
        wire.sources = sources;
        prop_assert_eq!(read, wire);
    }

    /// A shared, pre-encoded watch event reads as the event it was made from.
    #[test]
    fn an_encoded_event_reads_as_the_event(a in arb_graph(), b in arb_graph()) {
        let d = model::GraphDelta::between(&a, &b, &model::MetricTolerance::EXACT);
        let ev = pb::MeshGraphEvent {
            event: Some(pb::mesh_graph_event::Event::Delta(pb::GraphDelta::from(&d))),
        };
        for sent in [EncodedEvent::shared(&ev), EncodedEvent::own(ev.clone())] {
            let bytes = prost::Message::encode_to_vec(&sent);
            prop_assert_eq!(bytes.len(), prost::Message::encoded_len(&sent));
            let read: pb::MeshGraphEvent = prost::Message::decode(bytes.as_slice()).unwrap();
            prop_assert_eq!(read, ev.clone());
        }
    }

    #[test]
    fn delta_round_trips(a in arb_graph(), b in arb_graph()) {
        let d = model::GraphDelta::between(&a, &b, &model::MetricTolerance::EXACT);
        let wire = pb::GraphDelta::from(&d);
        prop_assert_eq!(model::GraphDelta::try_from(wire).unwrap(), d);
    }
}

#[test]
fn json_uses_proto3_lower_camel_case_names() {
    let mut g = model::MeshGraph::empty(Duration::from_secs(60), UNIX_EPOCH);
    let src = model::WorkloadRef {
        namespace: "ns".into(),
        kind: "Deployment".into(),
        name: "a".into(),
    };
    let mut e = model::Edge::new(model::EdgeKey {
        src: src.clone(),
        dst: model::Destination::Workload(src),
        protocol: model::Protocol::Grpc,
    });
    e.tls = model::TlsStatus::Mtls;
    e.metrics.latency_p99_ms = Some(12.5);
    g.edges.insert(e.key.clone(), e);
    let json = serde_json::to_value(pb::MeshGraph::from(&g)).unwrap();
    let edge = &json["edges"][0];
    assert_eq!(edge["tls"], "MTLS");
    assert_eq!(edge["metrics"]["latencyP99Ms"], 12.5);
    assert_eq!(json["window"], "60s");
    // RFC 3339; pbjson-types writes the offset as `+00:00` where protobuf's own printer writes `Z`.
    assert!(
        json["generatedAt"]
            .as_str()
            .unwrap()
            .starts_with("1970-01-01T00:00:00")
    );
}

#[test]
fn invalid_protocol_is_refused_with_the_field() {
    let e = pb::Edge {
        src: Some(pb::WorkloadRef::default()),
        dst: Some(pb::WorkloadRef::default()),
        protocol: "udp".into(),
        ..Default::default()
    };
    let err = model::Edge::try_from(e).unwrap_err();
    assert_eq!(
        err.to_string(),
        "field `edge.protocol`: \"udp\" is not one of http, grpc, tcp"
    );
}

#[test]
fn a_caller_timestamp_out_of_range_is_an_error_not_a_panic() {
    for (seconds, nanos) in [(-1, 0), (0, 1_000_000_000), (0, -1)] {
        let t = pbjson_types::Timestamp { seconds, nanos };
        assert!(
            crate::timestamp_from_pb(&t).is_err(),
            "{seconds}s {nanos}ns"
        );
    }
    // The largest is a time (far in the future, which the service then refuses), not a panic.
    let _ = crate::timestamp_from_pb(&pbjson_types::Timestamp {
        seconds: i64::MAX,
        nanos: 999_999_999,
    });
    let t = pbjson_types::Timestamp {
        seconds: 1_796_639_520,
        nanos: 5,
    };
    assert_eq!(
        crate::timestamp_to_pb(crate::timestamp_from_pb(&t).unwrap()),
        t
    );
}
