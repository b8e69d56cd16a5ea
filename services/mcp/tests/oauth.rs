//! OAuth 2.1 access tokens (the MCP authorization spec's resource-server side), minted here with
//! a local key and served from a local issuer: what is accepted, what is refused and why, and
//! the protected resource metadata and challenge the `mesh-mcp` binary gives MCP clients.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::{process::Command, time::Duration};

use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};
use mesh_mcp::{
    Authenticator, TokenAuth,
    oauth::{JwtVerifier, OAuthConfig},
};
use mesh_testkit::{ChildGuard, free_port, poll};
use serde_json::json;

struct Issuer {
    url: String,
    key: EncodingKey,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Issuer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn ec_key() -> EncodingKey {
    let pair = rcgen::KeyPair::generate().unwrap();
    EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap()
}

/// An authorization server's metadata and JWKS (key id `k1`) on loopback.
async fn issuer() -> Issuer {
    let key = ec_key();
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
    jwk.common.key_id = Some("k1".into());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let meta = json!({
        "issuer": url,
        "jwks_uri": format!("{url}/jwks"),
        "authorization_endpoint": format!("{url}/authorize"),
        "token_endpoint": format!("{url}/token"),
        "code_challenge_methods_supported": ["S256"],
    });
    let jwks = json!({"keys": [jwk]});
    let codes = Codes::default();
    let app = axum::Router::new()
        .route(
            "/authorize",
            axum::routing::get(authorize).with_state(codes.clone()),
        )
        .route(
            "/token",
            axum::routing::post(token_endpoint).with_state((codes, key.clone(), url.clone())),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            axum::routing::get(move || async move { axum::Json(meta) }),
        )
        .route(
            "/jwks",
            axum::routing::get(move || async move { axum::Json(jwks) }),
        );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(l, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    Issuer {
        url,
        key,
        stop: Some(stop),
    }
}

/// Codes the issuer handed out: code -> (PKCE challenge, redirect URI, resource).
type Codes =
    std::sync::Arc<tokio::sync::Mutex<std::collections::HashMap<String, (String, String, String)>>>;

/// The issuer's sign-in page, consenting at once as alice: back to the client with a code.
async fn authorize(
    axum::extract::State(codes): axum::extract::State<Codes>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    if q.get("client_id").map(String::as_str) != Some("console")
        || q.get("code_challenge_method").map(String::as_str) != Some("S256")
        || q.get("response_type").map(String::as_str) != Some("code")
    {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            "bad authorization request",
        )
            .into_response();
    }
    let code = format!("code-{}", codes.lock().await.len());
    let redirect = q["redirect_uri"].clone();
    codes.lock().await.insert(
        code.clone(),
        (
            q["code_challenge"].clone(),
            redirect.clone(),
            q["resource"].clone(),
        ),
    );
    let state = &q["state"];
    axum::response::Redirect::to(&format!("{redirect}?code={code}&state={state}")).into_response()
}

/// The token endpoint: a code once, with the verifier of its challenge and its redirect URI.
async fn token_endpoint(
    axum::extract::State((codes, key, iss)): axum::extract::State<(Codes, EncodingKey, String)>,
    axum::extract::Form(f): axum::extract::Form<std::collections::HashMap<String, String>>,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    use base64::Engine as _;
    use sha2::Digest as _;
    let refuse = |why: &str| {
        (
            axum::http::StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant", "error_description": why})),
        )
            .into_response()
    };
    let Some((challenge, redirect, resource)) = codes.lock().await.remove(&f["code"]) else {
        return refuse("unknown or used code");
    };
    let verifier = f.get("code_verifier").cloned().unwrap_or_default();
    let s256 = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    if s256 != challenge {
        return refuse("code_verifier does not match the challenge");
    }
    if f.get("redirect_uri") != Some(&redirect)
        || f.get("client_id").map(String::as_str) != Some("console")
    {
        return refuse("redirect_uri or client_id differs");
    }
    let token = mint(
        &key,
        "k1",
        &json!({"iss": iss, "aud": resource, "sub": "alice", "groups": ["devs"], "exp": now() + 300}),
    );
    axum::Json(json!({"access_token": token, "token_type": "Bearer", "expires_in": 300}))
        .into_response()
}

/// The mesh-mcp binary on HTTP port `http`, trusting `iss` for tokens whose audience is
/// `aud`, with `extra` flags; no Prometheus or cluster behind it. Killed when dropped.
fn oauth_mcp(
    iss: &Issuer,
    http: u16,
    aud: &str,
    extra: &[&str],
) -> (ChildGuard, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let guard = ChildGuard::spawn(
        "mesh-mcp",
        Command::new(env!("CARGO_BIN_EXE_mesh-mcp"))
            .args([
                "--embedded-collector",
                "--prometheus-url",
                "http://127.0.0.1:1",
            ])
            .args(["--grpc-listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--http-listen", &format!("127.0.0.1:{http}")])
            .args(["--oauth-issuer", &iss.url, "--oauth-audience", aud])
            .args(extra)
            .env("KUBECONFIG", dir.path().join("none")),
        &dir.path().join("mesh-mcp.log"),
    );
    (guard, dir)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn mint(key: &EncodingKey, kid: &str, claims: &serde_json::Value) -> String {
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some(kid.into());
    jsonwebtoken::encode(&h, claims, key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_tokens_are_checked_against_the_issuers_keys_audience_and_expiry() {
    let iss = issuer().await;
    let aud = "https://mcp.example.com/mcp";
    let verifier = JwtVerifier::new(OAuthConfig {
        issuer: iss.url.clone(),
        audience: aud.into(),
        jwks_url: None,
        user_claim: "sub".into(),
        groups_claim: "groups".into(),
        username_prefix: Some(String::new()),
        groups_prefix: String::new(),
    })
    .unwrap();
    assert_eq!(
        verifier.metadata_url(),
        "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
    );
    let auth = Authenticator::from(TokenAuth::default()).with_oauth(verifier);
    let claims = |over: serde_json::Value| {
        let mut c = json!({
            "iss": iss.url, "aud": aud, "sub": "alice@example.com",
            "groups": ["mesh-admins"], "exp": now() + 300,
        });
        for (k, v) in over.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let bearer = |t: String| format!("Bearer {t}");

    let ok = auth
        .authenticate(Some(&bearer(mint(&iss.key, "k1", &claims(json!({}))))))
        .await
        .unwrap();
    assert_eq!(ok.user, "alice@example.com");
    assert_eq!(ok.groups, ["mesh-admins"]);

    let refused = [
        (
            claims(json!({"aud": "https://other.example.com/mcp"})),
            "k1",
            "InvalidAudience",
        ),
        (
            claims(json!({"iss": "https://evil.example.com"})),
            "k1",
            "InvalidIssuer",
        ),
        (
            claims(json!({"exp": now() - 3600})),
            "k1",
            "ExpiredSignature",
        ),
        (claims(json!({"sub": ""})), "k1", "no \"sub\" claim"),
        (
            claims(json!({"nbf": now() + 3600})),
            "k1",
            "ImmatureSignature",
        ),
        (
            claims(json!({"groups": ["devs", "system:masters"]})),
            "k1",
            "names \"system:masters\": system identities",
        ),
        (
            claims(json!({"sub": "system:admin"})),
            "k1",
            "names \"system:admin\"",
        ),
        (
            claims(json!({"sub": "alice\nbob"})),
            "k1",
            "control characters",
        ),
    ];
    for (c, kid, why) in refused {
        let e = auth
            .authenticate(Some(&bearer(mint(&iss.key, kid, &c))))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{c}");
        assert!(e.message().contains(why), "{why}: {}", e.message());
    }
    // Signed by a key the issuer does not publish (also under its key id): refused.
    let forged = mint(&ec_key(), "k1", &claims(json!({})));
    let e = auth.authenticate(Some(&bearer(forged))).await.unwrap_err();
    assert!(e.message().contains("InvalidSignature"), "{}", e.message());
    let unknown = mint(&ec_key(), "k9", &claims(json!({})));
    let e = auth.authenticate(Some(&bearer(unknown))).await.unwrap_err();
    assert!(e.message().contains("no key"), "{}", e.message());

    // kube-apiserver's prefixes: by default the issuer and '#' before a user that is not an
    // email claim; a groups prefix maps the issuer's system: groups out of the way.
    let prefixed = Authenticator::from(TokenAuth::default()).with_oauth(
        JwtVerifier::new(OAuthConfig {
            issuer: iss.url.clone(),
            audience: aud.into(),
            jwks_url: None,
            user_claim: "sub".into(),
            groups_claim: "groups".into(),
            username_prefix: None,
            groups_prefix: "oidc:".into(),
        })
        .unwrap(),
    );
    let c = claims(json!({"sub": "system:admin", "groups": ["system:masters"]}));
    let who = prefixed
        .authenticate(Some(&bearer(mint(&iss.key, "k1", &c))))
        .await
        .unwrap();
    assert_eq!(who.user, format!("{}#system:admin", iss.url));
    assert_eq!(who.groups, ["oidc:system:masters"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_publishes_its_resource_metadata_and_accepts_the_issuers_tokens() {
    let iss = issuer().await;
    let http = free_port();
    let aud = format!("http://127.0.0.1:{http}/mcp");
    let _mcp = oauth_mcp(&iss, http, &aud, &[]);
    let client = reqwest::Client::new();
    let meta_url = format!("http://127.0.0.1:{http}/.well-known/oauth-protected-resource/mcp");
    let meta: serde_json::Value = poll(Duration::from_secs(30), Duration::from_millis(100), || {
        let (client, meta_url) = (client.clone(), meta_url.clone());
        async move { client.get(&meta_url).send().await.ok()?.json().await.ok() }
    })
    .await
    .expect("no protected resource metadata");
    assert_eq!(meta["resource"], aud.as_str());
    assert_eq!(meta["authorization_servers"][0], iss.url.as_str());

    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"test","version":"1"}}}"#;
    let post = |token: Option<String>| {
        let mut r = client
            .post(&aud)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(init);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let r = post(None).await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        format!("Bearer resource_metadata=\"http://127.0.0.1:{http}/.well-known/oauth-protected-resource/mcp\"")
            .as_str()
    );
    let token = mint(
        &iss.key,
        "k1",
        &json!({"iss": iss.url, "aud": aud, "sub": "alice", "exp": now() + 300}),
    );
    let r = post(Some(token)).await.unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(body.contains("linkerd-mcp"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_signs_in_through_the_issuer_with_pkce() {
    let iss = issuer().await;
    let http = free_port();
    let base = format!("http://127.0.0.1:{http}");
    // Replicas share one audience: the URL clients reach them by.
    let aud = format!("{base}/mcp");
    let _mcp = oauth_mcp(&iss, http, &aud, &["--ui-oidc-client-id", "console"]);
    // A second replica behind the same URL: the issuer's redirect back may reach either.
    let other = free_port();
    let other_base = format!("http://127.0.0.1:{other}");
    let _other = oauth_mcp(
        &iss,
        other,
        &aud,
        &["--ui-oidc-client-id", "console", "--ui-url", &base],
    );
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let login = poll(Duration::from_secs(30), Duration::from_millis(100), || {
        let client = client.clone();
        let url = format!("{base}/ui/login");
        async move { client.get(&url).send().await.ok()?.text().await.ok() }
    })
    .await
    .expect("no login page");
    assert!(
        login.contains(&format!("Sign in with {}", iss.url)),
        "{login}"
    );
    assert!(
        login.contains("name=\"token\""),
        "the token form stays: {login}"
    );

    // Off to the issuer, with a PKCE challenge and a state pinned in a Lax cookie.
    let start = client
        .get(format!("{base}/ui/login/oidc"))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), 303);
    let to = start.headers()["location"].to_str().unwrap().to_owned();
    assert!(to.starts_with(&format!("{}/authorize?", iss.url)), "{to}");
    assert!(
        to.contains("code_challenge_method=S256") && to.contains("code_challenge="),
        "{to}"
    );
    assert!(
        to.contains(&format!(
            "redirect_uri={}",
            urlencode(&format!("{base}/ui/callback"))
        )),
        "{to}"
    );
    let pin = start.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        pin.starts_with("lmcp_oidc=") && pin.contains("SameSite=Lax") && pin.contains("HttpOnly"),
        "{pin}"
    );
    let pin = pin.split(';').next().unwrap().to_owned();

    // The issuer sends the browser back with a code.
    let back = client.get(&to).send().await.unwrap();
    assert_eq!(back.status(), 303);
    let callback = back.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        callback.starts_with(&format!("{base}/ui/callback?code=")),
        "{callback}"
    );

    // It lands on the other replica: nothing of the sign-in was kept where it began.
    let callback = callback.replace(&base, &other_base);
    poll(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            client
                .get(format!("{other_base}/ui/login"))
                .send()
                .await
                .ok()
        },
    )
    .await
    .expect("the other replica answers");

    // Without the pinning cookie (another browser, or a forged link): refused.
    let forged = client.get(&callback).send().await.unwrap();
    assert_eq!(forged.status(), 400);
    assert!(
        forged
            .text()
            .await
            .unwrap()
            .contains("not started in this browser")
    );

    // The browser that started it: signed in, with a Strict session cookie.
    let done = client
        .get(&callback)
        .header("cookie", &pin)
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
    let session = done
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("lmcp_session="))
        .expect("a session cookie");
    assert!(
        session.contains("SameSite=Strict") && session.contains("HttpOnly"),
        "{session}"
    );
    let body = done.text().await.unwrap();
    assert!(
        body.contains(&format!("Signed in as {}#alice", iss.url)),
        "{body}"
    );
    let session = session.split(';').next().unwrap().to_owned();
    let page = client
        .get(format!("{other_base}/ui/"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.text()
            .await
            .unwrap()
            .contains(&format!("{}#alice", iss.url))
    );

    // The code is spent (the issuer honours it once): replaying the callback signs nobody in.
    let replay = client
        .get(&callback)
        .header("cookie", &pin)
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 401);
    assert!(
        replay
            .text()
            .await
            .unwrap()
            .contains("unknown or used code")
    );
}

fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("x", s)]).unwrap()[2..].to_owned()
}
