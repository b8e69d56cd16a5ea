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
