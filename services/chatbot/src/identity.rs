//! The identity map: which Kubernetes identity each chat user acts as, and who may approve.

use std::{
    collections::{BTreeMap, HashSet},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// The chat platforms the bot serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// Slack.
    Slack,
    /// Discord.
    Discord,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Slack => "Slack",
            Self::Discord => "Discord",
        })
    }
}

/// A Kubernetes user and its groups, as the mcp service's `on_behalf_of` takes them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeIdentity {
    /// The user name.
    pub user: String,
    /// Its groups.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// One chat user.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    /// Slack user id (`U...`).
    #[serde(default)]
    pub slack: Option<String>,
    /// Discord user id (a snowflake, quoted).
    #[serde(default)]
    pub discord: Option<String>,
    /// Who this user is in Kubernetes.
    pub kubernetes: KubeIdentity,
}

/// Who may approve: Kubernetes user names and group names.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approvers {
    /// Kubernetes user names.
    #[serde(default)]
    pub users: Vec<String>,
    /// Kubernetes group names.
    #[serde(default)]
    pub groups: Vec<String>,
}

impl Approvers {
    fn admits(&self, who: &KubeIdentity) -> bool {
        self.users.contains(&who.user) || who.groups.iter().any(|g| self.groups.contains(g))
    }
}

/// The parsed identity map file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityMap {
    /// Chat users and their Kubernetes identities.
    #[serde(default)]
    pub users: Vec<UserEntry>,
    /// Who may approve rollout steps in any namespace (policy changes are approved under
    /// mesh-mcp's approval policy).
    #[serde(default)]
    pub approvers: Approvers,
    /// Approvers for one namespace; where a namespace is listed, only they approve there.
    #[serde(default)]
    pub namespace_approvers: BTreeMap<String, Approvers>,
    /// May a requester approve their own rollout step?
    #[serde(default)]
    pub allow_self_approval: bool,
    /// How long a rollout step's approval card stays valid (`30m`, `2h`).
    #[serde(default = "default_ttl", with = "humantime_serde_str")]
    pub approval_ttl: Duration,
}

fn default_ttl() -> Duration {
    Duration::from_secs(30 * 60)
}

/// `approval_ttl` as a humantime string.
mod humantime_serde_str {
    use serde::Deserialize;
    use std::time::Duration;

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map_err(|e| serde::de::Error::custom(format!("approval_ttl {s:?}: {e}")))
    }
}

impl Default for IdentityMap {
    fn default() -> Self {
        Self {
            users: Vec::new(),
            approvers: Approvers::default(),
            namespace_approvers: BTreeMap::new(),
            allow_self_approval: false,
            approval_ttl: default_ttl(),
        }
    }
}

/// Why a map was refused.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid map.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl IdentityMap {
    /// Parses and checks a map: every user named, no chat id twice, no `system:` identities
    /// (the mcp service never acts as those for a delegator anyway: say so up front).
    pub fn parse(text: &str) -> Result<Self, String> {
        mesh_model::input::check(text, mesh_model::input::InputLimits::CONFIG)
            .map_err(|e| format!("identity map refused: {e}"))?;
        let map: Self = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
        let mut seen = HashSet::new();
        for (i, u) in map.users.iter().enumerate() {
            let k = &u.kubernetes;
            if k.user.trim().is_empty() || k.user.trim() != k.user {
                return Err(format!(
                    "users[{i}].kubernetes.user: must be a non-empty name"
                ));
            }
            if k.user.starts_with("system:") || k.groups.iter().any(|g| g.starts_with("system:")) {
                return Err(format!(
                    "users[{i}]: system: users and groups cannot be delegated to chat users"
                ));
            }
            if u.slack.is_none() && u.discord.is_none() {
                return Err(format!("users[{i}]: needs a slack or discord id"));
            }
            for (platform, id) in [("slack", &u.slack), ("discord", &u.discord)] {
                if let Some(id) = id
                    && !seen.insert((platform, id.clone()))
                {
                    return Err(format!("users[{i}].{platform}: {id} is mapped twice"));
                }
            }
        }
        if map.approval_ttl.is_zero() {
            return Err("approval_ttl: must be more than zero".into());
        }
        Ok(map)
    }

    /// Reads and checks the map at `path`.
    pub fn load(path: &Path) -> Result<Self, MapError> {
        let text = std::fs::read_to_string(path).map_err(|source| MapError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|message| MapError::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    /// The Kubernetes identity of a chat user, if mapped.
    pub fn lookup(&self, platform: Platform, chat_user: &str) -> Option<&KubeIdentity> {
        self.users
            .iter()
            .find(|u| {
                let id = match platform {
                    Platform::Slack => &u.slack,
                    Platform::Discord => &u.discord,
                };
                id.as_deref() == Some(chat_user)
            })
            .map(|u| &u.kubernetes)
    }

    /// Whether some chat user of the map acts as Kubernetes user `user`.
    pub fn maps_to(&self, user: &str) -> bool {
        self.users.iter().any(|u| u.kubernetes.user == user)
    }

    /// May `who` approve a change in `namespace`?
    pub fn may_approve(&self, who: &KubeIdentity, namespace: &str) -> bool {
        match self.namespace_approvers.get(namespace) {
            Some(a) => a.admits(who),
            None => self.approvers.admits(who),
        }
    }
}

/// The current map, reloaded when its file changes.
pub type Identities = watch::Receiver<Arc<IdentityMap>>;

/// Loads `path` and keeps it current: the file is checked every `every`; a changed file that
/// fails to parse is logged and the last good map stays in force.
pub fn watch_file(path: PathBuf, every: Duration) -> Result<Identities, MapError> {
    mesh_telemetry::watch_file("identity map", path, every, IdentityMap::load)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
    use super::*;

    const MAP: &str = r#"
users:
  - { slack: U024BE7LH, discord: "80351110224678912", kubernetes: { user: alice, groups: [devs] } }
  - { slack: U0BOB, kubernetes: { user: bob, groups: [mesh-admins] } }
approvers: { users: [carol], groups: [mesh-admins] }
namespace_approvers:
  payments: { users: [dave] }
allow_self_approval: false
approval_ttl: 30m
"#;

    #[test]
    fn a_hostile_map_is_refused_before_parsing() {
        let deep = format!("users: {}", "[".repeat(200_000));
        let e = IdentityMap::parse(&deep).unwrap_err();
        assert!(
            e.starts_with("identity map refused: nested more than 32"),
            "{e}"
        );
    }

    #[test]
    fn maps_users_per_platform_and_approvers_per_namespace() {
        let m = IdentityMap::parse(MAP).unwrap();
        assert_eq!(
            m.lookup(Platform::Slack, "U024BE7LH").unwrap().user,
            "alice"
        );
        assert_eq!(
            m.lookup(Platform::Discord, "80351110224678912")
                .unwrap()
                .user,
            "alice"
        );
        assert!(m.lookup(Platform::Discord, "U024BE7LH").is_none());
        let bob = m.lookup(Platform::Slack, "U0BOB").unwrap().clone();
        let alice = m.lookup(Platform::Slack, "U024BE7LH").unwrap().clone();
        assert!(m.may_approve(&bob, "emojivoto"));
        assert!(!m.may_approve(&alice, "emojivoto"));
        assert!(
            !m.may_approve(&bob, "payments"),
            "payments names its own approvers"
        );
        let dave = KubeIdentity {
            user: "dave".into(),
            groups: vec![],
        };
        assert!(m.may_approve(&dave, "payments"));
        assert_eq!(m.approval_ttl, Duration::from_secs(1800));
    }

    #[test]
    fn bad_maps_say_what_is_wrong() {
        for (text, want) in [
            (
                "users: [{slack: U1, kubernetes: {user: ''}}]",
                "users[0].kubernetes.user",
            ),
            (
                "users: [{kubernetes: {user: a}}]",
                "needs a slack or discord id",
            ),
            (
                "users: [{slack: U1, kubernetes: {user: a}}, {slack: U1, kubernetes: {user: b}}]",
                "U1 is mapped twice",
            ),
            (
                "users: [{slack: U1, kubernetes: {user: a, groups: ['system:masters']}}]",
                "system:",
            ),
            ("approval_ttl: soon", "approval_ttl"),
            ("approvers: {people: [x]}", "unknown field `people`"),
        ] {
            let e = IdentityMap::parse(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[tokio::test]
    async fn a_changed_file_is_reloaded_and_a_broken_one_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ids.yaml");
        std::fs::write(&p, MAP).unwrap();
        let mut rx = watch_file(p.clone(), Duration::from_millis(20)).unwrap();
        assert_eq!(rx.borrow().users.len(), 2);
        std::fs::write(&p, "users: [{slack: U9, kubernetes: {user: zed}}]\n").unwrap();
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|m| m.users.len() == 1))
            .await
            .unwrap()
            .unwrap();
        std::fs::write(&p, "users: {broken").unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(rx.borrow().users[0].kubernetes.user, "zed");
    }
}
