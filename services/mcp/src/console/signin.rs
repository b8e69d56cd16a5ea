//! Signing in and out: a bearer token posted to `/ui/login`, or OpenID Connect through the
//! OAuth issuer (`/ui/login/oidc`, back at `/ui/callback`).

use askama::Template;
use axum::{
    Form,
    extract::{Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};

use super::{
    Console, MAX_TOKEN, Refused, check_csrf, html, oidc, same_origin, session,
    session::{foreign_origin, same_secret},
    viewer,
};

#[derive(Template)]
#[template(path = "console/login.html")]
pub(super) struct LoginPage {
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

pub(super) async fn login_page(State(c): State<Console>) -> Response {
    html(&c.login(String::new()))
}

/// The cookie that pins an OIDC sign-in to the browser that started it: `Lax`, as the
/// issuer's redirect back is a cross-site navigation.
const STATE_COOKIE: &str = "lmcp_oidc";

/// Sends the browser to the issuer, with a fresh state and PKCE challenge.
pub(super) async fn oidc_start(
    State(c): State<Console>,
    headers: HeaderMap,
) -> Result<Response, Refused> {
    let Some(o) = &c.oidc else {
        return Err(Refused::BadRequest(
            "sign-in with OpenID Connect is not configured (--ui-oidc-client-id)".into(),
        ));
    };
    let redirect = format!("{}/ui/callback", c.base(&headers));
    let (url, started) = o
        .start(&redirect)
        .await
        .map_err(|e| Refused::Status(tonic::Status::unavailable(e.to_string())))?;
    let cookie = c
        .sessions
        .state_cookie(STATE_COOKIE, &started.cookie(), 600);
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to(&url)).into_response())
}

#[derive(serde::Deserialize)]
pub(super) struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

#[derive(Template)]
#[template(path = "console/signed-in.html")]
pub(super) struct SignedIn {
    user: String,
}

/// The issuer's redirect back: the state must be this browser's, the code is exchanged with
/// the PKCE verifier, and the access token must pass as any other would.
pub(super) async fn oidc_callback(
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
    let started = session::cookie_value(&headers, STATE_COOKIE).and_then(oidc::Started::parse);
    let Some(started) = started.filter(|s| !state.is_empty() && same_secret(&state, &s.state))
    else {
        return again(
            StatusCode::BAD_REQUEST,
            oidc::OidcError::UnknownState.to_string(),
        );
    };
    if let Some(e) = q.error {
        let why = format!("{e} {}", q.error_description.unwrap_or_default());
        let why = why.chars().filter(|c| !c.is_control()).take(300).collect();
        return again(
            StatusCode::UNAUTHORIZED,
            oidc::OidcError::Refused(why).to_string(),
        );
    }
    let redirect = format!("{}/ui/callback", c.base(&headers));
    let token = match o
        .finish(&started, &q.code.unwrap_or_default(), &redirect)
        .await
    {
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
            let session = match c.sessions.open(token).await {
                Ok(s) => s,
                Err(e) => return again(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            };
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
pub(super) struct LoginForm {
    token: String,
}

/// Signs in with a bearer token; only from this origin, so another site cannot sign a browser
/// in as someone else.
pub(super) async fn login(
    State(c): State<Console>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let again = |code: StatusCode, error: String| (code, html(&c.login(error))).into_response();
    if let Some(why) = foreign_origin(&headers, c.origin.as_deref()) {
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
            match c.sessions.open(token.to_owned()).await {
                Ok(cookie) => {
                    ([(header::SET_COOKIE, cookie)], Redirect::to("/ui/")).into_response()
                }
                Err(e) => again(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            }
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
pub(super) struct CsrfForm {
    csrf: String,
}

pub(super) async fn logout(
    State(c): State<Console>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Result<Response, Refused> {
    same_origin(&c, &headers)?;
    let v = viewer(&c, &headers, true).await?;
    check_csrf(&headers, &v, Some(&f.csrf))?;
    let cookie = c.sessions.close(&v.id).await?;
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/ui/login")).into_response())
}
