//! `meshctl propose` against an in-process mesh-mcp over kube-sim: emojivoto without its
//! policy, the graph as Linkerd 2.20's proxies report it. The table says what would be created
//! and why; `-o yaml` is what `meshctl validate -f` and `meshctl apply -f` take, with each
//! rule's justification as comments; a bad target is refused naming it.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

mod common;

use common::meshctl;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn propose_prints_a_table_and_yaml_that_validates() {
    let kube =
        common::emojivoto_without_policy("mcp-token,system:serviceaccount:linkerd-mcp:mcp,uid-m\n")
            .await;
    let addr = common::serve_mcp(
        &kube,
        &meshsim::builtin("emojivoto").unwrap(),
        meshsim::LinkerdVersion::V2_20,
        "tok,alice,u,\"devs\"\n",
    )
    .await;
    let propose = |extra: &[&str]| {
        let mut a = vec![
            "propose",
            "--server",
            &addr,
            "--token",
            "tok",
            "--namespace",
            "emojivoto",
        ];
        a.extend(extra);
        meshctl(&a)
    };
    let (code, out, err) = propose(&[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("KIND "), "{out}");
    for want in [
        "Server                 emojivoto  web-http ",
        "MeshTLSAuthentication  emojivoto  voting-grpc-observed-clients  emojivoto/web -> emojivoto/voting: 2.00 rps observed (grpc)",
        "9 objects from the last 60s of traffic",
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
    assert!(!out.contains("WOULD DENY"), "{out}");

    let (code, yaml, err) = propose(&["-o", "yaml", "--workload", "web", "--audit"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        yaml.contains("# emojivoto/vote-bot -> emojivoto/web: 4.00 rps observed (http)"),
        "{yaml}"
    );
    assert!(yaml.contains("accessPolicy: audit"), "{yaml}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proposal.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let (code, out, err) = meshctl(&["validate", "-f", file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("3 Linkerd policy objects: all valid"), "{out}");

    // Per route: emojivoto's calls use Linkerd's default routes only, so each Server is
    // authorized as a whole, and the table says why.
    let (code, out, err) = propose(&["--per-route"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("9 objects"), "{out}");
    assert!(
        out.contains("not every call went through a named HTTPRoute"),
        "{out}"
    );
    let (code, _, err) = propose(&["--workload", "ghost"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("no workload emojivoto/ghost in the Kubernetes view"),
        "{err}"
    );
    let (code, _, err) = propose(&["--since", "7d"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("this mesh-mcp reads no Prometheus"), "{err}");
}
