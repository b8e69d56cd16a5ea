//! Bearer-token authentication on every RPC: a static token file in kube-apiserver's
//! `--token-auth-file` CSV format (`token,user,uid,"group1,group2"`), and, when configured,
//! Kubernetes `TokenReview` for service account (or any cluster-issued) tokens, as the API
//! server's own webhook authenticator does: answers are cached briefly, failures for less.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use tokio::sync::Mutex;
use tonic::Status;

/// Who made a request (put in the request's extensions).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    /// User name.
    pub user: String,
    /// Groups.
    pub groups: Vec<String>,
    /// The agent calling for this identity (an MCP client's name), when one is: its changes
    /// answer to the approval policy's rules for agents.
    pub agent: Option<String>,
}

/// The gRPC metadata an agent front end (`mesh-mcp stdio`) names its agent with. Claiming to
/// be an agent only adds restrictions; identities that must always count as agents are listed
/// in the approval policy (`agents`).
pub const AGENT_HEADER: &str = "x-linkerd-mcp-agent";

/// Longest agent name kept.
pub(crate) const MAX_AGENT_NAME: usize = 64;

/// An agent's name as shown on cards and in the audit: control characters dropped, at most
/// [`MAX_AGENT_NAME`] characters; `None` when nothing is left.
pub fn agent_name(raw: &str) -> Option<String> {
    let name: String = raw
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_AGENT_NAME)
        .collect();
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// Checks bearer tokens.
#[derive(Clone, Debug, Default)]
pub struct TokenAuth {
    tokens: Arc<HashMap<String, Caller>>,
}

impl TokenAuth {
    /// Parses a token file as kube-apiserver's `--token-auth-file` reads it: CSV records
    /// (quoted fields may hold commas), at least `token,user,uid`, the fourth column a
    /// comma-separated list of groups, further columns ignored. Stricter where kube-apiserver
    /// only warns: an empty token, an empty user or a repeated token is an error naming the
    /// line. Lines starting with `#` are comments.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut tokens = HashMap::new();
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .comment(Some(b'#'))
            .from_reader(text.as_bytes());
        for record in reader.records() {
            let record = record.map_err(|e| format!("token file: {e}"))?;
            let line = record.position().map_or(0, csv::Position::line);
            let want = |why: &str| format!("token file line {line}: {why}");
            if record.len() < 3 {
                return Err(want(&format!(
                    "at least 3 columns (token, user name, user uid), found {}",
                    record.len()
                )));
            }
            let (token, user) = (&record[0], &record[1]);
            if token.is_empty() || user.is_empty() {
                return Err(want("the token and the user name must not be empty"));
            }
            let groups: Vec<String> = record
                .get(3)
                .map(|g| {
                    g.split(',')
                        .filter(|g| !g.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            let caller = Caller {
                user: user.to_owned(),
                groups,
                agent: None,
            };
            if tokens.insert(token.to_owned(), caller).is_some() {
                return Err(want("this token is already on an earlier line"));
            }
        }
        Ok(Self {
            tokens: Arc::new(tokens),
        })
    }
}

/// How long a TokenReview answer is trusted: accepted tokens, refused tokens.
const REVIEW_TTL: (Duration, Duration) = (Duration::from_secs(60), Duration::from_secs(10));
/// Most cached answers; past it the cache starts afresh.
const REVIEW_CACHE: usize = 10_000;
/// Bound on one TokenReview round trip.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);

/// Most TokenReviews in flight: unknown tokens cannot make mesh-mcp flood the API server.
const REVIEWS_IN_FLIGHT: usize = 16;

/// Answers by a keyed hash of the token: the cache holds no bearer tokens.
type ReviewCache = HashMap<u64, (Result<Caller, String>, Instant)>;

/// TokenReview through the standard kube client.
#[derive(Clone)]
struct Reviewer {
    client: kube::Client,
    audience: Option<String>,
    cache: Arc<Mutex<ReviewCache>>,
    hasher: std::hash::RandomState,
    in_flight: Arc<tokio::sync::Semaphore>,
}

/// Authenticates requests: the static tokens first, then TokenReview when configured.
#[derive(Clone)]
pub struct Authenticator {
    tokens: TokenAuth,
    review: Option<Reviewer>,
    oauth: Option<crate::oauth::JwtVerifier>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("static_tokens", &self.tokens.tokens.len())
            .field("token_review", &self.review.is_some())
            .field("oauth", &self.oauth.as_ref().map(|o| &o.config().issuer))
            .finish()
    }
}

impl From<TokenAuth> for Authenticator {
    fn from(tokens: TokenAuth) -> Self {
        Self {
            tokens,
            review: None,
            oauth: None,
        }
    }
}

impl Authenticator {
    /// Static tokens, plus TokenReview through `review` when given. With an `audience`, only
    /// tokens minted for it are accepted (a token meant for the API server is not).
    pub fn new(tokens: TokenAuth, review: Option<kube::Client>, audience: Option<String>) -> Self {
        Self {
            tokens,
            review: review.map(|client| Reviewer {
                client,
                audience,
                cache: Arc::default(),
                hasher: std::hash::RandomState::new(),
                in_flight: Arc::new(tokio::sync::Semaphore::new(REVIEWS_IN_FLIGHT)),
            }),
            oauth: None,
        }
    }

    /// Also accepts JWT access tokens `oauth` verifies (the MCP authorization spec).
    #[must_use]
    pub fn with_oauth(mut self, oauth: crate::oauth::JwtVerifier) -> Self {
        self.oauth = Some(oauth);
        self
    }

    /// The OAuth verifier, when configured (its metadata is served to clients).
    pub fn oauth(&self) -> Option<&crate::oauth::JwtVerifier> {
        self.oauth.as_ref()
    }

    /// Who sent `authorization` (the header's value), or `UNAUTHENTICATED` saying why.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, Status> {
        let Some(token) = authorization
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
        else {
            return Err(Status::unauthenticated(
                "no bearer token: send `authorization: Bearer <token>`",
            ));
        };
        if let Some(c) = self.tokens.tokens.get(token) {
            return Ok(c.clone());
        }
        // A JWT from the configured issuer; Kubernetes tokens are JWTs too, so a refusal here
        // still leaves them to TokenReview when that is configured.
        if let Some(o) = &self.oauth
            && token.matches('.').count() == 2
        {
            match o.verify(token).await {
                Ok(Ok(caller)) => return Ok(caller),
                Ok(Err(why)) if self.review.is_none() => return Err(Status::unauthenticated(why)),
                Err(s) if self.review.is_none() => return Err(s),
                _ => {}
            }
        }
        let Some(r) = &self.review else {
            return Err(Status::unauthenticated("unknown bearer token"));
        };
        let key = std::hash::BuildHasher::hash_one(&r.hasher, token);
        if let Some((answer, at)) = r.cache.lock().await.get(&key) {
            let ttl = if answer.is_ok() {
                REVIEW_TTL.0
            } else {
                REVIEW_TTL.1
            };
            if at.elapsed() < ttl {
                return answer.clone().map_err(Status::unauthenticated);
            }
        }
        let answer = tokio::time::timeout(REVIEW_TIMEOUT, async {
            let _permit = r
                .in_flight
                .acquire()
                .await
                .map_err(|_| Status::unavailable("TokenReview is shutting down"))?;
            review(&r.client, token, r.audience.as_deref()).await
        })
        .await
        .map_err(|_| Status::unavailable("TokenReview timed out: cannot check the token now"))??;
        let mut c = r.cache.lock().await;
        if c.len() >= REVIEW_CACHE {
            // Expired answers first, then refusals; only then everything.
            c.retain(|_, (a, at)| {
                at.elapsed()
                    < if a.is_ok() {
                        REVIEW_TTL.0
                    } else {
                        REVIEW_TTL.1
                    }
            });
            if c.len() >= REVIEW_CACHE {
                c.retain(|_, (a, _)| a.is_ok());
            }
            if c.len() >= REVIEW_CACHE {
                c.clear();
            }
        }
        c.insert(key, (answer.clone(), Instant::now()));
        answer.map_err(Status::unauthenticated)
    }
}

/// One TokenReview: `Ok(Ok(caller))` accepted, `Ok(Err(why))` refused, `Err` when Kubernetes
/// could not answer (`UNAVAILABLE`: the token may be fine).
async fn review(
    client: &kube::Client,
    token: &str,
    audience: Option<&str>,
) -> Result<Result<Caller, String>, Status> {
    let api = kube::Api::<TokenReview>::all(client.clone());
    let req = TokenReview {
        spec: TokenReviewSpec {
            token: token.to_owned(),
            audiences: audience.map(|a| vec![a.to_owned()]),
        },
        ..TokenReview::default()
    };
    let sent = api
        .create(&kube::api::PostParams::default(), &req)
        .await
        .map_err(|e| Status::unavailable(format!("TokenReview failed: {e}")))?;
    let status = sent.status.unwrap_or_default();
    if let Some(a) = audience
        && status.authenticated == Some(true)
        && !status.audiences.iter().flatten().any(|x| x == a)
    {
        return Ok(Err(format!(
            "the token is valid in Kubernetes but not for audience {a:?}"
        )));
    }
    if status.authenticated != Some(true) {
        let why = status.error.filter(|e| !e.is_empty());
        return Ok(Err(match why {
            Some(e) => format!("the token was refused by Kubernetes TokenReview: {e}"),
            None => "unknown bearer token (not in the token file; TokenReview refused it)".into(),
        }));
    }
    let user = status.user.unwrap_or_default();
    Ok(Ok(Caller {
        user: user.username.unwrap_or_default(),
        groups: user.groups.unwrap_or_default(),
        agent: None,
    }))
}

/// The gRPC middleware: authenticates, then hands the [`Caller`] to the handler in the
/// request's extensions; refusals are gRPC `UNAUTHENTICATED` (or `UNAVAILABLE`) responses.
pub(crate) async fn middleware(
    axum::extract::State(auth): axum::extract::State<Authenticator>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use tonic::server::NamedService;
    type Mesh = mesh_proto::server::mesh_service_server::MeshServiceServer<crate::GraphService>;
    let guarded = req
        .uri()
        .path()
        .strip_prefix('/')
        .and_then(|p| p.strip_prefix(Mesh::NAME))
        .is_some_and(|rest| rest.starts_with('/'));
    if !guarded {
        return next.run(req).await;
    }
    let header = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match auth.authenticate(header).await {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(status) => status.into_http(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
    use super::*;

    fn who(t: &TokenAuth, token: &str) -> Option<Caller> {
        t.tokens.get(token).cloned()
    }

    /// The records kube-apiserver's `--token-auth-file` reader takes, read the same way.
    #[test]
    fn token_files_read_as_kube_apiserver_reads_them() {
        let t = TokenAuth::parse(
            "# comment\n\
             tok,oddy,uid,devs,system:masters\n\
             \"q,tok\",quinn,uid\n\
             tok2,\"quoted user\",uid\n\
             tok3,u3,uid,\"a,b\"\n\
             tok4,u4,uid,\"\"\n",
        )
        .unwrap();
        // Columns after the fourth are ignored, not taken as groups.
        assert_eq!(who(&t, "tok").unwrap().groups, ["devs"]);
        assert_eq!(who(&t, "q,tok").unwrap().user, "quinn");
        assert_eq!(who(&t, "tok2").unwrap().user, "quoted user");
        assert_eq!(who(&t, "tok3").unwrap().groups, ["a", "b"]);
        assert!(who(&t, "tok4").unwrap().groups.is_empty());
        for (text, why) in [
            ("a,b\n", "line 1: at least 3 columns"),
            (
                "t,u,1\nt,v,2\n",
                "line 2: this token is already on an earlier line",
            ),
            (
                ",u,1\n",
                "line 1: the token and the user name must not be empty",
            ),
            ("t,\"unterminated,1\n", "token file"),
        ] {
            let e = TokenAuth::parse(text).unwrap_err();
            assert!(e.contains(why), "{text:?}: {e}");
        }
    }
}
