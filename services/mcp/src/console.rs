//! The web console under `/ui/`: the mesh as a live picture (the same filtered watch as gRPC,
//! as server-sent events), edge and workload panels with the verdict's explain chain and a
//! what-if for a pasted manifest, a time slider over the history, and the approvals page.
//!
//! Pages are askama templates rendered here; the picture is drawn by one plain script served
//! from this binary (no build chain, no third-party requests: the Content-Security-Policy
//! allows this origin only). Sign-in is a bearer token posted to `/ui/login` (never in a URL),
//! or OpenID Connect when configured; the session lives in the store every replica shares and
//! re-checks its token on every request, so what the console may do is exactly what the token
//! may do over gRPC.

mod api;
mod approvals;
mod oidc;
mod session;
mod signin;

use std::sync::Arc;

use askama::Template;
use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use mesh_proto::pb;
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
/// Live pictures one session may hold open at once (tabs, windows) on one replica.
const SESSION_STREAMS: usize = 8;
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
    /// Too many live pictures: try again shortly (503 with `Retry-After`).
    Busy(String),
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
            Self::Busy(why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "10")],
                format!("{why}\n"),
            )
                .into_response(),
            Self::Status(s) => {
                // What a person at the page reads from each refusal of the service.
                let code = match s.code() {
                    tonic::Code::InvalidArgument | tonic::Code::OutOfRange => {
                        StatusCode::BAD_REQUEST
                    }
                    tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
                    tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
                    tonic::Code::NotFound => StatusCode::NOT_FOUND,
                    tonic::Code::FailedPrecondition
                    | tonic::Code::Aborted
                    | tonic::Code::AlreadyExists => StatusCode::CONFLICT,
                    tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
                    tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                    tonic::Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
                    tonic::Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                };
                (code, format!("{}\n", s.message())).into_response()
            }
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
    /// That URL's origin (scheme, host, port): what writes must come from.
    origin: Option<String>,
}

impl Options {
    /// Token sign-in over plain HTTP, nothing else configured.
    pub(crate) fn plain() -> Self {
        Self {
            secure: false,
            oidc: None,
            url: None,
            origin: None,
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
        let (url, origin, secure) = match &args.ui_url {
            Some(u) => {
                let parsed = reqwest::Url::parse(u)
                    .ok()
                    .filter(|p| matches!(p.scheme(), "http" | "https") && p.host().is_some())
                    .ok_or_else(|| format!("--ui-url {u}: an http(s) URL"))?;
                // The browser's view decides: cookies are Secure exactly when it uses https.
                (
                    Some(u.trim_end_matches('/').to_owned()),
                    Some(parsed.origin().ascii_serialization()),
                    parsed.scheme() == "https",
                )
            }
            None => (
                None,
                None,
                !args.http_listen.is_some_and(|a| a.ip().is_loopback()),
            ),
        };
        Ok(Self {
            secure,
            oidc,
            url,
            origin,
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
    /// Each session's share of them, so one signed-in user cannot hold them all.
    session_streams: Arc<tokio::sync::Mutex<std::collections::HashMap<String, Arc<Semaphore>>>>,
    oidc: Option<oidc::Oidc>,
    url: Option<String>,
    origin: Option<String>,
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
    let sessions = Sessions::new(service.records.clone(), o.secure);
    let state = Console {
        service,
        auth,
        sessions,
        streams: Arc::new(Semaphore::new(MAX_STREAMS)),
        session_streams: Arc::default(),
        oidc: o.oidc,
        url: o.url,
        origin: o.origin,
        secure: o.secure,
    };
    // Expired sessions go from the store with their tokens even when nobody signs in.
    let sweeper = state.sessions.clone();
    tokio::spawn(async move {
        // The first sweep one period in: nothing has expired at start-up.
        let mut every = tokio::time::interval_at(
            tokio::time::Instant::now() + session::SWEEP_EVERY,
            session::SWEEP_EVERY,
        );
        loop {
            every.tick().await;
            if let Err(e) = sweeper.prune().await {
                tracing::warn!(error = %e, "sweeping expired console sessions");
            }
        }
    });
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(graph_page))
        .route("/ui/login", get(signin::login_page).post(signin::login))
        .route("/ui/login/oidc", get(signin::oidc_start))
        .route("/ui/callback", get(signin::oidc_callback))
        .route("/ui/logout", post(signin::logout))
        .route("/ui/approvals", get(approvals::page))
        .route("/ui/approvals/{id}/{decision}", post(approvals::decide))
        .route("/ui/static/console.js", get(script))
        .route("/ui/static/console.css", get(style))
        .route("/ui/api/graph", get(api::graph))
        .route("/ui/api/events", get(api::events))
        .route("/ui/api/diff", get(api::diff))
        .route("/ui/api/explain", get(api::explain))
        .route("/ui/api/series", get(api::series))
        .route("/ui/api/whatif", post(api::whatif))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::map_response(headers))
        .layer(axum::middleware::map_request(authority_as_host))
        .with_state(state)
}

/// HTTP/2 requests name their host in the URI, not in `Host`: the console reads one place.
async fn authority_as_host(mut r: axum::extract::Request) -> axum::extract::Request {
    if !r.headers().contains_key(header::HOST)
        && let Some(v) = r
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        r.headers_mut().insert(header::HOST, v);
    }
    r
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

/// The session store failing: the console cannot tell who is signed in.
impl From<session::StoreError> for Refused {
    fn from(e: session::StoreError) -> Self {
        Self::Status(tonic::Status::unavailable(e.to_string()))
    }
}

/// The signed-in viewer, or why not (`page`: a page, which sends the browser to sign in).
async fn viewer(c: &Console, headers: &HeaderMap, page: bool) -> Result<Viewer, Refused> {
    let Some((id, session)) = c.sessions.get(headers).await? else {
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
            c.sessions.close(&id).await?;
            Err(Refused::SignIn {
                page,
                why: format!("signed out: {}", s.message()),
            })
        }
    }
}

/// A write's first check, before its session is even looked up: it comes from this console.
fn same_origin(c: &Console, headers: &HeaderMap) -> Result<(), Refused> {
    match foreign_origin(headers, c.origin.as_deref()) {
        Some(why) => Err(Refused::Forbidden(why)),
        None => Ok(()),
    }
}

/// A write's last check: the session's CSRF token (`sent` from a form field, else the
/// `x-csrf-token` header).
fn check_csrf(headers: &HeaderMap, v: &Viewer, sent: Option<&str>) -> Result<(), Refused> {
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
