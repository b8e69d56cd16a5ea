use std::{
    collections::BTreeSet,
    io::Write,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use mesh_testkit::{Sample, parse_exposition, require_tool};

use super::*;
use crate::{builtin, generate};

const SCRAPE: &[&str] = &[
    "namespace",
    "pod",
    "deployment",
    "statefulset",
    "daemonset",
    "replicaset",
    "replicationcontroller",
    "cronjob",
    "k8s_job",
    "control_plane_ns",
    "workload_ns",
    "pod_template_hash",
];
const TARGET: &[&str] = &["target_addr", "target_ip", "target_port"];
const TLS_IN: &[&str] = &["tls", "client_id", "no_tls_reason", "sni"];
const TLS_OUT: &[&str] = &["tls", "server_id", "no_tls_reason"];
const SRV: &[&str] = &["srv_group", "srv_kind", "srv_name", "srv_port"];
const ROUTE: &[&str] = &["route_group", "route_kind", "route_name"];
const AUTHZ: &[&str] = &["authz_group", "authz_kind", "authz_name"];
const DST: &[&str] = &[
    "dst_namespace",
    "dst_service",
    "dst_pod",
    "dst_deployment",
    "dst_statefulset",
    "dst_daemonset",
    "dst_replicaset",
    "dst_replicationcontroller",
    "dst_cronjob",
    "dst_k8s_job",
    "dst_serviceaccount",
    "dst_control_plane_ns",
    "dst_pod_template_hash",
    "dst_zone",
    "dst_zone_locality",
    "dst_target_cluster",
    "dst_external_workload",
];

const ROUTE_PARENT: &[&str] = &[
    "parent_group",
    "parent_kind",
    "parent_namespace",
    "parent_name",
    "parent_port",
    "parent_section_name",
];
const ROUTE_ID: &[&str] = &["route_group", "route_kind", "route_namespace", "route_name"];
const ROUTE_BACKEND: &[&str] = &[
    "backend_group",
    "backend_kind",
    "backend_namespace",
    "backend_name",
    "backend_port",
    "backend_section_name",
];

/// The labels the real proxy (reference section 1) and linkerd-viz's scrape config (1.5) put on
/// a series of `name` in `direction` ("" for families without one).
fn allowed(name: &str, direction: &str) -> BTreeSet<&'static str> {
    let mut a: BTreeSet<&str> = SCRAPE.iter().chain(TARGET).copied().collect();
    let family = name
        .trim_end_matches("_bucket")
        .trim_end_matches("_sum")
        .trim_end_matches("_count");
    let base_in = |a: &mut BTreeSet<&'static str>| {
        a.extend(TLS_IN.iter().chain(SRV).chain(ROUTE).chain(AUTHZ))
    };
    let base_out = |a: &mut BTreeSet<&'static str>| {
        a.extend(TLS_OUT.iter().chain(DST).chain(["authority"].iter()))
    };
    match family {
        "request_total" | "response_total" | "response_latency_ms" => {
            a.insert("direction");
            match direction {
                "inbound" => {
                    base_in(&mut a);
                    a.insert("authority"); // only with an opt-in proxy env, but real
                }
                "outbound" => base_out(&mut a),
                d => panic!("{name} with direction {d:?}"),
            }
            if family == "response_total" {
                a.extend(["status_code", "classification", "grpc_status", "error"]);
            }
            if family == "response_latency_ms" {
                a.insert("status_code");
                if name.ends_with("_bucket") {
                    a.insert("le");
                }
            }
        }
        "tcp_open_total"
        | "tcp_open_connections"
        | "tcp_read_bytes_total"
        | "tcp_write_bytes_total" => {
            a.extend(["direction", "peer"]);
            match direction {
                "inbound" => a.extend(TLS_IN.iter().chain(SRV)),
                "outbound" => base_out(&mut a),
                d => panic!("{name} with direction {d:?}"),
            }
        }
        "inbound_http_authz_allow_total" => {
            a.extend(TLS_IN.iter().chain(SRV).chain(ROUTE).chain(AUTHZ))
        }
        "inbound_tcp_authz_allow_total" => a.extend(TLS_IN.iter().chain(SRV).chain(AUTHZ)),
        "inbound_http_authz_deny_total" => a.extend(TLS_IN.iter().chain(SRV).chain(ROUTE)),
        "inbound_tcp_authz_deny_total" => a.extend(TLS_IN.iter().chain(SRV)),
        // linkerd2-proxy inbound/src/metrics/authz.rs: target, server, rate limit, TLS labels.
        "inbound_http_local_ratelimit_total" => a.extend(TLS_IN.iter().chain(SRV).chain(&[
            "ratelimit_group",
            "ratelimit_kind",
            "ratelimit_name",
            "ratelimit_scope",
        ])),
        // 2.14+ route families (linkerd2-proxy outbound/src/http/logical/policy/route/metrics.rs
        // and metrics.rs's label encoders): no target or TLS labels, only what names the route.
        f if f.starts_with("outbound_http_route_") || f.starts_with("outbound_grpc_route_") => {
            a.retain(|l| SCRAPE.contains(l));
            a.extend(ROUTE_PARENT.iter().chain(ROUTE_ID));
            if f.contains("_route_backend_") {
                a.extend(ROUTE_BACKEND);
            } else {
                a.insert("hostname");
            }
            if f.ends_with("_statuses_total") {
                a.insert("error");
                a.insert(if f.starts_with("outbound_grpc") {
                    "grpc_status"
                } else {
                    "http_status"
                });
            }
            if name.ends_with("_bucket") {
                a.insert("le");
            }
        }
        other => panic!("meshsim emits {other}, which is not in the reference tables"),
    }
    a
}

fn render_after(t: crate::Topology, secs: u64) -> Vec<Sample> {
    render_as(t, secs, LinkerdVersion::V2_12)
}

fn render_as(t: crate::Topology, secs: u64, version: LinkerdVersion) -> Vec<Sample> {
    let t0 = Instant::now();
    let mut sim = Sim::new(t, t0);
    sim.set_version(version);
    sim.advance(t0 + Duration::from_secs(secs));
    parse_exposition(&sim.render())
}

/// emojivoto with an HTTPRoute taking part of vote-bot's calls to web.
fn with_routes() -> crate::Topology {
    let mut t = builtin("emojivoto").unwrap();
    t.edges[0].routes = vec![crate::RouteTraffic {
        name: "api-vote".into(),
        share: 0.25,
        success_rate: Some(0.5),
        latency_ms: None,
    }];
    t.validate().unwrap();
    t
}

#[test]
fn a_2_20_proxy_reports_each_route_as_the_real_one_does() {
    let samples = render_as(with_routes(), 10, LinkerdVersion::V2_20);
    let routes: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name.starts_with("outbound_http_route_"))
        .collect();
    assert!(!routes.is_empty());
    // 4 rps over 10 s: 10 on api-vote (half fail), 30 on the default route.
    let statuses = |route: &str, status: &str| -> f64 {
        sum(
            &samples,
            "outbound_http_route_backend_response_statuses_total",
            &[("route_name", route), ("http_status", status)],
        )
    };
    assert!((statuses("api-vote", "200") - 5.0).abs() < 1e-6);
    assert!((statuses("api-vote", "500") - 5.0).abs() < 1e-6);
    // The edge's own success rate (0.925) is the default route's.
    assert!((statuses("http", "200") - 30.0 * 0.925).abs() < 1e-6);
    let default = routes
        .iter()
        .find(|s| s.labels["route_name"] == "http")
        .unwrap();
    for (k, v) in [
        ("route_kind", "default"),
        ("route_group", ""),
        ("route_namespace", ""),
        ("parent_group", "core"),
        ("parent_kind", "Service"),
        ("parent_name", "web-svc"),
        ("parent_port", "8080"),
    ] {
        assert_eq!(default.labels[k], v, "{k}: {default:?}");
    }
    let vote = routes
        .iter()
        .find(|s| s.labels["route_name"] == "api-vote")
        .unwrap();
    assert_eq!(vote.labels["route_kind"], "HTTPRoute");
    assert_eq!(vote.labels["route_group"], "gateway.networking.k8s.io");
    // Histogram bounds as the proxy writes them (prometheus-client floats), in seconds.
    let les: BTreeSet<&str> = samples
        .iter()
        .filter(|s| s.name == "outbound_http_route_request_duration_seconds_bucket")
        .map(|s| s.labels["le"].as_str())
        .collect();
    assert_eq!(les, BTreeSet::from(["0.05", "0.5", "1.0", "10.0", "+Inf"]));
    let les: BTreeSet<&str> = samples
        .iter()
        .filter(|s| s.name == "outbound_grpc_route_backend_response_duration_seconds_bucket")
        .map(|s| s.labels["le"].as_str())
        .collect();
    assert_eq!(
        les,
        BTreeSet::from(["0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "10.0", "+Inf"])
    );
    // gRPC statuses by name, as the proxy's label encoder writes them.
    assert!(samples.iter().any(|s| s.name
        == "outbound_grpc_route_backend_response_statuses_total"
        && s.labels["grpc_status"] == "OK"));
    // A 2.12 proxy has none of these families.
    assert!(
        !render_after(with_routes(), 10)
            .iter()
            .any(|s| s.name.contains("_route_"))
    );
}

#[test]
fn every_label_is_one_the_real_proxy_emits() {
    for (t, version) in [
        (builtin("emojivoto").unwrap(), LinkerdVersion::V2_12),
        (builtin("booksapp").unwrap(), LinkerdVersion::V2_12),
        (generate(120, 7).unwrap(), LinkerdVersion::V2_12),
        (with_routes(), LinkerdVersion::V2_20),
        (generate(120, 7).unwrap(), LinkerdVersion::V2_20),
    ] {
        for s in render_as(t, 10, version) {
            let direction = s.labels.get("direction").map_or("", String::as_str);
            let allowed = allowed(&s.name, direction);
            for k in s.labels.keys() {
                assert!(
                    allowed.contains(k.as_str()),
                    "{} carries {k}, which the proxy never emits: {:?}",
                    s.name,
                    s.labels
                );
            }
            if direction == "outbound" {
                assert!(s.labels.contains_key("dst_namespace"), "{s:?}");
            }
            if s.labels.get("tls").is_some_and(|t| t == "true") {
                assert!(
                    s.labels.contains_key("server_id") || s.labels.contains_key("client_id"),
                    "{s:?}"
                );
            }
        }
    }
}

#[test]
fn exposition_parses_with_promtool() {
    let promtool = require_tool("promtool");
    for (t, version) in [
        (builtin("emojivoto").unwrap(), LinkerdVersion::V2_12),
        (generate(200, 3).unwrap(), LinkerdVersion::V2_12),
        (with_routes(), LinkerdVersion::V2_20),
    ] {
        let t0 = Instant::now();
        let mut sim = Sim::new(t, t0);
        sim.set_version(version);
        sim.advance(t0 + Duration::from_secs(5));
        let text = sim.render();
        let mut child = Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Exit 3 means lint findings only; 1 means the text did not parse.
        assert!(
            matches!(out.status.code(), Some(0 | 3)),
            "promtool failed ({:?}): {said}",
            out.status
        );
        assert!(!said.contains("error while linting"), "{said}");
        for line in said.lines() {
            // The proxy's own metric name: expected and allowed.
            assert!(
                line.starts_with("response_latency_ms") && line.contains("abbreviated units"),
                "unexpected lint: {line}"
            );
        }
    }
}

fn sum(samples: &[Sample], name: &str, filter: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && filter
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

#[test]
fn counters_grow_at_the_configured_rate() {
    let samples = render_after(builtin("emojivoto").unwrap(), 100);
    // web -> voting: 2 rps, 85% success, over 100 s.
    let out = [
        ("direction", "outbound"),
        ("deployment", "web"),
        ("dst_deployment", "voting"),
    ];
    let total = sum(&samples, "request_total", &out);
    assert!((total - 200.0).abs() < 0.01, "{total}");
    let ok = sum(
        &samples,
        "response_total",
        &[out[0], out[1], out[2], ("classification", "success")],
    );
    assert!((ok - 170.0).abs() < 0.01, "{ok}");
    // The inbound side counts the same requests, with the caller's identity.
    let inbound = sum(
        &samples,
        "request_total",
        &[
            ("direction", "inbound"),
            ("deployment", "voting"),
            (
                "client_id",
                "web.emojivoto.serviceaccount.identity.linkerd.cluster.local",
            ),
        ],
    );
    assert!((inbound - 200.0).abs() < 0.01, "{inbound}");
    // Bucket counts are cumulative and end at the count.
    let inf = sum(
        &samples,
        "response_latency_ms_bucket",
        &[out[0], out[1], out[2], ("le", "+Inf")],
    );
    let le10 = sum(
        &samples,
        "response_latency_ms_bucket",
        &[out[0], out[1], out[2], ("le", "10")],
    );
    assert!(
        (inf - 200.0).abs() < 0.01 && le10 < inf && le10 > 0.9 * inf,
        "{le10} {inf}"
    );
}

#[test]
fn replicas_split_traffic_across_pods() {
    let samples = render_after(builtin("booksapp").unwrap(), 10);
    let pods: BTreeSet<&str> = samples
        .iter()
        .filter(|s| {
            s.name == "request_total"
                && s.labels.get("deployment").is_some_and(|d| d == "webapp")
                && s.labels["direction"] == "outbound"
        })
        .map(|s| s.labels["pod"].as_str())
        .collect();
    assert_eq!(pods.len(), 3, "{pods:?}");
    let total = sum(
        &samples,
        "request_total",
        &[
            ("direction", "outbound"),
            ("deployment", "webapp"),
            ("dst_deployment", "books"),
        ],
    );
    assert!((total - 60.0).abs() < 0.01, "{total}");
}

#[test]
fn counters_stay_monotonic_across_a_topology_change() {
    let t = builtin("emojivoto").unwrap();
    let t0 = Instant::now();
    let mut sim = Sim::new(t.clone(), t0);
    sim.advance(t0 + Duration::from_secs(10));
    let before = parse_exposition(&sim.render());
    let mut slower = t;
    for e in &mut slower.edges {
        e.rps /= 10.0;
        e.success_rate = 0.5;
    }
    sim.set_topology(slower, t0 + Duration::from_secs(10));
    sim.advance(t0 + Duration::from_secs(20));
    let after = parse_exposition(&sim.render());
    for a in &after {
        let counter = a.name.ends_with("_total") || a.name.ends_with("_bucket");
        if let Some(b) = before
            .iter()
            .find(|b| b.name == a.name && b.labels == a.labels)
            && counter
        {
            assert!(
                a.value >= b.value,
                "{} went down: {} -> {}",
                a.name,
                b.value,
                a.value
            );
        }
    }
    let voting = sum(
        &after,
        "request_total",
        &[("direction", "outbound"), ("dst_deployment", "voting")],
    );
    assert!((voting - 22.0).abs() < 0.01, "{voting}");
}

#[test]
fn plaintext_and_unmeshed_edges_say_so() {
    let t = crate::Topology::from_yaml(
        "workloads:\n  - {namespace: a, name: client}\n  - {namespace: a, name: server}\n  - {namespace: a, name: legacy, meshed: false}\n\
         edges:\n  - {from: a/client, to: a/server, rps: 1, tls: false, no_tls_reason: disabled}\n  - {from: a/client, to: a/legacy, rps: 1}\n",
    )
    .unwrap();
    let samples = render_after(t, 10);
    let to_server: Vec<_> = samples
        .iter()
        .filter(|s| {
            s.name == "request_total"
                && s.labels
                    .get("dst_deployment")
                    .is_some_and(|d| d == "server")
        })
        .collect();
    assert_eq!(to_server[0].labels["tls"], "disabled");
    assert!(!to_server[0].labels.contains_key("no_tls_reason"));
    let to_legacy: Vec<_> = samples
        .iter()
        .filter(|s| {
            s.name == "request_total"
                && s.labels
                    .get("dst_deployment")
                    .is_some_and(|d| d == "legacy")
        })
        .collect();
    assert_eq!(
        to_legacy[0].labels["no_tls_reason"],
        "not_provided_by_service_discovery"
    );
    assert!(!to_legacy[0].labels.contains_key("dst_control_plane_ns"));
    // An unmeshed workload has no proxy, so nothing is reported from its pods.
    assert!(
        !samples
            .iter()
            .any(|s| s.labels.get("deployment").is_some_and(|d| d == "legacy"))
    );
}

/// emojivoto's objects as kube-sim serves them, plus `extra` (YAML), typed as the collector does.
fn cluster_with(extra: &str) -> Arc<Cluster> {
    let seed = include_str!("../../../kube-sim/seed/demo/emojivoto.yaml");
    let (cluster, unreadable) = Cluster::from_manifests(&[seed, extra]);
    assert!(unreadable.is_empty(), "{unreadable:?}");
    Arc::new(cluster)
}

/// Only web may call voting, and vote-bot calls voting too.
const ONLY_WEB: &str = r"
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {name: voting-grpc, namespace: emojivoto}
spec: {podSelector: {matchLabels: {app: voting-svc}}, port: grpc, proxyProtocol: gRPC}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {name: voting-clients, namespace: emojivoto}
spec: {identities: [web.emojivoto.serviceaccount.identity.linkerd.cluster.local]}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: voting-policy, namespace: emojivoto}
spec:
  targetRef: {group: policy.linkerd.io, kind: Server, name: voting-grpc}
  requiredAuthenticationRefs: [{group: policy.linkerd.io, kind: MeshTLSAuthentication, name: voting-clients}]
";

#[test]
fn traffic_that_policy_denies_is_refused_and_counted_as_the_proxy_does() {
    let mut t = builtin("emojivoto").unwrap();
    let mut second = t.edges[2].clone();
    assert_eq!(second.to, "emojivoto/voting");
    second.from = "emojivoto/vote-bot".into();
    second.rps = 3.0;
    t.edges.push(second);
    let t0 = Instant::now();
    let mut sim = Sim::new(t, t0);
    sim.advance(t0 + Duration::from_secs(10));
    // Under the install default everyone is admitted; 10 s later only web is.
    sim.set_cluster(cluster_with(""), t0 + Duration::from_secs(10));
    assert!(
        sim.authz().iter().all(EdgeAuthz::allowed),
        "{:?}",
        sim.authz()
    );
    sim.set_cluster(cluster_with(ONLY_WEB), t0 + Duration::from_secs(10));
    let decided: Vec<bool> = sim.authz().iter().map(EdgeAuthz::allowed).collect();
    assert_eq!(decided, [true, true, true, false]);
    sim.advance(t0 + Duration::from_secs(20));
    let samples = parse_exposition(&sim.render());

    let bot = "default.emojivoto.serviceaccount.identity.linkerd.cluster.local";
    let web = "web.emojivoto.serviceaccount.identity.linkerd.cluster.local";
    let denied = sum(
        &samples,
        "inbound_http_authz_deny_total",
        &[("client_id", bot)],
    );
    assert!((denied - 30.0).abs() < 0.01, "{denied}");
    let still_allowed = sum(
        &samples,
        "inbound_http_authz_allow_total",
        &[("client_id", bot), ("deployment", "voting")],
    );
    assert!(
        (still_allowed - 30.0).abs() < 0.01,
        "the first 10 s: {still_allowed}"
    );
    // The caller sees PERMISSION_DENIED, a failure.
    let refused = sum(
        &samples,
        "response_total",
        &[
            ("direction", "outbound"),
            ("deployment", "vote-bot"),
            ("dst_deployment", "voting"),
            ("grpc_status", "7"),
            ("classification", "failure"),
        ],
    );
    assert!((refused - 30.0).abs() < 0.01, "{refused}");
    // web is admitted by the policy, and the labels name it and its Server.
    let by_policy = sum(
        &samples,
        "inbound_http_authz_allow_total",
        &[
            ("client_id", web),
            ("srv_kind", "server"),
            ("srv_name", "voting-grpc"),
            ("authz_kind", "authorizationpolicy"),
            ("authz_name", "voting-policy"),
        ],
    );
    assert!(
        (by_policy - 40.0).abs() < 0.01,
        "all 20 s of web's calls: {by_policy}"
    );
    assert_eq!(
        sum(
            &samples,
            "inbound_http_authz_deny_total",
            &[("client_id", web)]
        ),
        0.0
    );
}

#[test]
fn refused_http_requests_are_403s_and_refused_connections_close() {
    let t = crate::Topology::from_yaml(
        "workloads:\n  - {namespace: emojivoto, name: vote-bot, service_account: default}\n  - {namespace: emojivoto, name: web, service_account: web}\n  - {namespace: emojivoto, name: voting, service_account: voting}\n\
         edges:\n  - {from: emojivoto/vote-bot, to: emojivoto/web, rps: 2, port: 8080}\n  - {from: emojivoto/vote-bot, to: emojivoto/voting, rps: 1, protocol: tcp, port: 8080, tcp_connections: 2}\n",
    )
    .unwrap();
    let deny_all = "apiVersion: policy.linkerd.io/v1beta3\nkind: Server\n\
        metadata: {name: web-http, namespace: emojivoto}\n\
        spec: {podSelector: {matchLabels: {app: web-svc}}, port: http, proxyProtocol: HTTP/1}\n---\n\
        apiVersion: policy.linkerd.io/v1beta3\nkind: Server\n\
        metadata: {name: voting-tcp, namespace: emojivoto}\n\
        spec: {podSelector: {matchLabels: {app: voting-svc}}, port: grpc, proxyProtocol: opaque}\n";
    let t0 = Instant::now();
    let mut sim = Sim::new(t, t0);
    sim.set_cluster(cluster_with(deny_all), t0);
    assert!(
        sim.authz().iter().all(|a| !a.allowed()),
        "{:?}",
        sim.authz()
    );
    sim.advance(t0 + Duration::from_secs(10));
    let samples = parse_exposition(&sim.render());
    let out = [("direction", "outbound"), ("dst_deployment", "web")];
    let forbidden = sum(
        &samples,
        "response_total",
        &[
            out[0],
            out[1],
            ("status_code", "403"),
            ("classification", "success"),
        ],
    );
    assert!((forbidden - 20.0).abs() < 0.01, "{forbidden}");
    assert_eq!(sum(&samples, "inbound_http_authz_allow_total", &[]), 0.0);
    let conns = sum(
        &samples,
        "inbound_tcp_authz_deny_total",
        &[("srv_name", "voting-tcp")],
    );
    assert!((conns - 10.0).abs() < 0.01, "{conns}");
    let open = sum(
        &samples,
        "tcp_open_connections",
        &[("direction", "outbound"), ("dst_deployment", "voting")],
    );
    assert_eq!(open, 0.0);
}

/// The demo's clusters: both meshes' workloads and their Linkerd policy, as kube-sim seeds them.
fn demo_cluster() -> Arc<Cluster> {
    let (cluster, unreadable) = Cluster::from_manifests(&[
        include_str!("../../../kube-sim/seed/demo/emojivoto.yaml"),
        include_str!("../../../kube-sim/seed/demo/emojivoto-policy.yaml"),
        include_str!("../../../kube-sim/seed/demo/booksapp.yaml"),
        include_str!("../../../kube-sim/seed/demo/booksapp-policy.yaml"),
    ]);
    assert!(unreadable.is_empty(), "{unreadable:?}");
    Arc::new(cluster)
}

/// What the simulated proxies do and what the graph says come from one model: for every edge
/// of both demo meshes, meshsim's decision (`/authz`) is the graph's verdict.
#[test]
fn the_simulated_proxies_and_the_graph_agree_on_every_demo_edge() {
    let cluster = demo_cluster();
    let mut unknown = 0;
    for mesh in ["emojivoto", "booksapp"] {
        let t = builtin(mesh).unwrap();
        let decided = crate::authz::decide(&t, &cluster);
        let mut g = crate::graph(
            &t,
            Duration::from_secs(60),
            std::time::SystemTime::UNIX_EPOCH,
        );
        mesh_policy::overlay::apply(
            &mut g,
            &cluster,
            &[],
            &mut mesh_policy::overlay::Verdicts::default(),
        );
        for (e, a) in t.edges.iter().zip(&decided) {
            let edge = g
                .edges
                .values()
                .find(|x| x.key.src.to_string() == e.from && x.key.dst.to_string() == e.to)
                .unwrap_or_else(|| panic!("{} -> {} is not in the graph", e.from, e.to));
            assert_eq!(
                a.decision, edge.policy.decision,
                "{} -> {}: meshsim {a:?}, graph {:?}",
                e.from, e.to, edge.policy
            );
            if a.decision == mesh_model::Decision::Unknown {
                unknown += 1;
                assert_eq!(
                    Some(&a.undecided),
                    edge.policy.why_unknown().as_ref(),
                    "{a:?}"
                );
                assert!(a.allowed(), "traffic the model cannot decide is admitted");
            }
        }
    }
    // booksapp's authors server decides per route: the case that used to disagree.
    assert_eq!(unknown, 2);
}

#[test]
fn egress_through_an_egress_network_is_reported_on_its_default_routes() {
    let mut t = builtin("emojivoto").unwrap();
    t.egress = vec![crate::EgressSpec {
        from: "emojivoto/web".into(),
        network: "egress/internet".into(),
        protocol: "http".into(),
        port: 443,
        rps: 2.0,
        hostname: Some("api.github.com".into()),
        traffic_policy: "Deny".into(),
        routes: vec![crate::RouteTraffic {
            name: "github-api".into(),
            share: 0.25,
            success_rate: None,
            latency_ms: None,
        }],
        latency_ms: crate::Latency::default(),
    }];
    t.validate().unwrap();
    let samples = render_as(t.clone(), 10, LinkerdVersion::V2_20);
    let egress: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            s.name == "outbound_http_route_request_statuses_total"
                && s.labels["parent_kind"] == "EgressNetwork"
        })
        .collect();
    let by_route = |route: &str, status: &str| -> f64 {
        egress
            .iter()
            .filter(|s| s.labels["route_name"] == route && s.labels["http_status"] == status)
            .map(|s| s.value)
            .sum()
    };
    // 20 requests in 10 s: 5 on the HTTPRoute, 15 refused by the caller's proxy (403).
    assert!((by_route("github-api", "200") - 5.0).abs() < 1e-6);
    assert!((by_route("http-egress-deny", "403") - 15.0).abs() < 1e-6);
    // Refused by the caller's own proxy: no backend ever saw those requests.
    assert!(!samples.iter().any(|s| {
        s.name.contains("_route_backend_")
            && s.labels
                .get("route_name")
                .is_some_and(|r| r == "http-egress-deny")
    }));
    assert!(
        samples
            .iter()
            .any(|s| s.name == "outbound_http_route_backend_requests_total"
                && s.labels["route_name"] == "github-api")
    );
    let s = egress[0];
    for (k, v) in [
        ("parent_group", "policy.linkerd.io"),
        ("parent_namespace", "egress"),
        ("parent_name", "internet"),
        ("parent_port", "443"),
        ("hostname", "api.github.com"),
        ("deployment", "web"),
    ] {
        assert_eq!(s.labels[k], v, "{k}: {s:?}");
    }
    // Allowed: the default route is http-egress-allow, answered by the outside.
    t.egress[0].traffic_policy = "Allow".into();
    let samples = render_as(t.clone(), 10, LinkerdVersion::V2_20);
    assert!(samples.iter().any(|s| {
        s.labels
            .get("route_name")
            .is_some_and(|r| r == "http-egress-allow")
    }));
    // A 2.12 proxy knows no EgressNetworks.
    assert!(
        !render_as(t, 10, LinkerdVersion::V2_12)
            .iter()
            .any(|s| s.labels.contains_key("parent_kind"))
    );
}

#[test]
fn a_rate_limited_server_answers_the_excess_429_as_the_real_proxy_counts_it() {
    let cluster = cluster_with(
        "apiVersion: policy.linkerd.io/v1beta3\nkind: Server\nmetadata: {name: web-http, namespace: emojivoto}\n\
         spec: {podSelector: {matchLabels: {app: web-svc}}, port: http, accessPolicy: all-unauthenticated}\n---\n\
         apiVersion: policy.linkerd.io/v1alpha1\nkind: HTTPLocalRateLimitPolicy\nmetadata: {name: web-rl, namespace: emojivoto}\n\
         spec:\n  targetRef: {group: policy.linkerd.io, kind: Server, name: web-http}\n  total: {requestsPerSecond: 3}\n",
    );
    let t = builtin("emojivoto").unwrap();
    let t0 = Instant::now();
    let mut sim = Sim::new(t.clone(), t0);
    sim.set_version(LinkerdVersion::V2_20);
    sim.set_cluster(cluster.clone(), t0);
    let bot = sim.authz()[0].clone();
    assert_eq!(bot.server[2], "web-http", "{bot:?}");
    let l = bot
        .limited
        .clone()
        .expect("vote-bot's 4/s exceed web's 3/s");
    assert_eq!((l.name.as_str(), l.scope), ("web-rl", "total"));
    assert!((l.share - 0.25).abs() < 1e-9);
    sim.advance(t0 + Duration::from_secs(10));
    let samples = parse_exposition(&sim.render());
    // 40 requests: 10 answered 429, counted by web's proxy and seen by vote-bot's.
    let limited = sum(
        &samples,
        "inbound_http_local_ratelimit_total",
        &[("ratelimit_name", "web-rl"), ("ratelimit_scope", "total")],
    );
    assert!((limited - 10.0).abs() < 1e-6, "{limited}");
    let seen = sum(
        &samples,
        "outbound_http_route_backend_response_statuses_total",
        &[("http_status", "429")],
    );
    assert!((seen - 10.0).abs() < 1e-6, "{seen}");
    let legacy = sum(
        &samples,
        "response_total",
        &[
            ("direction", "outbound"),
            ("status_code", "429"),
            ("classification", "success"),
        ],
    );
    assert!((legacy - 10.0).abs() < 1e-6, "{legacy}");
    // 2.12 had no rate limits.
    let mut old = Sim::new(t, t0);
    old.set_cluster(cluster, t0);
    assert!(old.authz()[0].limited.is_none());
}
