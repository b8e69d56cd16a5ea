use std::time::{Duration, SystemTime};

use super::*;

fn w(ns: &str, name: &str) -> WorkloadRef {
    WorkloadRef {
        namespace: ns.into(),
        kind: "Deployment".into(),
        name: name.into(),
    }
}

fn id(sa: &str, ns: &str) -> String {
    format!("{sa}.{ns}.serviceaccount.identity.linkerd.cluster.local")
}

fn resp(
    src: &WorkloadRef,
    dst: &WorkloadRef,
    tls: TlsObservation,
    s: f64,
    f: f64,
) -> ResponseSample {
    ResponseSample {
        src: src.clone(),
        dst: Destination::Workload(dst.clone()),
        dst_meshed: true,
        protocol: Protocol::Http,
        tls,
        success: s,
        failure: f,
    }
}

fn mtls(sa: &str, ns: &str) -> TlsObservation {
    TlsObservation::Mtls {
        server_id: id(sa, ns),
    }
}

fn key(src: &WorkloadRef, dst: &WorkloadRef, p: Protocol) -> EdgeKey {
    EdgeKey {
        src: src.clone(),
        dst: Destination::Workload(dst.clone()),
        protocol: p,
    }
}

#[test]
fn rps_and_success_rate_come_from_counts_over_the_window() {
    let (a, b) = (w("ns", "a"), w("ns", "b"));
    let mut g = GraphBuilder::new(Duration::from_secs(60));
    g.add_responses(resp(&a, &b, mtls("b", "ns"), 540.0, 0.0));
    g.add_responses(resp(&a, &b, mtls("b", "ns"), 0.0, 60.0));
    let graph = g.finish(SystemTime::UNIX_EPOCH);
    let e = &graph.edges[&key(&a, &b, Protocol::Http)];
    assert!((e.metrics.rps - 10.0).abs() < 1e-9);
    assert!((e.metrics.success_rate.unwrap() - 0.9).abs() < 1e-9);
    assert_eq!(e.tls, TlsStatus::Mtls);
    assert_eq!(e.server_identity, id("b", "ns"));
    assert_eq!(graph.workloads[&b].identity, id("b", "ns"));
    assert_eq!(graph.workloads[&b].service_account, "b");
}

#[test]
fn any_plaintext_traffic_makes_the_edge_plaintext() {
    let (a, b) = (w("ns", "a"), w("ns", "b"));
    let mut g = GraphBuilder::new(Duration::from_secs(10));
    g.add_responses(resp(&a, &b, mtls("b", "ns"), 90.0, 0.0));
    g.add_responses(resp(&a, &b, TlsObservation::Disabled, 10.0, 0.0));
    let e = &g.finish(SystemTime::UNIX_EPOCH).edges[&key(&a, &b, Protocol::Http)];
    assert_eq!(e.tls, TlsStatus::Plaintext);
    assert_eq!(e.no_tls_reason, "disabled (10% of traffic without mTLS)");
}

#[test]
fn disabled_tls_is_never_reported_as_secure() {
    // `linkerd viz edges` prints tls="disabled" as secured because it has no no_tls_reason.
    let (a, b) = (w("ns", "a"), w("ns", "b"));
    let mut g = GraphBuilder::new(Duration::from_secs(10));
    g.add_responses(resp(&a, &b, TlsObservation::Disabled, 10.0, 0.0));
    let e = &g.finish(SystemTime::UNIX_EPOCH).edges[&key(&a, &b, Protocol::Http)];
    assert_eq!(
        (e.tls, e.no_tls_reason.as_str()),
        (TlsStatus::Plaintext, "disabled")
    );
}

#[test]
fn tcp_metrics_join_the_application_edge_or_make_their_own() {
    let (a, b, c) = (w("ns", "a"), w("ns", "b"), w("ns", "c"));
    let mut g = GraphBuilder::new(Duration::from_secs(10));
    g.add_responses(resp(&a, &b, mtls("b", "ns"), 10.0, 0.0));
    for dst in [&b, &c] {
        g.add_tcp(TcpSample {
            src: a.clone(),
            dst: Destination::Workload(dst.clone()),
            dst_meshed: true,
            tls: mtls(&dst.name, "ns"),
            open_connections: 2.0,
            opened: 20.0,
            read_bytes: 1000.0,
            write_bytes: 500.0,
        });
    }
    let graph = g.finish(SystemTime::UNIX_EPOCH);
    assert_eq!(graph.edges.len(), 2);
    let http = &graph.edges[&key(&a, &b, Protocol::Http)];
    assert_eq!(http.metrics.tcp_open_connections, 2.0);
    assert_eq!(http.metrics.read_bytes_per_sec, 100.0);
    let tcp = &graph.edges[&key(&a, &c, Protocol::Tcp)];
    assert_eq!((tcp.metrics.rps, tcp.metrics.success_rate), (2.0, None));
    assert_eq!(tcp.tls, TlsStatus::Mtls);
}

#[test]
fn latency_attaches_and_nan_is_ignored() {
    let (a, b) = (w("ns", "a"), w("ns", "b"));
    let mut g = GraphBuilder::new(Duration::from_secs(10));
    g.add_responses(resp(&a, &b, mtls("b", "ns"), 10.0, 0.0));
    for (q, v) in [
        (LatencyQuantile::P50, 2.0),
        (LatencyQuantile::P99, f64::NAN),
    ] {
        g.add_latency(LatencySample {
            src: a.clone(),
            dst: Destination::Workload(b.clone()),
            quantile: q,
            value_ms: v,
        });
    }
    let m = &g.finish(SystemTime::UNIX_EPOCH).edges[&key(&a, &b, Protocol::Http)].metrics;
    assert_eq!((m.latency_p50_ms, m.latency_p99_ms), (Some(2.0), None));
}

#[test]
fn client_identity_is_matched_by_known_identity_then_by_unique_namespace() {
    // emojivoto: vote-bot (sa default) -> web -> emoji, voting.
    let ns = "emojivoto";
    let (bot, web, emoji, voting) = (
        w(ns, "vote-bot"),
        w(ns, "web"),
        w(ns, "emoji"),
        w(ns, "voting"),
    );
    let mut g = GraphBuilder::new(Duration::from_secs(10));
    g.add_responses(resp(&bot, &web, mtls("web", ns), 10.0, 0.0));
    g.add_responses(resp(&web, &emoji, mtls("emoji", ns), 10.0, 0.0));
    g.add_responses(resp(&web, &voting, mtls("voting", ns), 10.0, 0.0));
    for (dst, sa) in [(&web, "default"), (&emoji, "web"), (&voting, "web")] {
        g.add_identity(IdentitySample {
            dst: dst.clone(),
            client_id: id(sa, ns),
            count: 10.0,
        });
    }
    let graph = g.finish(SystemTime::UNIX_EPOCH);
    assert_eq!(
        graph.edges[&key(&web, &emoji, Protocol::Http)].client_identity,
        id("web", ns)
    );
    assert_eq!(
        graph.edges[&key(&bot, &web, Protocol::Http)].client_identity,
        id("default", ns)
    );
    assert_eq!(graph.workloads[&bot].service_account, "default");
}

#[test]
fn ambiguous_client_identity_is_left_empty() {
    // Two unknown callers from one namespace, two identities: which is which cannot be told.
    let (a, b, d) = (w("ns", "a"), w("ns", "b"), w("ns", "d"));
    let mut g = GraphBuilder::new(Duration::from_secs(10));
    g.add_responses(resp(&a, &d, mtls("d", "ns"), 1.0, 0.0));
    g.add_responses(resp(&b, &d, mtls("d", "ns"), 1.0, 0.0));
    for sa in ["x", "y"] {
        g.add_identity(IdentitySample {
            dst: d.clone(),
            client_id: id(sa, "ns"),
            count: 1.0,
        });
    }
    let graph = g.finish(SystemTime::UNIX_EPOCH);
    assert_eq!(
        graph.edges[&key(&a, &d, Protocol::Http)].client_identity,
        ""
    );
    assert_eq!(
        graph.edges[&key(&b, &d, Protocol::Http)].client_identity,
        ""
    );
    assert_eq!(graph.workloads[&a].identity, "");
}

#[test]
fn unmeshed_destinations_are_workloads_without_a_proxy() {
    let (a, b) = (w("ns", "a"), w("ns", "legacy"));
    let mut g = GraphBuilder::new(Duration::from_secs(10));
    let mut s = resp(
        &a,
        &b,
        TlsObservation::NoIdentity {
            reason: "not_provided_by_service_discovery".into(),
        },
        1.0,
        0.0,
    );
    s.dst_meshed = false;
    g.add_responses(s);
    let graph = g.finish(SystemTime::UNIX_EPOCH);
    assert!(!graph.workloads[&b].meshed);
    assert!(graph.workloads[&a].meshed);
}

#[test]
fn service_account_parsing() {
    assert_eq!(
        service_account_of(&id("web", "emojivoto")),
        Some(("web", "emojivoto"))
    );
    assert_eq!(service_account_of("spiffe://td/ns/x"), None);
    assert_eq!(
        service_account_of("*.emojivoto.serviceaccount.identity.linkerd.cluster.local")
            .map(|x| x.1),
        Some("emojivoto")
    );
}

fn route(kind: &str, name: &str) -> RouteId {
    RouteId {
        kind: kind.into(),
        namespace: if kind == "default" {
            String::new()
        } else {
            "ns".into()
        },
        name: name.into(),
        parent: "Service ns/b:80".into(),
    }
}

fn route_sample(
    a: &WorkloadRef,
    b: &WorkloadRef,
    r: &RouteId,
    status: &str,
    error: &str,
    n: f64,
) -> RouteSample {
    RouteSample {
        src: a.clone(),
        dst: Destination::Workload(b.clone()),
        protocol: Protocol::Http,
        route: r.clone(),
        status: status.into(),
        error: error.into(),
        count: n,
    }
}

#[test]
fn routes_join_their_edge_and_fail_by_viz_stat_outbound_rule() {
    let (a, b) = (w("ns", "a"), w("ns", "b"));
    let mut g = GraphBuilder::new(Duration::from_secs(60));
    g.add_responses(resp(&a, &b, mtls("b", "ns"), 600.0, 60.0));
    let (books, http) = (route("HTTPRoute", "books"), route("default", "http"));
    g.add_route(route_sample(&a, &b, &books, "200", "", 300.0));
    g.add_route(route_sample(&a, &b, &books, "503", "", 60.0));
    // 429 and 403 are successes for viz (only 5xx and proxy errors fail).
    g.add_route(route_sample(&a, &b, &http, "429", "", 120.0));
    g.add_route(route_sample(&a, &b, &http, "200", "", 150.0));
    g.add_route(route_sample(&a, &b, &http, "", "FAIL_FAST", 30.0));
    g.add_route_latency(RouteLatencySample {
        src: a.clone(),
        dst: Destination::Workload(b.clone()),
        protocol: Protocol::Http,
        route: books.clone(),
        quantile: LatencyQuantile::P99,
        value_ms: 250.0,
    });
    let graph = g.finish(SystemTime::UNIX_EPOCH);
    let e = &graph.edges[&key(&a, &b, Protocol::Http)];
    assert_eq!(e.routes.len(), 2);
    // Busiest first: books carries 360 of 660.
    let (r, d) = (&e.routes[0], &e.routes[1]);
    assert_eq!(d.id, http);
    assert!((d.rps - 5.0).abs() < 1e-9);
    assert!((d.success_rate.unwrap() - 0.9).abs() < 1e-9);
    assert!((d.rate_limited_rps - 2.0).abs() < 1e-9);
    assert!((d.status_rps["4xx"] - 2.0).abs() < 1e-9);
    assert!((d.status_rps["error:FAIL_FAST"] - 0.5).abs() < 1e-9);
    assert_eq!(r.id, books);
    assert!((r.success_rate.unwrap() - 300.0 / 360.0).abs() < 1e-9);
    assert_eq!(r.latency_p99_ms, Some(250.0));
    assert_eq!(r.latency_p50_ms, None);
    // The worst route fails the most requests per second: books (1/s) over default (0.5/s).
    assert_eq!(e.worst_route().map(|r| &r.id), Some(&books));
    assert_eq!(r.id.to_string(), "HTTPRoute ns/books on Service ns/b:80");
    assert_eq!(d.id.to_string(), "[default http] on Service ns/b:80");
}

#[test]
fn traffic_seen_only_on_route_families_makes_its_own_edge() {
    let a = w("ns", "a");
    let egress = Destination::Authority("EgressNetwork egress/internet:443".into());
    let mut g = GraphBuilder::new(Duration::from_secs(10));
    g.add_route(RouteSample {
        src: a.clone(),
        dst: egress.clone(),
        protocol: Protocol::Http,
        route: route("default", "http-egress-deny"),
        status: "403".into(),
        error: String::new(),
        count: 40.0,
    });
    let graph = g.finish(SystemTime::UNIX_EPOCH);
    let e = &graph.edges[&EdgeKey {
        src: a,
        dst: egress,
        protocol: Protocol::Http,
    }];
    assert!((e.metrics.rps - 4.0).abs() < 1e-9);
    assert_eq!(e.routes[0].id.name, "http-egress-deny");
}
