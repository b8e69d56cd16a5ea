//! The Kubernetes protobuf encoding, for the few request bodies kubectl's typed clients send
//! that way (`kubectl create namespace`, `kubectl create configmap`, `kubectl auth can-i`).
//! Everything else must come as JSON or YAML, and gets a clear 415 otherwise. Responses are JSON,
//! which those clients accept too.
//!
//! Wire format: the magic `k8s\0`, then a `runtime.Unknown` whose `raw` is the object's message.

use std::collections::BTreeMap;

use prost::Message;
use serde_json::{Value, json};

const MAGIC: &[u8] = b"k8s\0";

#[derive(Clone, PartialEq, Message)]
struct TypeMeta {
    #[prost(string, tag = "1")]
    api_version: String,
    #[prost(string, tag = "2")]
    kind: String,
}

#[derive(Clone, PartialEq, Message)]
struct Unknown {
    #[prost(message, optional, tag = "1")]
    type_meta: Option<TypeMeta>,
    #[prost(bytes = "vec", tag = "2")]
    raw: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
struct ObjectMeta {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    generate_name: String,
    #[prost(string, tag = "3")]
    namespace: String,
    #[prost(btree_map = "string, string", tag = "11")]
    labels: BTreeMap<String, String>,
    #[prost(btree_map = "string, string", tag = "12")]
    annotations: BTreeMap<String, String>,
}

#[derive(Clone, PartialEq, Message)]
struct Namespace {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
}

#[derive(Clone, PartialEq, Message)]
struct ConfigMap {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(btree_map = "string, string", tag = "2")]
    data: BTreeMap<String, String>,
}

#[derive(Clone, PartialEq, Message)]
struct ResourceAttributes {
    #[prost(string, tag = "1")]
    namespace: String,
    #[prost(string, tag = "2")]
    verb: String,
    #[prost(string, tag = "3")]
    group: String,
    #[prost(string, tag = "4")]
    version: String,
    #[prost(string, tag = "5")]
    resource: String,
    #[prost(string, tag = "6")]
    subresource: String,
    #[prost(string, tag = "7")]
    name: String,
}

#[derive(Clone, PartialEq, Message)]
struct NonResourceAttributes {
    #[prost(string, tag = "1")]
    path: String,
    #[prost(string, tag = "2")]
    verb: String,
}

#[derive(Clone, PartialEq, Message)]
struct SelfSubjectAccessReviewSpec {
    #[prost(message, optional, tag = "1")]
    resource_attributes: Option<ResourceAttributes>,
    #[prost(message, optional, tag = "2")]
    non_resource_attributes: Option<NonResourceAttributes>,
}

#[derive(Clone, PartialEq, Message)]
struct SelfSubjectAccessReview {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    spec: Option<SelfSubjectAccessReviewSpec>,
}

fn meta(m: Option<ObjectMeta>) -> Value {
    let m = m.unwrap_or_default();
    let mut v = json!({});
    for (k, s) in [
        ("name", &m.name),
        ("generateName", &m.generate_name),
        ("namespace", &m.namespace),
    ] {
        if !s.is_empty() {
            v[k] = json!(s);
        }
    }
    if !m.labels.is_empty() {
        v["labels"] = json!(m.labels);
    }
    if !m.annotations.is_empty() {
        v["annotations"] = json!(m.annotations);
    }
    v
}

/// Decodes a protobuf request body into the JSON form of the object.
pub(crate) fn decode(body: &[u8]) -> Result<Value, String> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or("protobuf body without the k8s\\0 prefix")?;
    let unknown = Unknown::decode(rest).map_err(|e| format!("protobuf envelope: {e}"))?;
    let tm = unknown.type_meta.unwrap_or_default();
    let raw = unknown.raw.as_slice();
    let err = |e: prost::DecodeError| format!("protobuf {}: {e}", tm.kind);
    let mut v = match (tm.api_version.as_str(), tm.kind.as_str()) {
        ("v1", "Namespace") => {
            let n = Namespace::decode(raw).map_err(err)?;
            json!({"metadata": meta(n.metadata)})
        }
        ("v1", "ConfigMap") => {
            let c = ConfigMap::decode(raw).map_err(err)?;
            json!({"metadata": meta(c.metadata), "data": c.data})
        }
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => {
            let r = SelfSubjectAccessReview::decode(raw).map_err(err)?;
            let spec = r.spec.unwrap_or_default();
            let mut s = json!({});
            if let Some(a) = spec.resource_attributes {
                s["resourceAttributes"] = json!({
                    "namespace": a.namespace, "verb": a.verb, "group": a.group, "version": a.version,
                    "resource": a.resource, "subresource": a.subresource, "name": a.name,
                });
            }
            if let Some(a) = spec.non_resource_attributes {
                s["nonResourceAttributes"] = json!({"path": a.path, "verb": a.verb});
            }
            json!({"metadata": meta(r.metadata), "spec": s})
        }
        (gv, kind) => {
            return Err(format!(
                "kube-sim decodes protobuf only for Namespace, ConfigMap and SelfSubjectAccessReview, \
                 not {kind} in {gv}: send JSON"
            ));
        }
    };
    v["apiVersion"] = json!(tm.api_version);
    v["kind"] = json!(tm.kind);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        let u = Unknown {
            type_meta: Some(TypeMeta {
                api_version: api_version.into(),
                kind: kind.into(),
            }),
            raw,
        };
        out.extend(u.encode_to_vec());
        out
    }

    #[test]
    fn decodes_what_kubectl_sends() {
        let ns = Namespace {
            metadata: Some(ObjectMeta {
                name: "demo".into(),
                labels: [("a".into(), "b".into())].into(),
                ..ObjectMeta::default()
            }),
        };
        let v = decode(&envelope("v1", "Namespace", ns.encode_to_vec())).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo", "labels": {"a": "b"}}})
        );
        let r = SelfSubjectAccessReview {
            metadata: None,
            spec: Some(SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    verb: "list".into(),
                    resource: "pods".into(),
                    namespace: "x".into(),
                    ..ResourceAttributes::default()
                }),
                non_resource_attributes: None,
            }),
        };
        let v = decode(&envelope(
            "authorization.k8s.io/v1",
            "SelfSubjectAccessReview",
            r.encode_to_vec(),
        ))
        .unwrap();
        assert_eq!(v["spec"]["resourceAttributes"]["verb"], "list");
        let e = decode(&envelope("apps/v1", "Deployment", vec![])).unwrap_err();
        assert!(e.contains("not Deployment in apps/v1: send JSON"), "{e}");
        assert!(decode(b"{}").is_err());
    }
}
