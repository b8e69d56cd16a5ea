//! Validation mirroring Linkerd's admission webhook (`policy-controller/runtime/src/validation.rs`
//! and the index's rules), plus the CRD schema rules the webhook relies on. Pure functions: each
//! problem names the field and the rule in words.

use std::sync::OnceLock;

use crate::eval::{DefaultPolicy, IpNet};
use regex::Regex;
use serde_json::Value;

use crate::resources::{Object, Ref, Resource, RouteSpec, Selector};

/// One rule broken: field path and message.
pub type Finding = (String, String);

fn re(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).expect("static pattern compiles"))
}

fn kind_re() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    re(&R, r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")
}

fn identity_ok(id: &str) -> bool {
    static DNS: OnceLock<Regex> = OnceLock::new();
    static TD: OnceLock<Regex> = OnceLock::new();
    static SEG: OnceLock<Regex> = OnceLock::new();
    if let Some(rest) = id.strip_prefix("spiffe://") {
        let (td, path) = rest
            .split_once('/')
            .map_or((rest, None), |(t, p)| (t, Some(p)));
        let td_ok = !td.is_empty() && re(&TD, r"^[a-z0-9\-._]+$").is_match(td);
        let path_ok = path.is_none_or(|p| {
            !p.is_empty()
                && p.split('/').all(|s| {
                    !s.is_empty()
                        && s != "."
                        && s != ".."
                        && re(&SEG, r"^[A-Za-z0-9\-._]+$").is_match(s)
                })
        });
        return td_ok && path_ok;
    }
    re(
        &DNS,
        r"^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
    )
    .is_match(id)
}

/// The schema rules every reference must meet (`kind` + `name`, kind pattern, group format).
fn check_ref(r: &Ref, at: &str, out: &mut Vec<Finding>) {
    match r.kind.as_deref() {
        None | Some("") => out.push((format!("{at}.kind"), "is required".into())),
        Some(k) if !kind_re().is_match(k) => out.push((
            format!("{at}.kind"),
            format!("{k:?} is not a valid kind name"),
        )),
        _ => {}
    }
    if r.name.as_deref().is_none_or(str::is_empty) {
        out.push((format!("{at}.name"), "is required".into()));
    }
    if let Some(g) = r.group.as_deref()
        && !g.is_empty()
        && !mesh_model::is_dns_subdomain(g)
    {
        out.push((
            format!("{at}.group"),
            format!("{g:?} is not a DNS subdomain (or empty for core)"),
        ));
    }
}

fn group_of(r: &Ref) -> &str {
    r.group.as_deref().unwrap_or("")
}

fn kind_of(r: &Ref) -> &str {
    r.kind.as_deref().unwrap_or("")
}

fn check_selector(s: &Selector, at: &str, out: &mut Vec<Finding>) {
    for (i, e) in s.match_expressions.iter().enumerate() {
        let at = format!("{at}.matchExpressions[{i}]");
        match e.operator.as_str() {
            "In" | "NotIn" if e.values.is_empty() => out.push((
                format!("{at}.values"),
                format!("must not be empty for operator {}", e.operator),
            )),
            "Exists" | "DoesNotExist" if !e.values.is_empty() => out.push((
                format!("{at}.values"),
                format!("must be empty for operator {}", e.operator),
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            op => out.push((
                format!("{at}.operator"),
                format!("{op:?} is not one of In, NotIn, Exists, DoesNotExist"),
            )),
        }
    }
}

fn check_networks(nets: &[crate::resources::NetworkSpec], at: &str, out: &mut Vec<Finding>) {
    for (i, n) in nets.iter().enumerate() {
        let at = format!("{at}[{i}]");
        let Some(cidr) = n.cidr.as_deref() else {
            out.push((format!("{at}.cidr"), "is required".into()));
            continue;
        };
        let net: IpNet = match cidr.parse() {
            Ok(n) => n,
            Err(e) => {
                out.push((format!("{at}.cidr"), e));
                continue;
            }
        };
        for (j, ex) in n.except.iter().enumerate() {
            let at = format!("{at}.except[{j}]");
            match ex.parse::<IpNet>() {
                Err(e) => out.push((at, e)),
                Ok(x) if !net.covers(&x) => {
                    out.push((at, format!("{ex} is not inside the network {cidr}")))
                }
                Ok(x) if x.covers(&net) => {
                    out.push((at, format!("{ex} excludes the whole network {cidr}")))
                }
                Ok(_) => {}
            }
        }
    }
}

/// Problems of one resource, as (field, rule) pairs. `raw` is the document, for annotations.
pub fn validate(r: &Resource, raw: &Value) -> Vec<Finding> {
    let mut out = Vec::new();
    match r {
        Resource::Server(s) => server(s, &mut out),
        Resource::AuthorizationPolicy(p) => {
            let ns = p.meta.namespace.clone().unwrap_or_default();
            match &p.spec.target_ref {
                None => out.push(("spec.targetRef".into(), "is required".into())),
                Some(t) => {
                    check_ref(t, "spec.targetRef", &mut out);
                    let (g, k) = (group_of(t), kind_of(t));
                    let ok = (g.eq_ignore_ascii_case("policy.linkerd.io")
                        && (k.eq_ignore_ascii_case("Server")
                            || k.eq_ignore_ascii_case("HTTPRoute")))
                        || ((g.is_empty() || g.eq_ignore_ascii_case("core"))
                            && k.eq_ignore_ascii_case("Namespace"))
                        || (g.eq_ignore_ascii_case("gateway.networking.k8s.io")
                            && (k.eq_ignore_ascii_case("HTTPRoute")
                                || k.eq_ignore_ascii_case("GRPCRoute")));
                    if !ok && !k.is_empty() {
                        let shown = if g.is_empty() { "core" } else { g };
                        out.push(("spec.targetRef".into(), format!("unsupported authorization target type: {k}.{shown} (a missing group means core)")));
                    }
                    if k.eq_ignore_ascii_case("Namespace") && t.name.as_deref() != Some(ns.as_str())
                    {
                        out.push((
                            "spec.targetRef.name".into(),
                            format!("a Namespace target must be the policy's own namespace ({ns})"),
                        ));
                    }
                }
            }
            match &p.spec.required_authentication_refs {
                None => out.push((
                    "spec.requiredAuthenticationRefs".into(),
                    "is required (an empty list admits everyone)".into(),
                )),
                Some(refs) => {
                    let (mut mtls, mut sa, mut net) = (0, 0, 0);
                    for (i, a) in refs.iter().enumerate() {
                        let at = format!("spec.requiredAuthenticationRefs[{i}]");
                        check_ref(a, &at, &mut out);
                        let (g, k) = (group_of(a), kind_of(a));
                        if g.eq_ignore_ascii_case("policy.linkerd.io")
                            && k.eq_ignore_ascii_case("MeshTLSAuthentication")
                        {
                            mtls += 1;
                        } else if g.eq_ignore_ascii_case("policy.linkerd.io")
                            && k.eq_ignore_ascii_case("NetworkAuthentication")
                        {
                            net += 1;
                        } else if (g.is_empty() || g.eq_ignore_ascii_case("core"))
                            && k.eq_ignore_ascii_case("ServiceAccount")
                        {
                            sa += 1;
                        } else if !k.is_empty() {
                            let shown = if g.is_empty() { "core" } else { g };
                            out.push((at, format!("unsupported authentication kind {k}.{shown}: use MeshTLSAuthentication or NetworkAuthentication (group policy.linkerd.io) or ServiceAccount")));
                        }
                    }
                    if mtls > 1 {
                        out.push((
                            "spec.requiredAuthenticationRefs".into(),
                            "at most one MeshTLSAuthentication".into(),
                        ));
                    }
                    if sa > 1 {
                        out.push((
                            "spec.requiredAuthenticationRefs".into(),
                            "at most one ServiceAccount".into(),
                        ));
                    }
                    if mtls > 0 && sa > 0 {
                        out.push((
                            "spec.requiredAuthenticationRefs".into(),
                            "a MeshTLSAuthentication and a ServiceAccount cannot both be required"
                                .into(),
                        ));
                    }
                    if net > 1 {
                        out.push((
                            "spec.requiredAuthenticationRefs".into(),
                            "at most one NetworkAuthentication".into(),
                        ));
                    }
                }
            }
        }
        Resource::MeshTlsAuthentication(m) => {
            match (&m.spec.identities, &m.spec.identity_refs) {
                (Some(_), Some(_)) => out.push((
                    "spec".into(),
                    "set exactly one of identities and identityRefs, not both".into(),
                )),
                (None, None) => out.push((
                    "spec".into(),
                    "set exactly one of identities and identityRefs".into(),
                )),
                (Some(ids), None) if ids.is_empty() => out.push((
                    "spec.identities".into(),
                    "must list at least one identity".into(),
                )),
                (None, Some(refs)) if refs.is_empty() => out.push((
                    "spec.identityRefs".into(),
                    "must list at least one reference".into(),
                )),
                _ => {}
            }
            for (i, id) in m.spec.identities.iter().flatten().enumerate() {
                if !identity_ok(id) {
                    out.push((format!("spec.identities[{i}]"), format!("{id:?} is not a valid identity: use a DNS-like name, *, *.suffix or spiffe://trust-domain/path")));
                }
            }
            for (i, r) in m.spec.identity_refs.iter().flatten().enumerate() {
                let at = format!("spec.identityRefs[{i}]");
                check_ref(r, &at, &mut out);
                match kind_of(r) {
                    k if k.eq_ignore_ascii_case("ServiceAccount") => {}
                    k if k.eq_ignore_ascii_case("Namespace") => {
                        if r.namespace.is_some() {
                            out.push((
                                format!("{at}.namespace"),
                                "must not be set on a Namespace reference".into(),
                            ));
                        }
                    }
                    "" => {}
                    k => out.push((
                        format!("{at}.kind"),
                        format!("{k} is not ServiceAccount or Namespace"),
                    )),
                }
            }
        }
        Resource::NetworkAuthentication(n) => match &n.spec.networks {
            None => out.push(("spec.networks".into(), "is required".into())),
            Some(nets) if nets.is_empty() => out.push((
                "spec.networks".into(),
                "must list at least one network".into(),
            )),
            Some(nets) => check_networks(nets, "spec.networks", &mut out),
        },
        Resource::ServerAuthorization(s) => {
            match &s.spec.server {
                None => out.push(("spec.server".into(), "is required".into())),
                Some(srv) => match (&srv.name, &srv.selector) {
                    (Some(_), Some(_)) | (None, None) => out.push((
                        "spec.server".into(),
                        "set exactly one of name and selector".into(),
                    )),
                    (None, Some(sel)) => check_selector(sel, "spec.server.selector", &mut out),
                    _ => {}
                },
            }
            match &s.spec.client {
                None => out.push(("spec.client".into(), "is required".into())),
                Some(c) => {
                    if let Some(nets) = &c.networks {
                        check_networks(nets, "spec.client.networks", &mut out);
                    }
                    if let Some(m) = &c.mesh_tls {
                        if c.unauthenticated == Some(true) {
                            out.push((
                                "spec.client".into(),
                                "meshTLS and unauthenticated: true exclude each other".into(),
                            ));
                        }
                        let has_ids = m.identities.as_ref().is_some_and(|v| !v.is_empty())
                            || m.service_accounts.as_ref().is_some_and(|v| !v.is_empty());
                        if m.unauthenticated_tls == Some(true) && has_ids {
                            out.push((
                                "spec.client.meshTLS".into(),
                                "unauthenticatedTLS excludes identities and serviceAccounts".into(),
                            ));
                        }
                        for (i, id) in m.identities.iter().flatten().enumerate() {
                            if !identity_ok(id) {
                                out.push((
                                    format!("spec.client.meshTLS.identities[{i}]"),
                                    format!("{id:?} is not a valid identity"),
                                ));
                            }
                        }
                    } else if c.unauthenticated != Some(true) {
                        out.push((
                            "spec.client".into(),
                            "set meshTLS or unauthenticated: true".into(),
                        ));
                    }
                }
            }
        }
        Resource::HttpRoute(route) => http_route(route, raw, &mut out),
        Resource::GrpcRoute(route) => grpc_route(route, raw, &mut out),
        Resource::TcpRoute(route) => l4_route(route, "TCPRoute", &mut out),
        Resource::TlsRoute(route) => l4_route(route, "TLSRoute", &mut out),
        Resource::EgressNetwork(e) => egress_network(e, &mut out),
        Resource::RateLimit(r) => rate_limit(r, &mut out),
        _ => {}
    }
    out
}

fn server(s: &Object<crate::resources::ServerSpec>, out: &mut Vec<Finding>) {
    let spec = &s.spec;
    match &spec.port {
        None => out.push(("spec.port".into(), "is required".into())),
        Some(Value::Number(n)) if n.as_u64().is_none_or(|p| p == 0 || p > 65535) => {
            out.push((
                "spec.port".into(),
                format!("{n} is not a port number (1-65535)"),
            ));
        }
        Some(Value::String(name)) if name.is_empty() => {
            out.push(("spec.port".into(), "a port name must not be empty".into()))
        }
        Some(Value::Number(_) | Value::String(_)) => {}
        Some(_) => out.push((
            "spec.port".into(),
            "must be a port number or a port name".into(),
        )),
    }
    if let Some(p) = &spec.proxy_protocol
        && !["unknown", "HTTP/1", "HTTP/2", "gRPC", "opaque", "TLS"].contains(&p.as_str())
    {
        out.push((
            "spec.proxyProtocol".into(),
            format!("{p:?} is not one of unknown, HTTP/1, HTTP/2, gRPC, opaque, TLS"),
        ));
    }
    match (&spec.pod_selector, &spec.external_workload_selector) {
        (Some(_), Some(_)) => out.push((
            "spec".into(),
            "set exactly one of podSelector and externalWorkloadSelector, not both".into(),
        )),
        (None, None) => out.push((
            "spec".into(),
            "set exactly one of podSelector and externalWorkloadSelector".into(),
        )),
        (Some(sel), None) => check_selector(sel, "spec.podSelector", out),
        (None, Some(sel)) => check_selector(sel, "spec.externalWorkloadSelector", out),
    }
    if let Some(a) = &spec.access_policy
        && DefaultPolicy::parse(a).is_none()
    {
        out.push((
            "spec.accessPolicy".into(),
            format!("Invalid 'accessPolicy' field: invalid mode: {a:?}"),
        ));
    }
}

fn duration_ok(s: &str) -> bool {
    static R: OnceLock<Regex> = OnceLock::new();
    s == "0" || re(&R, r"^[0-9]+(ms|s|m|h|d)$").is_match(s)
}

fn check_annotations(raw: &Value, grpc: bool, out: &mut Vec<Finding>) {
    let Some(ann) = raw["metadata"]["annotations"].as_object() else {
        return;
    };
    for (k, v) in ann {
        let v = v.as_str().unwrap_or_default();
        let at = format!("metadata.annotations[{k}]");
        match k.as_str() {
            "retry.linkerd.io/limit" if v.parse::<u16>().is_err() => {
                out.push((at, format!("{v:?} is not a whole number 0-65535")))
            }
            "retry.linkerd.io/timeout"
            | "timeout.linkerd.io/request"
            | "timeout.linkerd.io/response"
            | "timeout.linkerd.io/idle"
                if !duration_ok(v) =>
            {
                out.push((
                    at,
                    format!("{v:?} is not a duration (a whole number with ms, s, m, h or d; or 0)"),
                ));
            }
            "retry.linkerd.io/http" if !grpc => {
                for c in v.split(',').map(str::trim) {
                    let ok = c == "5xx" || c == "gateway-error" || status_or_range(c);
                    if !ok {
                        out.push((at.clone(), format!("{c:?} is not 5xx, gateway-error, a status code or a range a-b (100-599)")));
                    }
                }
            }
            "retry.linkerd.io/grpc" if grpc => {
                for c in v.split(',').map(str::trim) {
                    const CODES: [&str; 5] = [
                        "cancelled",
                        "deadline-exceeded",
                        "internal",
                        "resource-exhausted",
                        "unavailable",
                    ];
                    if !CODES.contains(&c.to_ascii_lowercase().as_str()) {
                        out.push((
                            at.clone(),
                            format!(
                                "{c:?} is not a retryable gRPC status ({})",
                                CODES.join(", ")
                            ),
                        ));
                    }
                }
            }
            _ => {}
        }
    }
}

fn status_or_range(c: &str) -> bool {
    let code = |s: &str| s.parse::<u16>().is_ok_and(|n| (100..=599).contains(&n));
    match c.split_once('-') {
        Some((a, b)) => code(a) && code(b) && a.parse::<u16>().ok() <= b.parse::<u16>().ok(),
        None => code(c),
    }
}

/// Linkerd's `is_egress_network`: the group must be given as `policy.linkerd.io` (a parent
/// without a group is not an EgressNetwork), both compared without regard to case.
fn is_egress_network(r: &Ref) -> bool {
    r.group
        .as_deref()
        .is_some_and(|g| g.eq_ignore_ascii_case("policy.linkerd.io"))
        && kind_of(r).eq_ignore_ascii_case("EgressNetwork")
}

/// Linkerd's `is_service`: no group, `""` or `core`, and kind `Service`, without regard to case.
fn is_service(r: &Ref) -> bool {
    let g = group_of(r);
    (g.is_empty() || g.eq_ignore_ascii_case("core")) && kind_of(r).eq_ignore_ascii_case("Service")
}

/// The parent rules every route kind shares; true when a Service or EgressNetwork is a parent
/// (Linkerd then reads the route's retry and timeout annotations).
fn parents(route: &Object<RouteSpec>, out: &mut Vec<Finding>) -> bool {
    let mut service_parent = false;
    for (i, p) in route.spec.parent_refs.iter().flatten().enumerate() {
        let at = format!("spec.parentRefs[{i}]");
        check_ref(p, &at, out);
        let egress = is_egress_network(p);
        if egress && p.port.is_none() {
            out.push((
                format!("{at}.port"),
                "cannot target an EgressNetwork without specifying a port".into(),
            ));
        }
        service_parent |= egress || is_service(p);
    }
    service_parent
}

/// TCPRoute and TLSRoute: Linkerd routes each connection by one rule only.
fn l4_route(route: &Object<RouteSpec>, kind: &str, out: &mut Vec<Finding>) {
    parents(route, out);
    let rules = route.spec.rules.as_deref().unwrap_or_default();
    if rules.len() != 1 {
        out.push((
            "spec.rules".into(),
            format!("{kind} supports a single rule only ({} given)", rules.len()),
        ));
    }
    if kind == "TLSRoute" {
        for (i, h) in route.spec.hostnames.iter().flatten().enumerate() {
            let bare = h.strip_prefix("*.").unwrap_or(h);
            if !mesh_model::is_dns_subdomain(bare) {
                out.push((
                    format!("spec.hostnames[{i}]"),
                    format!("{h:?} is not a hostname (a DNS name, optionally starting with *.)"),
                ));
            }
        }
    }
}

/// EgressNetwork: Linkerd's network rules; `trafficPolicy` is required by the CRD.
fn egress_network(e: &Object<crate::resources::EgressNetworkSpec>, out: &mut Vec<Finding>) {
    match e.spec.traffic_policy.as_deref() {
        None => out.push((
            "spec.trafficPolicy".into(),
            "is required (Allow or Deny)".into(),
        )),
        Some("Allow" | "Deny") => {}
        Some(p) => out.push((
            "spec.trafficPolicy".into(),
            format!("{p:?} is not Allow or Deny"),
        )),
    }
    match &e.spec.networks {
        // Absent: every network outside the cluster's (Linkerd fills in 0.0.0.0/0 and ::/0
        // minus clusterNetworks).
        None => {}
        Some(nets) if nets.is_empty() => out.push((
            "spec.networks".into(),
            "at least one network must be specified (or leave networks out for every network outside the cluster)".into(),
        )),
        Some(nets) => check_networks(nets, "spec.networks", out),
    }
}

/// A whole number of requests per second, as the CRD's `int64` and Linkerd's `u32` read it.
fn rps_of(v: Option<&Value>, at: &str, out: &mut Vec<Finding>) -> Option<u64> {
    match v {
        None => {
            out.push((at.to_owned(), "is required".into()));
            None
        }
        Some(Value::Number(n)) => match n.as_u64() {
            Some(0) => {
                out.push((at.to_owned(), "must be greater than 0".into()));
                None
            }
            Some(x) if x <= u64::from(u32::MAX) => Some(x),
            _ => {
                out.push((
                    at.to_owned(),
                    format!("{n} is not a whole number from 1 to {}", u32::MAX),
                ));
                None
            }
        },
        Some(other) => {
            out.push((
                at.to_owned(),
                format!("{other} is not a whole number of requests per second"),
            ));
            None
        }
    }
}

/// HTTPLocalRateLimitPolicy, in the order Linkerd's admission checks it.
fn rate_limit(r: &Object<crate::resources::RateLimitSpec>, out: &mut Vec<Finding>) {
    match &r.spec.target_ref {
        None => out.push(("spec.targetRef".into(), "is required".into())),
        Some(t) => {
            check_ref(t, "spec.targetRef", out);
            let (g, k) = (group_of(t), kind_of(t));
            let server =
                g.eq_ignore_ascii_case("policy.linkerd.io") && k.eq_ignore_ascii_case("Server");
            if !k.is_empty() && !server {
                let shown = if g.is_empty() {
                    k.to_owned()
                } else {
                    format!("{k}.{g}")
                };
                out.push((
                    "spec.targetRef".into(),
                    format!("invalid targetRef kind: {shown} (only a Server, group policy.linkerd.io, can be rate limited)"),
                ));
            }
        }
    }
    let total = r.spec.total.as_ref().and_then(|t| {
        rps_of(
            t.requests_per_second.as_ref(),
            "spec.total.requestsPerSecond",
            out,
        )
    });
    let identity = r.spec.identity.as_ref().and_then(|i| {
        rps_of(
            i.requests_per_second.as_ref(),
            "spec.identity.requestsPerSecond",
            out,
        )
    });
    if let (Some(t), Some(i)) = (total, identity)
        && i > t
    {
        out.push((
            "spec.identity.requestsPerSecond".into(),
            format!("must be less than or equal to total.requestsPerSecond ({i} > {t})"),
        ));
    }
    for (o, ov) in r.spec.overrides.iter().flatten().enumerate() {
        let at = format!("spec.overrides[{o}]");
        let rps = rps_of(
            ov.requests_per_second.as_ref(),
            &format!("{at}.requestsPerSecond"),
            out,
        );
        if let (Some(t), Some(x)) = (total, rps)
            && x > t
        {
            out.push((
                format!("{at}.requestsPerSecond"),
                format!("must be less than or equal to total.requestsPerSecond ({x} > {t})"),
            ));
        }
        match &ov.client_refs {
            None => out.push((format!("{at}.clientRefs"), "is required".into())),
            Some(refs) => {
                for (c, cr) in refs.iter().enumerate() {
                    let at = format!("{at}.clientRefs[{c}]");
                    check_ref(cr, &at, out);
                    let (g, k) = (group_of(cr), kind_of(cr));
                    if !k.is_empty()
                        && !((g.is_empty() || g.eq_ignore_ascii_case("core"))
                            && k.eq_ignore_ascii_case("ServiceAccount"))
                    {
                        out.push((
                            format!("{at}.kind"),
                            format!("overrides.clientRefs must target a ServiceAccount, not {k}"),
                        ));
                    }
                }
            }
        }
    }
}

fn headers(matches: &Value, at: &str, out: &mut Vec<Finding>) {
    static NAME: OnceLock<Regex> = OnceLock::new();
    for (h, header) in matches["headers"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let name = header["name"].as_str().unwrap_or_default();
        if !re(&NAME, r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$").is_match(name) {
            out.push((
                format!("{at}.headers[{h}].name"),
                format!("{name:?} is not a valid header name"),
            ));
        }
        let value = header["value"].as_str().unwrap_or_default();
        if value.chars().any(|c| c.is_control() && c != '\t') {
            out.push((
                format!("{at}.headers[{h}].value"),
                "contains control characters".into(),
            ));
        }
        if header["type"] == "RegularExpression" && Regex::new(value).is_err() {
            out.push((
                format!("{at}.headers[{h}].value"),
                format!("{value:?} is not a valid regular expression"),
            ));
        }
    }
}

fn http_route(route: &Object<RouteSpec>, raw: &Value, out: &mut Vec<Finding>) {
    let linkerd = route.api_version.starts_with("policy.linkerd.io/");
    if parents(route, out) {
        check_annotations(raw, false, out);
    }
    for (r, rule) in route.spec.rules.iter().flatten().enumerate() {
        for (m, mm) in rule.matches.iter().flatten().enumerate() {
            let at = format!("spec.rules[{r}].matches[{m}]");
            let path = &mm["path"];
            let value = path["value"].as_str().unwrap_or("/");
            match path["type"].as_str().unwrap_or("PathPrefix") {
                "Exact" | "PathPrefix" if !value.starts_with('/') => {
                    out.push((
                        format!("{at}.path.value"),
                        format!("{value:?} must start with /"),
                    ));
                }
                "RegularExpression" if Regex::new(value).is_err() => {
                    out.push((
                        format!("{at}.path.value"),
                        format!("{value:?} is not a valid regular expression"),
                    ));
                }
                "Exact" | "PathPrefix" | "RegularExpression" => {}
                t => out.push((
                    format!("{at}.path.type"),
                    format!("{t:?} is not Exact, PathPrefix or RegularExpression"),
                )),
            }
            headers(mm, &at, out);
        }
        for (f, filter) in rule.filters.iter().flatten().enumerate() {
            let at = format!("spec.rules[{r}].filters[{f}]");
            let redirect = &filter["requestRedirect"];
            if redirect.is_object() {
                let p = &redirect["path"];
                if p.is_object() {
                    let full = p["replaceFullPath"].as_str();
                    let prefix = p["replacePrefixMatch"].as_str();
                    match full.or(prefix) {
                        Some(v) if v.starts_with('/') => {}
                        _ => out.push((
                            format!("{at}.requestRedirect.path"),
                            "needs replaceFullPath or replacePrefixMatch starting with /".into(),
                        )),
                    }
                }
                if let Some(code) = redirect["statusCode"].as_u64()
                    && ![301, 302, 303, 307, 308].contains(&code)
                {
                    out.push((
                        format!("{at}.requestRedirect.statusCode"),
                        format!("{code} is not a redirect status (301, 302, 303, 307, 308)"),
                    ));
                }
            }
        }
        if linkerd && let Some(t) = &rule.timeouts {
            let parse = |k: &str| t.get(k).map(|v| (v.clone(), parse_go_duration(v)));
            for k in ["request", "backendRequest"] {
                if let Some((v, None)) = parse(k) {
                    out.push((
                        format!("spec.rules[{r}].timeouts.{k}"),
                        format!("{v:?} is not a duration that is 0 or more"),
                    ));
                }
            }
            if let (Some((_, Some(req))), Some((_, Some(backend)))) =
                (parse("request"), parse("backendRequest"))
                && req > 0.0
                && backend > req
            {
                out.push((
                    format!("spec.rules[{r}].timeouts.backendRequest"),
                    "must not be longer than timeouts.request".into(),
                ));
            }
        }
        if !linkerd {
            backends(rule, r, out);
        }
    }
}

/// Linkerd's backendRef rule for Gateway API routes: a Service backend (group absent, `""` or
/// `core`; kind absent or exactly `Service`) needs a non-zero port. Other kinds pass.
fn backends(rule: &crate::resources::RouteRule, r: usize, out: &mut Vec<Finding>) {
    for (b, backend) in rule.backend_refs.iter().flatten().enumerate() {
        let g = group_of(backend);
        let core = g.is_empty() || g.eq_ignore_ascii_case("core");
        let service = backend.kind.as_deref().is_none_or(|k| k == "Service");
        let port = backend.port.as_ref().and_then(Value::as_u64).unwrap_or(0);
        if core && service && port == 0 {
            out.push((
                format!("spec.rules[{r}].backendRefs[{b}].port"),
                "cannot reference a Service without a port (a Service backend needs a non-zero port)".into(),
            ));
        }
    }
}

fn grpc_route(route: &Object<RouteSpec>, raw: &Value, out: &mut Vec<Finding>) {
    if parents(route, out) {
        check_annotations(raw, true, out);
    }
    for (r, rule) in route.spec.rules.iter().flatten().enumerate() {
        for (m, mm) in rule.matches.iter().flatten().enumerate() {
            let at = format!("spec.rules[{r}].matches[{m}]");
            if mm["method"]["type"] == "RegularExpression" {
                out.push((
                    format!("{at}.method.type"),
                    "regular-expression method matches are not supported".into(),
                ));
            }
            headers(mm, &at, out);
        }
        backends(rule, r, out);
    }
}

/// Seconds of a Go/Gateway duration such as `10s`, `1m30s`, `500ms`; `None` when invalid or
/// negative.
pub fn parse_go_duration(s: &str) -> Option<f64> {
    if s == "0" {
        return Some(0.0);
    }
    static R: OnceLock<Regex> = OnceLock::new();
    let r = re(&R, r"^([0-9]+(\.[0-9]+)?(h|ms|m|s))+$");
    if !r.is_match(s) {
        return None;
    }
    static PART: OnceLock<Regex> = OnceLock::new();
    let part = re(&PART, r"([0-9]+(?:\.[0-9]+)?)(h|ms|m|s)");
    Some(
        part.captures_iter(s)
            .map(|c| {
                let n: f64 = c[1].parse().unwrap_or(0.0);
                n * match &c[2] {
                    "h" => 3600.0,
                    "m" => 60.0,
                    "ms" => 0.001,
                    _ => 1.0,
                }
            })
            .sum(),
    )
}

#[cfg(test)]
mod tests;
