//! The OAuth 2.1 resource-server side of the MCP authorization spec: JWT access tokens from a
//! configured issuer, checked against its JWKS (signature, issuer, audience bound to this
//! server, expiry), and the protected resource metadata that tells clients where to get one.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use jsonwebtoken::{DecodingKey, Validation, jwk::JwkSet};
use serde_json::Value;
use tokio::sync::Mutex;
use tonic::Status;

use crate::Caller;

/// Where tokens come from and what they must say.
#[derive(Clone, Debug)]
pub struct OAuthConfig {
    /// The authorization server (`iss` of every token).
    pub issuer: String,
    /// This server's resource identifier (`aud` of every token), e.g. `https://mcp.example.com/mcp`.
    pub audience: String,
    /// The issuer's JWKS; `None`: discovered from its metadata.
    pub jwks_url: Option<String>,
    /// The claim that names the user (Kubernetes user for the mutation pipeline).
    pub user_claim: String,
    /// The claim with the user's groups (a list of strings), if any.
    pub groups_claim: String,
    /// Put before the user name, as kube-apiserver's `--oidc-username-prefix`: `None` is its
    /// default (`<issuer>#` unless the claim is `email`), `Some("")` none.
    pub username_prefix: Option<String>,
    /// Put before every group, as kube-apiserver's `--oidc-groups-prefix`.
    pub groups_prefix: String,
}

impl OAuthConfig {
    /// The prefix user names get: kube-apiserver's rule, so the same token names the same
    /// Kubernetes user here and at the API server.
    fn effective_username_prefix(&self) -> String {
        match &self.username_prefix {
            Some(p) => p.clone(),
            None if self.user_claim == "email" => String::new(),
            None => format!("{}#", self.issuer),
        }
    }
}

/// How often unknown key ids may trigger a JWKS refetch (key rotation), at most.
const REFETCH_EVERY: Duration = Duration::from_secs(30);
/// Bound on one metadata or JWKS fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Verifies JWT access tokens.
#[derive(Clone, Debug)]
pub struct JwtVerifier {
    config: Arc<OAuthConfig>,
    /// [`OAuthConfig::effective_username_prefix`], worked out once.
    username_prefix: Arc<str>,
    http: reqwest::Client,
    keys: Arc<Mutex<(Option<JwkSet>, Option<Instant>)>>,
}

impl JwtVerifier {
    /// A verifier for `config`; keys are fetched on first use.
    pub fn new(config: OAuthConfig) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self {
            username_prefix: config.effective_username_prefix().into(),
            config: Arc::new(config),
            http,
            keys: Arc::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &OAuthConfig {
        &self.config
    }

    async fn get_json(&self, url: &str) -> Result<Value, String> {
        let r = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if !r.status().is_success() {
            return Err(format!("{url}: HTTP {}", r.status()));
        }
        r.json().await.map_err(|e| format!("{url}: {e}"))
    }

    /// The JWKS URL: configured, else from the issuer's OAuth or OpenID metadata.
    async fn jwks_url(&self) -> Result<String, String> {
        if let Some(u) = &self.config.jwks_url {
            return Ok(u.clone());
        }
        let base = self.config.issuer.trim_end_matches('/');
        let mut last = String::new();
        for doc in ["oauth-authorization-server", "openid-configuration"] {
            match self.get_json(&format!("{base}/.well-known/{doc}")).await {
                Ok(v) => {
                    if let Some(u) = v["jwks_uri"].as_str() {
                        return Ok(u.to_owned());
                    }
                    last = format!("{doc} of {base} names no jwks_uri");
                }
                Err(e) => last = e,
            }
        }
        Err(format!("cannot find the issuer's keys: {last}"))
    }

    /// The decoding key for `kid`, refetching the JWKS (rate-limited) when it is unknown.
    async fn key(&self, kid: Option<&str>) -> Result<Result<DecodingKey, String>, Status> {
        let mut keys = self.keys.lock().await;
        let find = |set: &JwkSet| match kid {
            Some(k) => set.find(k).cloned(),
            None => set.keys.first().cloned(),
        };
        if let Some(jwk) = keys.0.as_ref().and_then(find) {
            return Ok(DecodingKey::from_jwk(&jwk).map_err(|e| format!("issuer key: {e}")));
        }
        if keys.1.is_some_and(|at| at.elapsed() < REFETCH_EVERY) {
            return Ok(Err(format!("no key {kid:?} in the issuer's JWKS")));
        }
        keys.1 = Some(Instant::now());
        let url = self.jwks_url().await.map_err(Status::unavailable)?;
        let set: JwkSet =
            serde_json::from_value(self.get_json(&url).await.map_err(Status::unavailable)?)
                .map_err(|e| Status::unavailable(format!("{url}: not a JWKS: {e}")))?;
        let found = find(&set);
        keys.0 = Some(set);
        Ok(match found {
            Some(jwk) => DecodingKey::from_jwk(&jwk).map_err(|e| format!("issuer key: {e}")),
            None => Err(format!("no key {kid:?} in the issuer's JWKS")),
        })
    }

    /// Who `token` names, `Ok(Err(why))` when it is not acceptable, `Err` when the issuer's
    /// keys cannot be read now.
    pub async fn verify(&self, token: &str) -> Result<Result<Caller, String>, Status> {
        let header = match jsonwebtoken::decode_header(token) {
            Ok(h) => h,
            Err(e) => return Ok(Err(format!("not a JWT: {e}"))),
        };
        let key = match self.key(header.kid.as_deref()).await? {
            Ok(k) => k,
            Err(e) => return Ok(Err(e)),
        };
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[&self.config.issuer]);
        v.set_audience(&[&self.config.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        // A token is not valid before its `nbf`, whatever its expiry says.
        v.validate_nbf = true;
        let claims = match jsonwebtoken::decode::<Value>(token, &key, &v) {
            Ok(d) => d.claims,
            Err(e) => return Ok(Err(format!("access token refused: {e}"))),
        };
        let Some(user) = claims[&self.config.user_claim]
            .as_str()
            .filter(|u| !u.is_empty())
        else {
            return Ok(Err(format!(
                "access token has no {:?} claim to name the user",
                self.config.user_claim
            )));
        };
        let user = format!("{}{user}", self.username_prefix);
        let groups: Vec<String> = claims[&self.config.groups_claim]
            .as_array()
            .map(|g| {
                g.iter()
                    .filter_map(Value::as_str)
                    .map(|g| format!("{}{g}", self.config.groups_prefix))
                    .collect()
            })
            .unwrap_or_default();
        // Identities from an outside issuer never become Kubernetes system identities: those
        // are the API server's own (`system:masters` is cluster-admin). A prefix maps them.
        if let Some(name) = std::iter::once(&user)
            .chain(&groups)
            .find(|n| n.starts_with("system:") || n.chars().any(char::is_control))
        {
            return Ok(Err(format!(
                "access token names {name:?}: system identities and control characters are \
                 refused (map the issuer's names with --oauth-username-prefix and \
                 --oauth-groups-prefix)"
            )));
        }
        Ok(Ok(Caller {
            user,
            groups,
            agent: None,
        }))
    }

    /// The protected resource metadata (RFC 9728) for this server.
    pub fn resource_metadata(&self) -> Value {
        serde_json::json!({
            "resource": self.config.audience,
            "authorization_servers": [self.config.issuer],
            "bearer_methods_supported": ["header"],
            "resource_name": "linkerd-mcp",
        })
    }

    /// Where the metadata is served: the well-known path before the resource's own path.
    pub fn metadata_url(&self) -> String {
        let aud = &self.config.audience;
        let (scheme, rest) = aud.split_once("://").unwrap_or(("https", aud));
        let (host, path) = rest.split_once('/').map_or((rest, ""), |(h, p)| (h, p));
        let path = if path.is_empty() {
            String::new()
        } else {
            format!("/{path}")
        };
        format!("{scheme}://{host}/.well-known/oauth-protected-resource{path}")
    }
}
