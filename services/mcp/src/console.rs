//! The web console under `/ui/`: the mesh as a live picture (the same filtered watch as gRPC,
//! as server-sent events), edge and workload panels with the verdict's explain chain and a
//! what-if for a pasted manifest, a time slider over the history, and the approvals page.
//!
//! Pages are askama templates rendered here; the picture is drawn by one plain script served
//! from this binary (no build chain, no third-party requests: the Content-Security-Policy
//! allows this origin only). Sign-in is a bearer token posted to `/ui/login` (never in a URL),
//! or OpenID Connect when configured; the session lives here and re-checks its token on every
//! request, so what the console may do is exactly what the token may do over gRPC.

mod oidc;
mod session;

use std::{convert::Infallible, sync::Arc, time::Duration};

use askama::Template;
use axum::{
    Form, Json, Router,
    extract::{DefaultBodyLimit, Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{
        IntoResponse, Redirect, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::{get, post},
};
use futures_util::StreamExt as _;
use mesh_proto::{pb, server::mesh_service_server::MeshService};
use tokio::sync::Semaphore;

use self::session::{Session, Sessions, foreign_origin, same_secret};
use crate::{Authenticator, Caller, GraphService};

/// What every console response says about where its content may come from: this origin only,
/// no inline script or style, no framing, forms posting back here only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";
/// Largest request body the console reads (a pasted manifest, a form).
const MAX_BODY: usize = 256 * 1024;
/// Longest bearer token accepted at sign-in.
const MAX_TOKEN: usize = 8 * 1024;
/// Live pictures open at once, over every session.
const MAX_STREAMS: usize = 1000;
/// The front end an approval decided on the page is recorded with.
const FRONT_END: &str = "web";

/// Why the console refuses a request, as the answer a browser or script gets.
#[derive(Debug)]
enum Refused {
    /// Not signed in (or signed out since): pages go to sign-in, the API answers 401.
    SignIn { page: bool, why: String },
    /// A write from another origin, or without the session's CSRF token.
    Forbidden(String),
    /// A filter or field the console cannot take.
    BadRequest(String),
    /// The service's own refusal, with its HTTP meaning.
    Status(tonic::Status),
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Self::SignIn { page: true, .. } => Redirect::to("/ui/login").into_response(),
            Self::SignIn { why, .. } => {
                (StatusCode::UNAUTHORIZED, format!("{why}\n")).into_response()
            }
            Self::Forbidden(why) => {
                (StatusCode::FORBIDDEN, format!("refused: {why}\n")).into_response()
            }
            Self::BadRequest(why) => (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response(),
            Self::Status(s) => crate::http::status_response(&s),
        }
    }
}

impl From<tonic::Status> for Refused {
    fn from(s: tonic::Status) -> Self {
        Self::Status(s)
    }
}

/// How the console is set up, from mesh-mcp's flags.
pub(crate) struct Options {
    /// Cookies carry `Secure` (everywhere but a loopback listener).
    secure: bool,
    /// Sign-in through the OAuth issuer, when a client id is configured.
    oidc: Option<oidc::Oidc>,
    /// The console's external URL (no trailing slash), if configured.
    url: Option<String>,
}

impl Options {
    /// Token sign-in over plain HTTP, nothing else configured.
    pub(crate) fn plain() -> Self {
        Self {
            secure: false,
            oidc: None,
            url: None,
        }
    }

    /// The console's options from mesh-mcp's flags.
    pub(crate) fn of(args: &crate::cli::Args) -> Result<Self, String> {
        let oidc = match (
            &args.ui_oidc_client_id,
            &args.oauth_issuer,
            &args.oauth_audience,
        ) {
            (Some(id), Some(issuer), Some(aud)) => Some(oidc::Oidc::new(issuer, id, aud)?),
            _ => None,
        };
        let url = match &args.ui_url {
            Some(u) if !(u.starts_with("https://") || u.starts_with("http://")) => {
                return Err(format!("--ui-url {u}: an http(s) URL"));
            }
            u => u.as_ref().map(|u| u.trim_end_matches('/').to_owned()),
        };
        Ok(Self {
            secure: !args.http_listen.is_some_and(|a| a.ip().is_loopback()),
            oidc,
            url,
        })
    }
}

/// The console's shared state.
#[derive(Clone)]
struct Console {
    service: GraphService,
    auth: Authenticator,
    sessions: Sessions,
    streams: Arc<Semaphore>,
    oidc: Option<oidc::Oidc>,
    url: Option<String>,
    secure: bool,
}

/// A request from a signed-in browser.
struct Viewer {
    id: String,
    session: Session,
    caller: Caller,
}

/// The console's routes. Without an authenticator (`--insecure-no-auth`) there is nobody to
/// sign in as, so every page says so instead of serving the mesh to anyone.
pub(crate) fn routes(service: GraphService, auth: Option<Authenticator>, o: Options) -> Router {
    let Some(auth) = auth else {
        let off = || async {
            (
                StatusCode::NOT_FOUND,
                "the console needs sign-in: run mesh-mcp with --token-file, --token-review or \
                 OAuth, not --insecure-no-auth\n",
            )
        };
        return Router::new()
            .route("/ui", get(off))
            .route("/ui/{*rest}", get(off));
    };
    let state = Console {
        service,
        auth,
        sessions: Sessions::new(o.secure),
        streams: Arc::new(Semaphore::new(MAX_STREAMS)),
        oidc: o.oidc,
        url: o.url,
        secure: o.secure,
    };
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(graph_page))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/login/oidc", get(oidc_start))
        .route("/ui/callback", get(oidc_callback))
        .route("/ui/logout", post(logout))
        .route("/ui/approvals", get(approvals_page))
        .route("/ui/approvals/{id}/{decision}", post(decide))
        .route("/ui/static/console.js", get(script))
        .route("/ui/static/console.css", get(style))
        .route("/ui/api/graph", get(api_graph))
        .route("/ui/api/events", get(api_events))
        .route("/ui/api/diff", get(api_diff))
        .route("/ui/api/explain", get(api_explain))
        .route("/ui/api/series", get(api_series))
        .route("/ui/api/whatif", post(api_whatif))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::map_response(headers))
        .with_state(state)
}

/// Security headers on every console answer.
async fn headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // `same-origin`, not `no-referrer`: under the latter browsers send `Origin: null` with form
    // posts, and the console's own forms would look like a sandboxed page's.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    r
}

/// The signed-in viewer, or why not (`page`: a page, which sends the browser to sign in).
async fn viewer(c: &Console, headers: &HeaderMap, page: bool) -> Result<Viewer, Refused> {
    let Some((id, session)) = c.sessions.get(headers).await else {
        return Err(Refused::SignIn {
            page,
            why: "not signed in: sign in at /ui/login".into(),
        });
    };
    match c
        .auth
        .authenticate(Some(&format!("Bearer {}", session.token)))
        .await
    {
        Ok(caller) => Ok(Viewer {
            id,
            session,
            caller,
        }),
        Err(s) if s.code() == tonic::Code::Unavailable => Err(Refused::Status(s)),
        Err(s) => {
            // The token was revoked or expired: the session goes with it.
            c.sessions.close(&id).await;
            Err(Refused::SignIn {
                page,
                why: format!("signed out: {}", s.message()),
            })
        }
    }
}

/// A write's checks: same origin, and the session's CSRF token (`sent` from a form field, else
/// the `x-csrf-token` header).
fn check_write(headers: &HeaderMap, v: &Viewer, sent: Option<&str>) -> Result<(), Refused> {
    if let Some(why) = foreign_origin(headers) {
        return Err(Refused::Forbidden(why));
    }
    let sent = sent.or_else(|| headers.get("x-csrf-token").and_then(|v| v.to_str().ok()));
    match sent {
        Some(t) if same_secret(t, &v.session.csrf) => Ok(()),
        _ => Err(Refused::Forbidden(
            "the form's CSRF token is missing or not this session's; reload the page".into(),
        )),
    }
}

/// `msg` as the viewer, the way the gRPC interceptor hands callers to the service.
fn as_viewer<T>(v: &Viewer, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.extensions_mut().insert(v.caller.clone());
    r
}

fn html<T: Template>(t: &T) -> Response {
    match t.render() {
        Ok(body) => axum::response::Html(body).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("rendering the page failed: {e}\n"),
        )
            .into_response(),
    }
}

fn json<T: serde::Serialize>(v: &T) -> Response {
    Json(v).into_response()
}

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginPage {
    error: String,
    /// The OpenID Connect issuer to offer, when configured.
    issuer: String,
}

impl Console {
    fn login(&self, error: String) -> LoginPage {
        LoginPage {
            error,
            issuer: self
                .oidc
                .as_ref()
                .map_or_else(String::new, |o| o.issuer().to_owned()),
        }
    }

    /// The console's base URL as the browser reaches it (for the OIDC redirect URI).
    fn base(&self, headers: &HeaderMap) -> String {
        if let Some(u) = &self.url {
            return u.clone();
        }
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("localhost");
        let scheme = if self.secure { "https" } else { "http" };
        format!("{scheme}://{host}")
    }
}

async fn login_page(State(c): State<Console>) -> Response {
    html(&c.login(String::new()))
}

/// The cookie that pins an OIDC sign-in to the browser that started it: `Lax`, as the
/// issuer's redirect back is a cross-site navigation.
const STATE_COOKIE: &str = "lmcp_oidc";

/// Sends the browser to the issuer, with a fresh state and PKCE challenge.
async fn oidc_start(State(c): State<Console>, headers: HeaderMap) -> Result<Response, Refused> {
    let Some(o) = &c.oidc else {
        return Err(Refused::BadRequest(
            "sign-in with OpenID Connect is not configured (--ui-oidc-client-id)".into(),
        ));
    };
    let redirect = format!("{}/ui/callback", c.base(&headers));
    let (url, state) = o
        .start(&redirect)
        .await
        .map_err(|e| Refused::Status(tonic::Status::unavailable(e.to_string())))?;
    let cookie = c.sessions.state_cookie(STATE_COOKIE, &state, 600);
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to(&url)).into_response())
}

#[derive(serde::Deserialize)]
struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

#[derive(Template)]
#[template(path = "console/signed-in.html")]
struct SignedIn {
    user: String,
}

/// The issuer's redirect back: the state must be this browser's, the code is exchanged with
/// the PKCE verifier, and the access token must pass as any other would.
async fn oidc_callback(
    State(c): State<Console>,
    headers: HeaderMap,
    Query(q): Query<Callback>,
) -> Response {
    let again = |code: StatusCode, error: String| (code, html(&c.login(error))).into_response();
    let Some(o) = &c.oidc else {
        return again(
            StatusCode::NOT_FOUND,
            "sign-in with OpenID Connect is not configured".into(),
        );
    };
    let state = q.state.unwrap_or_default();
    let pinned = session::cookie_value(&headers, STATE_COOKIE).unwrap_or_default();
    if state.is_empty() || !same_secret(&state, pinned) {
        return again(
            StatusCode::BAD_REQUEST,
            oidc::OidcError::UnknownState.to_string(),
        );
    }
    if let Some(e) = q.error {
        let why = format!("{e} {}", q.error_description.unwrap_or_default());
        let why = why.chars().filter(|c| !c.is_control()).take(300).collect();
        return again(
            StatusCode::UNAUTHORIZED,
            oidc::OidcError::Refused(why).to_string(),
        );
    }
    let token = match o.finish(&state, &q.code.unwrap_or_default()).await {
        Ok(t) => t,
        Err(e) => {
            let code = match e {
                oidc::OidcError::UnknownState => StatusCode::BAD_REQUEST,
                oidc::OidcError::Discovery { .. } => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::UNAUTHORIZED,
            };
            return again(code, e.to_string());
        }
    };
    match c.auth.authenticate(Some(&format!("Bearer {token}"))).await {
        Ok(caller) => {
            tracing::info!(user = %caller.user, "console sign-in (OpenID Connect)");
            let session = c.sessions.open(token).await;
            let clear = c.sessions.state_cookie(STATE_COOKIE, "", 0);
            let mut r = html(&SignedIn { user: caller.user });
            r.headers_mut().append(header::SET_COOKIE, session);
            r.headers_mut().append(header::SET_COOKIE, clear);
            r
        }
        Err(s) => again(
            StatusCode::UNAUTHORIZED,
            format!("the issuer's token is not accepted here: {}", s.message()),
        ),
    }
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
}

/// Signs in with a bearer token; only from this origin, so another site cannot sign a browser
/// in as someone else.
async fn login(State(c): State<Console>, headers: HeaderMap, Form(f): Form<LoginForm>) -> Response {
    let again = |code: StatusCode, error: String| (code, html(&c.login(error))).into_response();
    if let Some(why) = foreign_origin(&headers) {
        return again(StatusCode::FORBIDDEN, format!("refused: {why}"));
    }
    let token = f.token.trim();
    if token.is_empty() || token.len() > MAX_TOKEN || token.chars().any(char::is_control) {
        return again(
            StatusCode::BAD_REQUEST,
            format!("the token must be 1 to {MAX_TOKEN} printable characters"),
        );
    }
    match c.auth.authenticate(Some(&format!("Bearer {token}"))).await {
        Ok(caller) => {
            tracing::info!(user = %caller.user, "console sign-in");
            let cookie = c.sessions.open(token.to_owned()).await;
            ([(header::SET_COOKIE, cookie)], Redirect::to("/ui/")).into_response()
        }
        Err(s) if s.code() == tonic::Code::Unavailable => {
            again(StatusCode::SERVICE_UNAVAILABLE, s.message().to_owned())
        }
        Err(s) => again(
            StatusCode::UNAUTHORIZED,
            format!("sign-in refused: {}", s.message()),
        ),
    }
}

#[derive(serde::Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(
    State(c): State<Console>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Result<Response, Refused> {
    let v = viewer(&c, &headers, true).await?;
    check_write(&headers, &v, Some(&f.csrf))?;
    let cookie = c.sessions.close(&v.id).await;
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/ui/login")).into_response())
}

#[derive(Template)]
#[template(path = "console/graph.html")]
struct GraphPage {
    user: String,
    csrf: String,
    namespaces: Vec<String>,
}

async fn graph_page(State(c): State<Console>, headers: HeaderMap) -> Result<Response, Refused> {
    let v = viewer(&c, &headers, true).await?;
    let namespaces = match c.service.view(pb::GetMeshGraphRequest::default()).await {
        Ok(g) => {
            let mut ns: Vec<String> = g
                .graph
                .workloads
                .keys()
                .map(|w| w.namespace.clone())
                .collect();
            ns.dedup();
            ns.sort();
            ns.dedup();
            ns
        }
        Err(_) => Vec::new(),
    };
    Ok(html(&GraphPage {
        user: v.caller.user,
        csrf: v.session.csrf,
        namespaces,
    }))
}

/// Filters of the graph reads, as the page's query string carries them.
#[derive(serde::Deserialize, Default)]
struct Filters {
    namespace: Option<String>,
    workload: Option<String>,
    tls: Option<String>,
    min_rps: Option<f64>,
    /// A past moment: RFC 3339, or a duration ago (`-1h`).
    at: Option<String>,
}

impl Filters {
    fn namespaces(&self) -> Vec<String> {
        self.namespace
            .iter()
            .flat_map(|n| n.split(','))
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect()
    }

    fn tls(&self) -> Result<i32, Refused> {
        match self.tls.as_deref() {
            None | Some("") => Ok(0),
            Some(t) => pb::TlsStatus::from_str_name(&t.to_ascii_uppercase())
                .map(|v| v as i32)
                .ok_or_else(|| {
                    Refused::BadRequest(format!("tls: {t:?} is not mtls, plaintext or unknown"))
                }),
        }
    }

    fn min_rps(&self) -> Result<f64, Refused> {
        match self.min_rps {
            Some(r) if !r.is_finite() || r < 0.0 => Err(Refused::BadRequest(
                "min_rps: a number of requests per second, 0 or more".into(),
            )),
            r => Ok(r.unwrap_or(0.0)),
        }
    }
}

async fn api_graph(
    State(c): State<Console>,
    headers: HeaderMap,
    Query(q): Query<Filters>,
) -> Result<Response, Refused> {
    viewer(&c, &headers, false).await?;
    let (tls, min_rps) = (q.tls()?, q.min_rps()?);
    let at =
        q.at.as_deref()
            .filter(|v| !v.is_empty())
            .map(|v| crate::past::moment("at", v, std::time::SystemTime::now()))
            .transpose();
    let at = at.map_err(Refused::BadRequest)?;
    let req = pb::GetMeshGraphRequest {
        namespaces: q.namespaces(),
        workload: q.workload.clone().unwrap_or_default(),
        tls,
        min_rps,
        include_policies: false,
        at,
    };
    Ok(json(&c.service.view(req).await?.to_pb()))
}

/// Where an event leaves the graph's history: the SSE event id a reconnecting browser sends
/// back as `Last-Event-ID`.
fn position_id(ev: &pb::MeshGraphEvent) -> Option<String> {
    match ev.event.as_ref()? {
        pb::mesh_graph_event::Event::Snapshot(g) => Some(format!("{}.{}", g.epoch, g.version)),
        pb::mesh_graph_event::Event::Delta(d) => Some(format!("{}.{}", d.epoch, d.to_version)),
        pb::mesh_graph_event::Event::Heartbeat(h) => h
            .position
            .as_ref()
            .map(|p| format!("{}.{}", p.epoch, p.version)),
    }
}

/// `Last-Event-ID` as a watch position; anything else starts afresh with a snapshot.
fn resume_from(headers: &HeaderMap) -> Option<pb::GraphPosition> {
    let (e, v) = headers
        .get("last-event-id")?
        .to_str()
        .ok()?
        .split_once('.')?;
    Some(pb::GraphPosition {
        epoch: e.parse().ok()?,
        version: v.parse().ok()?,
    })
}

/// The live picture's feed: `WatchMeshGraph` with the page's filters, as server-sent events
/// (`snapshot`, `delta`, `heartbeat`, each the proto3 JSON of the gRPC message), resumed from
/// `Last-Event-ID` after a reconnect.
async fn api_events(
    State(c): State<Console>,
    headers: HeaderMap,
    Query(q): Query<Filters>,
) -> Result<Response, Refused> {
    viewer(&c, &headers, false).await?;
    let (tls, min_rps) = (q.tls()?, q.min_rps()?);
    let Ok(permit) = c.streams.clone().try_acquire_owned() else {
        return Err(Refused::Status(tonic::Status::unavailable(format!(
            "{MAX_STREAMS} live pictures are open; try again shortly"
        ))));
    };
    let req = pb::WatchMeshGraphRequest {
        namespaces: q.namespaces(),
        workload: q.workload.clone().unwrap_or_default(),
        tls,
        min_rps,
        include_policies: false,
        resume_from: resume_from(&headers),
    };
    let stream = MeshService::watch_mesh_graph(&c.service, tonic::Request::new(req))
        .await?
        .into_inner();
    let events = stream.map(move |item| {
        // The permit lives as long as the stream.
        let _held = &permit;
        let ev = match item {
            Ok(mesh_proto::EncodedEvent::Shared(bytes)) => {
                <pb::MeshGraphEvent as prost::Message>::decode(bytes).map_err(|e| e.to_string())
            }
            Ok(mesh_proto::EncodedEvent::Own(ev)) => Ok(*ev),
            Err(s) => Err(s.message().to_owned()),
        };
        let out = match ev {
            Ok(ev) => {
                let name = match &ev.event {
                    Some(pb::mesh_graph_event::Event::Snapshot(_)) => "snapshot",
                    Some(pb::mesh_graph_event::Event::Delta(_)) => "delta",
                    Some(pb::mesh_graph_event::Event::Heartbeat(_)) => "heartbeat",
                    None => "empty",
                };
                let id = position_id(&ev);
                let data = match &ev.event {
                    Some(pb::mesh_graph_event::Event::Snapshot(g)) => serde_json::to_string(&g),
                    Some(pb::mesh_graph_event::Event::Delta(d)) => serde_json::to_string(&d),
                    Some(pb::mesh_graph_event::Event::Heartbeat(h)) => serde_json::to_string(&h),
                    None => Ok("{}".to_owned()),
                };
                let e = Event::default()
                    .event(name)
                    .data(data.unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string())));
                match id {
                    Some(id) => e.id(id),
                    None => e,
                }
            }
            Err(why) => Event::default().event("failed").data(why),
        };
        Ok::<_, Infallible>(out)
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

#[derive(serde::Deserialize, Default)]
struct DiffQuery {
    from: Option<String>,
    to: Option<String>,
    namespace: Option<String>,
}

/// What changed between two moments (`DiffMeshGraph`), for the time slider.
async fn api_diff(
    State(c): State<Console>,
    headers: HeaderMap,
    Query(q): Query<DiffQuery>,
) -> Result<Response, Refused> {
    viewer(&c, &headers, false).await?;
    let span = crate::past::span(
        None,
        q.from.as_deref(),
        q.to.as_deref(),
        std::time::SystemTime::now(),
    );
    let (from, to) = span.map_err(Refused::BadRequest)?;
    let req = pb::DiffMeshGraphRequest {
        from: Some(from),
        to,
        namespaces: Filters {
            namespace: q.namespace,
            ..Filters::default()
        }
        .namespaces(),
        ..Default::default()
    };
    Ok(json(&c.service.diff(req).await?))
}

#[derive(serde::Deserialize)]
struct ExplainQuery {
    from: String,
    to: String,
    #[serde(default)]
    port: u32,
}

/// Why `from` may or may not reach `to` (`ExplainAccess`), for the edge panel.
async fn api_explain(
    State(c): State<Console>,
    headers: HeaderMap,
    Query(q): Query<ExplainQuery>,
) -> Result<Response, Refused> {
    let v = viewer(&c, &headers, false).await?;
    let req = pb::ExplainAccessRequest {
        from: q.from,
        to: q.to,
        port: q.port,
        ..Default::default()
    };
    let verdict = MeshService::explain_access(&c.service, as_viewer(&v, req)).await?;
    Ok(json(&verdict.into_inner()))
}

#[derive(serde::Deserialize)]
struct SeriesQuery {
    /// The caller, `namespace/name`.
    src: String,
    /// The callee, `namespace/name`.
    dst: String,
}

/// How far back the edge panel's plots reach, and their resolution.
const SERIES_SPAN: Duration = Duration::from_secs(3600);
const SERIES_STEP: Duration = Duration::from_secs(30);
/// The rate window of each point: a minute, as `linkerd viz` reads golden metrics.
const SERIES_RATE: Duration = Duration::from_secs(60);

/// The edge's requests per second, success rate and p99 over the last hour, from Prometheus
/// (viz's outbound series, one range query each): the edge panel's plots.
async fn api_series(
    State(c): State<Console>,
    headers: HeaderMap,
    Query(q): Query<SeriesQuery>,
) -> Result<Response, Refused> {
    viewer(&c, &headers, false).await?;
    let url = c.service.prometheus.clone().ok_or_else(|| {
        Refused::Status(tonic::Status::failed_precondition(
            "this mesh-mcp reads no Prometheus (--prometheus-url): no history to plot",
        ))
    })?;
    let view = c
        .service
        .view(pb::GetMeshGraphRequest {
            workload: q.src.clone(),
            ..Default::default()
        })
        .await?;
    let edge = view
        .graph
        .edges
        .values()
        .find(|e| {
            let dst = match &e.key.dst {
                mesh_model::Destination::Workload(w) => format!("{}/{}", w.namespace, w.name),
                mesh_model::Destination::Authority(a) => a.clone(),
            };
            format!("{}/{}", e.key.src.namespace, e.key.src.name) == q.src && dst == q.dst
        })
        .ok_or_else(|| {
            Refused::Status(tonic::Status::not_found(format!(
                "no edge {} -> {} in the graph",
                q.src, q.dst
            )))
        })?;
    let mesh_model::Destination::Workload(dst) = &edge.key.dst else {
        return Err(Refused::BadRequest(
            "plots are for edges between workloads, not to an authority".into(),
        ));
    };
    let src = &edge.key.src;
    let queries = mesh_prometheus::promql::EdgeSeries::new(
        (&src.namespace, &src.kind, &src.name),
        (&dst.namespace, &dst.kind, &dst.name),
        SERIES_RATE,
    )
    .ok_or_else(|| {
        Refused::BadRequest(format!(
            "{}s and {}s carry no owner label in viz's series",
            src.kind, dst.kind
        ))
    })?;
    let prom = mesh_prometheus::PrometheusSource::new(&url, SERIES_RATE, Duration::from_secs(10))
        .map_err(|e| Refused::Status(tonic::Status::failed_precondition(e.to_string())))?;
    let end = std::time::SystemTime::now();
    let start = end - SERIES_SPAN;
    let range = |query: String| {
        let prom = prom.clone();
        async move {
            let got = prom.query_range(&query, start, end, SERIES_STEP).await;
            got.map(|series| {
                series
                    .into_iter()
                    .next()
                    .map(|s| {
                        s.values
                            .into_iter()
                            .filter_map(|(t, v)| {
                                v.parse::<f64>()
                                    .ok()
                                    .filter(|v| v.is_finite())
                                    .map(|v| (t, v))
                            })
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
            })
        }
    };
    let (rps, success, p99) = tokio::join!(
        range(queries.rps),
        range(queries.success),
        range(queries.p99)
    );
    let unavailable =
        |e: mesh_prometheus::PromError| Refused::Status(tonic::Status::unavailable(e.to_string()));
    Ok(json(&serde_json::json!({
        "step_seconds": SERIES_STEP.as_secs(),
        "rps": rps.map_err(unavailable)?,
        "success_rate": success.map_err(unavailable)?,
        "latency_p99_ms": p99.map_err(unavailable)?,
    })))
}

#[derive(serde::Deserialize)]
struct WhatIf {
    /// `AuthorizationPolicy` (the default) or `HTTPRoute`: which apply the manifest goes to.
    #[serde(default)]
    kind: String,
    manifest: String,
}

/// "What would this change do": the pasted manifest dry-run as the viewer (their RBAC, the
/// server's admission) with the edges whose verdict it would change. Nothing is written.
async fn api_whatif(
    State(c): State<Console>,
    headers: HeaderMap,
    Json(w): Json<WhatIf>,
) -> Result<Response, Refused> {
    let v = viewer(&c, &headers, false).await?;
    check_write(&headers, &v, None)?;
    let req = pb::ApplyRequest {
        source: Some(pb::apply_request::Source::Manifest(w.manifest)),
        dry_run: true,
        ..Default::default()
    };
    let answer = match w.kind.as_str() {
        "" | "AuthorizationPolicy" => {
            MeshService::apply_authorization_policy(&c.service, as_viewer(&v, req)).await
        }
        "HTTPRoute" => MeshService::apply_http_route(&c.service, as_viewer(&v, req)).await,
        other => {
            return Err(Refused::BadRequest(format!(
                "kind: {other:?}; AuthorizationPolicy or HTTPRoute"
            )));
        }
    };
    Ok(json(&answer?.into_inner()))
}

/// One request as the approvals page shows it.
struct Card {
    a: pb::Approval,
    state: &'static str,
    pending: bool,
    on_behalf_of: String,
    votes: Vec<String>,
    affected: Vec<String>,
}

#[derive(Template)]
#[template(path = "console/approvals.html")]
struct ApprovalsPage {
    user: String,
    csrf: String,
    notice: String,
    cards: Vec<Card>,
}

#[derive(serde::Deserialize, Default)]
struct Notice {
    notice: Option<String>,
}

fn edge_name(e: Option<&pb::EdgeRef>) -> String {
    let Some(e) = e else {
        return "?".into();
    };
    let name = |w: Option<&pb::WorkloadRef>| {
        w.map_or_else(String::new, |w| format!("{}/{}", w.namespace, w.name))
    };
    let dst = match e.dst.as_ref() {
        Some(_) => name(e.dst.as_ref()),
        None => e.dst_authority.clone(),
    };
    format!("{} -> {}", name(e.src.as_ref()), dst)
}

fn decision_word(d: i32) -> String {
    pb::policy_verdict::Decision::try_from(d)
        .map_or("unknown", |d| match d {
            pb::policy_verdict::Decision::Allowed => "allowed",
            pb::policy_verdict::Decision::Denied => "denied",
            pb::policy_verdict::Decision::Audit => "audit",
            pb::policy_verdict::Decision::Unknown => "unknown",
            pb::policy_verdict::Decision::Unspecified => "none",
        })
        .to_owned()
}

/// Requests per second as a person reads them: 2 significant decimals under 10.
fn rps(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.0}")
    }
}

/// Pending requests first, then the latest decided ones, with the reviewed diff and what-if.
async fn approvals_page(
    State(c): State<Console>,
    headers: HeaderMap,
    Query(n): Query<Notice>,
) -> Result<Response, Refused> {
    let v = viewer(&c, &headers, true).await?;
    let list = MeshService::list_approvals(
        &c.service,
        as_viewer(
            &v,
            pb::ListApprovalsRequest {
                limit: 50,
                ..Default::default()
            },
        ),
    )
    .await;
    let mut list = list?.into_inner().approvals;
    let pending = pb::ApprovalState::Pending as i32;
    list.sort_by_key(|a| a.state != pending);
    let cards = list
        .into_iter()
        .map(|a| Card {
            state: mesh_proto::approval_state_word(a.state),
            pending: a.state == pending,
            on_behalf_of: a
                .on_behalf_of
                .as_ref()
                .map_or_else(String::new, |i| i.user.clone()),
            votes: a
                .approvals
                .iter()
                .map(|v| {
                    let mut s = format!("{} ({})", v.user, v.front_end);
                    if !v.reason.is_empty() {
                        s.push_str(&format!(": {}", v.reason));
                    }
                    s
                })
                .collect(),
            affected: a
                .affected_edges
                .iter()
                .map(|e| {
                    format!(
                        "{}: {} -> {} ({} rps)",
                        edge_name(e.edge.as_ref()),
                        decision_word(e.before),
                        decision_word(e.after),
                        rps(e.rps)
                    )
                })
                .collect(),
            a,
        })
        .collect();
    Ok(html(&ApprovalsPage {
        user: v.caller.user,
        csrf: v.session.csrf,
        notice: n.notice.unwrap_or_default().chars().take(300).collect(),
        cards,
    }))
}

#[derive(serde::Deserialize)]
struct DecideForm {
    csrf: String,
    #[serde(default)]
    reason: String,
}

/// Approves or rejects a request as the viewer, under the same approval policy as every other
/// front end; back to the page with what happened.
async fn decide(
    State(c): State<Console>,
    headers: HeaderMap,
    Path((id, decision)): Path<(String, String)>,
    Form(f): Form<DecideForm>,
) -> Result<Response, Refused> {
    let v = viewer(&c, &headers, true).await?;
    check_write(&headers, &v, Some(&f.csrf))?;
    let req = pb::DecideApprovalRequest {
        id: id.clone(),
        reason: f.reason,
        front_end: FRONT_END.into(),
        ..Default::default()
    };
    let done = match decision.as_str() {
        "approve" => MeshService::approve(&c.service, as_viewer(&v, req)).await,
        "reject" => MeshService::reject(&c.service, as_viewer(&v, req)).await,
        other => {
            return Err(Refused::BadRequest(format!("{other:?}: approve or reject")));
        }
    };
    let notice = match done {
        Ok(a) => {
            let a = a.into_inner();
            let mut s = format!("{id}: {}", mesh_proto::approval_state_word(a.state));
            if !a.outcome.is_empty() {
                s.push_str(&format!(" ({})", a.outcome));
            }
            s
        }
        Err(s) => format!("{id}: refused: {}", s.message()),
    };
    let q = serde_urlencoded::to_string([("notice", notice)]).unwrap_or_default();
    Ok(Redirect::to(&format!("/ui/approvals?{q}")).into_response())
}

/// The page's one script, versioned with the binary.
async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("console/assets/console.js"),
    )
        .into_response()
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("console/assets/console.css"),
    )
        .into_response()
}
