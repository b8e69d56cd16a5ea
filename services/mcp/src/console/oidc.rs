//! Console sign-in with OpenID Connect: the authorization code flow with PKCE (S256) against the
//! issuer mesh-mcp already trusts for OAuth. The access token it returns is checked like any
//! other (signature, issuer, audience, expiry) and names the identity as it does for MCP; the
//! session holds it, so the session ends when the token does.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use base64::Engine as _;
use sha2::Digest as _;
use tokio::sync::Mutex;

/// Bound on one discovery or token request.
const TIMEOUT: Duration = Duration::from_secs(10);
/// How long a browser may take at the issuer's sign-in page.
const PENDING_FOR: Duration = Duration::from_secs(600);
/// Sign-ins under way at once; past it the oldest is dropped.
const MAX_PENDING: usize = 10_000;
/// Largest token response read.
const MAX_RESPONSE: usize = 64 * 1024;

/// Why a sign-in through the issuer did not complete.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OidcError {
    /// The issuer's metadata could not be read.
    #[error("cannot read the issuer's metadata at {url}: {why}")]
    Discovery { url: String, why: String },
    /// The callback names no sign-in this server started (or one that timed out).
    #[error("this sign-in was not started here or took longer than 10 minutes; start again")]
    UnknownState,
    /// The issuer sent the browser back with an error.
    #[error("the issuer refused the sign-in: {0}")]
    Refused(String),
    /// The code could not be exchanged for a token.
    #[error("the token exchange failed: {0}")]
    Exchange(String),
}

/// The issuer's two endpoints the flow uses.
#[derive(Clone, Debug)]
struct Endpoints {
    authorize: String,
    token: String,
}

/// One sign-in under way: what the callback must prove.
#[derive(Debug)]
struct Pending {
    verifier: String,
    redirect_uri: String,
    started: Instant,
}

/// The OpenID Connect client of the console.
#[derive(Clone, Debug)]
pub(crate) struct Oidc {
    issuer: String,
    client_id: String,
    /// Asked for as the token's audience (RFC 8707 `resource`), so it is accepted here.
    resource: String,
    http: reqwest::Client,
    endpoints: Arc<Mutex<Option<Endpoints>>>,
    pending: Arc<Mutex<HashMap<String, Pending>>>,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The PKCE S256 challenge of `verifier` (RFC 7636 §4.2).
pub(crate) fn challenge(verifier: &str) -> String {
    b64(&sha2::Sha256::digest(verifier.as_bytes()))
}

impl Oidc {
    /// A client `client_id` of `issuer`, asking for tokens for `resource` (this server's
    /// OAuth audience).
    pub(crate) fn new(issuer: &str, client_id: &str, resource: &str) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self {
            issuer: issuer.trim_end_matches('/').to_owned(),
            client_id: client_id.to_owned(),
            resource: resource.to_owned(),
            http,
            endpoints: Arc::default(),
            pending: Arc::default(),
        })
    }

    /// The issuer, as the sign-in page names it.
    pub(crate) fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The authorization and token endpoints, from the issuer's OpenID (else OAuth) metadata;
    /// read once.
    async fn endpoints(&self) -> Result<Endpoints, OidcError> {
        let mut cached = self.endpoints.lock().await;
        if let Some(e) = cached.as_ref() {
            return Ok(e.clone());
        }
        let mut why = String::new();
        let mut url = String::new();
        for doc in ["openid-configuration", "oauth-authorization-server"] {
            url = format!("{}/.well-known/{doc}", self.issuer);
            let got = async {
                let r = self
                    .http
                    .get(&url)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if !r.status().is_success() {
                    return Err(format!("HTTP {}", r.status()));
                }
                r.json::<serde_json::Value>()
                    .await
                    .map_err(|e| e.to_string())
            }
            .await;
            match got {
                Ok(v) => match (
                    v["authorization_endpoint"].as_str(),
                    v["token_endpoint"].as_str(),
                ) {
                    (Some(a), Some(t)) => {
                        let e = Endpoints {
                            authorize: a.to_owned(),
                            token: t.to_owned(),
                        };
                        *cached = Some(e.clone());
                        return Ok(e);
                    }
                    _ => why = "no authorization_endpoint and token_endpoint".into(),
                },
                Err(e) => why = e,
            }
        }
        Err(OidcError::Discovery { url, why })
    }

    /// Starts a sign-in that comes back to `redirect_uri`: the issuer URL to send the browser
    /// to, and the state its callback must carry (the caller pins it in a cookie).
    pub(crate) async fn start(&self, redirect_uri: &str) -> Result<(String, String), OidcError> {
        let endpoints = self.endpoints().await?;
        let state = super::session::random_hex();
        let verifier = b64(super::session::random_hex().as_bytes());
        let query = serde_urlencoded::to_string([
            ("response_type", "code"),
            ("client_id", self.client_id.as_str()),
            ("redirect_uri", redirect_uri),
            ("scope", "openid profile email groups"),
            ("state", state.as_str()),
            ("code_challenge", challenge(&verifier).as_str()),
            ("code_challenge_method", "S256"),
            ("resource", self.resource.as_str()),
        ])
        .unwrap_or_default();
        let sep = if endpoints.authorize.contains('?') {
            '&'
        } else {
            '?'
        };
        let now = Instant::now();
        let mut pending = self.pending.lock().await;
        pending.retain(|_, p| now.duration_since(p.started) < PENDING_FOR);
        if pending.len() >= MAX_PENDING
            && let Some(oldest) = pending
                .iter()
                .min_by_key(|(_, p)| p.started)
                .map(|(k, _)| k.clone())
        {
            pending.remove(&oldest);
        }
        pending.insert(
            state.clone(),
            Pending {
                verifier,
                redirect_uri: redirect_uri.to_owned(),
                started: now,
            },
        );
        Ok((format!("{}{sep}{query}", endpoints.authorize), state))
    }

    /// Completes the sign-in `state` with the issuer's `code`: the access token.
    pub(crate) async fn finish(&self, state: &str, code: &str) -> Result<String, OidcError> {
        let p = self
            .pending
            .lock()
            .await
            .remove(state)
            .filter(|p| p.started.elapsed() < PENDING_FOR)
            .ok_or(OidcError::UnknownState)?;
        let endpoints = self.endpoints().await?;
        let r = self
            .http
            .post(&endpoints.token)
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", p.redirect_uri.as_str()),
                ("client_id", self.client_id.as_str()),
                ("code_verifier", p.verifier.as_str()),
                ("resource", self.resource.as_str()),
            ])
            .send()
            .await
            .map_err(|e| OidcError::Exchange(e.to_string()))?;
        let status = r.status();
        let body = r
            .bytes()
            .await
            .map_err(|e| OidcError::Exchange(e.to_string()))?;
        if body.len() > MAX_RESPONSE {
            return Err(OidcError::Exchange(format!(
                "the answer is over {MAX_RESPONSE} bytes"
            )));
        }
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|_| OidcError::Exchange(format!("HTTP {status}, not JSON")))?;
        if !status.is_success() {
            let err = v["error"].as_str().unwrap_or("unknown error");
            let desc = v["error_description"].as_str().unwrap_or_default();
            return Err(OidcError::Exchange(format!("HTTP {status}: {err} {desc}")));
        }
        v["access_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| OidcError::Exchange("no access_token in the answer".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::challenge;

    #[test]
    fn the_challenge_is_rfc_7636s_s256() {
        // RFC 7636 appendix B.
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
