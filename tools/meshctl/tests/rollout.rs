//! `meshctl rollout` against an in-process mesh-mcp over kube-sim (emojivoto without its
//! policy, the graph as Linkerd 2.20's proxies report it): start prints the plan, status `-o
//! yaml` is a plan `meshctl validate -f` accepts, advance applies the audit phase as the token's
//! identity, the gate keeps enforce back, and an object someone else edited is refused naming
//! the object and the field manager that edited it.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

mod common;

use std::process::Command;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_start_status_advance_and_rollback_from_the_command_line() {
    let kube = common::emojivoto_without_policy(
        "mcp-token,system:serviceaccount:linkerd-mcp:mcp,uid-m\n\
         admin-token,admin,uid-a,\"system:masters\"\n",
    )
    .await;
    // alice (group devs) may edit Linkerd policy.
    kube.load_yaml(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: policy-editor}\n\
         rules: [{apiGroups: [policy.linkerd.io], resources: ['*'], verbs: [get, list, watch, create, patch, update, delete]}]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: policy-editors}\n\
         roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: policy-editor}\n\
         subjects: [{kind: Group, name: devs}]\n",
    )
    .await
    .unwrap();
    let addr = common::serve_mcp(
        &kube,
        &meshsim::builtin("emojivoto").unwrap(),
        meshsim::LinkerdVersion::V2_20,
        "tok,alice,u,\"devs\"\n",
    )
    .await;
    let meshctl = |args: &[&str]| {
        let mut all = vec!["rollout"];
        all.extend(args);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshctl"));
        cmd.args(&all)
            .env("MESH_SERVER", &addr)
            .env("MESH_TOKEN", "tok");
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (code, out, err) = meshctl(&["start", "--namespace", "emojivoto", "--observe", "20m"]);
    assert_eq!(code, Some(0), "{err}");
    let id = out
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no id in {out}"))
        .to_owned();
    assert!(id.starts_with("emojivoto-"), "{out}");
    assert!(
        !out.contains("re-proposed"),
        "nothing was applied yet: {out}"
    );
    for want in [
        "phase proposed  revision 1",
        "next: audit, repropose, rollback",
        "Server                 emojivoto  web-http",
        "emojivoto/web -> emojivoto/voting: 2.00 rps observed (grpc)",
        "by alice: proposed 9 objects",
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }

    // The plan as YAML is what `meshctl validate -f` takes.
    let (code, yaml, err) = meshctl(&["status", &id, "-o", "yaml"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(yaml.contains("accessPolicy: audit"), "{yaml}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plan.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(["validate", "-f", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("9 Linkerd policy objects: all valid"),
        "{out:?}"
    );

    // Enforce before audit is refused; the dry-run changes nothing; advance applies audit.
    let (code, _, err) = meshctl(&["advance", &id, "--to", "enforce"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("start with audit"), "{err}");
    let (code, out, err) = meshctl(&["advance", &id, "--dry-run"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("dry-run: proposed -> audit"), "{out}");
    assert!(
        out.contains("  would create Server emojivoto/web-http"),
        "{out}"
    );
    let (code, out, err) = meshctl(&["advance", &id]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("applied: proposed -> audit"), "{out}");
    assert!(
        out.contains("  created AuthorizationPolicy emojivoto/web-http-observed"),
        "{out}"
    );
    assert!(out.contains("phase audit  revision 3"), "{out}");

    // The gate has not passed (20 minutes): enforce is refused, saying so.
    let (code, out, err) = meshctl(&["status", &id]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("gate: audit: 0 would-be denials in"), "{out}");
    let (code, _, err) = meshctl(&["advance", &id, "--to", "enforce"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("the gate has not passed"), "{err}");

    // Someone edits one of the rollout's objects: the rollback is refused, naming the object
    // and the field manager, and nothing is deleted.
    let servers: Api<DynamicObject> = Api::namespaced_with(
        kube::Client::try_from(kube.kube_config("admin-token")).unwrap(),
        "emojivoto",
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("policy.linkerd.io", "v1beta3", "Server"),
            "servers",
        ),
    );
    servers
        .patch(
            "web-http",
            &PatchParams {
                field_manager: Some("kubectl-edit".into()),
                ..PatchParams::default()
            },
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {"team": "web"}}})),
        )
        .await
        .unwrap();
    let (code, _, err) = meshctl(&["rollback", &id]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("Server emojivoto/web-http changed since linkerd-mcp wrote it")
            && err.contains("last written by kubectl-edit"),
        "{err}"
    );
    assert!(servers.get_opt("web-http").await.unwrap().is_some());
    let (code, out, err) = meshctl(&["status", &id]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("phase audit"), "{out}");
    assert!(
        out.contains("last change refused: Server emojivoto/web-http"),
        "{out}"
    );

    // Listing, and bad input.
    let (code, out, err) = meshctl(&["status"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("ID "), "{out}");
    assert!(
        out.contains(&format!("{id}  emojivoto  *         audit  9")),
        "{out}"
    );
    let (code, _, err) = meshctl(&["status", "emojivoto-00000000"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no rollout emojivoto-00000000"), "{err}");
    let (code, _, err) = meshctl(&["start", "--namespace", "nowhere"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("namespace nowhere has no workloads"), "{err}");
}
