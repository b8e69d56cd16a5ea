use std::time::Duration;

use clap::Parser;
use mesh_model::Decision;

use super::*;

fn emojivoto() -> MeshGraph {
    meshsim::graph(
        &meshsim::builtin("emojivoto").unwrap(),
        Duration::from_secs(60),
        SystemTime::UNIX_EPOCH,
    )
}

#[test]
fn table_reads_like_viz_edges_with_metrics() {
    let t = table(&emojivoto(), false);
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "SRC", "DST", "SRC_NS", "DST_NS", "PROTO", "SECURED", "RPS", "SUCCESS", "P99"
        ]
    );
    assert_eq!(lines.len(), 4);
    let voting = lines.iter().find(|l| l.contains(" voting ")).unwrap();
    assert_eq!(
        voting.split_whitespace().collect::<Vec<_>>(),
        [
            "web",
            "voting",
            "emojivoto",
            "emojivoto",
            "grpc",
            "√",
            "mTLS",
            "2.00",
            "85.00%",
            "12ms"
        ]
    );
}

/// `g` as mesh-mcp serves it once its collector has read the cluster.
fn with_cluster(mut g: MeshGraph) -> MeshGraph {
    g.sources.push(mesh_model::SourceHealth {
        source: "kubernetes".into(),
        ok: true,
        last_success: Some(SystemTime::UNIX_EPOCH),
        error: String::new(),
        detail: String::new(),
    });
    g
}

#[test]
fn a_graph_that_knows_the_cluster_shows_policy() {
    let mut g = with_cluster(emojivoto());
    for e in g.edges.values_mut() {
        e.policy.decision = Decision::Allowed;
        e.policy.default_policy = "all-unauthenticated (the install default)".into();
        if e.key.src.name == "vote-bot" {
            e.policy.decision = Decision::Denied;
            e.policy.disagreement =
                "the policy denies this edge, but its proxies allowed 4.00/s".into();
            e.policy.observed_deny_rps = Some(0.25);
        }
    }
    let t = table(&g, true);
    let lines: Vec<&str> = t.lines().collect();
    assert!(
        lines[0].contains(" POLICY ") && lines[0].ends_with("AUTHZ                        ROUTES"),
        "{t}"
    );
    let bot = lines.iter().find(|l| l.starts_with("vote-bot")).unwrap();
    assert!(bot.contains(" denied! "), "{t}");
    assert!(
        bot.contains(" denied!  0.25 ") && bot.ends_with("default:all-unauthenticated  -"),
        "{t}"
    );
    assert!(
        t.contains("! emojivoto/vote-bot -> emojivoto/web: the policy denies"),
        "{t}"
    );
    // Prometheus alone says nothing about policy: no column.
    assert!(!table(&emojivoto(), false).contains("POLICY"));
}

#[test]
fn wide_table_shows_identities_short_and_says_how_to_read_them() {
    let t = table(&emojivoto(), true);
    assert!(t.contains("default.emojivoto  web.emojivoto"), "{t}");
    assert!(
        t.contains(
            "identities: SA.NS stands for SA.NS.serviceaccount.identity.linkerd.cluster.local"
        ),
        "{t}"
    );
}

/// A graph that knows the cluster, with long identities, reasons and verdicts.
fn busy() -> MeshGraph {
    let mut g = with_cluster(emojivoto());
    for e in g.edges.values_mut() {
        e.policy.decision = Decision::Allowed;
        e.policy.authorization_policies = vec!["emojivoto/internal-grpc-with-a-long-name".into()];
        if e.key.dst.to_string() == "emojivoto/voting" {
            e.tls = TlsStatus::Plaintext;
            e.no_tls_reason =
                "not_provided_by_service_discovery,no_authority_in_http_request (40% of traffic without mTLS)"
                    .into();
            e.policy.decision = Decision::Unknown;
            e.policy.server = "emojivoto/voting-grpc".into();
            e.policy.chain = vec![
                "routes voting-route attach to Server voting-grpc: give a method and path to decide"
                    .into(),
            ];
        }
    }
    g
}

#[test]
fn long_cells_go_under_the_table() {
    let t = table(&busy(), false);
    let widest = t.lines().take(4).map(|l| l.chars().count()).max().unwrap();
    assert!(widest <= 100, "{widest} columns:\n{t}");
    assert!(t.contains("× plaintext  "), "{t}");
    assert!(
        t.contains("× emojivoto/Deployment/web -> emojivoto/Deployment/voting: not_provided_by_service_discovery")
            || t.contains("× emojivoto/web -> emojivoto/voting: not_provided_by_service_discovery"),
        "{t}"
    );
    assert!(
        t.contains("voting: per-route policy, needs a method and path: routes voting-route attach to Server voting-grpc"),
        "why the verdict is unknown: {t}"
    );
}

#[test]
fn wide_tables_fit_the_terminal() {
    let g = busy();
    let unbounded = table_fit(&g, true, None);
    let widest = |t: &str| t.lines().map(|l| l.chars().count()).max().unwrap();
    // Off a terminal (a file, a pipe): one row per edge, whatever its width.
    assert_eq!(
        unbounded.lines().filter(|l| l.starts_with("web ")).count(),
        2
    );
    let fitted = table_fit(&g, true, Some(100));
    let rows: Vec<&str> = fitted.lines().take(8).collect();
    assert!(rows.iter().all(|l| l.chars().count() <= 100), "{fitted}");
    assert!(widest(&unbounded) > 100, "{unbounded}");
    assert!(rows[1].starts_with("    CLIENT_ID"), "{fitted}");
    assert!(
        rows[3].trim_start().starts_with("default.emojivoto"),
        "{fitted}"
    );
    // A terminal wide enough gets the one-line rows.
    assert_eq!(table_fit(&g, true, Some(400)), unbounded);
}

#[test]
fn json_output_is_proto3_json() {
    let out = render(&emojivoto(), Output::Json, None).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["edges"].as_array().unwrap().len(), 3);
    assert_eq!(v["edges"][0]["tls"], "MTLS");
    assert!(v["edges"][0]["metrics"]["latencyP99Ms"].is_number());
}

#[test]
fn every_flag_reads_its_environment_variable_name() {
    let cmd = <Args as clap::CommandFactory>::command();
    let graph = cmd.find_subcommand("graph").unwrap();
    for a in graph.get_arguments().filter(|a| a.get_long().is_some()) {
        let long = a.get_long().unwrap();
        if long == "help" {
            continue;
        }
        let want = format!("MESH_{}", long.to_uppercase().replace('-', "_"));
        assert_eq!(
            a.get_env().and_then(|e| e.to_str()),
            Some(want.as_str()),
            "--{long}"
        );
    }
}

#[test]
fn bad_window_is_a_usage_error() {
    let e = Args::try_parse_from([
        "meshctl",
        "graph",
        "--prometheus-url",
        "http://x",
        "--window",
        "soon",
    ])
    .unwrap_err();
    assert!(e.to_string().contains("invalid window \"soon\""), "{e}");
}

mod watch_text {
    use mesh_model::{GraphDelta, MetricTolerance, SourceHealth};
    use mesh_proto::pb::{self, mesh_graph_event::Event};

    use super::*;
    use crate::watch::WatchPrinter;

    fn snapshot(g: &MeshGraph) -> pb::MeshGraphEvent {
        pb::MeshGraphEvent {
            event: Some(Event::Snapshot(pb::MeshGraph::from(g))),
        }
    }

    fn delta(a: &MeshGraph, b: &MeshGraph) -> pb::MeshGraphEvent {
        let d = GraphDelta::between(a, b, &MetricTolerance::default());
        pb::MeshGraphEvent {
            event: Some(Event::Delta(pb::GraphDelta::from(&d))),
        }
    }

    fn prom(ok: bool, at: u64) -> SourceHealth {
        SourceHealth {
            source: "prometheus".into(),
            ok,
            last_success: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(at)),
            error: if ok {
                String::new()
            } else {
                "timed out".into()
            },
            detail: String::new(),
        }
    }

    #[test]
    fn a_delta_that_only_refreshes_sources_prints_nothing() {
        let mut a = emojivoto();
        a.sources = vec![prom(true, 1)];
        let mut p = WatchPrinter::default();
        let first = p.event(snapshot(&a)).unwrap();
        assert_eq!(first.len(), 1, "{first:?}");
        assert!(first[0].starts_with("snapshot epoch"), "{first:?}");
        let mut b = a.clone();
        b.version += 1;
        b.generated_at += Duration::from_secs(2);
        b.sources = vec![prom(true, 3)];
        assert_eq!(p.event(delta(&a, &b)).unwrap(), Vec::<String>::new());
        let hb = pb::MeshGraphEvent {
            event: Some(Event::Heartbeat(pb::Heartbeat {
                sources: vec![pb::SourceHealth::from(&prom(true, 4))],
                ..Default::default()
            })),
        };
        assert_eq!(p.event(hb).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn a_changed_edge_says_what_moved_and_from_what() {
        let a = emojivoto();
        let mut b = a.clone();
        b.version += 1;
        let e = b
            .edges
            .values_mut()
            .find(|e| e.key.dst.to_string() == "emojivoto/voting")
            .unwrap();
        e.tls = TlsStatus::Plaintext;
        e.metrics.rps = 4.0;
        let mut p = WatchPrinter::default();
        p.event(snapshot(&a)).unwrap();
        let lines = p.event(delta(&a, &b)).unwrap();
        assert_eq!(
            lines,
            [
                format!("delta {} -> {}:", a.version, b.version),
                "  ~ emojivoto/web -> emojivoto/voting (grpc): mTLS -> plaintext, rps 2.00 -> 4.00"
                    .to_owned()
            ]
        );
        // The printer applied the delta: the same change again is a version gap, not a repeat.
        assert!(p.event(delta(&a, &b)).is_err());
    }

    #[test]
    fn a_source_turning_stale_and_back_is_one_line_each() {
        let mut a = emojivoto();
        a.sources = vec![prom(true, 1)];
        let mut p = WatchPrinter::default();
        p.event(snapshot(&a)).unwrap();
        let hb = |h: SourceHealth| pb::MeshGraphEvent {
            event: Some(Event::Heartbeat(pb::Heartbeat {
                sources: vec![pb::SourceHealth::from(&h)],
                ..Default::default()
            })),
        };
        assert_eq!(
            p.event(hb(prom(false, 1))).unwrap(),
            ["source prometheus stale: timed out"]
        );
        assert!(p.event(hb(prom(false, 1))).unwrap().is_empty());
        assert_eq!(
            p.event(hb(prom(true, 9))).unwrap(),
            ["source prometheus ok again"]
        );
    }
}

#[test]
fn routes_show_in_the_wide_table_and_as_their_own_view() {
    let mut g = emojivoto();
    let e = g
        .edges
        .values_mut()
        .find(|e| e.key.src.name == "vote-bot")
        .unwrap();
    let route = |kind: &str, name: &str, rps: f64, sr: f64| mesh_model::RouteStats {
        id: mesh_model::RouteId {
            kind: kind.into(),
            namespace: if kind == "default" {
                String::new()
            } else {
                "emojivoto".into()
            },
            name: name.into(),
            parent: "Service emojivoto/web-svc:80".into(),
        },
        rps,
        success_rate: Some(sr),
        latency_p99_ms: Some(48.0),
        rate_limited_rps: if name == "vote" { 0.5 } else { 0.0 },
        ..Default::default()
    };
    e.routes = vec![
        route("HTTPRoute", "vote", 3.0, 0.9),
        route("default", "http", 1.0, 1.0),
    ];
    let t = table(&g, true);
    let bot = t.lines().find(|l| l.starts_with("vote-bot")).unwrap();
    assert!(bot.ends_with("2, worst vote 90.0%"), "{t}");
    let r = routes_table(&g);
    let lines: Vec<&str> = r.lines().collect();
    assert!(
        lines[0].starts_with("SRC") && lines[0].ends_with("429/S"),
        "{r}"
    );
    assert!(
        lines[1].contains("emojivoto/vote-bot  emojivoto/web  Service emojivoto/web-svc:80  emojivoto/vote  HTTPRoute  3.00  90.00%"),
        "{r}"
    );
    assert!(lines[1].ends_with("48ms  0.50"), "{r}");
    assert!(lines[2].contains("[default http]  default"), "{r}");
    assert!(routes_table(&emojivoto()).starts_with("(no route metrics in the window"));
}
