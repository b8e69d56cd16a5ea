//! kube-sim: a small, honest Kubernetes API server over HTTP on loopback, for linkerd-mcp's tests
//! and demo. A real `kube::Client` (or `kubectl --server`) talks to it exactly as to a cluster,
//! so product code never knows. It is test infrastructure, never a production component.
//!
//! What it implements, and how faithfully, is listed in docs/guide/kube-sim.md: discovery,
//! list/watch with replay, bookmarks, timeouts and 410, create/update/delete, merge, JSON and
//! server-side apply patches with managed fields, `dryRun=All`, CRD schema validation,
//! token-file authentication, RBAC with impersonation, access and token reviews, and a request
//! log tests can read.

mod api;
mod auth;
mod fields;
mod protobuf;
mod rbac;
mod resources;
mod schema;
mod seed;
mod status;
mod store;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use tokio::sync::oneshot;

pub use self::{
    auth::{Tokens, UserInfo},
    rbac::Attributes,
    resources::{Registry, Resource},
    status::ApiError,
};

/// How to run a kube-sim.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on (use port 0 for a free one).
    pub listen: SocketAddr,
    /// Token file text (kube-apiserver `--token-auth-file` CSV).
    pub tokens: String,
    /// Directories of YAML manifests loaded at start (CRDs first, then Namespaces).
    pub seed_dirs: Vec<PathBuf>,
    /// Watch events kept for replay; older resume points get 410 Gone.
    pub history_limit: usize,
    /// How often watches with `allowWatchBookmarks=true` get a BOOKMARK.
    pub bookmark_interval: Duration,
    /// Load the Linkerd policy CRDs (and the Gateway API routes Linkerd uses) at start.
    pub with_linkerd_crds: bool,
    /// Tokens (of the token file) bound to an audience other than the API server's, as
    /// projected service account tokens are: `(token, audience)`. TokenReview honours them; the
    /// API itself refuses them.
    pub token_audiences: Vec<(String, String)>,
    /// Serve HTTPS with a self-signed certificate for 127.0.0.1 and localhost. kubectl (client-go)
    /// only sends bearer tokens over TLS, so kubectl needs this; kube-rs works either way.
    pub tls: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tokens: String::new(),
            seed_dirs: Vec::new(),
            history_limit: 10_000,
            bookmark_interval: Duration::from_secs(10),
            tls: false,
            with_linkerd_crds: false,
            token_audiences: Vec::new(),
        }
    }
}

/// What a client sent, for tests to prove it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// HTTP method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Raw query string.
    pub query: String,
    /// `Content-Type`.
    pub content_type: String,
    /// `Impersonate-User`, if sent.
    pub impersonate_user: String,
    /// `Impersonate-Group` values.
    pub impersonate_groups: Vec<String>,
    /// The authenticated caller (empty when authentication failed).
    pub user: String,
    /// Who the request acted as (the impersonated user, or the caller).
    pub effective_user: String,
    /// HTTP status of the answer.
    pub code: u16,
    /// Time kube-sim spent handling it (benchmarks subtract it from round trips).
    pub handling: Duration,
}

/// Why kube-sim could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The token file did not parse.
    #[error("{0}")]
    Tokens(String),
    /// A seed manifest was unreadable or refused.
    #[error("seed {file}: {reason}")]
    Seed {
        /// The file.
        file: String,
        /// What went wrong.
        reason: String,
    },
    /// The TLS certificate could not be made or loaded.
    #[error("TLS set-up failed: {0}")]
    Tls(String),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// A running kube-sim; stopped when dropped.
#[derive(Debug)]
pub struct KubeSim {
    addr: SocketAddr,
    app: Arc<api::App>,
    ca_pem: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    tls_handle: Option<axum_server::Handle<SocketAddr>>,
}

impl KubeSim {
    /// Starts serving; returns once the listener is bound and seeds are loaded.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        let tokens = Tokens::parse(&config.tokens)
            .map_err(StartError::Tokens)?
            .bind(config.token_audiences.clone());
        let app = Arc::new(api::App::new(tokens, &config));
        if config.with_linkerd_crds {
            seed::load_text(&app, &mesh_k8s::crds::yaml())
                .await
                .map_err(|reason| StartError::Seed {
                    file: "built-in Linkerd CRDs".into(),
                    reason,
                })?;
        }
        for dir in &config.seed_dirs {
            seed::load_dir(&app, dir).await?;
        }
        let listen_err = |source| StartError::Listen {
            addr: config.listen,
            source,
        };
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(listen_err)?;
        let addr = listener.local_addr().map_err(listen_err)?;
        let router = api::router(app.clone());
        if config.tls {
            let cert = rcgen::generate_simple_self_signed(vec![
                "127.0.0.1".to_owned(),
                "localhost".to_owned(),
            ])
            .map_err(|e| StartError::Tls(e.to_string()))?;
            let ca_pem = cert.cert.pem();
            let tls = axum_server::tls_rustls::RustlsConfig::from_pem(
                ca_pem.clone().into_bytes(),
                cert.signing_key.serialize_pem().into_bytes(),
            )
            .await
            .map_err(|e| StartError::Tls(e.to_string()))?;
            let std = listener.into_std().map_err(listen_err)?;
            let handle = axum_server::Handle::new();
            let server = axum_server::from_tcp_rustls(std, tls)
                .map_err(listen_err)?
                .handle(handle.clone());
            tokio::spawn(async move {
                if let Err(e) = server.serve(router.into_make_service()).await {
                    tracing::error!(%e, "kube-sim TLS server stopped");
                }
            });
            return Ok(Self {
                addr,
                app,
                ca_pem: Some(ca_pem),
                stop: None,
                tls_handle: Some(handle),
            });
        }
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let shutdown = async {
                let _ = rx.await;
            };
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(%e, "kube-sim server stopped");
            }
        });
        Ok(Self {
            addr,
            app,
            ca_pem: None,
            stop: Some(tx),
            tls_handle: None,
        })
    }

    /// The self-signed certificate (PEM) clients should trust, when serving TLS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL, e.g. `http://127.0.0.1:43121` (`https://` when serving TLS).
    pub fn url(&self) -> String {
        let scheme = if self.ca_pem.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// A kube-rs configuration for this server as the holder of `token` (plain HTTP servers;
    /// with TLS, point a kubeconfig at [`KubeSim::ca_pem`] instead).
    pub fn kube_config(&self, token: &str) -> kube::Config {
        let url = self.url().parse().expect("kube-sim's own URL parses");
        let mut cfg = kube::Config::new(url);
        cfg.auth_info.token = Some(token.to_owned().into());
        cfg
    }

    /// A kubeconfig file's text for the same (what `KUBECONFIG` points binaries at).
    pub fn kubeconfig(&self, token: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\n\
             clusters: [{{name: kube-sim, cluster: {{server: \"{}\"}}}}]\n\
             users: [{{name: user, user: {{token: \"{token}\"}}}}]\n\
             contexts: [{{name: kube-sim, context: {{cluster: kube-sim, user: user}}}}]\n\
             current-context: kube-sim\n",
            self.url()
        )
    }

    /// Every request served so far.
    pub async fn requests(&self) -> Vec<RequestRecord> {
        self.app.state.lock().await.log.clone()
    }

    /// Loads multi-document YAML as the seed loader does (bypassing authorization).
    pub async fn load_yaml(&self, text: &str) -> Result<(), String> {
        seed::load_text(&self.app, text).await
    }

    /// The current resourceVersion.
    pub async fn resource_version(&self) -> u64 {
        self.app.state.lock().await.store.rv()
    }
}

impl Drop for KubeSim {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.tls_handle.take() {
            h.shutdown();
        }
    }
}
