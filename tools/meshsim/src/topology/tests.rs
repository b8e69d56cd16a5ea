use super::*;
use crate::generate;

fn err(yaml: &str) -> String {
    Topology::from_yaml(yaml).unwrap_err().to_string()
}

const TWO: &str = "workloads:\n  - {namespace: a, name: x}\n  - {namespace: a, name: y}\n";

#[test]
fn unknown_workload_in_an_edge_names_the_field() {
    let e = err(&format!(
        "{TWO}edges:\n  - {{from: a/x, to: a/nope, rps: 1}}\n"
    ));
    assert_eq!(
        e,
        "edges[0].to: unknown workload \"a/nope\" (expected namespace/name of a listed workload)"
    );
}

#[test]
fn negative_rps_is_refused() {
    let e = err(&format!(
        "{TWO}edges:\n  - {{from: a/x, to: a/y, rps: 1}}\n  - {{from: a/y, to: a/x, rps: -2}}\n"
    ));
    assert_eq!(e, "edges[1].rps: -2 is not a rate (must be 0 or more)");
}

#[test]
fn success_rate_outside_0_1_is_refused() {
    let e = err(&format!(
        "{TWO}edges:\n  - {{from: a/x, to: a/y, rps: 1, success_rate: 1.5}}\n"
    ));
    assert_eq!(e, "edges[0].success_rate: 1.5 is outside 0..1");
}

#[test]
fn duplicate_workloads_are_refused() {
    let e =
        err("workloads:\n  - {namespace: a, name: x}\n  - {namespace: a, name: x, replicas: 2}\n");
    assert_eq!(e, "workloads[1]: duplicate workload a/x");
}

#[test]
fn syntax_and_type_errors_name_the_line() {
    let e = err("workloads:\n  - {namespace: a, name: x, replicas: many}\n");
    assert!(e.contains("line 2"), "{e}");
    let e = err(&format!(
        "{TWO}edges:\n  - {{from: a/x, to: a/y, rps: 1, colour: red}}\n"
    ));
    assert!(
        e.contains("unknown field `colour`") && e.contains("line 5"),
        "{e}"
    );
}

#[test]
fn mtls_needs_both_ends_meshed() {
    let e = err(
        "workloads:\n  - {namespace: a, name: x}\n  - {namespace: a, name: y, meshed: false}\nedges:\n  - {from: a/x, to: a/y, rps: 1, tls: true}\n",
    );
    assert_eq!(e, "edges[0].tls: mTLS needs both ends meshed");
}

#[test]
fn yaml_round_trips() {
    let t = generate::builtin("booksapp").unwrap();
    assert_eq!(Topology::from_yaml(&t.to_yaml()).unwrap(), t);
}

#[test]
fn generated_meshes_are_deterministic_and_realistic() {
    let a = generate::generate(1000, 42).unwrap();
    assert_eq!(a, generate::generate(1000, 42).unwrap());
    assert_ne!(a, generate::generate(1000, 43).unwrap());
    assert_eq!(a.workloads.len(), 1000);
    let edges = a.edges.len() as f64;
    assert!((1500.0..4000.0).contains(&edges), "{edges} edges");
    let plaintext = a.edges.iter().filter(|e| e.tls == Some(false)).count() as f64;
    assert!(
        plaintext > 0.0 && plaintext / edges < 0.15,
        "{plaintext} plaintext"
    );
    let unmeshed = a.workloads.iter().filter(|w| !w.meshed).count();
    assert!(unmeshed > 0 && unmeshed < 100, "{unmeshed} unmeshed");
    let namespaces: std::collections::BTreeSet<_> =
        a.workloads.iter().map(|w| &w.namespace).collect();
    assert_eq!(namespaces.len(), 40);
    for p in ["http", "grpc", "tcp"] {
        assert!(a.edges.iter().any(|e| e.protocol == p), "no {p} edge");
    }
}

#[test]
fn a_hostile_topology_is_refused_before_parsing() {
    let deep = format!("workloads: {}", "{a: ".repeat(100_000));
    let e = Topology::from_yaml(&deep).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("topology refused: nested more than 32 levels deep"),
        "{e}"
    );
}
