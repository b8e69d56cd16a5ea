//! The Helm chart (`helm/linkerd-mcp`): rendered and linted by a real Helm engine and its
//! built-in objects validated against Kubernetes' schemas (`helm/check.py`, run here from
//! `.tools/helm-venv`, which `make test` installs); then, in kube-sim, its Linkerd custom
//! resources pass a server-side dry-run against the CRDs, and its RBAC gives each service
//! account exactly what its service needs, checked with SubjectAccessReview.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use serde::Deserialize;

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Renders the chart with `helm/check.py`; the default and the everything-enabled streams.
fn rendered() -> (String, String) {
    let python = root().join(".tools/helm-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: `make test` (scripts/deps.sh) installs the Helm SDK there",
        python.display()
    );
    let out = tempfile::tempdir().unwrap();
    let run = std::process::Command::new(python)
        .arg(root().join("helm/check.py"))
        .arg(out.path())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "helm/check.py failed:\n{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let read = |f: &str| std::fs::read_to_string(out.path().join(f)).unwrap();
    (read("default.yaml"), read("full.yaml"))
}

fn plural(kind: &str) -> String {
    match kind {
        "AuthorizationPolicy" => "authorizationpolicies".into(),
        k => format!("{}s", k.to_lowercase()),
    }
}

async fn can(client: &kube::Client, sa: &str, verb: &str, group: &str, resource: &str) -> bool {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(format!("system:serviceaccount:linkerd-mcp:{sa}")),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                "system:serviceaccounts:linkerd-mcp".into(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                group: Some(group.into()),
                resource: Some(resource.into()),
                verb: Some(verb.into()),
                namespace: Some("emojivoto".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    kube::Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .is_some_and(|s| s.allowed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_renders_validates_and_grants_exactly_what_each_service_needs() {
    let (default, full) = rendered();
    let kube = kube_sim::KubeSim::start(kube_sim::Config {
        tokens: "admin-token,admin,uid-a,\"system:masters\"\n".into(),
        with_linkerd_crds: true,
        ..kube_sim::Config::default()
    })
    .await
    .unwrap();
    kube.load_yaml("apiVersion: v1\nkind: Namespace\nmetadata: {name: linkerd-mcp}\n")
        .await
        .unwrap();
    let client = kube::Client::try_from(kube.kube_config("admin-token")).unwrap();

    // The approval policy the chart renders is one mesh-mcp takes.
    let policy = serde_yaml_ng::Deserializer::from_str(&full)
        .map(|d| serde_json::Value::deserialize(d).unwrap())
        .find(|v| {
            v["kind"] == "ConfigMap"
                && v["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with("-approval-policy"))
        })
        .expect("the approval policy's ConfigMap");
    let text = policy["data"]["approval-policy.yaml"].as_str().unwrap();
    let parsed = mesh_policy::approval::ApprovalPolicy::parse(text).unwrap();
    assert_eq!(parsed.rule("payments").approvals, 2);

    // Linkerd's custom resources (both renderings) against the CRDs: a strict server-side
    // dry-run, as `kubectl apply --dry-run=server` would do.
    let mut checked = 0;
    for doc in serde_yaml_ng::Deserializer::from_str(&full)
        .chain(serde_yaml_ng::Deserializer::from_str(&default))
    {
        let v: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
        let api_version = v["apiVersion"].as_str().unwrap_or_default();
        let Some(version) = api_version.strip_prefix("policy.linkerd.io/") else {
            continue;
        };
        let kind = v["kind"].as_str().unwrap();
        let name = v["metadata"]["name"].as_str().unwrap();
        let gvk = GroupVersionKind::gvk("policy.linkerd.io", version, kind);
        let api = kube::Api::<DynamicObject>::namespaced_with(
            client.clone(),
            "linkerd-mcp",
            &ApiResource::from_gvk_with_plural(&gvk, &plural(kind)),
        );
        let pp = PatchParams::apply("chart-test")
            .dry_run()
            .validation_strict();
        api.patch(name, &pp, &Patch::Apply(&v))
            .await
            .unwrap_or_else(|e| panic!("{kind} {name} refused by its CRD: {e}"));
        checked += 1;
    }
    assert!(checked >= 7, "only {checked} Linkerd objects rendered");

    // The default rendering's RBAC, applied; then what each service account may do.
    let rbac: Vec<String> = serde_yaml_ng::Deserializer::from_str(&default)
        .map(|d| serde_json::Value::deserialize(d).unwrap())
        .filter(|v| {
            matches!(
                v["kind"].as_str(),
                Some("ServiceAccount" | "ClusterRole" | "ClusterRoleBinding")
            )
        })
        .map(|v| serde_yaml_ng::to_string(&v).unwrap())
        .collect();
    assert_eq!(rbac.len(), 7, "2 service accounts, 2 roles, 3 bindings");
    kube.load_yaml(&rbac.join("---\n")).await.unwrap();
    let (core, apps, linkerd) = ("", "apps", "policy.linkerd.io");
    let collector_may = [
        ("list", apps, "deployments"),
        ("watch", core, "pods"),
        ("list", core, "configmaps"),
        ("watch", linkerd, "authorizationpolicies"),
        ("list", "gateway.networking.k8s.io", "grpcroutes"),
    ];
    let mcp_may = [
        ("create", "authentication.k8s.io", "tokenreviews"),
        ("create", "authorization.k8s.io", "subjectaccessreviews"),
        ("impersonate", core, "users"),
        ("impersonate", core, "groups"),
        ("get", linkerd, "servers"),
        ("create", core, "events"),
        ("watch", linkerd, "servers"),
    ];
    let nobody_may = [
        ("patch", linkerd, "servers"),
        ("create", linkerd, "authorizationpolicies"),
        ("delete", core, "pods"),
        ("list", core, "secrets"),
        ("get", core, "secrets"),
        ("create", apps, "deployments"),
        ("impersonate", core, "serviceaccounts"),
    ];
    let collector = "linkerd-mcp-collector";
    let mcp = "linkerd-mcp-mcp";
    for (verb, group, resource) in collector_may {
        assert!(
            can(&client, collector, verb, group, resource).await,
            "collector: {verb} {resource}"
        );
    }
    for (verb, group, resource) in mcp_may {
        assert!(
            can(&client, mcp, verb, group, resource).await,
            "mcp: {verb} {resource}"
        );
    }
    for (verb, group, resource) in nobody_may {
        for sa in [collector, mcp] {
            assert!(
                !can(&client, sa, verb, group, resource).await,
                "{sa} may {verb} {resource}"
            );
        }
    }
    // The chatbot (everything-enabled rendering): a service account with no rights at all.
    let chatbot: Vec<String> = serde_yaml_ng::Deserializer::from_str(&full)
        .map(|d| serde_json::Value::deserialize(d).unwrap())
        .filter(|v| v["kind"] == "ServiceAccount" && v["metadata"]["name"] == "linkerd-mcp-chatbot")
        .map(|v| serde_yaml_ng::to_string(&v).unwrap())
        .collect();
    assert_eq!(chatbot.len(), 1, "the chatbot's service account");
    kube.load_yaml(&chatbot[0]).await.unwrap();
    for (verb, group, resource) in mcp_may.iter().chain(&collector_may).chain(&nobody_may) {
        assert!(
            !can(&client, "linkerd-mcp-chatbot", verb, group, resource).await,
            "chatbot: {verb} {resource}"
        );
    }
    assert!(
        full.contains("system:serviceaccount:linkerd-mcp:linkerd-mcp-chatbot"),
        "mesh-mcp lets the chatbot act for chat users"
    );
    // The collector needs no more than reading.
    for (verb, group, resource) in &mcp_may[..4] {
        assert!(
            !can(&client, collector, verb, group, resource).await,
            "collector: {verb} {resource}"
        );
    }
}
