//! CustomResourceDefinitions for the Linkerd policy kinds and the Gateway API routes Linkerd uses,
//! written from the schema rules in the team's Linkerd reference (section 4): required fields,
//! reference shapes (`kind` + `name`, the kind pattern, group as a DNS subdomain or empty), and
//! `oneOf` on selectors and identities. They are declared here and committed as
//! `crds/linkerd-policy.yaml`; a test fails when the two drift (`UPDATE_CRDS=1` rewrites it).

use serde_json::{Value, json};

/// Where the committed YAML lives, relative to the crate.
pub const COMMITTED: &str = "crds/linkerd-policy.yaml";

const KIND_PATTERN: &str = "^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$";
const GROUP_PATTERN: &str = "^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
const NAME_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

fn reference(extra: &Value) -> Value {
    let mut props = json!({
        "group": {"type": "string", "maxLength": 253, "pattern": GROUP_PATTERN},
        "kind": {"type": "string", "minLength": 1, "maxLength": 63, "pattern": KIND_PATTERN},
        "name": {"type": "string", "minLength": 1, "maxLength": 253},
        "namespace": {"type": "string", "maxLength": 63},
    });
    if let (Some(p), Some(e)) = (props.as_object_mut(), extra.as_object()) {
        p.extend(e.clone());
    }
    json!({"type": "object", "required": ["kind", "name"], "properties": props})
}

fn selector() -> Value {
    json!({
        "type": "object",
        "properties": {
            "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
            "matchExpressions": {"type": "array", "items": {
                "type": "object",
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"type": "string", "enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            }},
        },
    })
}

fn networks() -> Value {
    json!({"type": "array", "items": {
        "type": "object",
        "required": ["cidr"],
        "properties": {
            "cidr": {"type": "string"},
            "except": {"type": "array", "items": {"type": "string"}},
        },
    }})
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

fn server_spec(external: bool, access_policy: bool) -> Value {
    let mut props = json!({
        "podSelector": selector(),
        "port": {"x-kubernetes-int-or-string": true},
        "proxyProtocol": {"type": "string", "enum": ["unknown", "HTTP/1", "HTTP/2", "gRPC", "opaque", "TLS"], "default": "unknown"},
    });
    let mut spec = json!({"type": "object", "required": ["port"]});
    if external {
        props["externalWorkloadSelector"] = selector();
        spec["oneOf"] =
            json!([{"required": ["podSelector"]}, {"required": ["externalWorkloadSelector"]}]);
    } else {
        spec["required"] = json!(["podSelector", "port"]);
    }
    if access_policy {
        props["accessPolicy"] = json!({"type": "string", "default": "deny"});
    }
    spec["properties"] = props;
    spec
}

fn route_spec(linkerd: bool, grpc: bool) -> Value {
    let path = json!({"type": "object", "properties": {
        "type": {"type": "string", "enum": ["Exact", "PathPrefix", "RegularExpression"], "default": "PathPrefix"},
        "value": {"type": "string", "maxLength": 1024, "default": "/"},
    }});
    let header = json!({"type": "array", "maxItems": 16, "items": {
        "type": "object", "required": ["name", "value"],
        "properties": {
            "type": {"type": "string", "enum": ["Exact", "RegularExpression"], "default": "Exact"},
            "name": {"type": "string", "minLength": 1, "maxLength": 256},
            "value": {"type": "string", "minLength": 1, "maxLength": 4096},
        },
    }});
    let matches = if grpc {
        json!({"type": "array", "maxItems": 8, "items": {"type": "object", "properties": {
            "method": {"type": "object", "properties": {
                "type": {"type": "string", "enum": ["Exact", "RegularExpression"], "default": "Exact"},
                "service": {"type": "string", "maxLength": 1024},
                "method": {"type": "string", "maxLength": 1024},
            }},
            "headers": header,
        }}})
    } else {
        json!({"type": "array", "maxItems": 8, "items": {"type": "object", "properties": {
            "path": path,
            "headers": header,
            "queryParams": {"type": "array", "maxItems": 16, "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
            "method": {"type": "string", "enum": ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]},
        }}})
    };
    let backend = reference(
        &json!({"port": {"type": "integer", "minimum": 0, "maximum": 65535}, "weight": {"type": "integer", "minimum": 0, "maximum": 1000000}}),
    );
    let mut backend = backend;
    backend["required"] = json!(["name"]);
    let mut rule = json!({"type": "object", "properties": {
        "matches": matches,
        "filters": {"type": "array", "maxItems": 16, "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
        "backendRefs": {"type": "array", "maxItems": 16, "items": backend},
    }});
    if !grpc {
        rule["properties"]["timeouts"] = json!({"type": "object", "properties": {
            "request": {"type": "string", "pattern": "^([0-9]{1,5}(h|m|s|ms)){1,4}$"},
            "backendRequest": {"type": "string", "pattern": "^([0-9]{1,5}(h|m|s|ms)){1,4}$"},
        }});
    }
    let mut parent = reference(
        &json!({"sectionName": {"type": "string"}, "port": {"type": "integer", "minimum": 1, "maximum": 65535}}),
    );
    if linkerd {
        // In the Linkerd CRD, group defaults to policy.linkerd.io and kind to Gateway.
        parent["properties"]["group"]["default"] = json!("policy.linkerd.io");
        parent["properties"]["kind"]["default"] = json!("Gateway");
        parent["required"] = json!(["name"]);
    }
    json!({"type": "object", "properties": {
        "parentRefs": {"type": "array", "maxItems": 32, "items": parent},
        "hostnames": {"type": "array", "maxItems": 16, "items": {"type": "string"}},
        "rules": {"type": "array", "maxItems": 16, "items": rule},
    }})
}

/// Every CRD, in a stable order.
pub fn all() -> Vec<Value> {
    let g = "policy.linkerd.io";
    let authn_ref = reference(&json!({}));
    vec![
        crd(g, "Server", "servers", &["srv"], vec![
            version("v1alpha1", false, server_spec(false, false)),
            version("v1beta1", false, server_spec(false, false)),
            version("v1beta2", false, server_spec(true, false)),
            version("v1beta3", true, server_spec(true, true)),
        ]),
        crd(g, "ServerAuthorization", "serverauthorizations", &["saz", "serverauthz"], ["v1alpha1", "v1beta1"].iter().map(|v| version(v, *v == "v1beta1", json!({
            "type": "object",
            "required": ["server", "client"],
            "properties": {
                "server": {
                    "type": "object",
                    "oneOf": [{"required": ["name"]}, {"required": ["selector"]}],
                    "properties": {"name": {"type": "string", "pattern": NAME_PATTERN}, "selector": selector()},
                },
                "client": {"type": "object", "properties": {
                    "networks": networks(),
                    "unauthenticated": {"type": "boolean"},
                    "meshTLS": {"type": "object", "properties": {
                        "unauthenticatedTLS": {"type": "boolean"},
                        "identities": {"type": "array", "items": {"type": "string"}},
                        "serviceAccounts": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
                            "name": {"type": "string"}, "namespace": {"type": "string"},
                        }}},
                    }},
                }},
            },
        }))).collect()),
        crd(g, "AuthorizationPolicy", "authorizationpolicies", &["authzpolicy"], vec![version("v1alpha1", true, json!({
            "type": "object",
            "required": ["targetRef", "requiredAuthenticationRefs"],
            "properties": {
                "targetRef": reference(&json!({})),
                "requiredAuthenticationRefs": {"type": "array", "items": authn_ref},
            },
        }))]),
        crd(g, "MeshTLSAuthentication", "meshtlsauthentications", &["meshtlsauthn"], vec![version("v1alpha1", true, json!({
            "type": "object",
            "oneOf": [{"required": ["identities"]}, {"required": ["identityRefs"]}],
            "properties": {
                "identities": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                "identityRefs": {"type": "array", "minItems": 1, "items": reference(&json!({}))},
            },
        }))]),
        crd(g, "NetworkAuthentication", "networkauthentications", &["netauthn", "networkauthn"], vec![version("v1alpha1", true, json!({
            "type": "object",
            "required": ["networks"],
            "properties": {"networks": {"type": "array", "minItems": 1, "items": networks()["items"].clone()}},
        }))]),
        crd(g, "HTTPRoute", "httproutes", &[], ["v1alpha1", "v1beta1", "v1beta2", "v1beta3"]
            .iter()
            .map(|v| version(v, *v == "v1beta3", route_spec(true, false)))
            .collect()),
        crd("gateway.networking.k8s.io", "HTTPRoute", "httproutes", &[], ["v1", "v1beta1", "v1alpha2"]
            .iter()
            .map(|v| version(v, *v == "v1", route_spec(false, false)))
            .collect()),
        crd("gateway.networking.k8s.io", "GRPCRoute", "grpcroutes", &[], ["v1", "v1alpha2"]
            .iter()
            .map(|v| version(v, *v == "v1", route_spec(false, true)))
            .collect()),
    ]
}

/// The multi-document YAML of [`all`].
pub fn yaml() -> String {
    let mut out = String::from(
        "# Generated from crates/k8s/src/crds.rs (UPDATE_CRDS=1 cargo test -p mesh-k8s crds rewrites it).\n\
         # Linkerd policy CRDs and the Gateway API routes Linkerd uses, from linkerd-mcp's reference.\n",
    );
    for c in all() {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&c).expect("CRDs serialize"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_yaml_matches_the_declarations() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(COMMITTED);
        let generated = yaml();
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
