"""Checks the linkerd-mcp chart with a real Helm engine (PyPI helm-python-sdk, Helm v4's Go
library) and Kubernetes' own schemas (PyPI kubernetes-validate, strict): lint, render with the
defaults and with every optional part enabled, validate every built-in object, and refuse what
the values schema and the templates must refuse.

Usage: check.py OUT_DIR. Writes OUT_DIR/default.yaml and OUT_DIR/full.yaml (the rendered
streams) for the Rust test that loads them into kube-sim (custom resources by server-side
dry-run, RBAC checked with SubjectAccessReview). Exits non-zero with a line per failure.
"""

import pathlib
import sys

import helm_python
import kubernetes_validate
import yaml

CHART = pathlib.Path(__file__).parent / "linkerd-mcp"
NAMESPACE = "linkerd-mcp"
KUBERNETES = "1.33.0"
# Custom resources: checked against their CRDs in kube-sim instead.
CUSTOM_GROUPS = ("policy.linkerd.io/", "monitoring.coreos.com/")

FULL = {
    "valkey": {"enabled": True, "storage": "1Gi"},
    "recordingRules": {"enabled": True},
    "mcp": {
        "delegators": ["system:serviceaccount:linkerd-mcp:chatbot"],
        "delegateGroups": ["mesh-admins"],
        "readOnly": True,
        "tokenFileSecret": "linkerd-mcp-tokens",
        "oauth": {"issuer": "https://login.example.com", "audience": "https://mcp.example.com/mcp", "usernamePrefix": "-", "groupsPrefix": "oidc:"},
        "console": {"oidcClientId": "linkerd-mcp-console", "url": "https://mcp.example.com"},
        "mcpAllowedHosts": ["mcp.example.com"],
        "autoscaling": {"enabled": True},
        "approvalPolicy": {
            "version": 1,
            "default": {"approvals": 1, "approvers": {"groups": ["mesh-admins"]}, "ttl": "30m"},
            "namespaces": {"payments": {"approvals": 2, "approvers": {"users": ["bob", "carol"]},
                                        "agents_propose_only": True,
                                        "freezes": [{"from": "2026-12-24T00:00:00Z", "to": "2026-12-27T00:00:00Z",
                                                     "override_groups": ["sre-oncall"]}]}},
        },
    },
    "linkerd": {"clientNamespaces": ["platform", "chatops"]},
    "chatbot": {
        "enabled": True,
        "slack": {"existingSecret": "linkerd-mcp-slack"},
        "discord": {"existingSecret": "linkerd-mcp-discord"},
        "identityMap": {
            "users": [{"slack": "U024BE7LH", "discord": "80351110224678912",
                       "kubernetes": {"user": "alice", "groups": ["devs"]}}],
            "approvers": {"groups": ["mesh-admins"]},
            "approval_ttl": "30m",
        },
        "alerts": {"slackChannels": ["C0MESH"], "discordChannels": ["1000000000000000001"]},
        "approvalChannels": ["slack:C0MESH", "payments=slack:C0PAY"],
    },
    "serviceMonitor": {"enabled": True,
                       "scraperIdentities": ["prometheus-k8s.monitoring.serviceaccount.identity.linkerd.cluster.local"]},
    "prometheusRule": {"enabled": True},
}

failures = []


def render(values):
    chart = helm_python.Chart.load(str(CHART))
    files = chart.render(values, name="linkerd-mcp", namespace=NAMESPACE)
    docs = []
    for name, text in sorted(files.items()):
        if not name.endswith((".yaml", ".yml")):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def check(label, values):
    lint = helm_python.lint(str(CHART), values, strict=True, namespace=NAMESPACE, kube_version=KUBERNETES)
    for e in lint["errors"]:
        failures.append(f"{label}: helm lint: {e}")
    for m in lint["messages"]:
        # Severity 1 is INFO (e.g. "icon is recommended"); anything above fails.
        if m["severity"] > 1:
            failures.append(f"{label}: helm lint: {m['path']}: {m['error']}")
    docs = render(values)
    for d in docs:
        what = f"{d.get('kind')} {d.get('metadata', {}).get('name')}"
        if d.get("apiVersion", "").startswith(CUSTOM_GROUPS):
            continue
        try:
            kubernetes_validate.validate(d, KUBERNETES, strict=True)
        except Exception as e:  # its ValidationError or an unknown version/kind
            failures.append(f"{label}: {what}: {str(e).splitlines()[0]}")
    return docs


def must_refuse(label, values, why):
    try:
        lint = helm_python.lint(str(CHART), values, strict=True, namespace=NAMESPACE)
        refused = bool(lint["errors"])
        text = " ".join(lint["errors"])
        if not refused:
            render(values)
    except helm_python.HelmError as e:
        refused, text = True, str(e)
    else:
        if not refused:
            text = ""
    if not refused or why not in text:
        failures.append(f"{label}: expected a refusal mentioning {why!r}, got {text!r}")


def main():
    out = pathlib.Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    default = check("defaults", {})
    full = check("everything enabled", FULL)
    kinds = sorted({d["kind"] for d in full})
    for want in ["Deployment", "StatefulSet", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler",
                 "NetworkPolicy", "ClusterRole", "ClusterRoleBinding", "ServiceAccount", "Server",
                 "AuthorizationPolicy", "MeshTLSAuthentication", "NetworkAuthentication", "ConfigMap",
                 "ServiceMonitor", "PrometheusRule"]:
        if want not in kinds:
            failures.append(f"everything enabled: no {want} rendered ({kinds})")
    # Every alert links to a runbook that exists.
    runbooks = CHART.parent.parent / "runbooks"
    for d in full:
        if d["kind"] != "PrometheusRule":
            continue
        for g in d["spec"]["groups"]:
            for r in g["rules"]:
                if "record" in r:
                    continue
                page = r["annotations"]["runbook_url"].rsplit("/", 1)[-1]
                if not (runbooks / page).is_file():
                    failures.append(f"alert {r['alert']}: no runbooks/{page}")
    # The recording rules ship twice, as mesh-collector prints them: for linkerd-viz's
    # Prometheus (a ConfigMap in its namespace) and in the PrometheusRule.
    shipped = (CHART / "files" / "linkerd-mcp_rules.yml").read_text()
    maps = [d for d in full if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-recording-rules")]
    if len(maps) != 1 or maps[0]["metadata"]["namespace"] != "linkerd-viz" \
            or maps[0]["data"]["linkerd-mcp_rules.yml"].strip() != shipped.strip():
        failures.append(f"recording rules: no ConfigMap in linkerd-viz holding files/linkerd-mcp_rules.yml ({maps})")
    groups = [g for d in full if d["kind"] == "PrometheusRule" for g in d["spec"]["groups"]]
    if yaml.safe_load(shipped)["groups"][0] not in groups:
        failures.append("recording rules: not in the PrometheusRule")
    must_refuse("recording rules for another window", {"window": "5m", "recordingRules": {"enabled": True}},
                "print-rules --window 5m")
    must_refuse("system group", {"mcp": {"delegateGroups": ["system:masters"]}}, "delegateGroups")
    must_refuse("unknown value", {"colector": {"replicas": 2}}, "colector")
    must_refuse("chatbot without TokenReview at mesh-mcp",
                {"mcp": {"tokenReview": False}, "chatbot": {"enabled": True, "slack": {"existingSecret": "s"}}},
                "mcp.tokenReview")
    must_refuse("chatbot without a platform", {"chatbot": {"enabled": True}}, "chatbot.slack.existingSecret")
    must_refuse("chatbot user acting as system:masters",
                {"chatbot": {"identityMap": {"users": [{"slack": "U1", "kubernetes": {"user": "a", "groups": ["system:masters"]}}]}}},
                "/chatbot/identityMap/users/0/kubernetes/groups/0")
    must_refuse("a system group approving",
                {"mcp": {"approvalPolicy": {"version": 1, "default": {"approvers": {"groups": ["system:masters"]}}}}},
                "/mcp/approvalPolicy/default/approvers/groups/0")
    must_refuse("external Redis without its Secret", {"valkey": {"enabled": False}}, "externalRedis.urlSecret")
    (out / "default.yaml").write_text(yaml.safe_dump_all(default))
    (out / "full.yaml").write_text(yaml.safe_dump_all(full))
    for f in failures:
        print(f, file=sys.stderr)
    print(f"chart: {len(default)} objects by default, {len(full)} with everything enabled; "
          f"{len(failures)} failure(s)")
    sys.exit(1 if failures else 0)


main()
