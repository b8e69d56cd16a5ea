//! Console sign-in with OpenID Connect: the authorization code flow with PKCE (S256) against the
//! issuer mesh-mcp already trusts for OAuth. The access token it returns is checked like any
//! other (signature, issuer, audience, expiry) and names the identity as it does for MCP; the
//! session holds it, so the session ends when the token does.
//!
//! Nothing of a sign-in under way is kept here: its state and PKCE verifier ride in an
//! HttpOnly cookie of the browser that started it, so the issuer's redirect back may reach any
//! replica. The code is the issuer's to honour once.

use std::{sync::Arc, time::Duration};

use base64::Engine as _;
use sha2::Digest as _;
use tokio::sync::Mutex;

/// Bound on one discovery or token request.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest discovery document or token response read.
const MAX_RESPONSE: usize = 64 * 1024;
/// Scopes asked for when the issuer lists them (`openid` always).
const WANTED_SCOPES: [&str; 3] = ["profile", "email", "groups"];

/// Why a sign-in through the issuer did not complete.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OidcError {
    /// The issuer's metadata could not be read.
    #[error("cannot read the issuer's metadata at {url}: {why}")]
    Discovery { url: String, why: String },
    /// The callback names no sign-in this browser started (or one that timed out).
    #[error(
        "this sign-in was not started in this browser or took longer than 10 minutes; start again"
    )]
    UnknownState,
    /// The issuer sent the browser back with an error.
    #[error("the issuer refused the sign-in: {0}")]
    Refused(String),
    /// The code could not be exchanged for a token.
    #[error("the token exchange failed: {0}")]
    Exchange(String),
}

/// What the flow needs of the issuer's metadata.
#[derive(Clone, Debug)]
struct Endpoints {
    authorize: String,
    token: String,
    scope: String,
}

/// A sign-in under way, as its cookie carries it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Started {
    /// Sent to the issuer and back: the callback's `state` must equal it.
    pub(crate) state: String,
    /// The PKCE verifier; the issuer saw only its S256 challenge.
    pub(crate) verifier: String,
}

impl Started {
    /// The cookie value: `state.verifier` (hex and base64url: no separator inside either).
    pub(crate) fn cookie(&self) -> String {
        format!("{}.{}", self.state, self.verifier)
    }

    /// Reads a cookie value back; `None` unless it is well formed.
    pub(crate) fn parse(v: &str) -> Option<Self> {
        let (state, verifier) = v.split_once('.')?;
        let ok = state.len() == 64
            && state.bytes().all(|b| b.is_ascii_hexdigit())
            && (43..=128).contains(&verifier.len())
            && verifier
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| Self {
            state: state.to_owned(),
            verifier: verifier.to_owned(),
        })
    }
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
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The PKCE S256 challenge of `verifier` (RFC 7636 §4.2).
pub(crate) fn challenge(verifier: &str) -> String {
    b64(&sha2::Sha256::digest(verifier.as_bytes()))
}

/// The body of `r`, refused past [`MAX_RESPONSE`] bytes without reading further.
async fn capped(mut r: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = r.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > MAX_RESPONSE {
            return Err(format!("the answer is over {MAX_RESPONSE} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
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
        })
    }

    /// The issuer, as the sign-in page names it.
    pub(crate) fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The endpoints and scopes, from the issuer's OpenID (else OAuth) metadata; read once.
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
                serde_json::from_slice::<serde_json::Value>(&capped(r).await?)
                    .map_err(|e| e.to_string())
            }
            .await;
            match got {
                Ok(v) => match (
                    v["authorization_endpoint"].as_str(),
                    v["token_endpoint"].as_str(),
                ) {
                    (Some(a), Some(t)) => {
                        // Only scopes the issuer says it knows: some refuse the rest.
                        let listed: Vec<&str> = v["scopes_supported"]
                            .as_array()
                            .map(|a| a.iter().filter_map(|s| s.as_str()).collect())
                            .unwrap_or_else(|| vec!["profile", "email"]);
                        let mut scope = vec!["openid"];
                        scope.extend(WANTED_SCOPES.iter().filter(|w| listed.contains(w)));
                        let e = Endpoints {
                            authorize: a.to_owned(),
                            token: t.to_owned(),
                            scope: scope.join(" "),
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
    /// to, and what the browser must keep for the callback (in a cookie).
    pub(crate) async fn start(&self, redirect_uri: &str) -> Result<(String, Started), OidcError> {
        let endpoints = self.endpoints().await?;
        let started = Started {
            state: super::session::random_hex(),
            verifier: b64(super::session::random_hex().as_bytes()),
        };
        let query = serde_urlencoded::to_string([
            ("response_type", "code"),
            ("client_id", self.client_id.as_str()),
            ("redirect_uri", redirect_uri),
            ("scope", endpoints.scope.as_str()),
            ("state", started.state.as_str()),
            ("code_challenge", challenge(&started.verifier).as_str()),
            ("code_challenge_method", "S256"),
            ("resource", self.resource.as_str()),
        ])
        .unwrap_or_default();
        let sep = if endpoints.authorize.contains('?') {
            '&'
        } else {
            '?'
        };
        Ok((format!("{}{sep}{query}", endpoints.authorize), started))
    }

    /// Exchanges the issuer's `code` with the sign-in's PKCE verifier: the access token.
    pub(crate) async fn finish(
        &self,
        started: &Started,
        code: &str,
        redirect_uri: &str,
    ) -> Result<String, OidcError> {
        let endpoints = self.endpoints().await?;
        let r = self
            .http
            .post(&endpoints.token)
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect_uri),
                ("client_id", self.client_id.as_str()),
                ("code_verifier", started.verifier.as_str()),
                ("resource", self.resource.as_str()),
            ])
            .send()
            .await
            .map_err(|e| OidcError::Exchange(e.to_string()))?;
        let status = r.status();
        let body = capped(r).await.map_err(OidcError::Exchange)?;
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|_| OidcError::Exchange(format!("HTTP {status}, not JSON")))?;
        if !status.is_success() {
            let err = v["error"].as_str().unwrap_or("unknown error");
            let desc = v["error_description"].as_str().unwrap_or_default();
            let said: String = format!("HTTP {status}: {err} {desc}")
                .chars()
                .filter(|c| !c.is_control())
                .take(300)
                .collect();
            return Err(OidcError::Exchange(said));
        }
        v["access_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| OidcError::Exchange("no access_token in the answer".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::{Started, challenge};

    #[test]
    fn the_challenge_is_rfc_7636s_s256() {
        // RFC 7636 appendix B.
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn a_sign_in_reads_back_from_its_cookie_and_nothing_else_does() {
        let s = Started {
            state: "a".repeat(64),
            verifier: "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into(),
        };
        assert_eq!(Started::parse(&s.cookie()), Some(s));
        for bad in [
            "",
            "x.y",
            &format!("{}.short", "a".repeat(64)),
            &format!("{}.{}", "g".repeat(64), "v".repeat(43)),
        ] {
            assert_eq!(Started::parse(bad), None, "{bad}");
        }
    }
}
