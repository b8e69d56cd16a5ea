//! Console sign-in state: server-side sessions named by an unguessable cookie, each holding the
//! bearer token it was opened with (re-checked on every request, so a revoked token or an
//! expired JWT ends the session at once) and the CSRF token its forms must return.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::http::{HeaderMap, HeaderValue, header};
use tokio::sync::Mutex;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "lmcp_session";
/// A session ends this long after sign-in, whatever happens.
const LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// ... or this long after its last request.
const IDLE: Duration = Duration::from_secs(3600);
/// Sessions held at once; the oldest goes when a sign-in would pass it.
const MAX_SESSIONS: usize = 10_000;

/// One signed-in browser.
#[derive(Clone, Debug)]
pub(crate) struct Session {
    /// What it signed in with: a bearer token the service's authenticator accepts.
    pub(crate) token: String,
    /// Every write must carry this (form field `csrf` or header `x-csrf-token`).
    pub(crate) csrf: String,
    opened: Instant,
    seen: Instant,
}

/// The sessions of one mesh-mcp process.
#[derive(Clone, Debug)]
pub(crate) struct Sessions {
    by_id: Arc<Mutex<HashMap<String, Session>>>,
    /// Cookies carry `Secure` (everywhere but a loopback listener, where browsers use http).
    secure: bool,
}

/// 32 random bytes from the operating system, as hex.
pub(crate) fn random_hex() -> String {
    let mut b = [0u8; 32];
    // The OS generator failing is not something to serve pages through.
    #[allow(clippy::expect_used, reason = "no randomness, no sessions")]
    getrandom::fill(&mut b).expect("the operating system's random generator");
    hex::encode(b)
}

/// Compares secrets in time independent of where they differ.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Sessions {
    /// No sessions yet; cookies `Secure` when `secure`.
    pub(crate) fn new(secure: bool) -> Self {
        Self {
            by_id: Arc::default(),
            secure,
        }
    }

    /// Opens a session for `token`; the `Set-Cookie` value that names it.
    pub(crate) async fn open(&self, token: String) -> HeaderValue {
        let id = random_hex();
        let now = Instant::now();
        let mut map = self.by_id.lock().await;
        map.retain(|_, s| live(s, now));
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.opened)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(
            id.clone(),
            Session {
                token,
                csrf: random_hex(),
                opened: now,
                seen: now,
            },
        );
        self.cookie(&id, LIFETIME.as_secs())
    }

    /// The session the request's cookie names, if it is live.
    pub(crate) async fn get(&self, headers: &HeaderMap) -> Option<(String, Session)> {
        let id = cookie_value(headers, COOKIE)?;
        let now = Instant::now();
        let mut map = self.by_id.lock().await;
        let s = map.get_mut(id)?;
        if !live(s, now) {
            map.remove(id);
            return None;
        }
        s.seen = now;
        Some((id.to_owned(), s.clone()))
    }

    /// Ends the session `id`; the `Set-Cookie` value that clears the browser's cookie.
    pub(crate) async fn close(&self, id: &str) -> HeaderValue {
        self.by_id.lock().await.remove(id);
        self.cookie("", 0)
    }

    /// A `Set-Cookie` value for a short-lived cookie `name` (`SameSite=Lax`: it must come
    /// back with the OIDC issuer's cross-site redirect).
    pub(crate) fn state_cookie(&self, name: &str, value: &str, max_age: u64) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{name}={value}; Path=/ui; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
        ))
        .unwrap_or_else(|_| HeaderValue::from_static("lmcp_oidc=; Path=/ui; Max-Age=0"))
    }

    /// A `Set-Cookie` value for the session cookie.
    fn cookie(&self, id: &str, max_age: u64) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        // Hex ids and fixed attributes: always a valid header value.
        HeaderValue::from_str(&format!(
            "{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
        ))
        .unwrap_or_else(|_| HeaderValue::from_static("lmcp_session=; Path=/ui; Max-Age=0"))
    }
}

fn live(s: &Session, now: Instant) -> bool {
    now.duration_since(s.opened) < LIFETIME && now.duration_since(s.seen) < IDLE
}

/// The value of cookie `name` in the request, if sent.
pub(crate) fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Why a write was refused before its CSRF token was even looked at: the browser says it
/// came from another site, or its origin is not this server's.
pub(crate) fn foreign_origin(headers: &HeaderMap) -> Option<String> {
    let get = |h: header::HeaderName| headers.get(h).and_then(|v| v.to_str().ok());
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && site != "same-origin"
        && site != "none"
    {
        return Some(format!("the browser says this request came from {site}"));
    }
    let origin = get(header::ORIGIN)?;
    let host = get(header::HOST).unwrap_or_default();
    let ours = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|o| !host.is_empty() && o == host);
    (!ours).then(|| format!("origin {origin} is not this console's ({host})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_session_is_found_by_its_cookie_and_gone_once_closed() {
        let s = Sessions::new(false);
        let set = s.open("t0ken".into()).await;
        let set = set.to_str().unwrap().to_owned();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        assert!(!set.contains("Secure"), "{set}");
        let id = set
            .strip_prefix("lmcp_session=")
            .and_then(|r| r.split(';').next())
            .unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            format!("a=b; {COOKIE}={id}").parse().unwrap(),
        );
        let (got, sess) = s.get(&h).await.unwrap();
        assert_eq!((got.as_str(), sess.token.as_str()), (id, "t0ken"));
        assert_eq!(sess.csrf.len(), 64);
        let cleared = s.close(id).await;
        assert!(cleared.to_str().unwrap().contains("Max-Age=0"));
        assert!(s.get(&h).await.is_none());
        assert!(
            Sessions::new(true)
                .open("x".into())
                .await
                .to_str()
                .unwrap()
                .ends_with("; Secure")
        );
    }

    #[test]
    fn writes_from_another_site_are_told_apart() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(foreign_origin(&h), None);
        h.insert(header::ORIGIN, "http://127.0.0.1:8080".parse().unwrap());
        assert_eq!(foreign_origin(&h), None);
        h.insert(header::ORIGIN, "http://localhost:9999".parse().unwrap());
        assert!(foreign_origin(&h).unwrap().contains("localhost:9999"));
        h.insert(header::ORIGIN, "http://127.0.0.1:8080".parse().unwrap());
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(foreign_origin(&h).unwrap().contains("cross-site"));
        assert!(same_secret("abc", "abc") && !same_secret("abc", "abd") && !same_secret("a", "ab"));
    }
}
