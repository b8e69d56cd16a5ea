//! The world the chat tests run in: kube-sim with the demo cluster and RBAC, the mcp service
//! (the real gRPC service and apply pipeline) over the emojivoto graph, a real redis-server,
//! the Slack/Discord stand-in, and `mesh-chatbot` processes. Every process is killed by PID
//! when its guard drops, also when a test fails.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test file uses part of the world"
)]

use std::{path::PathBuf, process::Command, sync::Arc, time::Duration};

use chatsim::{DiscordSender, SlackSender, StandIn};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube_sim::{Config, KubeSim};
use mesh_mcp::{Authenticator, GraphService, TokenAuth, apply::Applier, apply::Delegation};
use mesh_model::MetricTolerance;
use mesh_store::MemoryStore;
use mesh_testkit::{ChildGuard, Redis, free_port};

pub const KUBE_TOKENS: &str = "mcp-token,system:serviceaccount:linkerd-mcp:mcp,uid-m\n\
admin-token,admin,uid-a,\"system:masters\"\n";
pub const BOT_SA: &str = "system:serviceaccount:linkerd-mcp:chatbot";
pub const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
pub const DISCORD_SEED: [u8; 32] = [7; 32];
pub const DISCORD_APP: &str = "1200000000000000001";

/// devs may edit Linkerd policy; viewers may not.
const RBAC: &str = r"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: policy-editor}
rules:
  - apiGroups: [policy.linkerd.io]
    resources: ['*']
    verbs: [get, list, watch, create, patch, update, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: policy-editors}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: policy-editor}
subjects: [{kind: Group, name: devs}, {kind: Group, name: mesh-admins}]
";

/// Chat users: alice and carol (devs), bob (approver; in booksapp only carol approves),
/// mallory (no rights).
pub fn identity_map(ttl: &str) -> String {
    format!(
        r#"users:
  - {{ slack: U0ALICE, discord: "1001", kubernetes: {{ user: alice, groups: [devs] }} }}
  - {{ slack: U0BOB, discord: "1002", kubernetes: {{ user: bob, groups: [mesh-admins] }} }}
  - {{ slack: U0CAROL, discord: "1003", kubernetes: {{ user: carol, groups: [devs] }} }}
  - {{ slack: U0MAL, discord: "1004", kubernetes: {{ user: mallory, groups: [viewers] }} }}
approvers: {{ groups: [mesh-admins] }}
namespace_approvers: {{ booksapp: {{ users: [carol] }} }}
allow_self_approval: false
approval_ttl: {ttl}
"#
    )
}

pub struct World {
    pub kube: KubeSim,
    pub mcp_port: u16,
    pub redis: Redis,
    pub stand_in: StandIn,
    pub dir: tempfile::TempDir,
    pub topology: meshsim::Topology,
    publisher: tokio::sync::Mutex<mesh_collector::Publisher<Arc<MemoryStore>>>,
    cluster: tokio::sync::watch::Receiver<Arc<mesh_collector::cluster::Cluster>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

impl World {
    pub async fn start() -> Self {
        let kube = KubeSim::start(Config {
            tokens: KUBE_TOKENS.into(),
            seed_dirs: vec![root().join("tools/kube-sim/seed/demo")],
            with_linkerd_crds: true,
            ..Config::default()
        })
        .await
        .unwrap();
        kube.load_yaml(RBAC).await.unwrap();
        let mcp_config = kube.kube_config("mcp-token");
        let mut cluster =
            mesh_collector::cluster::spawn(&kube::Client::try_from(mcp_config.clone()).unwrap());
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if cluster.borrow_and_update().health.ok {
                    return;
                }
                cluster.changed().await.unwrap();
            }
        })
        .await
        .unwrap();
        let topology = meshsim::builtin("emojivoto").unwrap();
        let store = Arc::new(MemoryStore::new(100));
        let publisher = mesh_collector::Publisher::start(store.clone(), MetricTolerance::default())
            .await
            .unwrap();
        let (tx, rx) = tokio::sync::watch::channel(None);
        let history = mesh_mcp::History::default();
        tokio::spawn(mesh_mcp::follow(store, tx, history.clone()));
        let applier = Applier::new(
            mcp_config,
            Delegation {
                delegators: vec![BOT_SA.into()],
                allowed_groups: vec!["devs".into(), "mesh-admins".into(), "viewers".into()],
            },
            cluster.clone(),
            rx.clone(),
        );
        let service =
            GraphService::new(rx.clone(), history, Duration::from_secs(2)).with_applier(applier);
        let auth = Authenticator::from(TokenAuth::parse(&format!("bot-t,{BOT_SA},u3\n")).unwrap());
        let routes = mesh_mcp::grpc_routes(service, Some(auth)).await;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mcp_port = l.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_routes(routes)
                .serve_with_incoming_shutdown(mesh_mcp::incoming(l), async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        let world = Self {
            kube,
            mcp_port,
            redis: Redis::start().await,
            stand_in: StandIn::start("127.0.0.1:0".parse().unwrap())
                .await
                .unwrap(),
            dir: tempfile::tempdir().unwrap(),
            topology,
            publisher: tokio::sync::Mutex::new(publisher),
            cluster,
            stop: Some(stop),
        };
        world.publish().await;
        let mut rx = rx;
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(Option::is_some))
            .await
            .unwrap()
            .unwrap();
        std::fs::write(world.dir.path().join("ids.yaml"), identity_map("30m")).unwrap();
        world
    }

    /// Publishes the graph of `t` joined with the cluster as it is now.
    pub async fn publish_topology(&self, t: &meshsim::Topology) {
        let base = meshsim::graph(t, Duration::from_secs(60), std::time::SystemTime::now());
        let c = self.cluster.borrow().clone();
        let graph = mesh_collector::run::join(
            &base,
            &[],
            &c,
            &mut mesh_collector::overlay::Verdicts::default(),
            std::time::SystemTime::now(),
        );
        self.publisher.lock().await.publish(graph).await.unwrap();
    }

    pub async fn publish(&self) {
        self.publish_topology(&self.topology).await;
    }

    /// Starts a `mesh-chatbot` with both platforms on the stand-in; `extra` flags appended.
    pub fn bot(&self, name: &str, extra: &[&str]) -> Bot {
        let (http, admin) = (free_port(), free_port());
        let sender = DiscordSender::new("http://unused", DISCORD_SEED);
        let guard = ChildGuard::spawn(
            "mesh-chatbot",
            Command::new(env!("CARGO_BIN_EXE_mesh-chatbot"))
                .args(["--server", &format!("127.0.0.1:{}", self.mcp_port)])
                .args(["--token", "bot-t"])
                .arg("--identity-map")
                .arg(self.dir.path().join("ids.yaml"))
                .args(["--redis-url", &self.redis.url])
                .args(["--http-listen", &format!("127.0.0.1:{http}")])
                .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
                .args(["--slack-signing-secret", SIGNING_SECRET])
                .args(["--slack-bot-token", "xoxb-test"])
                .args(["--slack-api-url", &self.stand_in.slack_api_url()])
                .args(["--discord-public-key", &sender.public_key_hex()])
                .args(["--discord-application-id", DISCORD_APP])
                .args(["--discord-bot-token", "discord-test"])
                .args(["--discord-api-url", &self.stand_in.discord_api_url()])
                .args(["--lease-holder", name])
                .args(extra)
                .env("MESH_LOG", "info"),
            &self.dir.path().join(format!("{name}.log")),
        );
        let url = format!("http://127.0.0.1:{http}");
        Bot {
            slack: SlackSender::new(&url, SIGNING_SECRET),
            discord: DiscordSender::new(&url, DISCORD_SEED),
            admin,
            guard,
            url,
        }
    }

    pub fn api(&self, kind: &str, version: &str, ns: &str) -> kube::Api<DynamicObject> {
        kube::Api::namespaced_with(
            kube::Client::try_from(self.kube.kube_config("admin-token")).unwrap(),
            ns,
            &ApiResource::from_gvk(&GroupVersionKind::gvk("policy.linkerd.io", version, kind)),
        )
    }

    /// Server-side applies `yaml` as the admin with field manager `linkerd-mcp`, as an earlier
    /// change through linkerd-mcp would have left it.
    pub async fn apply_as_linkerd_mcp(&self, yaml: &str) {
        for doc in yaml.split("\n---\n") {
            let obj: DynamicObject = serde_yaml_ng::from_str(doc).unwrap();
            let types = obj.types.clone().unwrap();
            let (group, version) = types.api_version.split_once('/').unwrap();
            let api = self.api(&types.kind, version, "emojivoto");
            assert_eq!(group, "policy.linkerd.io");
            let name = obj.metadata.name.clone().unwrap();
            api.patch(
                &name,
                &kube::api::PatchParams::apply("linkerd-mcp"),
                &kube::api::Patch::Apply(&obj),
            )
            .await
            .unwrap();
        }
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }
}

pub struct Bot {
    pub slack: SlackSender,
    pub discord: DiscordSender,
    pub admin: u16,
    pub guard: ChildGuard,
    pub url: String,
}

impl Bot {
    /// Waits (bounded) until the bot answers a signed PING.
    pub async fn ready(&self) {
        for _ in 0..200 {
            if let Ok((200, _)) = self.discord.send(&DiscordSender::ping()).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("mesh-chatbot never answered");
    }
}

/// Every Slack block's text, joined (to search rendered messages).
pub fn slack_text(v: &serde_json::Value) -> String {
    let mut out = v["text"].as_str().unwrap_or_default().to_owned();
    for b in v["blocks"].as_array().into_iter().flatten() {
        out.push('\n');
        out.push_str(b["text"]["text"].as_str().unwrap_or_default());
        for f in b["fields"].as_array().into_iter().flatten() {
            out.push('\n');
            out.push_str(f["text"].as_str().unwrap_or_default());
        }
        for e in b["elements"].as_array().into_iter().flatten() {
            out.push('\n');
            out.push_str(e["text"].as_str().unwrap_or_default());
        }
    }
    out
}

/// An embed's title, description and fields, joined.
pub fn discord_text(v: &serde_json::Value) -> String {
    let e = &v["embeds"][0];
    let mut out = format!(
        "{}\n{}",
        e["title"].as_str().unwrap_or_default(),
        e["description"].as_str().unwrap_or_default()
    );
    for f in e["fields"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "\n{}: {}",
            f["name"].as_str().unwrap_or_default(),
            f["value"].as_str().unwrap_or_default()
        ));
    }
    out
}

/// The button values (`action`, `value`) of a Slack message.
pub fn slack_buttons(v: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for b in v["blocks"].as_array().into_iter().flatten() {
        for e in b["elements"].as_array().into_iter().flatten() {
            if e["type"] == "button" {
                out.push((
                    e["action_id"].as_str().unwrap_or_default().to_owned(),
                    e["value"].as_str().unwrap_or_default().to_owned(),
                ));
            }
        }
    }
    out
}

/// The `custom_id`s of a Discord message's buttons.
pub fn discord_buttons(v: &serde_json::Value) -> Vec<String> {
    v["components"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["components"].as_array().cloned().unwrap_or_default())
        .filter_map(|b| b["custom_id"].as_str().map(str::to_owned))
        .collect()
}

/// `s` as the bot escapes it for Slack.
pub fn escape_slack(s: &str) -> String {
    mesh_chatbot::reply::slack_escape(s)
}

/// `s` as the bot escapes it for Discord.
pub fn escape_discord(s: &str) -> String {
    mesh_chatbot::reply::discord_escape(s)
}
