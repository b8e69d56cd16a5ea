//! The world the chat tests run in: kube-sim with the demo cluster and RBAC, the mcp service
//! (the real gRPC service and apply pipeline) over the emojivoto graph, a real redis-server,
//! the Slack/Discord stand-in, and `mesh-chatbot` processes. Every process is killed by PID
//! when its guard drops, also when a test fails.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test file uses part of the world"
)]

use std::{path::PathBuf, process::Command, time::Duration};

use chatsim::{DiscordSender, SlackSender, StandIn};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use mcp_harness::{McpHarness, Options};
use mesh_mcp::apply::{Applier, Delegation};
use mesh_testkit::{ChildGuard, Redis, free_port};

pub const BOT_SA: &str = "system:serviceaccount:linkerd-mcp:chatbot";
pub const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
pub const DISCORD_SEED: [u8; 32] = [7; 32];
pub const DISCORD_APP: &str = "1200000000000000001";

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

/// Only web may call voting: the change the chat tests request.
pub const VOTING_POLICY: &str = r"
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {name: voting-clients, namespace: emojivoto}
spec:
  identities: [web.emojivoto.serviceaccount.identity.linkerd.cluster.local]
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: voting-policy, namespace: emojivoto}
spec:
  targetRef: {group: policy.linkerd.io, kind: Server, name: voting-grpc}
  requiredAuthenticationRefs:
    - {group: policy.linkerd.io, kind: MeshTLSAuthentication, name: voting-clients}
";

/// mesh-mcp's approval policy in the chat tests: one approval by a mesh-admin, carol alone in
/// booksapp.
pub const CHAT_POLICY: &str = "version: 1
default:
  approvals: 1
  approvers: { groups: [mesh-admins] }
  ttl: 30m
namespaces:
  booksapp:
    approvers: { users: [carol] }
";

/// Seconds mesh-mcp's approval clock runs ahead of the wall clock (per test process: nextest
/// runs each test in its own).
pub static SKEW: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

struct Skewed;

impl mesh_model::Clock for Skewed {
    fn now(&self) -> std::time::SystemTime {
        std::time::SystemTime::now()
            + Duration::from_secs(SKEW.load(std::sync::atomic::Ordering::SeqCst))
    }
}

/// Holds mesh-mcp's writes to [`CHAT_POLICY`], on the [`SKEW`]ed clock.
pub fn chat_policy(a: Applier) -> Applier {
    let policy = mesh_policy::approval::ApprovalPolicy::parse(CHAT_POLICY).unwrap();
    a.with_approval_policy(
        tokio::sync::watch::channel(std::sync::Arc::new(policy)).1,
        std::sync::Arc::new(Skewed),
    )
}

pub struct World {
    /// The mcp service and kube-sim behind it: devs and mesh-admins may edit Linkerd policy
    /// (`docs/examples/chatbot-rbac`), viewers may not.
    pub mcp: McpHarness,
    pub redis: Redis,
    pub stand_in: StandIn,
    pub dir: tempfile::TempDir,
    pub topology: meshsim::Topology,
}

pub fn root() -> PathBuf {
    mcp_harness::root()
}

impl World {
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// As [`World::start`], with mesh-mcp reading `prometheus_url` for graphs of past moments.
    pub async fn start_with(prometheus_url: Option<String>) -> Self {
        Self::start_full(prometheus_url, chat_policy, "").await
    }

    /// As [`World::start`], with mesh-mcp's pipeline `tweak`ed (its approval policy) and
    /// `tokens` (token-file lines) accepted besides the bot's.
    pub async fn start_tweaked(tweak: fn(Applier) -> Applier, tokens: &str) -> Self {
        Self::start_full(None, tweak, tokens).await
    }

    async fn start_full(
        prometheus_url: Option<String>,
        tweak: fn(Applier) -> Applier,
        tokens: &str,
    ) -> Self {
        let topology = meshsim::builtin("emojivoto").unwrap();
        let mcp = McpHarness::start(Options {
            kube_tokens: "mcp-token,system:serviceaccount:linkerd-mcp:mcp,uid-m\n\
                          admin-token,admin,uid-a,\"system:masters\"\n"
                .into(),
            extra_seeds: vec!["docs/examples/chatbot-rbac"],
            topology: topology.clone(),
            delegation: Delegation {
                delegators: vec![BOT_SA.into()],
                allowed_groups: vec!["devs".into(), "mesh-admins".into(), "viewers".into()],
            },
            mcp_tokens: format!("bot-t,{BOT_SA},u3\n{tokens}"),
            heartbeat: Duration::from_secs(2),
            tweak,
            prometheus_url,
        })
        .await;
        let world = Self {
            mcp,
            redis: Redis::start().await,
            stand_in: StandIn::start("127.0.0.1:0".parse().unwrap())
                .await
                .unwrap(),
            dir: tempfile::tempdir().unwrap(),
            topology,
        };
        std::fs::write(world.dir.path().join("ids.yaml"), identity_map("30m")).unwrap();
        world
    }

    /// Publishes the graph of `t` joined with the cluster as it is now.
    /// Publishes `t`; returns the version readers hold afterwards.
    pub async fn publish_topology(&self, t: &meshsim::Topology) -> u64 {
        self.mcp.publish(t).await
    }

    /// Publishes the world's topology; returns the version readers hold afterwards.
    pub async fn publish(&self) -> u64 {
        self.publish_topology(&self.topology).await
    }

    /// Starts a `mesh-chatbot` with both platforms on the stand-in; `extra` flags appended.
    pub fn bot(&self, name: &str, extra: &[&str]) -> Bot {
        let (http, admin) = (free_port(), free_port());
        let sender = DiscordSender::new("http://unused", DISCORD_SEED);
        let guard = ChildGuard::spawn(
            "mesh-chatbot",
            Command::new(env!("CARGO_BIN_EXE_mesh-chatbot"))
                .args(["--server", &self.mcp.addr.to_string()])
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
            log: self.dir.path().join(format!("{name}.log")),
        }
    }

    pub fn api(&self, kind: &str, version: &str, ns: &str) -> kube::Api<DynamicObject> {
        kube::Api::namespaced_with(
            kube::Client::try_from(self.mcp.kube.kube_config("admin-token")).unwrap(),
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
    /// Its log, shown when it does not come up.
    pub log: PathBuf,
}

impl Bot {
    /// Waits (bounded) until the bot's alert loop has handled graph `version` (sent its alerts,
    /// or tracked it as a standby): after that, an alert it did not send will not come.
    pub async fn alerts_handled(&self, version: u64) -> bool {
        mesh_testkit::poll(
            Duration::from_secs(20),
            Duration::from_millis(100),
            || async {
                let v = mesh_testkit::admin_metric(self.admin, "mesh_chatbot_alerts_graph_version")
                    .await?;
                (v >= version as f64).then_some(())
            },
        )
        .await
        .is_some()
    }

    /// Waits (bounded) until the bot answers a signed PING. The bound is generous: a debug
    /// build starting while the other tests load both cores can take more than 10 s.
    pub async fn ready(&self) {
        let answered = mesh_testkit::poll(
            Duration::from_secs(30),
            Duration::from_millis(50),
            || async {
                matches!(
                    self.discord.send(&DiscordSender::ping()).await,
                    Ok((200, _))
                )
                .then_some(())
            },
        )
        .await;
        assert!(
            answered.is_some(),
            "mesh-chatbot never answered; its log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }
}

/// Clicks a Slack button as `user` on message `ts` of C0MESH; returns the stand-in's sequence
/// number before the click (what it caused comes after).
pub async fn send_slack_click(
    w: &World,
    bot: &Bot,
    user: &str,
    ts: &str,
    action: &str,
    id: &str,
) -> u64 {
    let after = w.stand_in.last_seq().await;
    let (status, body) = bot
        .slack
        .interaction(&SlackSender::click(
            user,
            "C0MESH",
            ts,
            action,
            id,
            &w.stand_in.response_url("click"),
        ))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    after
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
