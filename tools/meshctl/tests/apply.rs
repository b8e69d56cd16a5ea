//! `meshctl apply` against an in-process mesh-mcp writing to kube-sim.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

mod common;

use std::{path::PathBuf, process::Command, time::Duration};

const BOOKS_POLICY: &str = r"
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {name: books-server, namespace: booksapp}
spec: {podSelector: {matchLabels: {app: books}}, port: service, proxyProtocol: HTTP/1}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {name: books-clients, namespace: booksapp}
spec: {identities: [webapp.booksapp.serviceaccount.identity.linkerd.cluster.local]}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: books-policy, namespace: booksapp}
spec:
  targetRef: {group: policy.linkerd.io, kind: Server, name: books-server}
  requiredAuthenticationRefs: [{group: policy.linkerd.io, kind: MeshTLSAuthentication, name: books-clients}]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_shows_the_diff_the_what_if_and_the_audit_id() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let kube = kube_sim::KubeSim::start(kube_sim::Config {
        tokens: "mcp-token,system:serviceaccount:linkerd-mcp:mcp,uid-m\n\
                 admin-token,admin,uid-a,\"system:masters\"\n"
            .into(),
        seed_dirs: vec![root.join("tools/kube-sim/seed/demo")],
        with_linkerd_crds: true,
        ..kube_sim::Config::default()
    })
    .await
    .unwrap();
    // admin is in system:masters in kube-sim, so RBAC lets it write.
    let addr = common::serve_mcp(
        &kube,
        &meshsim::builtin("booksapp").unwrap(),
        meshsim::LinkerdVersion::V2_12,
        "tok,admin,u,\"system:masters\"\n",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("books.yaml");
    std::fs::write(&file, BOOKS_POLICY).unwrap();
    let meshctl = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_meshctl"))
            .args(["apply", "-f"])
            .arg(&file)
            .args(["--server", &addr, "--token", "tok"])
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = meshctl(&["--dry-run"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("AuthorizationPolicy booksapp/books-policy: would create"),
        "{out}"
    );
    assert!(out.contains("+  name: books-policy"), "{out}");
    assert!(
        out.contains("booksapp/authors -> booksapp/books  1.00  allowed -> denied"),
        "{out}"
    );
    assert!(
        out.contains("warning: would deny booksapp/authors -> booksapp/books"),
        "{out}"
    );
    assert!(out.contains("dry-run as admin; audit id "), "{out}");

    // Who approved and why are recorded only from delegators (after a real approval).
    for flag in ["--reason", "--approved-by"] {
        let (code, _, err) = meshctl(&[flag, "carol"]);
        assert_eq!(code, Some(1), "{flag}");
        assert!(err.contains(": only a delegator"), "{flag}: {err}");
    }
    let (code, out, err) = meshctl(&[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("AuthorizationPolicy booksapp/books-policy: created"),
        "{out}"
    );
    assert!(out.contains("applied as admin"), "{out}");

    // Acting for someone else needs a delegator's token.
    let (code, _, err) = meshctl(&["--as", "bob", "--as-group", "devs"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("only configured delegators"), "{err}");
    tokio::time::timeout(Duration::from_secs(1), async {})
        .await
        .unwrap();
}
