//! meshsim: a Linkerd mesh on a machine with no cluster. It serves the `/metrics` exposition
//! that linkerd-proxy would for every pod of a simulated topology (with the labels
//! linkerd-viz's Prometheus adds), so real Prometheus and everything built on it see a mesh.
//!
//! It is a test and demo tool: its numbers are what the topology says, advancing in real time.

pub mod authz;
mod generate;
mod server;
mod sim;
mod topology;

use std::time::Duration;

use mesh_model::{
    Destination, GraphBuilder, IdentitySample, LatencyQuantile, LatencySample, Protocol,
    ResponseSample, RouteId, RouteLatencySample, RouteSample, TcpSample, TlsObservation,
    WorkloadRef, WorkloadSample,
};

pub use self::{
    generate::{BUILTINS, builtin, generate},
    server::{Args, SharedSim, router, serve, serve_shared},
    sim::{
        CONTROL_PLANE_NS, LATENCY_BUCKETS_MS, LinkerdVersion, Pod, ROUTE_REQUEST_BUCKETS_S,
        ROUTE_RESPONSE_BUCKETS_S, Sim, mixture_quantile, owner_label, pods_of,
    },
    topology::{
        EdgeSpec, EgressSpec, Latency, RouteMix, RouteTraffic, Topology, TopologyError,
        WorkloadSpec,
    },
};

/// The model's id for a simulated workload.
pub fn workload_ref(w: &WorkloadSpec) -> WorkloadRef {
    WorkloadRef {
        namespace: w.namespace.clone(),
        kind: w.kind.clone(),
        name: w.name.clone(),
    }
}

/// The graph Prometheus would give for `topology` over `window`, built in process.
pub fn graph(
    topology: &Topology,
    window: Duration,
    generated_at: std::time::SystemTime,
) -> mesh_model::MeshGraph {
    let mut b = GraphBuilder::new(window);
    feed(topology, window, &mut b);
    b.finish(generated_at)
}

/// The graph Prometheus would give for `topology` over `window` from `version`'s proxies.
pub fn graph_as(
    topology: &Topology,
    window: Duration,
    generated_at: std::time::SystemTime,
    version: LinkerdVersion,
) -> mesh_model::MeshGraph {
    let mut b = GraphBuilder::new(window);
    feed_as(topology, window, &mut b, version);
    b.finish(generated_at)
}

/// Feeds `builder` the samples that Prometheus would yield for `topology` over `window` from
/// `version`'s proxies (what a source proxy can see: nothing from unmeshed callers; route
/// breakdowns from 2.20 on). Benchmarks and tests use it to build graphs without Prometheus.
pub fn feed_as(
    topology: &Topology,
    window: Duration,
    builder: &mut GraphBuilder,
    version: LinkerdVersion,
) {
    feed(topology, window, builder);
    if version == LinkerdVersion::V2_12 {
        return;
    }
    let secs = window.as_secs_f64();
    // By `namespace/name`: a scan per edge would make 10,000-workload meshes quadratic.
    let by_id: std::collections::HashMap<String, &WorkloadSpec> = topology
        .workloads
        .iter()
        .map(|w| (format!("{}/{}", w.namespace, w.name), w))
        .collect();
    let workload = |id: &str| by_id.get(id).copied();
    for x in &topology.egress {
        let Some(src) = workload(&x.from).filter(|w| w.meshed) else {
            continue;
        };
        let (ns, name) = x.network.split_once('/').unwrap_or_default();
        let dst = Destination::egress(
            ns,
            name,
            &x.port.to_string(),
            x.hostname.as_deref().unwrap_or_default(),
        );
        let protocol = Protocol::parse(&x.protocol).unwrap_or(Protocol::Http);
        let (mix, refused) = x.route_mix(&x.traffic_policy);
        for (m, deny) in mix.iter().zip(refused) {
            let status = match (deny, protocol) {
                (true, Protocol::Grpc) => "PERMISSION_DENIED",
                (true, _) => "403",
                (false, Protocol::Grpc) => "OK",
                (false, _) => "200",
            };
            builder.add_route(RouteSample {
                src: workload_ref(src),
                dst: dst.clone(),
                protocol,
                route: RouteId {
                    kind: m.kind.to_owned(),
                    namespace: if m.kind == "default" {
                        String::new()
                    } else {
                        ns.to_owned()
                    },
                    name: m.name.clone(),
                    parent: format!("EgressNetwork {ns}/{name}:{}", x.port),
                },
                status: status.into(),
                error: String::new(),
                count: x.rps * m.share * secs,
            });
        }
    }
    for e in &topology.edges {
        let (Some(src), Some(dst)) = (workload(&e.from), workload(&e.to)) else {
            continue;
        };
        let protocol = Protocol::parse(&e.protocol).expect("validated topology");
        if !src.meshed || protocol == Protocol::Tcp {
            continue;
        }
        let (ok, failed) = if protocol == Protocol::Grpc {
            ("OK", "UNKNOWN")
        } else {
            ("200", "500")
        };
        for mix in e.route_mix() {
            let route = RouteId {
                kind: mix.kind.to_owned(),
                namespace: if mix.kind == "default" {
                    String::new()
                } else {
                    dst.namespace.clone()
                },
                name: mix.name.clone(),
                parent: format!("Service {}/{}:{}", dst.namespace, dst.service(), e.port),
            };
            let n = e.rps * mix.share * secs;
            for (status, count) in [
                (ok, n * mix.success_rate),
                (failed, n * (1.0 - mix.success_rate)),
            ] {
                builder.add_route(RouteSample {
                    src: workload_ref(src),
                    dst: Destination::Workload(workload_ref(dst)),
                    protocol,
                    route: route.clone(),
                    status: status.into(),
                    error: String::new(),
                    count,
                });
            }
            let l = mix.latency;
            for (quantile, value_ms) in LatencyQuantile::ALL.into_iter().zip([l.p50, l.p95, l.p99])
            {
                builder.add_route_latency(RouteLatencySample {
                    src: workload_ref(src),
                    dst: Destination::Workload(workload_ref(dst)),
                    protocol,
                    route: route.clone(),
                    quantile,
                    value_ms,
                });
            }
        }
    }
}

/// Feeds `builder` the samples that Prometheus would yield for `topology` over `window`
/// (what a source proxy can see: nothing from unmeshed callers). Benchmarks and tests use it to
/// build graphs without running Prometheus.
pub fn feed(topology: &Topology, window: Duration, builder: &mut GraphBuilder) {
    let secs = window.as_secs_f64();
    let index: std::collections::HashMap<(&str, &str), &WorkloadSpec> = topology
        .workloads
        .iter()
        .map(|w| ((w.namespace.as_str(), w.name.as_str()), w))
        .collect();
    let find = |id: &str| {
        let (ns, name) = id.split_once('/').expect("validated topology");
        index[&(ns, name)]
    };
    for w in &topology.workloads {
        builder.add_workload(WorkloadSample {
            id: workload_ref(w),
            meshed: w.meshed,
            pods: w.replicas,
        });
    }
    for e in &topology.edges {
        let (src, dst) = (find(&e.from), find(&e.to));
        let mtls = e.tls.unwrap_or(src.meshed && dst.meshed);
        if mtls {
            builder.add_identity(IdentitySample {
                dst: workload_ref(dst),
                client_id: src.identity(),
                count: e.rps * secs,
            });
        }
        if !src.meshed {
            continue;
        }
        let tls = if mtls {
            TlsObservation::Mtls {
                server_id: dst.identity(),
            }
        } else if e.no_tls_reason.as_deref() == Some("disabled") {
            TlsObservation::Disabled
        } else {
            TlsObservation::NoIdentity {
                reason: e
                    .no_tls_reason
                    .clone()
                    .unwrap_or_else(|| "not_provided_by_service_discovery".into()),
            }
        };
        let d = Destination::Workload(workload_ref(dst));
        let protocol = Protocol::parse(&e.protocol).expect("validated topology");
        if protocol == Protocol::Tcp {
            builder.add_tcp(TcpSample {
                src: workload_ref(src),
                dst: d,
                dst_meshed: dst.meshed,
                tls,
                open_connections: f64::from(e.tcp_connections),
                opened: e.rps * secs,
                read_bytes: e.rps * secs * 16_384.0,
                write_bytes: e.rps * secs * 2_048.0,
            });
            continue;
        }
        builder.add_responses(ResponseSample {
            src: workload_ref(src),
            dst: d.clone(),
            dst_meshed: dst.meshed,
            protocol,
            tls: tls.clone(),
            success: e.rps * secs * e.overall_success_rate(),
            failure: e.rps * secs * (1.0 - e.overall_success_rate()),
        });
        let quantiles = if e.routes.is_empty() {
            [e.latency_ms.p50, e.latency_ms.p95, e.latency_ms.p99]
        } else {
            let mix = e.route_mix();
            [0.5, 0.95, 0.99].map(|q| mixture_quantile(&mix, q))
        };
        for (q, v) in LatencyQuantile::ALL.into_iter().zip(quantiles) {
            builder.add_latency(LatencySample {
                src: workload_ref(src),
                dst: d.clone(),
                quantile: q,
                value_ms: v,
            });
        }
        builder.add_tcp(TcpSample {
            src: workload_ref(src),
            dst: d,
            dst_meshed: dst.meshed,
            tls,
            open_connections: f64::from(e.tcp_connections),
            opened: 0.0,
            read_bytes: e.rps * secs * 820.0,
            write_bytes: e.rps * secs * 310.0,
        });
    }
}
