//! mesh-mcp's HTTP face: `GET /v1/graph` (the graph as JSON, filtered like `GetMeshGraph`) and
//! `/mcp` (the Model Context Protocol over streamable HTTP), both behind the bearer tokens the
//! gRPC service accepts.

use axum::{
    Router,
    extract::{Query, State},
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
    routing::get,
};

use crate::{Authenticator, GraphService, cli::Args};

/// Every HTTP route of the service port, or why the flags do not make one.
pub(crate) fn routes(
    args: &Args,
    service: GraphService,
    auth: Option<Authenticator>,
    plans: crate::agent::Plans,
) -> Result<Router, String> {
    Ok(Router::new()
        .route("/v1/graph", get(http_graph))
        .route("/v1/diff", get(http_diff))
        .with_state((service.clone(), auth.clone()))
        .merge(crate::console::routes(
            service.clone(),
            auth.clone(),
            crate::console::Options::of(args)?,
        ))
        .merge(mcp_router(args, service, auth, plans)))
}

/// `/mcp`: streamable HTTP MCP, behind the same bearer tokens as gRPC.
fn mcp_router(
    args: &Args,
    service: GraphService,
    auth: Option<Authenticator>,
    plans: crate::agent::Plans,
) -> Router {
    let metadata = auth
        .as_ref()
        .and_then(Authenticator::oauth)
        .map(crate::oauth::JwtVerifier::resource_metadata);
    let protected = crate::mcp_routes(
        service,
        auth,
        plans,
        args.read_only,
        &args.mcp_allowed_host,
        &args.mcp_allowed_origin,
    );
    match metadata {
        // RFC 9728: where clients learn which authorization server issues tokens for /mcp.
        Some(m) => {
            let doc = axum::Json(m);
            protected
                .route(
                    "/.well-known/oauth-protected-resource",
                    get({
                        let doc = doc.clone();
                        move || async move { doc }
                    }),
                )
                .route(
                    "/.well-known/oauth-protected-resource/mcp",
                    get(move || async move { doc }),
                )
        }
        None => protected,
    }
}

/// `/mcp` over `service` behind `auth`, without the OAuth discovery documents.
pub(crate) fn protected_mcp(
    service: GraphService,
    auth: Option<Authenticator>,
    plans: crate::agent::Plans,
    read_only: bool,
    hosts: &[String],
    origins: &[String],
) -> Router {
    let agent =
        crate::agent::MeshAgent::new(crate::agent::Backend::Local(Box::new(service)), read_only)
            .with_plans(plans);
    crate::agent::router(agent, hosts, origins)
        .layer(axum::middleware::from_fn_with_state(auth, mcp_auth))
}

/// Authenticates MCP requests as gRPC ones and hands the [`crate::Caller`] to the tools;
/// refusals are 401 with `WWW-Authenticate: Bearer`, as MCP clients expect.
async fn mcp_auth(
    State(auth): State<Option<Authenticator>>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let Some(auth) = auth else {
        return next.run(req).await;
    };
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match auth.authenticate(header).await {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(s) => {
            let code = if s.code() == tonic::Code::Unavailable {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::UNAUTHORIZED
            };
            let challenge = match auth.oauth() {
                Some(o) => format!("Bearer resource_metadata=\"{}\"", o.metadata_url()),
                None => "Bearer".to_owned(),
            };
            (
                code,
                [(header::WWW_AUTHENTICATE, challenge)],
                format!("{}\n", s.message()),
            )
                .into_response()
        }
    }
}

#[derive(serde::Deserialize, Default)]
struct GraphQuery {
    namespaces: Option<String>,
    workload: Option<String>,
    tls: Option<String>,
    min_rps: Option<f64>,
    include_policies: Option<bool>,
    /// A past moment: RFC 3339, or a duration ago (`-1h`).
    at: Option<String>,
}

/// Refuses a request without a token the service accepts (401, or 503 when the token cannot
/// be checked now).
async fn authenticate(
    auth: Option<&Authenticator>,
    headers: &HeaderMap,
) -> Result<(), axum::response::Response> {
    let Some(a) = auth else {
        return Ok(());
    };
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    a.authenticate(header).await.map(|_| ()).map_err(|s| {
        let code = if s.code() == tonic::Code::Unavailable {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::UNAUTHORIZED
        };
        (code, format!("{}\n", s.message())).into_response()
    })
}

/// A gRPC status as the HTTP answer with the same meaning.
pub(crate) fn status_response(s: &tonic::Status) -> axum::response::Response {
    let code = match s.code() {
        tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        // This server was not set up for it (e.g. no Prometheus for past graphs).
        tonic::Code::FailedPrecondition => StatusCode::NOT_IMPLEMENTED,
        tonic::Code::ResourceExhausted => StatusCode::PAYLOAD_TOO_LARGE,
        tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        tonic::Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (code, format!("{}\n", s.message())).into_response()
}

fn bad_request(why: &str) -> axum::response::Response {
    (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response()
}

fn json<T: serde::Serialize>(v: &T) -> axum::response::Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(v).unwrap_or_default(),
    )
        .into_response()
}

fn namespaces(q: Option<String>) -> Vec<String> {
    q.map(|n| n.split(',').map(str::to_owned).collect())
        .unwrap_or_default()
}

async fn http_graph(
    State((svc, auth)): State<(GraphService, Option<Authenticator>)>,
    headers: HeaderMap,
    Query(q): Query<GraphQuery>,
) -> axum::response::Response {
    if let Err(r) = authenticate(auth.as_ref(), &headers).await {
        return r;
    }
    let tls = match q.tls.as_deref() {
        None | Some("") => 0,
        Some(t) => match mesh_proto::pb::TlsStatus::from_str_name(&t.to_ascii_uppercase()) {
            Some(v) => v as i32,
            None => return bad_request(&format!("tls: {t:?} is not MTLS, PLAINTEXT or UNKNOWN")),
        },
    };
    let at =
        q.at.as_deref()
            .filter(|v| !v.is_empty())
            .map(|v| crate::past::moment("at", v, std::time::SystemTime::now()))
            .transpose();
    let at = match at {
        Ok(at) => at,
        Err(e) => return bad_request(&e),
    };
    let req = mesh_proto::pb::GetMeshGraphRequest {
        namespaces: namespaces(q.namespaces),
        workload: q.workload.unwrap_or_default(),
        tls,
        min_rps: q.min_rps.unwrap_or(0.0),
        include_policies: q.include_policies.unwrap_or(false),
        at,
    };
    match svc.view(req).await {
        Ok(v) => json(&v.to_pb()),
        Err(s) => status_response(&s),
    }
}

#[derive(serde::Deserialize, Default)]
struct DiffQuery {
    /// How far back from now (`1h`); instead of `from`.
    since: Option<String>,
    from: Option<String>,
    to: Option<String>,
    namespaces: Option<String>,
    include_graphs: Option<bool>,
}

/// `GET /v1/diff?since=1h` or `?from=..&to=..`: `DiffMeshGraph` as JSON.
async fn http_diff(
    State((svc, auth)): State<(GraphService, Option<Authenticator>)>,
    headers: HeaderMap,
    Query(q): Query<DiffQuery>,
) -> axum::response::Response {
    if let Err(r) = authenticate(auth.as_ref(), &headers).await {
        return r;
    }
    let span = crate::past::span(
        q.since.as_deref(),
        q.from.as_deref(),
        q.to.as_deref(),
        std::time::SystemTime::now(),
    );
    let (from, to) = match span {
        Ok(s) => s,
        Err(e) => return bad_request(&e),
    };
    let req = mesh_proto::pb::DiffMeshGraphRequest {
        from: Some(from),
        to,
        namespaces: namespaces(q.namespaces),
        include_graphs: q.include_graphs.unwrap_or(false),
        ..Default::default()
    };
    match svc.diff(req).await {
        Ok(d) => json(&d),
        Err(s) => status_response(&s),
    }
}
