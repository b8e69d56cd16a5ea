//! `meshctl validate` and `meshctl explain`, as CI pipelines would run them.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::{path::PathBuf, process::Command};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn meshctl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validate_reports_every_admission_rule_one_line_each() {
    let dir = root().join("crates/policy/tests/fixtures/admission");
    let (code, out, err) = meshctl(&["validate", "-f", dir.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        let expect = text
            .lines()
            .next()
            .unwrap()
            .trim_start_matches("# expect: ");
        let file = p.file_name().unwrap().to_string_lossy().into_owned();
        let lines: Vec<&str> = out
            .lines()
            .filter(|l| l.contains(&format!("/{file}:")))
            .collect();
        if expect == "valid" {
            // Warnings (what Linkerd accepts but ignores) are not problems.
            let problems: Vec<&&str> = lines
                .iter()
                .filter(|l| !l.starts_with("warning: "))
                .collect();
            assert!(problems.is_empty(), "{file} is valid but: {problems:#?}");
        } else {
            assert!(
                lines.iter().any(|l| l.contains(expect)),
                "{file}: no line with {expect:?} in {lines:#?}"
            );
        }
    }
    assert!(
        err.starts_with("meshctl: ") && err.contains("problem(s) in"),
        "{err}"
    );
}

#[test]
fn validate_passes_the_demo_policies_with_a_summary() {
    let dir = root().join("tools/kube-sim/seed/demo");
    let (code, out, err) = meshctl(&["validate", "-f", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.trim(),
        "40 objects read, 12 Linkerd policy objects: all valid"
    );
}

fn explain(args: &[&str]) -> (i32, String) {
    let dir = root().join("tools/kube-sim/seed/demo");
    let mut all = vec!["explain", "--manifests", dir.to_str().unwrap()];
    all.extend(args);
    let (code, out, _) = meshctl(&all);
    (code, out)
}

#[test]
fn explain_emojivoto_published_policy() {
    let (code, out) = explain(&["--from", "emojivoto/web", "--to", "emojivoto/voting"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("ALLOWED: emojivoto/web -> emojivoto/voting:8080\n"),
        "{out}"
    );
    assert!(out.contains("ServerAuthorization emojivoto/internal-grpc admits: client is ServiceAccount emojivoto/web"), "{out}");
    let (code, out) = explain(&[
        "--from",
        "emojivoto/vote-bot",
        "--to",
        "emojivoto/voting",
        "--port",
        "8080",
    ]);
    assert_eq!(code, 1);
    assert!(
        out.starts_with("DENIED") && out.contains("Server voting-grpc denies unmatched traffic"),
        "{out}"
    );
    // web-http admits unauthenticated clients; the prom port has no Server.
    assert_eq!(
        explain(&["--from", "203.0.113.7", "--to", "emojivoto/web"]).0,
        0
    );
    let (code, out) = explain(&[
        "--from",
        "203.0.113.7",
        "--to",
        "emojivoto/voting",
        "--port",
        "8801",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("default policy all-unauthenticated (from namespace emojivoto's annotation"),
        "{out}"
    );
}

#[test]
fn explain_booksapp_per_route_policy_and_json() {
    let ok = [
        "--from",
        "booksapp/webapp",
        "--to",
        "booksapp/authors",
        "--method",
        "GET",
        "--path",
        "/authors.json",
    ];
    assert_eq!(explain(&ok).0, 0);
    let (code, out) = explain(&[
        "--from",
        "booksapp/webapp",
        "--to",
        "booksapp/authors",
        "--method",
        "DELETE",
        "--path",
        "/authors/1",
    ]);
    assert_eq!(code, 1);
    assert!(
        out.contains("no route on Server authors-server matches the request"),
        "{out}"
    );
    let (code, out) = explain(&[
        "--from",
        "booksapp/traffic",
        "--to",
        "booksapp/authors",
        "--method",
        "GET",
        "--path",
        "/authors.json",
        "-o",
        "json",
    ]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["decision"], "DENIED");
    assert_eq!(v["route"], "booksapp/authors-get-route");
    let (code, out) = explain(&[
        "--from",
        "10.20.30.40",
        "--to",
        "booksapp/authors",
        "--method",
        "GET",
        "--path",
        "/ping",
    ]);
    assert_eq!(code, 0, "{out}");
    // booksapp's namespace default is all-authenticated: unmeshed clients of webapp are refused.
    let (code, out) = explain(&["--from", "10.20.30.40", "--to", "booksapp/webapp"]);
    assert_eq!(code, 1);
    assert!(
        out.contains("all-authenticated: the client has no mTLS identity"),
        "{out}"
    );
}

#[test]
fn explain_bad_input_is_one_clear_line() {
    let dir = root().join("tools/kube-sim/seed/demo");
    let d = dir.to_str().unwrap();
    let (code, _, err) = meshctl(&[
        "explain",
        "--manifests",
        d,
        "--from",
        "emojivoto/web",
        "--to",
        "emojivoto/nope",
    ]);
    assert_eq!(code, 2);
    assert_eq!(
        err.trim(),
        format!("meshctl: no Deployment, StatefulSet, DaemonSet or Pod emojivoto/nope in {d}")
    );
    let (code, _, err) = meshctl(&[
        "explain",
        "--manifests",
        d,
        "--from",
        "web",
        "--to",
        "emojivoto/web",
    ]);
    assert_eq!(code, 64);
    assert!(
        err.contains("want NAMESPACE/WORKLOAD or an IP address"),
        "{err}"
    );
    let (code, _, err) = meshctl(&["validate", "-f", "/no/such/dir"]);
    assert_eq!(
        (code, err.trim()),
        (64, "meshctl: /no/such/dir: no such file or folder")
    );
}
