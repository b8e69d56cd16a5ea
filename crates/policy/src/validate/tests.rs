//! Every admission rule: a valid and an invalid example per rule, from
//! `tests/fixtures/admission/*.yaml` (each file's first line says what to expect). meshctl's
//! tests run the same files through `meshctl validate`.

use std::path::Path;

use crate::{Manifests, document};

fn fixtures() -> Vec<(String, String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission");
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        let expect = text
            .lines()
            .next()
            .unwrap()
            .trim_start_matches("# expect: ")
            .to_owned();
        out.push((
            p.file_name().unwrap().to_string_lossy().into_owned(),
            expect,
            text,
        ));
    }
    out.sort();
    out
}

#[test]
fn every_rule_has_a_valid_and_an_invalid_example_and_each_is_judged_right() {
    let all = fixtures();
    assert!(all.len() >= 60, "{} fixtures", all.len());
    let valid = all.iter().filter(|(_, e, _)| e == "valid").count();
    assert!(valid >= 11, "{valid} valid examples");
    for (file, expect, text) in &all {
        let (docs, problems) = document::parse_text(file, text);
        let found: Vec<String> = Manifests::from_documents(docs, problems)
            .validate()
            .iter()
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect();
        if expect == "valid" {
            assert!(found.is_empty(), "{file} should be valid: {found:#?}");
        } else {
            assert!(
                found.iter().any(|f| f.contains(expect.as_str())),
                "{file}: expected {expect:?}, got {found:#?}"
            );
        }
    }
}

#[test]
fn a_broken_document_does_not_hide_the_others() {
    let text = "apiVersion: policy.linkerd.io/v1beta3\nkind: Server\nmetadata: {name: a, namespace: x}\nspec: {port: 0, podSelector: {}}\n---\nkind: [unclosed\n---\napiVersion: policy.linkerd.io/v1beta3\nkind: Server\nmetadata: {name: b, namespace: x}\nspec: {port: 80}\n";
    let (docs, problems) = document::parse_text("mixed.yaml", text);
    assert_eq!(docs.len(), 2);
    let found: Vec<String> = Manifests::from_documents(docs, problems)
        .validate()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(
        found[0].starts_with("mixed.yaml:7: not valid YAML"),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|f| f == "mixed.yaml:1: Server x/a: spec.port: 0 is not a port number (1-65535)"),
        "{found:#?}"
    );
    assert!(
        found.iter().any(
            |f| f.starts_with("mixed.yaml:8: Server x/b: spec: set exactly one of podSelector")
        ),
        "{found:#?}"
    );
}

#[test]
fn a_list_is_not_a_kubernetes_object() {
    let (docs, p) = document::parse_text("list.yaml", "- a\n- b\n");
    assert!(docs.is_empty() && p[0].message.contains("not a Kubernetes object"));
}

#[test]
fn what_linkerd_accepts_but_ignores_is_a_warning_naming_the_field() {
    let text = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: orphan, namespace: x}\nspec: {rules: [{}]}\n---\n\
        apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: ingress, namespace: x}\nspec: {parentRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: public}]}\n---\n\
        apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: UDPRoute\nmetadata: {name: dns, namespace: x}\nspec: {}\n---\n\
        apiVersion: policy.linkerd.io/v1alpha1\nkind: EgressNetwork\nmetadata: {name: all, namespace: x}\nspec: {trafficPolicy: Allow}\n---\n\
        apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: fine, namespace: x}\nspec: {parentRefs: [{kind: Service, name: web, port: 80}]}\n";
    let (docs, problems) = document::parse_text("w.yaml", text);
    let m = Manifests::from_documents(docs, problems);
    assert!(m.validate().is_empty(), "{:?}", m.validate());
    let w: Vec<String> = m
        .warnings()
        .iter()
        .map(|p| format!("{} {}: {}", p.object, p.field, p.message))
        .collect();
    assert_eq!(w.len(), 4, "{w:#?}");
    assert!(
        w[0].contains(
            "orphan spec.parentRefs: none: Linkerd accepts the route but attaches it to nothing"
        ),
        "{w:#?}"
    );
    assert!(
        w[1].contains("ingress spec.parentRefs[0]: Gateway \"public\""),
        "{w:#?}"
    );
    assert!(
        w[2].contains("dns kind: Linkerd does not route UDPRoute"),
        "{w:#?}"
    );
    assert!(
        w[3].contains("all spec.networks: not set: it captures every network outside the cluster"),
        "{w:#?}"
    );
}
