//! Our query templates render, byte for byte, every PromQL string linkerd viz's metrics-api
//! tests assert (`fixtures/viz-metrics-api-expected-promql.txt`, from linkerd/linkerd2 at
//! b24cd405; SOURCES.md says where each comes from): each string is taken apart into metric,
//! matchers, window and grouping, and rendered again with `sum_increase`, `quantile` and
//! `sum_gauge`. The route queries keep the shape of `linkerd viz stat-outbound`'s.

use std::time::Duration;

use mesh_prometheus::promql::{
    GraphQueries, Matcher, eq, ne, quantile, re, selector, sum_gauge, sum_increase,
};

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

/// `a="x", b!="", c=~"y"` -> matchers (values unescaped as viz wrote them with Go's %q).
fn matchers(sel: &str) -> Vec<Matcher> {
    let mut out = Vec::new();
    let mut rest = sel;
    while !rest.is_empty() {
        let name_end = rest.find(['=', '!']).expect("a matcher");
        let name = leak(rest[..name_end].trim());
        let after = &rest[name_end..];
        let (op, after) = ["=~", "!=", "="]
            .iter()
            .find_map(|op| after.strip_prefix(op).map(|a| (*op, a)))
            .expect("an operator");
        let after = after.strip_prefix('"').expect("a quoted value");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().expect("a closing quote") {
                (_, '\\') => value.push(chars.next().expect("an escaped char").1),
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        out.push(match op {
            "=" => eq(name, &value),
            "!=" => ne(name, &value),
            _ => re(name, &value),
        });
        rest = after[end + 1..].trim_start_matches(", ");
    }
    out
}

fn split_by(s: &str) -> (&str, Vec<&str>) {
    let (head, by) = s.rsplit_once(" by (").expect("a grouping");
    let labels = by.trim_end_matches(')').split(", ").collect();
    (head, labels)
}

/// `metric{sel}[w]` -> (metric, selector, window).
fn vector(s: &str) -> (&str, String, &str) {
    let (metric, rest) = s.split_once('{').expect("a selector");
    let (sel, rest) = rest.split_once("}[").expect("a window");
    let w = rest.trim_end_matches(']');
    (metric, selector(&matchers(sel)), w)
}

fn rerender(line: &str) -> String {
    if let Some(rest) = line.strip_prefix("histogram_quantile(") {
        let (q, rest) = rest
            .split_once(", sum(irate(")
            .expect("viz's quantile shape");
        let (head, by) = split_by(rest.trim_end_matches(')'));
        let (metric, sel, w) = vector(head.trim_end_matches("))"));
        let metric = metric.strip_suffix("_bucket").expect("a histogram");
        assert_eq!(by[0], "le");
        return quantile(q.parse().expect("a quantile"), metric, &sel, w, &by[1..]);
    }
    if let Some(rest) = line.strip_prefix("sum(increase(") {
        let (head, by) = split_by(rest);
        let (metric, sel, w) = vector(head.trim_end_matches("))"));
        return sum_increase(metric, &sel, w, &by);
    }
    let rest = line.strip_prefix("sum(").expect("a gauge sum");
    let (head, by) = split_by(rest);
    let (metric, sel) = head
        .trim_end_matches(')')
        .split_once('{')
        .expect("a selector");
    sum_gauge(metric, &selector(&matchers(sel.trim_end_matches('}'))), &by)
}

#[test]
fn every_promql_string_viz_asserts_renders_identically_from_our_templates() {
    let text = include_str!("fixtures/viz-metrics-api-expected-promql.txt");
    let asserted: Vec<&str> = text
        .lines()
        .take_while(|l| !l.starts_with("## Query templates"))
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(
        asserted.len(),
        59,
        "the 59 strings stat_summary_test.go and top_routes_test.go assert"
    );
    for line in asserted {
        assert_eq!(rerender(line), line);
    }
}

#[test]
fn route_queries_read_the_families_and_labels_stat_outbound_reads() {
    let text = include_str!("fixtures/viz-metrics-api-expected-promql.txt");
    let q = GraphQueries::new(Duration::from_secs(60));
    for (ours, family, status) in [
        (
            &q.route_statuses[0],
            "outbound_http_route_backend_response_statuses_total",
            "http_status",
        ),
        (
            &q.route_statuses[1],
            "outbound_grpc_route_backend_response_statuses_total",
            "grpc_status",
        ),
    ] {
        assert!(
            ours.starts_with(&format!("sum(increase({family}[1m])) by (")),
            "{ours}"
        );
        // viz's grouping labels are all in ours (we add namespaces, kinds and owner labels).
        if family.contains("http") {
            let viz = text
                .lines()
                .find(|l| l.contains(family))
                .expect("the stat-outbound template");
            let (_, viz_by) = split_by(viz);
            for l in viz_by.iter().filter(|l| !l.starts_with('<')) {
                assert!(
                    ours.contains(l.trim_end_matches(',')),
                    "{l} missing from {ours}"
                );
            }
        }
        assert!(ours.contains(status) && ours.contains("error"));
    }
    let lat = &q.route_latency[0][2];
    assert!(lat.starts_with("histogram_quantile(0.99, sum(irate(outbound_http_route_backend_response_duration_seconds_bucket[1m])) by (le, "), "{lat}");
}

#[test]
fn egress_is_read_from_the_route_level_families_with_the_host() {
    let q = GraphQueries::new(Duration::from_secs(60));
    let s = &q.egress_statuses[0];
    assert!(
        s.starts_with(r#"sum(increase(outbound_http_route_request_statuses_total{parent_kind="EgressNetwork"}[1m])) by ("#),
        "{s}"
    );
    // What the reader needs to name the node and decide it.
    for l in [
        "parent_kind",
        "parent_namespace",
        "parent_name",
        "parent_port",
        "route_name",
        "hostname",
        "http_status",
        "error",
    ] {
        assert!(s.contains(l), "{l} missing from {s}");
    }
    assert!(q.egress_latency[1][0].contains(
        "outbound_grpc_route_request_duration_seconds_bucket{parent_kind=\"EgressNetwork\"}"
    ));
}
