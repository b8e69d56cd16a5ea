//! The templates must render exactly the strings the reference (section 2) quotes from viz.

use std::time::Duration;

use super::*;

#[test]
fn stat_summary_templates_match_viz() {
    let sel = selector(&[
        eq("pod", "emojivoto-1"),
        eq("direction", "inbound"),
        eq("namespace", "emojivoto"),
    ]);
    assert_eq!(
        sum_increase(
            "response_total",
            &sel,
            "1m",
            &["namespace", "pod", "classification", "tls"]
        ),
        r#"sum(increase(response_total{direction="inbound", namespace="emojivoto", pod="emojivoto-1"}[1m])) by (namespace, pod, classification, tls)"#
    );
    assert_eq!(
        quantile(
            0.95,
            "response_latency_ms",
            &sel,
            "1m",
            &["namespace", "pod"]
        ),
        r#"histogram_quantile(0.95, sum(irate(response_latency_ms_bucket{direction="inbound", namespace="emojivoto", pod="emojivoto-1"}[1m])) by (le, namespace, pod))"#
    );
}

#[test]
fn edges_template_matches_viz() {
    let sel = selector(&[
        ne("dst_deployment", ""),
        eq("direction", "outbound"),
        ne("deployment", ""),
    ]);
    assert_eq!(
        sum_gauge(
            "tcp_open_connections",
            &sel,
            &[
                "deployment",
                "dst_deployment",
                "pod",
                "server_id",
                "namespace",
                "dst_namespace",
                "no_tls_reason"
            ]
        ),
        r#"sum(tcp_open_connections{deployment!="", direction="outbound", dst_deployment!=""}) by (deployment, dst_deployment, pod, server_id, namespace, dst_namespace, no_tls_reason)"#
    );
}

#[test]
fn graph_queries_use_the_viz_shapes() {
    let q = GraphQueries::new(Duration::from_secs(60));
    let by_edge = "namespace, deployment, statefulset, daemonset, replicationcontroller, cronjob, k8s_job, \
                   dst_namespace, dst_deployment, dst_statefulset, dst_daemonset, dst_replicationcontroller, \
                   dst_cronjob, dst_k8s_job, dst_service, dst_control_plane_ns";
    assert_eq!(
        q.responses,
        format!(
            r#"sum(increase(response_total{{direction="outbound"}}[1m])) by ({by_edge}, authority, classification, tls, server_id, no_tls_reason, grpc_status)"#
        )
    );
    assert_eq!(
        q.latency[2],
        format!(
            r#"histogram_quantile(0.99, sum(irate(response_latency_ms_bucket{{direction="outbound"}}[1m])) by (le, {by_edge}, authority))"#
        )
    );
    assert_eq!(
        q.tcp_open,
        format!(
            r#"sum(tcp_open_connections{{direction="outbound", peer="dst"}}) by ({by_edge}, tls, server_id, no_tls_reason)"#
        )
    );
    assert_eq!(
        q.tcp_read,
        format!(
            r#"sum(increase(tcp_read_bytes_total{{direction="outbound", peer="dst"}}[1m])) by ({by_edge}, tls, server_id, no_tls_reason)"#
        )
    );
    assert!(q.identities_http.starts_with(r#"sum(increase(response_total{direction="inbound", tls="true"}[1m])) by (namespace, deployment"#));
    assert!(q.identities_http.ends_with(", client_id)"));
    // viz's authz shape (no selector: these counters carry no `direction`), by client identity.
    assert_eq!(
        q.authz[1],
        "sum(increase(inbound_http_authz_deny_total[1m])) by (namespace, deployment, statefulset, \
         daemonset, replicationcontroller, cronjob, k8s_job, client_id)"
    );
}

#[test]
fn windows_render_as_prometheus_durations() {
    assert_eq!(window(Duration::from_secs(60)), "1m");
    assert_eq!(window(Duration::from_secs(90)), "90s");
    assert_eq!(window(Duration::from_secs(7200)), "2h");
    assert_eq!(window(Duration::from_millis(1500)), "1500ms");
}

#[test]
fn label_values_are_escaped() {
    assert_eq!(selector(&[eq("a", r#"x"y\z"#)]), r#"{a="x\"y\\z"}"#);
}

/// A namespace's queries select only calls into it: outbound series by destination namespace,
/// inbound and authorization series by the receiving pod's namespace, routes by parent; the
/// rest of each query is the mesh-wide one's.
#[test]
fn namespace_queries_select_only_calls_into_it() {
    let week = Duration::from_secs(7 * 86_400);
    let (all, ns) = (
        GraphQueries::new(week),
        GraphQueries::into_namespace(week, "emojivoto"),
    );
    assert!(
        ns.responses
            .contains(r#"response_total{direction="outbound", dst_namespace="emojivoto"}[168h]"#),
        "{}",
        ns.responses
    );
    assert!(
        ns.tcp_opened
            .contains(r#"{direction="outbound", dst_namespace="emojivoto", peer="dst"}"#)
    );
    assert!(
        ns.identities_http
            .contains(r#"{direction="inbound", namespace="emojivoto", tls="true"}"#)
    );
    assert!(
        ns.authz[0].contains(r#"inbound_http_authz_allow_total{namespace="emojivoto"}[168h]"#),
        "{}",
        ns.authz[0]
    );
    assert!(ns.route_statuses[0].contains(r#"{parent_namespace="emojivoto"}"#));
    // Mesh-wide, the same queries without the namespace.
    assert!(
        all.authz[0].contains("inbound_http_authz_allow_total[168h]"),
        "{}",
        all.authz[0]
    );
    assert_eq!(
        ns.responses.replace(r#", dst_namespace="emojivoto""#, ""),
        all.responses
    );
    assert_eq!(ns.pods, all.pods);
}

#[test]
fn an_edges_series_name_both_workloads_by_their_owner_labels() {
    let q = EdgeSeries::new(
        ("emojivoto", "Deployment", "web"),
        ("emojivoto", "StatefulSet", "voting"),
        Duration::from_secs(60),
    )
    .unwrap();
    // The selector sorts its matchers by name.
    let sel = "{deployment=\"web\", direction=\"outbound\", dst_namespace=\"emojivoto\", \
               dst_statefulset=\"voting\", namespace=\"emojivoto\"}";
    assert_eq!(q.rps, format!("sum(rate(response_total{sel}[1m]))"));
    assert!(
        q.success.contains("classification=\"success\""),
        "{}",
        q.success
    );
    assert_eq!(
        q.p99,
        format!(
            "histogram_quantile(0.99, sum(irate(response_latency_ms_bucket{sel}[1m])) by (le))"
        )
    );
    // A kind viz's scrape config does not label (a bare Pod): no query rather than a wrong one.
    assert!(
        EdgeSeries::new(
            ("a", "Pod", "x"),
            ("a", "Deployment", "y"),
            Duration::from_secs(60)
        )
        .is_none()
    );
}

#[test]
fn every_recorded_read_names_a_rule_that_computes_the_raw_query() {
    let win = Duration::from_secs(60);
    let rules = recording_rules(win, Duration::from_secs(10));
    assert_eq!(rules[0].labels["interval"], "10s");
    assert_eq!(rules[0].record, RULES_INFO);
    assert_eq!(rules[0].labels["version"], RULES_VERSION.to_string());
    assert_eq!(rules[0].labels["window"], "1m");
    let expr = |record: &str| {
        rules
            .iter()
            .find(|r| r.record == record)
            .map(|r| r.expr.clone())
            .unwrap_or_else(|| panic!("no rule records {record}"))
    };
    let raw = GraphQueries::new(win);
    let recorded = GraphQueries::read(win, &Scope::default(), Reads::Recorded);
    for (raw, recorded) in raw.all().into_iter().zip(recorded.all()) {
        // Reading the rule's series is the raw query with the rule's expression in its place.
        let (inner, outer) = match recorded.strip_prefix("histogram_quantile(") {
            Some(rest) => {
                let (q, record) = rest.split_once(", ").unwrap();
                (
                    record.trim_end_matches(')'),
                    format!("histogram_quantile({q}, {{}})"),
                )
            }
            None => (recorded, "{}".to_owned()),
        };
        assert_eq!(outer.replace("{}", &expr(inner)), raw, "{recorded}");
    }
    // Every rule is read, and no two write one series.
    let mut names: Vec<&str> = rules.iter().map(|r| r.record.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), rules.len());
    assert_eq!(rules.len(), 1 + 9 + 4 + 8);
}

#[test]
fn recorded_reads_keep_the_namespace_scope_and_the_shard() {
    let win = Duration::from_secs(60);
    let scope = Scope {
        into_namespace: Some("emojivoto".into()),
        shard: Shard::all().split().map(|(a, _)| a),
    };
    let q = GraphQueries::read(win, &scope, Reads::Recorded);
    assert_eq!(
        q.responses,
        r#"linkerd_mcp:outbound_response_total:increase1m{dst_namespace="emojivoto", namespace=~"[0-h].*"}"#
    );
    assert_eq!(
        q.latency[0],
        r#"histogram_quantile(0.5, linkerd_mcp:outbound_response_latency_ms_bucket:irate1m{dst_namespace="emojivoto", namespace=~"[0-h].*"})"#
    );
    assert_eq!(
        q.pods,
        r#"linkerd_mcp:pod_tcp_open_total:count1m{namespace=~"[0-h].*"}"#
    );
    let raw = GraphQueries::read(win, &scope, Reads::Raw);
    assert!(
        raw.pods
            .starts_with(r#"count(tcp_open_total{namespace=~"[0-h].*"}) by ("#)
    );
    assert!(raw.authz[0].contains(r#"{namespace="emojivoto", namespace=~"[0-h].*"}"#));
}

#[test]
fn shards_halve_down_to_one_first_character() {
    let mut todo = vec![Shard::all()];
    let mut singles = Vec::new();
    while let Some(s) = todo.pop() {
        match s.split() {
            Some((a, b)) => todo.extend([b, a]),
            None => singles.push(s.to_string()),
        }
    }
    assert_eq!(singles.len(), 36);
    assert_eq!(singles[0], r#"namespace=~"0.*""#);
    assert_eq!(singles[35], r#"namespace=~"z.*""#);
    assert_eq!(Shard::all().to_string(), r#"namespace=~"[0-z].*""#);
}

#[test]
fn the_rules_file_is_one_group_for_the_window() {
    let f = rules_file(Duration::from_secs(60), Duration::from_secs(10));
    assert!(
        f.contains("- name: linkerd-mcp-1m\n  interval: 10s\n"),
        "{f}"
    );
    assert!(f.contains("--window 1m --interval 10s"), "{f}");
    let parsed: serde_yaml_ng::Value = serde_yaml_ng::from_str(&f).unwrap();
    assert_eq!(
        parsed["groups"][0]["rules"].as_sequence().unwrap().len(),
        recording_rules(Duration::from_secs(60), Duration::from_secs(10)).len()
    );
}
