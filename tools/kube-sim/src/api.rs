//! The HTTP API: authentication, impersonation, routing, authorization, and the handlers.

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::State as AxState,
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use tokio::sync::{Mutex, broadcast, mpsc};

use crate::{
    Config, RequestRecord,
    auth::{Tokens, UserInfo, service_account_groups},
    fields,
    rbac::{self, Attributes},
    resources::{Registry, Resource, crd_resource},
    schema,
    status::{ApiError, ApiResult},
    store::{Event, Key, Store},
};

/// Everything behind the lock.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) store: Store,
    pub(crate) registry: Registry,
    pub(crate) log: Vec<RequestRecord>,
}

/// The application shared by handlers.
#[derive(Debug)]
pub(crate) struct App {
    pub(crate) state: Mutex<State>,
    tokens: Arc<Tokens>,
    bookmark_interval: Duration,
}

/// The RBAC objects every cluster bootstraps: any authenticated user may read discovery and
/// review its own access (`system:discovery`, `system:basic-user`).
const BOOTSTRAP_RBAC: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:discovery"}
rules: [{nonResourceURLs: [/api, /api/*, /apis, /apis/*, /version, /openapi, /openapi/*], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:basic-user"}
rules: [{apiGroups: [authorization.k8s.io], resources: [selfsubjectaccessreviews, selfsubjectrulesreviews], verbs: [create]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:discovery"}
subjects: [{kind: Group, name: "system:authenticated", apiGroup: rbac.authorization.k8s.io}]
roleRef: {kind: ClusterRole, name: "system:discovery", apiGroup: rbac.authorization.k8s.io}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:basic-user"}
subjects: [{kind: Group, name: "system:authenticated", apiGroup: rbac.authorization.k8s.io}]
roleRef: {kind: ClusterRole, name: "system:basic-user", apiGroup: rbac.authorization.k8s.io}
"#;

impl App {
    pub(crate) fn new(tokens: Tokens, config: &Config) -> Self {
        let mut state = State {
            store: Store::new(config.history_limit),
            registry: Registry::default(),
            log: Vec::new(),
        };
        for doc in crate::seed::documents(BOOTSTRAP_RBAC).expect("bootstrap RBAC parses") {
            seed_create(&mut state, doc).expect("bootstrap RBAC is valid");
        }
        Self {
            state: Mutex::new(state),
            tokens: Arc::new(tokens),
            bookmark_interval: config.bookmark_interval,
        }
    }
}

pub(crate) fn router(app: Arc<App>) -> Router {
    Router::new().fallback(handle).with_state(app)
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// Query parameters (the last value wins, except `dryRun`, which only takes `All`).
#[derive(Debug, Default)]
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: Option<&str>) -> Self {
        Self(serde_urlencoded::from_str(raw.unwrap_or_default()).unwrap_or_default())
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(x, _)| x == k)
            .map(|(_, v)| v.as_str())
    }
    fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }
}

async fn handle(
    AxState(app): AxState<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let mut record = RequestRecord {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
        content_type: header("content-type"),
        impersonate_user: header("impersonate-user"),
        impersonate_groups: headers
            .get_all("impersonate-group")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect(),
        user: String::new(),
        effective_user: String::new(),
        code: 0,
        handling: std::time::Duration::ZERO,
    };
    let started = std::time::Instant::now();
    let response = match serve(&app, &method, &uri, &headers, body, &mut record).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    record.handling = started.elapsed();
    record.code = response.status().as_u16();
    tracing::debug!(method = %record.method, path = %record.path, code = record.code, user = %record.effective_user);
    app.state.lock().await.log.push(record);
    response
}

/// Where a resource request points.
struct Target {
    resource: Resource,
    version: String,
    namespace: String,
    name: String,
    subresource: String,
}

fn json_response(code: StatusCode, v: &Value, warnings: &[String]) -> Response {
    let mut r = (code, Json(v)).into_response();
    for w in warnings {
        if let Ok(h) = HeaderValue::from_str(&format!("299 - \"{}\"", w.replace('"', "'"))) {
            r.headers_mut().append(header::WARNING, h);
        }
    }
    r
}

async fn serve(
    app: &Arc<App>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
    record: &mut RequestRecord,
) -> ApiResult<Response> {
    // Authentication.
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let caller = token
        .and_then(|t| app.tokens.api_user(t))
        .cloned()
        .ok_or_else(ApiError::unauthorized)?;
    record.user = caller.name.clone();
    let query = Query::parse(uri.query());
    let mut st = app.state.lock().await;
    let user = impersonate(&st.store, &caller, headers)?;
    record.effective_user = user.name.clone();

    let path = uri.path().trim_end_matches('/');
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if let Some(r) = discovery(&st.registry, &segs, headers) {
        let attrs = Attributes {
            verb: "get".into(),
            path: uri.path().to_owned(),
            ..Attributes::default()
        };
        authorize(&st.store, &user, &attrs)?;
        return Ok(r);
    }
    let target = route(&st.registry, &segs).ok_or_else(|| ApiError::no_route(path))?;
    let is_watch = method == Method::GET && target.name.is_empty() && query.flag("watch");
    let verb = match (method.as_str(), target.name.is_empty()) {
        ("GET", true) if is_watch => "watch",
        ("GET", true) => "list",
        ("GET", false) => "get",
        ("POST", true) => "create",
        ("PUT", false) => "update",
        ("PATCH", false) => "patch",
        ("DELETE", false) => "delete",
        ("DELETE", true) => "deletecollection",
        (m, _) => {
            return Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({m})"
            )));
        }
    };
    let attrs = Attributes {
        verb: verb.into(),
        group: target.resource.group.clone(),
        resource: target.resource.plural.clone(),
        subresource: target.subresource.clone(),
        namespace: target.namespace.clone(),
        name: target.name.clone(),
        path: String::new(),
    };
    authorize(&st.store, &user, &attrs)?;
    if !target.resource.verbs.contains(&verb) {
        return Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({verb} {})",
            target.resource.qualified()
        )));
    }

    let ctx = Ctx {
        content_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        dry_run: query.get("dryRun") == Some("All"),
        manager: query
            .get("fieldManager")
            .map(str::to_owned)
            .unwrap_or_else(|| default_manager(headers)),
        field_validation: query.get("fieldValidation").unwrap_or("Warn").to_owned(),
        user: user.clone(),
        tokens: app.tokens.clone(),
    };
    match verb {
        "watch" => {
            let resp = watch(app, &mut st, &target, &query);
            drop(st);
            resp
        }
        "list" => list(&st, &target, &query),
        "get" => {
            let obj = get(&st, &target)?;
            Ok(json_response(StatusCode::OK, &obj, &[]))
        }
        "create" => create(&mut st, &target, &ctx, &body),
        "update" => update(&mut st, &target, &ctx, &body),
        "patch" => {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            patch(&mut st, &target, &ctx, ct, &query, &body)
        }
        "delete" => delete(&mut st, &target, &ctx, &body),
        _ => delete_collection(&mut st, &target, &ctx, &query),
    }
}

fn default_manager(headers: &HeaderMap) -> String {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|ua| ua.split('/').next())
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown")
        .to_owned()
}

fn authorize(store: &Store, user: &UserInfo, a: &Attributes) -> ApiResult<()> {
    if rbac::allowed(store, user, a) {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            rbac::forbidden_message(&user.name, a),
            &a.name,
            &a.group,
            &a.resource,
        ))
    }
}

/// Applies `Impersonate-*` headers after checking the caller may impersonate each of them.
fn impersonate(store: &Store, caller: &UserInfo, headers: &HeaderMap) -> ApiResult<UserInfo> {
    let user = headers
        .get("impersonate-user")
        .and_then(|v| v.to_str().ok());
    let groups: Vec<String> = headers
        .get_all("impersonate-group")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    let Some(user) = user else {
        if groups.is_empty() {
            return Ok(caller.clone());
        }
        return Err(ApiError::internal(format!(
            "requested {groups:?} without impersonating a user"
        )));
    };
    let check = |resource: &str, name: &str, namespace: &str| {
        let a = Attributes {
            verb: "impersonate".into(),
            resource: resource.into(),
            name: name.into(),
            namespace: namespace.into(),
            ..Attributes::default()
        };
        authorize(store, caller, &a)
    };
    match user
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split_once(':'))
    {
        Some((ns, name)) => check("serviceaccounts", name, ns)?,
        None => check("users", user, "")?,
    }
    for g in &groups {
        check("groups", g, "")?;
    }
    if let Some(uid) = headers.get("impersonate-uid").and_then(|v| v.to_str().ok()) {
        let a = Attributes {
            verb: "impersonate".into(),
            group: "authentication.k8s.io".into(),
            resource: "uids".into(),
            name: uid.into(),
            ..Attributes::default()
        };
        authorize(store, caller, &a)?;
    }
    let mut all = groups;
    all.extend(service_account_groups(user));
    all.push("system:authenticated".into());
    Ok(UserInfo {
        name: user.to_owned(),
        uid: String::new(),
        groups: all,
    })
}

// === Discovery ===

fn discovery(reg: &Registry, segs: &[&str], _headers: &HeaderMap) -> Option<Response> {
    let ok = |v: Value| Some(json_response(StatusCode::OK, &v, &[]));
    let groups = reg.groups();
    let resources = |group: &str, version: &str| -> Value {
        let list: Vec<Value> = reg
            .all()
            .iter()
            .filter(|r| r.group == group && r.versions.iter().any(|v| v == version))
            .map(Resource::discovery)
            .collect();
        let gv = if group.is_empty() {
            version.to_owned()
        } else {
            format!("{group}/{version}")
        };
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list})
    };
    let group_json = |name: &str, versions: &[&str]| {
        let vs: Vec<Value> = versions
            .iter()
            .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
            .collect();
        json!({"kind": "APIGroup", "apiVersion": "v1", "name": name, "versions": vs, "preferredVersion": vs[0]})
    };
    match segs {
        ["version"] => ok(json!({
            "major": "1", "minor": "33", "gitVersion": "v1.33.0+kube-sim", "gitCommit": "",
            "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24",
            "compiler": "gc", "platform": "linux/amd64",
        })),
        ["api"] => {
            ok(json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}))
        }
        ["api", "v1"] => ok(resources("", "v1")),
        ["apis"] => ok(json!({
            "kind": "APIGroupList", "apiVersion": "v1",
            "groups": groups.iter().filter(|(g, _)| !g.is_empty()).map(|(g, vs)| group_json(g, vs)).collect::<Vec<_>>(),
        })),
        ["apis", g] => groups
            .get(g)
            .map(|vs| json_response(StatusCode::OK, &group_json(g, vs), &[])),
        ["apis", g, v] if groups.get(g).is_some_and(|vs| vs.contains(v)) => ok(resources(g, v)),
        _ => None,
    }
}

fn route(reg: &Registry, segs: &[&str]) -> Option<Target> {
    let (group, version, rest) = match segs {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let find = |plural: &str| reg.find(group, version, plural).cloned();
    let target = |resource: Resource, namespace: &str, name: &str, sub: &str| Target {
        resource,
        version: version.to_owned(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        subresource: sub.to_owned(),
    };
    match rest {
        ["namespaces", ns, plural, tail @ ..] if find(plural).is_some_and(|r| r.namespaced) => {
            let r = find(plural)?;
            match tail {
                [] => Some(target(r, ns, "", "")),
                [name] => Some(target(r, ns, name, "")),
                [name, sub] => Some(target(r, ns, name, sub)),
                _ => None,
            }
        }
        [plural] => Some(target(find(plural)?, "", "", "")),
        [plural, name] => find(plural)
            .filter(|r| !r.namespaced)
            .map(|r| target(r, "", name, "")),
        [plural, name, sub] => find(plural)
            .filter(|r| !r.namespaced)
            .map(|r| target(r, "", name, sub)),
        _ => None,
    }
}

// === Reads ===

fn key(t: &Target, name: &str) -> Key {
    Key {
        group: t.resource.group.clone(),
        plural: t.resource.plural.clone(),
        namespace: t.namespace.clone(),
        name: name.to_owned(),
    }
}

/// The object as served in the requested version.
fn served(t: &Target, obj: &Value) -> Value {
    let mut o = obj.clone();
    o["apiVersion"] = json!(t.resource.group_version(&t.version));
    o["kind"] = json!(t.resource.kind);
    o
}

fn get(st: &State, t: &Target) -> ApiResult<Value> {
    st.store
        .get(&key(t, &t.name))
        .map(|o| served(t, o))
        .ok_or_else(|| ApiError::not_found(&t.resource, &t.name))
}

/// Label and field selectors of a list or watch.
struct Selector {
    labels: Vec<(String, String, Vec<String>)>,
    fields: Vec<(String, bool, String)>,
}

impl Selector {
    fn parse(q: &Query) -> ApiResult<Self> {
        let mut labels = Vec::new();
        for req in split_top(q.get("labelSelector").unwrap_or_default()) {
            let req = req.trim();
            if req.is_empty() {
                continue;
            }
            let parsed = if let Some((k, v)) = req.split_once("!=") {
                (
                    k.trim().to_owned(),
                    "!=".to_owned(),
                    vec![v.trim().to_owned()],
                )
            } else if let Some((k, v)) = req.split_once("==").or_else(|| req.split_once('=')) {
                (
                    k.trim().to_owned(),
                    "=".to_owned(),
                    vec![v.trim().to_owned()],
                )
            } else if let Some((k, rest)) =
                req.split_once(" notin ").or_else(|| req.split_once(" in "))
            {
                let op = if req.contains(" notin ") {
                    "notin"
                } else {
                    "in"
                };
                let values = rest
                    .trim()
                    .trim_start_matches('(')
                    .trim_end_matches(')')
                    .split(',')
                    .map(|v| v.trim().to_owned())
                    .collect();
                (k.trim().to_owned(), op.to_owned(), values)
            } else if let Some(k) = req.strip_prefix('!') {
                (k.trim().to_owned(), "!".to_owned(), Vec::new())
            } else {
                (req.to_owned(), "exists".to_owned(), Vec::new())
            };
            labels.push(parsed);
        }
        let mut fields = Vec::new();
        for req in q
            .get("fieldSelector")
            .unwrap_or_default()
            .split(',')
            .filter(|r| !r.is_empty())
        {
            let (k, eq, v) = if let Some((k, v)) = req.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = req.split_once("==").or_else(|| req.split_once('=')) {
                (k, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid field selector: {req}"
                )));
            };
            if !matches!(k, "metadata.name" | "metadata.namespace") {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {k}"
                )));
            }
            fields.push((k.to_owned(), eq, v.to_owned()));
        }
        Ok(Self { labels, fields })
    }

    fn matches(&self, obj: &Value) -> bool {
        let meta = &obj["metadata"];
        let label = |k: &str| meta["labels"][k].as_str();
        self.labels.iter().all(|(k, op, vs)| match op.as_str() {
            "=" => label(k) == Some(vs[0].as_str()),
            "!=" => label(k) != Some(vs[0].as_str()),
            "in" => label(k).is_some_and(|v| vs.iter().any(|x| x == v)),
            "notin" => label(k).is_none_or(|v| !vs.iter().any(|x| x == v)),
            "!" => label(k).is_none(),
            _ => label(k).is_some(),
        }) && self.fields.iter().all(|(k, eq, v)| {
            let actual = meta[k.trim_start_matches("metadata.")]
                .as_str()
                .unwrap_or_default();
            (actual == v) == *eq
        })
    }
}

/// Splits on commas outside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn list(st: &State, t: &Target, q: &Query) -> ApiResult<Response> {
    let sel = Selector::parse(q)?;
    let ns = (!t.namespace.is_empty()).then_some(t.namespace.as_str());
    let items: Vec<Value> = st
        .store
        .list(&t.resource.group, &t.resource.plural, ns)
        .filter(|(_, o)| sel.matches(o))
        .map(|(_, o)| served(t, o))
        .collect();
    let v = json!({
        "kind": format!("{}List", t.resource.kind),
        "apiVersion": t.resource.group_version(&t.version),
        "metadata": {"resourceVersion": st.store.rv().to_string()},
        "items": items,
    });
    Ok(json_response(StatusCode::OK, &v, &[]))
}

// === Watch ===

fn line(kind: &str, object: &Value) -> Bytes {
    let mut s = serde_json::to_string(&json!({"type": kind, "object": object})).expect("JSON");
    s.push('\n');
    Bytes::from(s)
}

/// What a watcher of `t` with `sel` sees of an event, if anything.
fn translate(t: &Target, sel: &Selector, e: &Event) -> Option<(&'static str, Value)> {
    if e.key.group != t.resource.group
        || e.key.plural != t.resource.plural
        || (!t.namespace.is_empty() && e.key.namespace != t.namespace)
    {
        return None;
    }
    let now = sel.matches(&e.object);
    let before = e.previous.as_ref().is_some_and(|p| sel.matches(p));
    let kind = match (e.kind, before, now) {
        ("ADDED", _, true) => "ADDED",
        ("MODIFIED", true, true) => "MODIFIED",
        ("MODIFIED", false, true) => "ADDED",
        ("MODIFIED", true, false) => "DELETED",
        ("DELETED", _, true) => "DELETED",
        _ => return None,
    };
    Some((kind, served(t, &e.object)))
}

fn watch(app: &Arc<App>, st: &mut State, t: &Target, q: &Query) -> ApiResult<Response> {
    let sel = Selector::parse(q)?;
    let rv_param = q.get("resourceVersion").unwrap_or_default();
    let bookmarks = q.flag("allowWatchBookmarks");
    let send_initial = q.flag("sendInitialEvents");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let mut first: Vec<Bytes> = Vec::new();
    let current = st.store.rv();
    let rx = st.store.subscribe();
    let gv = t.resource.group_version(&t.version);
    let bookmark = move |rv: u64, initial_end: bool| {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        json!({"kind": "", "apiVersion": "", "metadata": meta})
    };

    if rv_param.is_empty() || rv_param == "0" || send_initial {
        let ns = (!t.namespace.is_empty()).then_some(t.namespace.as_str());
        for (_, o) in st.store.list(&t.resource.group, &t.resource.plural, ns) {
            if sel.matches(o) {
                first.push(line("ADDED", &served(t, o)));
            }
        }
        if send_initial {
            let mut b = bookmark(current, true);
            b["kind"] = json!(t.resource.kind);
            b["apiVersion"] = json!(gv);
            first.push(line("BOOKMARK", &b));
        }
    } else {
        let from: u64 = rv_param
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv_param}")))?;
        if from < st.store.compacted() {
            let e = ApiError::expired(format!(
                "too old resource version: {from} ({})",
                st.store.compacted() + 1
            ));
            first.push(line("ERROR", &e.body()));
            return Ok(stream_response(first, None));
        }
        for e in st.store.since(from) {
            if let Some((kind, obj)) = translate(t, &sel, &e) {
                first.push(line(kind, &obj));
            }
        }
    }

    let (tx, out) = mpsc::channel::<Bytes>(256);
    let t = Target {
        resource: t.resource.clone(),
        version: t.version.clone(),
        namespace: t.namespace.clone(),
        name: String::new(),
        subresource: String::new(),
    };
    let interval = app.bookmark_interval;
    tokio::spawn(async move {
        let mut rx = rx;
        let mut last = current;
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(interval);
        tick.tick().await;
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Ok(e) => {
                        if e.rv <= last {
                            continue;
                        }
                        last = e.rv;
                        if let Some((kind, obj)) = translate(&t, &sel, &e)
                            && tx.send(line(kind, &obj)).await.is_err()
                        {
                            break;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let e = ApiError::expired("watch fell behind; resume from a newer resource version");
                        let _ = tx.send(line("ERROR", &e.body())).await;
                        break;
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = tick.tick(), if bookmarks => {
                    let mut b = bookmark(last, false);
                    b["kind"] = json!(t.resource.kind);
                    b["apiVersion"] = json!(t.resource.group_version(&t.version));
                    if tx.send(line("BOOKMARK", &b)).await.is_err() {
                        break;
                    }
                }
                () = &mut deadline => break,
                () = tx.closed() => break,
            }
        }
    });
    Ok(stream_response(first, Some(out)))
}

fn stream_response(first: Vec<Bytes>, rest: Option<mpsc::Receiver<Bytes>>) -> Response {
    let head = futures_util::stream::iter(first.into_iter().map(Ok::<_, Infallible>));
    let tail = futures_util::stream::unfold(rest, |rx| async move {
        let mut rx = rx?;
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), Some(rx)))
    });
    let body = Body::from_stream(futures_util::StreamExt::chain(head, tail));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::TRANSFER_ENCODING, "chunked")
        .body(body)
        .expect("static response parts")
}

// === Writes ===

struct Ctx {
    content_type: String,
    dry_run: bool,
    manager: String,
    field_validation: String,
    user: UserInfo,
    tokens: Arc<Tokens>,
}

/// A create or update body: JSON, YAML, or the protobuf that kubectl's typed clients send.
fn parse_body(ctx: &Ctx, body: &[u8]) -> ApiResult<Value> {
    let ct = ctx
        .content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim();
    match ct {
        "application/vnd.kubernetes.protobuf" => {
            crate::protobuf::decode(body).map_err(ApiError::unsupported_media)
        }
        "application/yaml" => serde_yaml_ng::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body of the request could not be decoded as YAML: {e}"
            ))
        }),
        _ => parse_json(body),
    }
}

fn parse_json(body: &[u8]) -> ApiResult<Value> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body of the request could not be decoded as JSON: {e}"
        ))
    })
}

/// 422 for one invalid field of an object of `t`'s kind.
fn invalid_field(t: &Target, name: &str, field: &str, message: String) -> ApiError {
    ApiError::invalid(
        &t.resource.kind,
        &t.resource.group,
        name,
        &[("FieldValueInvalid".into(), field.into(), message)],
    )
}

/// Checks and normalises an object about to be stored; returns warnings.
fn prepare(
    st: &State,
    t: &Target,
    ctx: &Ctx,
    obj: &mut Value,
    url_name: Option<&str>,
) -> ApiResult<Vec<String>> {
    identify(st, t, obj, url_name)?;
    validate(t, ctx, obj)
}

/// Checks and fills what names an object: apiVersion, kind, namespace and name.
fn identify(st: &State, t: &Target, obj: &mut Value, url_name: Option<&str>) -> ApiResult<()> {
    if !obj.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    let want_gv = t.resource.group_version(&t.version);
    match obj["apiVersion"].as_str() {
        Some(gv) if gv != want_gv => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({gv}) does not match the expected API version ({want_gv})"
            )));
        }
        Some(_) => {}
        None => obj["apiVersion"] = json!(want_gv),
    }
    match obj["kind"].as_str() {
        Some(k) if k != t.resource.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                t.resource.kind
            )));
        }
        Some(_) => {}
        None => obj["kind"] = json!(t.resource.kind),
    }
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    let meta = obj["metadata"]
        .as_object_mut()
        .expect("just made an object");
    if t.resource.namespaced {
        match meta.get("namespace").and_then(Value::as_str) {
            Some(ns) if !ns.is_empty() && ns != t.namespace => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => {
                meta.insert("namespace".into(), json!(t.namespace));
            }
        }
    } else {
        meta.remove("namespace");
    }
    let name = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if let Some(u) = url_name
        && u != name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({name}) does not match the name on the URL ({u})"
        )));
    }
    let kind = t.resource.kind.clone();
    if name.is_empty() {
        return Err(ApiError::invalid(
            &kind,
            &t.resource.group,
            "",
            &[(
                "FieldValueRequired".into(),
                "metadata.name".into(),
                "Required value: name or generateName is required".into(),
            )],
        ));
    }
    // RBAC objects take path-segment names (`system:basic-user`); everything else here a
    // DNS subdomain.
    let rbac_name = t.resource.group == "rbac.authorization.k8s.io"
        && !name.contains(['/', '%'])
        && name != "."
        && name != "..";
    if !rbac_name && !mesh_model::is_dns_subdomain(&name) {
        return Err(invalid_field(
            t,
            &name,
            "metadata.name",
            format!(
                "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case \
                 alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
            ),
        ));
    }
    if t.resource.namespaced && !t.namespace.is_empty() {
        let ns_key = Key {
            group: String::new(),
            plural: "namespaces".into(),
            namespace: String::new(),
            name: t.namespace.clone(),
        };
        if st.store.get(&ns_key).is_none() {
            return Err(ApiError::not_found(
                st.registry.find("", "v1", "namespaces").expect("built in"),
                &t.namespace,
            ));
        }
    }
    Ok(())
}

/// Validates a whole object against its schema (custom resources) or CRD rules; returns warnings.
fn validate(t: &Target, ctx: &Ctx, obj: &mut Value) -> ApiResult<Vec<String>> {
    let kind = t.resource.kind.clone();
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut warnings = Vec::new();
    if let Some(schema) = t.resource.schemas.get(&t.version) {
        let prune = ctx.field_validation != "Strict";
        let f = schema::validate_object(schema, obj, prune);
        if ctx.field_validation == "Strict" && !f.unknown.is_empty() {
            let list: Vec<String> = f
                .unknown
                .iter()
                .map(|u| format!("unknown field \"{u}\""))
                .collect();
            return Err(ApiError::bad_request(format!(
                "strict decoding error: {}",
                list.join(", ")
            )));
        }
        if ctx.field_validation == "Warn" {
            warnings.extend(f.unknown.iter().map(|u| format!("unknown field \"{u}\"")));
        }
        if !f.causes.is_empty() {
            return Err(ApiError::invalid(
                &kind,
                &t.resource.group,
                &name,
                &f.causes,
            ));
        }
    }
    if t.resource.plural == "customresourcedefinitions" {
        let r = crd_resource(obj).map_err(|e| invalid_field(t, &name, "spec", e))?;
        let want = format!("{}.{}", r.plural, r.group);
        if name != want {
            return Err(invalid_field(
                t,
                &name,
                "metadata.name",
                format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
            ));
        }
        obj["status"] = json!({
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now()},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now()},
            ],
            "acceptedNames": obj["spec"]["names"].clone(),
            "storedVersions": [r.versions[0].clone()],
        });
    }
    Ok(warnings)
}

/// Stores (unless dry-run) and runs side effects of writing `obj`.
fn commit(st: &mut State, t: &Target, ctx: &Ctx, name: &str, obj: Value) -> Value {
    if ctx.dry_run {
        return served(t, &obj);
    }
    let stored = st.store.put(key(t, name), obj);
    if t.resource.plural == "customresourcedefinitions"
        && let Err(e) = st.registry.register_crd(&stored)
    {
        tracing::warn!(%e, "CRD stored but not served");
    }
    served(t, &stored)
}

/// Everything but metadata and status, to tell whether `generation` moves.
fn spec_part(o: &Value) -> Value {
    let mut c = o.clone();
    if let Some(m) = c.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    c
}

fn stamp(old: Option<&Value>, obj: &mut Value) {
    let meta = &mut obj["metadata"];
    match old {
        Some(o) => {
            meta["uid"] = o["metadata"]["uid"].clone();
            meta["creationTimestamp"] = o["metadata"]["creationTimestamp"].clone();
            let gen_ = o["metadata"]["generation"].as_u64().unwrap_or(1);
            let moved = spec_part(o) != spec_part(obj);
            obj["metadata"]["generation"] = json!(if moved { gen_ + 1 } else { gen_ });
        }
        None => {
            meta["uid"] = json!(uid());
            meta["creationTimestamp"] = json!(now());
            meta["generation"] = json!(1);
            if let Some(m) = meta.as_object_mut() {
                m.remove("resourceVersion");
            }
        }
    }
}

fn uid() -> String {
    let b: [u8; 16] = rand::random();
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-4{:x}{:02x}-{:x}{:x}{:02x}-{}",
        b[0],
        b[1],
        b[2],
        b[3],
        b[4],
        b[5],
        b[6] & 0xf,
        b[7],
        8 | (b[8] & 3),
        b[8] >> 4,
        b[9],
        b[10..16]
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
    )
}

fn random_suffix() -> String {
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHA[rand::random_range(0..ALPHA.len())] as char)
        .collect()
}

fn special_create(st: &State, t: &Target, ctx: &Ctx, body: &Value) -> Option<ApiResult<Value>> {
    let mut out = body.clone();
    out["apiVersion"] = json!(t.resource.group_version(&t.version));
    out["kind"] = json!(t.resource.kind);
    match t.resource.plural.as_str() {
        "subjectaccessreviews" | "selfsubjectaccessreviews" => {
            let spec = &body["spec"];
            let who = if t.resource.plural == "subjectaccessreviews" {
                let mut groups: Vec<String> = spec["groups"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|g| g.as_str().map(str::to_owned))
                    .collect();
                let name = spec["user"].as_str().unwrap_or_default().to_owned();
                groups.extend(service_account_groups(&name));
                UserInfo {
                    name,
                    uid: spec["uid"].as_str().unwrap_or_default().to_owned(),
                    groups,
                }
            } else {
                ctx.user.clone()
            };
            let ra = &spec["resourceAttributes"];
            let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            let attrs = if ra.is_object() {
                Attributes {
                    verb: s(&ra["verb"]),
                    group: s(&ra["group"]),
                    resource: s(&ra["resource"]),
                    subresource: s(&ra["subresource"]),
                    namespace: s(&ra["namespace"]),
                    name: s(&ra["name"]),
                    path: String::new(),
                }
            } else {
                let nra = &spec["nonResourceAttributes"];
                Attributes {
                    verb: s(&nra["verb"]),
                    path: s(&nra["path"]),
                    ..Attributes::default()
                }
            };
            let allowed = rbac::allowed(&st.store, &who, &attrs);
            out["status"] = if allowed {
                json!({"allowed": true, "reason": "RBAC: allowed by a binding"})
            } else {
                json!({"allowed": false})
            };
            Some(Ok(out))
        }
        "tokenreviews" => {
            let token = body["spec"]["token"].as_str().unwrap_or_default();
            // As the API server: the answer's audiences are the wanted ones the token is valid
            // for (its own when none are asked); none in common is a refusal.
            let own = ctx.tokens.audiences(token);
            let wanted: Vec<String> = body["spec"]["audiences"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect();
            let audiences: Vec<String> = if wanted.is_empty() {
                own.clone()
            } else {
                wanted.iter().filter(|a| own.contains(a)).cloned().collect()
            };
            out["status"] = match ctx.tokens.user(token) {
                Some(u) if !audiences.is_empty() => json!({
                    "authenticated": true, "audiences": audiences,
                    "user": {"username": u.name, "uid": u.uid, "groups": u.groups}
                }),
                Some(_) => json!({"authenticated": false,
                    "error": format!("token audiences {own:?} is invalid for the target audiences {wanted:?}")}),
                None => json!({"authenticated": false, "error": "invalid bearer token"}),
            };
            Some(Ok(out))
        }
        _ => None,
    }
}

fn create(st: &mut State, t: &Target, ctx: &Ctx, body: &[u8]) -> ApiResult<Response> {
    let mut obj = parse_body(ctx, body)?;
    if let Some(r) = special_create(st, t, ctx, &obj) {
        return r.map(|v| json_response(StatusCode::CREATED, &v, &[]));
    }
    if obj["metadata"]["name"].as_str().is_none_or(str::is_empty)
        && let Some(prefix) = obj["metadata"]["generateName"].as_str()
    {
        obj["metadata"]["name"] = json!(format!("{prefix}{}", random_suffix()));
    }
    let (out, warnings) = insert_new(st, t, ctx, obj)?;
    Ok(json_response(StatusCode::CREATED, &out, &warnings))
}

/// Validates, stamps and stores a new object (the shared end of POST and of seeding).
fn insert_new(
    st: &mut State,
    t: &Target,
    ctx: &Ctx,
    mut obj: Value,
) -> ApiResult<(Value, Vec<String>)> {
    let warnings = prepare(st, t, ctx, &mut obj, None)?;
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if st.store.get(&key(t, &name)).is_some() {
        return Err(ApiError::already_exists(&t.resource, &name));
    }
    stamp(None, &mut obj);
    fields::record_update(
        None,
        &mut obj,
        &ctx.manager,
        &t.resource,
        &t.version,
        &now(),
    );
    Ok((commit(st, t, ctx, &name, obj), warnings))
}

fn update(st: &mut State, t: &Target, ctx: &Ctx, body: &[u8]) -> ApiResult<Response> {
    let mut obj = parse_body(ctx, body)?;
    let old = st
        .store
        .get(&key(t, &t.name))
        .cloned()
        .ok_or_else(|| ApiError::not_found(&t.resource, &t.name))?;
    if let Some(rv) = obj["metadata"]["resourceVersion"].as_str()
        && !rv.is_empty()
        && Some(rv) != old["metadata"]["resourceVersion"].as_str()
    {
        return Err(ApiError::stale(&t.resource, &t.name));
    }
    if t.subresource == "status" {
        let mut merged = old.clone();
        merged["status"] = obj["status"].clone();
        obj = merged;
    }
    let warnings = prepare(st, t, ctx, &mut obj, Some(&t.name))?;
    stamp(Some(&old), &mut obj);
    fields::record_update(
        Some(&old),
        &mut obj,
        &ctx.manager,
        &t.resource,
        &t.version,
        &now(),
    );
    let out = commit(st, t, ctx, &t.name, obj);
    Ok(json_response(StatusCode::OK, &out, &warnings))
}

const PATCH_TYPES: &str =
    "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml";

fn patch(
    st: &mut State,
    t: &Target,
    ctx: &Ctx,
    content_type: &str,
    q: &Query,
    body: &[u8],
) -> ApiResult<Response> {
    let ct = content_type.split(';').next().unwrap_or_default().trim();
    let old = st.store.get(&key(t, &t.name)).cloned();
    let now = now();
    let mut obj = match ct {
        "application/apply-patch+yaml" | "application/apply-patch+json" => {
            let Some(manager) = q.get("fieldManager").filter(|m| !m.is_empty()) else {
                return Err(ApiError::invalid(
                    "PatchOptions",
                    "meta.k8s.io",
                    "",
                    &[(
                        "FieldValueRequired".into(),
                        "fieldManager".into(),
                        "Required value: is required for apply patch".into(),
                    )],
                ));
            };
            let text = std::str::from_utf8(body)
                .map_err(|_| ApiError::bad_request("apply patch is not UTF-8"))?;
            let mut applied: Value = serde_yaml_ng::from_str(text)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
            let Some(meta) = applied.get_mut("metadata").and_then(Value::as_object_mut) else {
                return Err(ApiError::bad_request("apply patch needs metadata.name"));
            };
            meta.remove("managedFields");
            // A resourceVersion in an applied configuration is a precondition, as for updates.
            if let Some(rv) = meta.remove("resourceVersion")
                && rv.as_str().is_some_and(|rv| !rv.is_empty())
                && old
                    .as_ref()
                    .and_then(|o| o["metadata"]["resourceVersion"].as_str())
                    != rv.as_str()
            {
                return Err(ApiError::stale(&t.resource, &t.name));
            }
            // An applied configuration may be partial (others may own required fields): only
            // its identity is checked here; the merged object is validated below.
            identify(st, t, &mut applied, Some(&t.name))?;
            if old.is_none() {
                authorize(
                    &st.store,
                    &ctx.user,
                    &Attributes {
                        verb: "create".into(),
                        group: t.resource.group.clone(),
                        resource: t.resource.plural.clone(),
                        namespace: t.namespace.clone(),
                        name: t.name.clone(),
                        ..Attributes::default()
                    },
                )?;
            }
            let force = q.flag("force");
            let done = fields::apply(
                old.as_ref(),
                &applied,
                manager,
                force,
                &t.resource,
                &t.version,
                &now,
            );
            if !done.conflicts.is_empty() {
                let (message, causes) = fields::conflict_message(&done.conflicts);
                return Err(ApiError::apply_conflict(causes, message));
            }
            done.object
        }
        "application/merge-patch+json"
        | "application/json-patch+json"
        | "application/strategic-merge-patch+json" => {
            let mut doc = old
                .clone()
                .ok_or_else(|| ApiError::not_found(&t.resource, &t.name))?;
            let p = parse_json(body)?;
            if ct == "application/json-patch+json" {
                let ops: json_patch::Patch = serde_json::from_value(p)
                    .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
                json_patch::patch(&mut doc, &ops).map_err(|e| {
                    ApiError::invalid(&t.resource.kind, &t.resource.group, &t.name, &[(
                        "FieldValueInvalid".into(),
                        String::new(),
                        format!("the server rejected our request due to an error in our request: {e}"),
                    )])
                })?;
            } else {
                if ct == "application/strategic-merge-patch+json" && t.resource.is_custom() {
                    return Err(ApiError::unsupported_media(format!(
                        "the body of the request was in an unknown format - accepted media types include: {PATCH_TYPES}"
                    )));
                }
                // Strategic merge on built-in kinds is approximated by a JSON merge patch.
                if let Some(rv) = p["metadata"]["resourceVersion"].as_str()
                    && Some(rv) != doc["metadata"]["resourceVersion"].as_str()
                {
                    return Err(ApiError::stale(&t.resource, &t.name));
                }
                json_patch::merge(&mut doc, &p);
            }
            doc
        }
        other => {
            return Err(ApiError::unsupported_media(format!(
                "the body of the request was in an unknown format ({other}) - accepted media types include: {PATCH_TYPES}"
            )));
        }
    };
    let warnings = prepare(st, t, ctx, &mut obj, Some(&t.name))?;
    stamp(old.as_ref(), &mut obj);
    if !ct.starts_with("application/apply-patch") {
        fields::record_update(
            old.as_ref(),
            &mut obj,
            &ctx.manager,
            &t.resource,
            &t.version,
            &now,
        );
    }
    let code = if old.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let out = commit(st, t, ctx, &t.name, obj);
    Ok(json_response(code, &out, &warnings))
}

fn remove(st: &mut State, t: &Target, name: &str) -> Option<Value> {
    let removed = st.store.delete(&key(t, name))?;
    // Deleting a CRD deletes its objects; deleting a namespace deletes what is in it.
    if t.resource.plural == "customresourcedefinitions"
        && let Ok(r) = crd_resource(&removed)
    {
        let keys: Vec<Key> = st
            .store
            .list(&r.group, &r.plural, None)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            st.store.delete(&k);
        }
        st.registry.unregister_crd(&removed);
    }
    if t.resource.plural == "namespaces" && t.resource.group.is_empty() {
        let keys: Vec<Key> = st
            .store
            .keys()
            .filter(|k| k.namespace == name)
            .cloned()
            .collect();
        for k in keys {
            st.store.delete(&k);
        }
    }
    Some(removed)
}

fn delete(st: &mut State, t: &Target, ctx: &Ctx, body: &[u8]) -> ApiResult<Response> {
    let existing = st
        .store
        .get(&key(t, &t.name))
        .cloned()
        .ok_or_else(|| ApiError::not_found(&t.resource, &t.name))?;
    // DeleteOptions in the body, as the API server reads them: `dryRun` (clients such as
    // kube-rs send it here rather than in the query), and preconditions, whose mismatch is a
    // 409 naming both values, deleting nothing.
    let mut dry_run = ctx.dry_run;
    if !body.is_empty() {
        let options = parse_json(body)?;
        dry_run |= options["dryRun"]
            .as_array()
            .is_some_and(|d| d.iter().any(|v| v == "All"));
        for (field, path) in [("ResourceVersion", "resourceVersion"), ("UID", "uid")] {
            let want = options["preconditions"][path].as_str();
            let have = existing["metadata"][path].as_str().unwrap_or_default();
            if let Some(want) = want.filter(|w| *w != have) {
                return Err(ApiError::precondition_failed(format!(
                    "Operation cannot be fulfilled on {} \"{}\": Precondition failed: {field} in precondition: {want}, {field} in object meta: {have}",
                    t.resource.qualified(),
                    t.name
                )));
            }
        }
    }
    if dry_run {
        return Ok(json_response(StatusCode::OK, &served(t, &existing), &[]));
    }
    let removed = remove(st, t, &t.name).expect("it exists");
    Ok(json_response(StatusCode::OK, &served(t, &removed), &[]))
}

fn delete_collection(st: &mut State, t: &Target, ctx: &Ctx, q: &Query) -> ApiResult<Response> {
    let sel = Selector::parse(q)?;
    let ns = (!t.namespace.is_empty()).then_some(t.namespace.as_str());
    let names: Vec<String> = st
        .store
        .list(&t.resource.group, &t.resource.plural, ns)
        .filter(|(_, o)| sel.matches(o))
        .map(|(k, _)| k.name.clone())
        .collect();
    let mut items = Vec::new();
    for n in names {
        let k = key(t, &n);
        if ctx.dry_run {
            items.extend(st.store.get(&k).map(|o| served(t, o)));
        } else if let Some(o) = remove(st, t, &n) {
            items.push(served(t, &o));
        }
    }
    let v = json!({
        "kind": format!("{}List", t.resource.kind),
        "apiVersion": t.resource.group_version(&t.version),
        "metadata": {"resourceVersion": st.store.rv().to_string()},
        "items": items,
    });
    Ok(json_response(StatusCode::OK, &v, &[]))
}

/// Creates an object as the seed loader does: no authentication or authorization.
pub(crate) fn seed_create(st: &mut State, obj: Value) -> Result<(), String> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default().to_owned();
    let kind = obj["kind"].as_str().unwrap_or_default().to_owned();
    let resource = st
        .registry
        .by_kind(&api_version, &kind)
        .cloned()
        .ok_or_else(|| format!("no resource serves {kind} in {api_version}"))?;
    let version = api_version
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let namespace = if resource.namespaced {
        obj["metadata"]["namespace"]
            .as_str()
            .filter(|n| !n.is_empty())
            .unwrap_or("default")
            .to_owned()
    } else {
        String::new()
    };
    let t = Target {
        resource,
        version,
        namespace,
        name: String::new(),
        subresource: String::new(),
    };
    let ctx = Ctx {
        content_type: "application/json".into(),
        dry_run: false,
        manager: "kube-sim-seed".into(),
        field_validation: "Strict".into(),
        user: UserInfo {
            name: "system:kube-sim".into(),
            uid: String::new(),
            groups: vec!["system:masters".into()],
        },
        tokens: Arc::new(Tokens::default()),
    };
    insert_new(st, &t, &ctx, obj)
        .map(drop)
        .map_err(|e| e.message)
}
