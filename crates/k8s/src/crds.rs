//! CustomResourceDefinitions kube-sim serves and tests validate against.
//!
//! - Linkerd's own: the policy CRDs of edge-26.8.3 (= 2.20) as `linkerd install --crds` renders
//!   them, with the Gateway API HTTPRoute and GRPCRoute it bundles, vendored byte for byte in
//!   `crds/linkerd/` (see `crds/linkerd/SOURCES.md`); a test holds them to `POLICY_VERSIONS`.
//! - Gateway API's experimental TCPRoute and TLSRoute, which Linkerd routes (2.17+) but does not
//!   install: users add them from the experimental channel. They are declared here from the
//!   Gateway API reference and committed as `crds/gateway-experimental.yaml`; a test fails when
//!   the two drift (`UPDATE_CRDS=1` rewrites it).

use serde_json::{Value, json};

/// Where the generated experimental-route CRDs live, relative to the crate.
pub const COMMITTED: &str = "crds/gateway-experimental.yaml";

/// Linkerd's CRDs, as rendered by `linkerd install --crds` at edge-26.8.3, in a stable order.
pub const LINKERD: [(&str, &str); 10] = [
    (
        "servers.policy.linkerd.io",
        include_str!("../crds/linkerd/servers.policy.linkerd.io.yaml"),
    ),
    (
        "serverauthorizations.policy.linkerd.io",
        include_str!("../crds/linkerd/serverauthorizations.policy.linkerd.io.yaml"),
    ),
    (
        "authorizationpolicies.policy.linkerd.io",
        include_str!("../crds/linkerd/authorizationpolicies.policy.linkerd.io.yaml"),
    ),
    (
        "meshtlsauthentications.policy.linkerd.io",
        include_str!("../crds/linkerd/meshtlsauthentications.policy.linkerd.io.yaml"),
    ),
    (
        "networkauthentications.policy.linkerd.io",
        include_str!("../crds/linkerd/networkauthentications.policy.linkerd.io.yaml"),
    ),
    (
        "httproutes.policy.linkerd.io",
        include_str!("../crds/linkerd/httproutes.policy.linkerd.io.yaml"),
    ),
    (
        "egressnetworks.policy.linkerd.io",
        include_str!("../crds/linkerd/egressnetworks.policy.linkerd.io.yaml"),
    ),
    (
        "httplocalratelimitpolicies.policy.linkerd.io",
        include_str!("../crds/linkerd/httplocalratelimitpolicies.policy.linkerd.io.yaml"),
    ),
    (
        "httproutes.gateway.networking.k8s.io",
        include_str!("../crds/linkerd/httproutes.gateway.networking.k8s.io.yaml"),
    ),
    (
        "grpcroutes.gateway.networking.k8s.io",
        include_str!("../crds/linkerd/grpcroutes.gateway.networking.k8s.io.yaml"),
    ),
];

const KIND_PATTERN: &str = "^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$";
const GROUP_PATTERN: &str = "^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
const HOSTNAME_PATTERN: &str =
    "^(\\*\\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// A Gateway API reference: `group`, `kind`, `name`, `namespace`, `port` (parentRefs and
/// backendRefs share the shape), with Gateway API's defaults.
fn reference(kind_default: &str, group_default: &str, extra: &Value) -> Value {
    let mut props = json!({
        "group": {"type": "string", "maxLength": 253, "pattern": GROUP_PATTERN, "default": group_default},
        "kind": {"type": "string", "minLength": 1, "maxLength": 63, "pattern": KIND_PATTERN, "default": kind_default},
        "name": {"type": "string", "minLength": 1, "maxLength": 253},
        "namespace": {"type": "string", "minLength": 1, "maxLength": 63},
        "port": {"type": "integer", "format": "int32", "minimum": 1, "maximum": 65535},
    });
    if let (Some(p), Some(e)) = (props.as_object_mut(), extra.as_object()) {
        p.extend(e.clone());
    }
    json!({"type": "object", "required": ["name"], "properties": props})
}

/// The spec of TCPRoute (`tls == false`) or TLSRoute: parents, 1-16 rules of 1-16 backends,
/// and for TLSRoute the SNI hostnames.
fn l4_route_spec(tls: bool) -> Value {
    let parent = reference(
        "Gateway",
        "gateway.networking.k8s.io",
        &json!({"sectionName": {"type": "string", "minLength": 1, "maxLength": 253}}),
    );
    let backend = reference(
        "Service",
        "",
        &json!({"weight": {"type": "integer", "format": "int32", "default": 1, "minimum": 0, "maximum": 1000000}}),
    );
    let mut spec = json!({"type": "object", "required": ["rules"], "properties": {
        "parentRefs": {"type": "array", "maxItems": 32, "items": parent},
        "rules": {"type": "array", "minItems": 1, "maxItems": 16, "items": {"type": "object", "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 253},
            "backendRefs": {"type": "array", "minItems": 1, "maxItems": 16, "items": backend},
        }}},
    }});
    if tls {
        spec["properties"]["hostnames"] = json!({"type": "array", "maxItems": 16, "items": {
            "type": "string", "minLength": 1, "maxLength": 253, "pattern": HOSTNAME_PATTERN,
        }});
    }
    spec
}

fn root(spec: Value) -> Value {
    let mut r = json!({"type": "object", "required": ["spec"], "properties": {}});
    r["properties"]["spec"] = spec;
    r
}

fn version(name: &str, storage: bool, spec: Value) -> Value {
    let mut v = json!({"name": name, "served": true, "storage": storage, "schema": {}});
    v["schema"]["openAPIV3Schema"] = root(spec);
    v
}

fn crd(group: &str, kind: &str, plural: &str, short: &[&str], versions: Vec<Value>) -> Value {
    let mut c = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}"), "labels": {"linkerd.io/control-plane-ns": "linkerd"}},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(), "shortNames": short},
        },
    });
    c["spec"]["versions"] = Value::Array(versions);
    c
}

/// The experimental Gateway API route CRDs Linkerd routes: TCPRoute and TLSRoute (v1alpha2).
pub fn experimental() -> Vec<Value> {
    let g = "gateway.networking.k8s.io";
    vec![
        crd(
            g,
            "TCPRoute",
            "tcproutes",
            &[],
            vec![version("v1alpha2", true, l4_route_spec(false))],
        ),
        crd(
            g,
            "TLSRoute",
            "tlsroutes",
            &[],
            vec![version("v1alpha2", true, l4_route_spec(true))],
        ),
    ]
}

/// The committed YAML of [`experimental`].
pub fn experimental_yaml() -> String {
    let mut out = String::from(
        "# Generated from crates/k8s/src/crds.rs (UPDATE_CRDS=1 cargo test -p mesh-k8s crds rewrites it).\n\
         # Gateway API TCPRoute and TLSRoute (experimental channel), which Linkerd routes but does not install.\n",
    );
    for c in experimental() {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&c).expect("CRDs serialize"));
    }
    out
}

/// Every CRD kube-sim serves, as one multi-document YAML: Linkerd's, then the experimental routes.
pub fn yaml() -> String {
    let mut out = String::new();
    for (_, text) in LINKERD {
        out.push_str(text);
        out.push_str("\n---\n");
    }
    out.push_str(&experimental_yaml());
    out
}

/// Every CRD of [`yaml`], parsed.
pub fn all() -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(&yaml())
        .filter_map(|d| {
            let v: Value = serde::Deserialize::deserialize(d).expect("vendored CRDs parse");
            (!v.is_null()).then_some(v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_yaml_matches_the_declarations() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(COMMITTED);
        let generated = experimental_yaml();
        if std::env::var_os("UPDATE_CRDS").is_some() {
            std::fs::write(&path, &generated).expect("write CRDs");
        }
        let committed = std::fs::read_to_string(&path).expect("committed CRDs exist");
        assert!(
            committed == generated,
            "{COMMITTED} drifted from crds.rs: run UPDATE_CRDS=1 cargo test -p mesh-k8s crds"
        );
    }

    #[test]
    fn the_vendored_crds_are_linkerds_and_each_is_named_for_what_it_holds() {
        let all = all();
        for (name, _) in LINKERD {
            let found = all.iter().filter(|c| c["metadata"]["name"] == name).count();
            assert_eq!(found, 1, "{name} appears once among the CRDs");
        }
        for c in &all {
            let name = c["metadata"]["name"].as_str().unwrap_or_default();
            let plural = c["spec"]["names"]["plural"].as_str().unwrap_or_default();
            let group = c["spec"]["group"].as_str().unwrap_or_default();
            assert_eq!(name, format!("{plural}.{group}"));
            let storage = c["spec"]["versions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|v| v["storage"] == true)
                .count();
            assert_eq!(storage, 1, "{name} has one storage version");
        }
    }

    #[test]
    fn every_policy_kind_version_has_a_crd() {
        let served: Vec<(String, String, String)> = all()
            .iter()
            .flat_map(|c| {
                let g = c["spec"]["group"].as_str().unwrap_or_default().to_owned();
                let k = c["spec"]["names"]["kind"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                c["spec"]["versions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |v| {
                        (
                            g.clone(),
                            k.clone(),
                            v["name"].as_str().unwrap_or_default().to_owned(),
                        )
                    })
            })
            .collect();
        for (g, k, versions) in mesh_policy::resources::POLICY_VERSIONS {
            for v in *versions {
                assert!(
                    served.contains(&((*g).to_owned(), (*k).to_owned(), (*v).to_owned())),
                    "{g} {k} {v} has no CRD version"
                );
            }
        }
    }
}
