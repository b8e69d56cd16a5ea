//! Console sign-in state: sessions named by an unguessable cookie, kept in the shared store
//! (every mesh-mcp replica behind the Service, or Linkerd's per-request balancing, finds the
//! same session), each holding the bearer token it was opened with (re-checked on every
//! request, so a revoked token or an expired JWT ends the session at once) and the CSRF token
//! its forms must return. The store keys sessions by the hash of their id: reading the store
//! does not give out cookies.

use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, HeaderValue, header};
use mesh_store::{RecordStore as _, Shelf};
use sha2::Digest as _;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "lmcp_session";
/// A session ends this long after sign-in, whatever happens (sooner when its token does).
const LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// Sessions held at once; the oldest go when a sign-in would pass it.
const MAX_SESSIONS: usize = 10_000;
/// How often expired sessions (and their tokens) are swept from the store.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(300);

/// One signed-in browser.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Session {
    /// What it signed in with: a bearer token the service's authenticator accepts.
    pub(crate) token: String,
    /// Every write must carry this (form field `csrf` or header `x-csrf-token`).
    pub(crate) csrf: String,
    /// When it was opened (ms since the epoch).
    opened_ms: u64,
}

/// Why a session could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("the session store: {0}")]
pub(crate) struct StoreError(String);

/// The sessions of every mesh-mcp sharing `store`.
#[derive(Clone, Debug)]
pub(crate) struct Sessions {
    store: mesh_store::Backend,
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

/// The store's key for session `id`.
fn key(id: &str) -> String {
    hex::encode(sha2::Sha256::digest(id.as_bytes()))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn expired(s: &Session, now: u64) -> bool {
    now.saturating_sub(s.opened_ms) >= u64::try_from(LIFETIME.as_millis()).unwrap_or(u64::MAX)
}

impl Sessions {
    /// Sessions in `store`; cookies `Secure` when `secure`.
    pub(crate) fn new(store: mesh_store::Backend, secure: bool) -> Self {
        Self { store, secure }
    }

    /// Opens a session for `token`; the `Set-Cookie` value that names it.
    pub(crate) async fn open(&self, token: String) -> Result<HeaderValue, StoreError> {
        // Expiry and the cap are the sweeper's (every SWEEP_EVERY): signing in reads no index.
        let id = random_hex();
        let s = Session {
            token,
            csrf: random_hex(),
            opened_ms: now_ms(),
        };
        let bytes = serde_json::to_vec(&s).map_err(|e| StoreError(e.to_string()))?;
        self.store
            .create_record(Shelf::Sessions, &key(&id), "open", bytes)
            .await
            .map_err(|e| StoreError(e.to_string()))?;
        Ok(self.cookie(&id, LIFETIME.as_secs()))
    }

    /// Drops sessions from the oldest while they are expired (or gone, or past
    /// [`MAX_SESSIONS`]), stopping at the first live one: sessions are listed by age. Run by
    /// the sweeper, not on the sign-in path.
    pub(crate) async fn prune(&self) -> Result<usize, StoreError> {
        let ids = self
            .store
            .record_ids(Shelf::Sessions)
            .await
            .map_err(|e| StoreError(e.to_string()))?;
        let over = ids.len().saturating_sub(MAX_SESSIONS - 1);
        let now = now_ms();
        let mut dropped = 0;
        for (i, k) in ids.iter().enumerate() {
            let gone = i < over
                || match self.store.get_record(Shelf::Sessions, k).await {
                    Ok(Some(e)) => serde_json::from_slice::<Session>(&e.record)
                        .map_or(true, |s| expired(&s, now)),
                    Ok(None) => true,
                    Err(e) => return Err(StoreError(e.to_string())),
                };
            if !gone {
                break;
            }
            self.store
                .remove_record(Shelf::Sessions, k)
                .await
                .map_err(|e| StoreError(e.to_string()))?;
            dropped += 1;
        }
        Ok(dropped)
    }

    /// The session the request's cookie names, if it is live.
    pub(crate) async fn get(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<(String, Session)>, StoreError> {
        let Some(id) = cookie_value(headers, COOKIE)
            .filter(|id| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        else {
            return Ok(None);
        };
        let got = self
            .store
            .get_record(Shelf::Sessions, &key(id))
            .await
            .map_err(|e| StoreError(e.to_string()))?;
        let Some(s) = got.and_then(|e| serde_json::from_slice::<Session>(&e.record).ok()) else {
            return Ok(None);
        };
        if expired(&s, now_ms()) {
            self.close(id).await?;
            return Ok(None);
        }
        Ok(Some((id.to_owned(), s)))
    }

    /// Ends the session `id`; the `Set-Cookie` value that clears the browser's cookie.
    pub(crate) async fn close(&self, id: &str) -> Result<HeaderValue, StoreError> {
        self.store
            .remove_record(Shelf::Sessions, &key(id))
            .await
            .map_err(|e| StoreError(e.to_string()))?;
        Ok(self.cookie("", 0))
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

    /// A `Set-Cookie` value for the approvals page's one-time notice (`value` URL-encoded).
    pub(crate) fn notice_cookie(&self, name: &str, value: &str, max_age: u64) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{name}={value}; Path=/ui/approvals; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
        ))
        .unwrap_or_else(|_| HeaderValue::from_static("lmcp_notice=; Path=/ui/approvals; Max-Age=0"))
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

/// Why a write was refused before anything else was looked at: the browser says it came from
/// another site, or its origin is not this console's. The console's origin is `expected` (the
/// configured `--ui-url`'s scheme, host and port) when set, else the request's own host (its
/// `Host`, or the HTTP/2 authority) under either scheme.
pub(crate) fn foreign_origin(headers: &HeaderMap, expected: Option<&str>) -> Option<String> {
    let get = |h: header::HeaderName| headers.get(h).and_then(|v| v.to_str().ok());
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && site != "same-origin"
        && site != "none"
    {
        return Some(format!("the browser says this request came from {site}"));
    }
    let origin = get(header::ORIGIN)?;
    if let Some(want) = expected {
        return (origin != want).then(|| format!("origin {origin} is not this console's ({want})"));
    }
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
        let s = Sessions::new(mesh_store::Backend::memory(), false);
        let set = s.open("t0ken".into()).await.unwrap();
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
        let (got, sess) = s.get(&h).await.unwrap().unwrap();
        assert_eq!((got.as_str(), sess.token.as_str()), (id, "t0ken"));
        assert_eq!(sess.csrf.len(), 64);
        let cleared = s.close(id).await.unwrap();
        assert!(cleared.to_str().unwrap().contains("Max-Age=0"));
        assert!(s.get(&h).await.unwrap().is_none());
        assert!(
            Sessions::new(mesh_store::Backend::memory(), true)
                .open("x".into())
                .await
                .unwrap()
                .to_str()
                .unwrap()
                .ends_with("; Secure")
        );
    }

    #[test]
    fn writes_from_another_site_are_told_apart() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(foreign_origin(&h, None), None);
        h.insert(header::ORIGIN, "http://127.0.0.1:8080".parse().unwrap());
        assert_eq!(foreign_origin(&h, None), None);
        // With --ui-url, its origin exactly: scheme included, whatever Host a proxy set.
        assert!(foreign_origin(&h, Some("https://mcp.example.com")).is_some());
        h.insert(header::ORIGIN, "https://mcp.example.com".parse().unwrap());
        assert_eq!(foreign_origin(&h, Some("https://mcp.example.com")), None);
        h.insert(header::ORIGIN, "http://localhost:9999".parse().unwrap());
        assert!(foreign_origin(&h, None).unwrap().contains("localhost:9999"));
        h.insert(header::ORIGIN, "http://127.0.0.1:8080".parse().unwrap());
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(foreign_origin(&h, None).unwrap().contains("cross-site"));
        assert!(same_secret("abc", "abc") && !same_secret("abc", "abd") && !same_secret("a", "ab"));
    }
}
