//! Structured policy changes: an [`pb::PolicySpec`] says what should be allowed or routed, and
//! this writes the Linkerd objects that do it. The result goes through the same pipeline as a
//! manifest (validation, access review, dry-run, what-if), so a spec can do nothing a manifest
//! could not.

use crate::apply::ApplyError;
use mesh_proto::pb;
use serde_json::{Map, Value, json};

use crate::apply::Rpc;

const POLICY: &str = "policy.linkerd.io";

fn invalid(field: &str, why: impl std::fmt::Display) -> ApplyError {
    ApplyError::Invalid(format!("spec.{field}: {why}"))
}

fn required<'a>(field: &str, v: &'a str) -> Result<&'a str, ApplyError> {
    if v.trim().is_empty() {
        return Err(invalid(field, "required"));
    }
    Ok(v)
}

/// The manifest (JSON documents, one per object, authentications and Server before the object
/// that names them) for `spec` on `rpc`. `identity_of(sa, namespace)` gives a service
/// account's mTLS identity in this cluster's trust domain.
pub fn manifest(
    rpc: Rpc,
    spec: &pb::PolicySpec,
    identity_of: impl Fn(&str, &str) -> String,
) -> Result<String, ApplyError> {
    let objects = match (rpc, &spec.kind) {
        (Rpc::AuthorizationPolicy, Some(pb::policy_spec::Kind::Authorization(a))) => {
            authorization(a, identity_of)?
        }
        (Rpc::HttpRoute, Some(pb::policy_spec::Kind::Route(r))) => vec![route(r)?],
        (Rpc::AuthorizationPolicy, _) => {
            return Err(invalid(
                "authorization",
                "ApplyAuthorizationPolicy takes an authorization spec",
            ));
        }
        (Rpc::HttpRoute, _) => {
            return Err(invalid("route", "ApplyHTTPRoute takes a route spec"));
        }
    };
    let docs: Vec<String> = objects.iter().map(Value::to_string).collect();
    Ok(docs.join("\n---\n"))
}

fn meta(name: &str, namespace: &str) -> Value {
    json!({ "name": name, "namespace": namespace })
}

fn authorization(
    a: &pb::AuthorizationSpec,
    identity_of: impl Fn(&str, &str) -> String,
) -> Result<Vec<Value>, ApplyError> {
    let ns = required("authorization.namespace", &a.namespace)?;
    let name = required("authorization.name", &a.name)?;
    let kind = match a.target_kind.as_str() {
        "" | "Server" => "Server",
        k @ ("HTTPRoute" | "GRPCRoute" | "Namespace") => k,
        other => {
            return Err(invalid(
                "authorization.target_kind",
                format!("{other:?}: one of Server, HTTPRoute, GRPCRoute, Namespace"),
            ));
        }
    };
    let target_name = match (kind, a.target_name.as_str()) {
        ("Namespace", "") => ns,
        ("Namespace", n) if n != ns => {
            return Err(invalid(
                "authorization.target_name",
                format!("a policy may only target its own namespace {ns}, not {n}"),
            ));
        }
        (_, n) => required("authorization.target_name", n)?,
    };
    if a.service_accounts.is_empty() && a.identities.is_empty() && a.networks.is_empty() {
        return Err(invalid(
            "authorization",
            "name the clients: service_accounts, identities or networks (0.0.0.0/0 and ::/0 \
             for everyone)",
        ));
    }
    let mut accounts = Vec::new();
    for sa in &a.service_accounts {
        let (sa_ns, sa_name) = sa.split_once('/').unwrap_or((ns, sa.as_str()));
        if sa_ns.is_empty() || sa_name.is_empty() || sa_name.contains('/') {
            return Err(invalid(
                "authorization.service_accounts",
                format!("{sa:?}: a service account is `name` or `namespace/name`"),
            ));
        }
        accounts.push((sa_ns, sa_name));
    }

    let mut out = Vec::new();
    let mut refs = Vec::new();
    if let Some(s) = &a.server {
        if kind != "Server" {
            return Err(invalid(
                "authorization.server",
                format!("only a Server target can be created with the policy, not a {kind}"),
            ));
        }
        out.push(server(s, target_name, ns)?);
    }
    if !accounts.is_empty() || !a.identities.is_empty() {
        let authn = format!("{name}-clients");
        // A MeshTLSAuthentication takes identities or identityRefs, not both: with explicit
        // identities too, service accounts become identities of this cluster's trust domain.
        let spec = if a.identities.is_empty() {
            let refs: Vec<Value> = accounts
                .iter()
                .map(|(sa_ns, sa)| {
                    let mut r = json!({ "kind": "ServiceAccount", "name": sa });
                    if *sa_ns != ns {
                        r["namespace"] = json!(sa_ns);
                    }
                    r
                })
                .collect();
            json!({ "identityRefs": refs })
        } else {
            let mut ids = a.identities.clone();
            ids.extend(accounts.iter().map(|(sa_ns, sa)| identity_of(sa, sa_ns)));
            json!({ "identities": ids })
        };
        out.push(json!({
            "apiVersion": "policy.linkerd.io/v1alpha1",
            "kind": "MeshTLSAuthentication",
            "metadata": meta(&authn, ns),
            "spec": spec,
        }));
        refs.push(json!({ "group": POLICY, "kind": "MeshTLSAuthentication", "name": authn }));
    }
    if !a.networks.is_empty() {
        let authn = format!("{name}-networks");
        let networks: Vec<Value> = a.networks.iter().map(|c| json!({ "cidr": c })).collect();
        out.push(json!({
            "apiVersion": "policy.linkerd.io/v1alpha1",
            "kind": "NetworkAuthentication",
            "metadata": meta(&authn, ns),
            "spec": { "networks": networks },
        }));
        refs.push(json!({ "group": POLICY, "kind": "NetworkAuthentication", "name": authn }));
    }
    let mut target = json!({ "kind": kind, "name": target_name });
    match kind {
        // Namespaces are core objects: Linkerd's own examples name no group.
        "Namespace" => {}
        "GRPCRoute" => target["group"] = json!("gateway.networking.k8s.io"),
        _ => target["group"] = json!(POLICY),
    }
    out.push(json!({
        "apiVersion": "policy.linkerd.io/v1alpha1",
        "kind": "AuthorizationPolicy",
        "metadata": meta(name, ns),
        "spec": { "targetRef": target, "requiredAuthenticationRefs": refs },
    }));
    Ok(out)
}

fn server(s: &pb::ServerSpec, name: &str, ns: &str) -> Result<Value, ApplyError> {
    if s.pod_selector.is_empty() {
        return Err(invalid(
            "authorization.server.pod_selector",
            "required: the labels of the pods the Server describes",
        ));
    }
    let port = required("authorization.server.port", &s.port)?;
    let port = port
        .parse::<u16>()
        .map_or_else(|_| json!(port), |n| json!(n));
    let mut spec = Map::new();
    spec.insert(
        "podSelector".into(),
        json!({ "matchLabels": s.pod_selector }),
    );
    spec.insert("port".into(), port);
    if !s.proxy_protocol.is_empty() {
        spec.insert("proxyProtocol".into(), json!(s.proxy_protocol));
    }
    Ok(json!({
        "apiVersion": "policy.linkerd.io/v1beta3",
        "kind": "Server",
        "metadata": meta(name, ns),
        "spec": spec,
    }))
}

fn route(r: &pb::RouteSpec) -> Result<Value, ApplyError> {
    let ns = required("route.namespace", &r.namespace)?;
    let name = required("route.name", &r.name)?;
    let parent_name = required("route.parent_name", &r.parent_name)?;
    let parent = match (r.parent_kind.as_str(), r.port) {
        ("Server", 0) => json!({ "group": POLICY, "kind": "Server", "name": parent_name }),
        ("Server", _) => {
            return Err(invalid(
                "route.port",
                "a Server parent has its own port; set port only for a Service",
            ));
        }
        ("Service", 0) => return Err(invalid("route.port", "required for a Service parent")),
        ("Service", port) => {
            let port = u16::try_from(port)
                .map_err(|_| invalid("route.port", format!("{port} is not a port")))?;
            json!({ "group": "core", "kind": "Service", "name": parent_name, "port": port })
        }
        (other, _) => {
            return Err(invalid(
                "route.parent_kind",
                format!("{other:?}: Server or Service"),
            ));
        }
    };
    let mut matches = Vec::new();
    for (i, m) in r.matches.iter().enumerate() {
        let mut out = Map::new();
        match (m.path_prefix.as_str(), m.path_exact.as_str()) {
            ("", "") => {}
            (p, "") => {
                out.insert("path".into(), json!({ "type": "PathPrefix", "value": p }));
            }
            ("", p) => {
                out.insert("path".into(), json!({ "type": "Exact", "value": p }));
            }
            _ => {
                return Err(invalid(
                    &format!("route.matches[{i}]"),
                    "path_prefix or path_exact, not both",
                ));
            }
        }
        if !m.method.is_empty() {
            out.insert("method".into(), json!(m.method));
        }
        matches.push(Value::Object(out));
    }
    let mut rule = Map::new();
    if !matches.is_empty() {
        rule.insert("matches".into(), Value::Array(matches));
    }
    if !r.timeout.is_empty() {
        rule.insert("timeouts".into(), json!({ "request": r.timeout }));
    }
    Ok(json!({
        "apiVersion": "policy.linkerd.io/v1beta3",
        "kind": "HTTPRoute",
        "metadata": meta(name, ns),
        "spec": { "parentRefs": [parent], "rules": [rule] },
    }))
}

#[cfg(test)]
mod tests;
