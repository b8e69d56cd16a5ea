//! Who must approve a policy change before mesh-mcp makes it: the approval policy file
//! (`mesh-mcp --approval-policy`), checked whole at load, and the decisions every front end
//! shares. Pure: the file's text in, decisions out; the clock is the caller's.
//!
//! ```text
//!   policy file ──parse──> ApprovalPolicy ──requirement(namespaces written)──> Requirement
//!   Requirement ──gate(requester, agent?, now)──> Direct | Approval { needed }   (or Refused)
//!   Requirement ──check_approver(approver, request, votes, now)──> Ok | VoteRefused
//! ```
//!
//! A change writing several namespaces answers to every namespace's rule: the most approvals any
//! asks for, approvers allowed by all of them, every freeze, the shortest TTL.

use std::{
    collections::BTreeMap,
    fmt,
    time::{Duration, SystemTime},
};

use serde::Deserialize;

/// Largest policy file read: a policy is a page of rules, not a directory dump.
pub const MAX_POLICY_BYTES: usize = 256 * 1024;
/// Most approvals a rule may ask for.
pub const MAX_APPROVALS: u32 = 10;
/// The only file version understood.
pub const VERSION: u32 = 1;
/// How long a request waits for its approvals unless the rule says otherwise.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30 * 60);
/// Shortest and longest TTL a rule may set.
pub const TTL_RANGE: (Duration, Duration) =
    (Duration::from_secs(60), Duration::from_secs(7 * 24 * 3600));

/// Someone acting: a Kubernetes user and its groups.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subject {
    /// User name.
    pub user: String,
    /// Groups.
    pub groups: Vec<String>,
}

impl Subject {
    /// A subject from its name and groups.
    pub fn new(user: impl Into<String>, groups: &[&str]) -> Self {
        Self {
            user: user.into(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }
}

/// Users and groups, as a rule names them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Principals {
    /// Kubernetes user names.
    #[serde(default)]
    pub users: Vec<String>,
    /// Kubernetes group names.
    #[serde(default)]
    pub groups: Vec<String>,
}

impl Principals {
    /// Whether `s` is one of the users or in one of the groups.
    pub fn admits(&self, s: &Subject) -> bool {
        self.users.contains(&s.user) || s.groups.iter().any(|g| self.groups.contains(g))
    }

    fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty()
    }
}

/// A window in which nothing is approved without someone of an override group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Freeze {
    /// When it starts.
    pub from: SystemTime,
    /// When it ends (exclusive).
    pub to: SystemTime,
    /// Groups whose members may still approve (and write) during it.
    pub override_groups: Vec<String>,
}

impl Freeze {
    /// Whether the freeze holds at `now`.
    pub fn holds(&self, now: SystemTime) -> bool {
        self.from <= now && now < self.to
    }

    fn overridden_by(&self, s: &Subject) -> bool {
        s.groups.iter().any(|g| self.override_groups.contains(g))
    }
}

/// One namespace's rule (or the default's), with the default's values filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Where it is in the file: `default` or `namespaces.<name>`.
    pub name: String,
    /// How many distinct approvers a change needs (0: none, writes go straight through).
    pub approvals: u32,
    /// Who may approve.
    pub approvers: Principals,
    /// Who may ask for a change at all (`None`: anyone RBAC lets write).
    pub requesters: Option<Principals>,
    /// Agents may only propose: their changes always wait for a person.
    pub agents_propose_only: bool,
    /// Windows in which nothing is approved without an override group.
    pub freezes: Vec<Freeze>,
    /// How long a request waits for its approvals.
    pub ttl: Duration,
}

impl Rule {
    /// The rule in force where no file is given: no approvals needed, nobody to approve.
    fn open() -> Self {
        Self {
            name: "default".into(),
            approvals: 0,
            approvers: Principals::default(),
            requesters: None,
            agents_propose_only: false,
            freezes: Vec::new(),
            ttl: DEFAULT_TTL,
        }
    }
}

/// The approval policy: a default rule, rules for some namespaces, and which identities are
/// agents whichever front end they call through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalPolicy {
    /// The rule where no namespace rule is given.
    pub default: Rule,
    /// Rules by namespace.
    pub namespaces: BTreeMap<String, Rule>,
    /// Identities that are agents on every front end (MCP callers are agents anyway).
    pub agents: Principals,
}

impl Default for ApprovalPolicy {
    /// The policy without a file: every write goes straight through, as before approvals.
    fn default() -> Self {
        Self {
            default: Rule::open(),
            namespaces: BTreeMap::new(),
            agents: Principals::default(),
        }
    }
}

/// Why a policy file was not taken: every problem found, each naming where it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("approval policy: {}", problems.join("; "))]
pub struct PolicyError {
    /// The problems, one each.
    pub problems: Vec<String>,
}

impl PolicyError {
    fn one(p: impl Into<String>) -> Self {
        Self {
            problems: vec![p.into()],
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    version: Option<u32>,
    #[serde(default)]
    default: RawRule,
    #[serde(default)]
    namespaces: BTreeMap<String, RawRule>,
    #[serde(default)]
    agents: Principals,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    approvals: Option<u32>,
    approvers: Option<Principals>,
    requesters: Option<Principals>,
    agents_propose_only: Option<bool>,
    freezes: Option<Vec<RawFreeze>>,
    ttl: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFreeze {
    from: String,
    to: String,
    #[serde(default)]
    override_groups: Vec<String>,
}

/// Checks names a rule lists: never empty, never `system:` (control-plane identities are not
/// people and must not approve or be let through), no stray whitespace.
fn check_names(at: &str, p: &Principals, problems: &mut Vec<String>) {
    let kinds = [("users", &p.users), ("groups", &p.groups)];
    for (kind, names) in kinds {
        for n in names {
            if n.is_empty() || n.trim() != n || n.chars().any(char::is_control) {
                problems.push(format!("{at}.{kind}: {n:?} is not a user or group name"));
            } else if n.starts_with("system:") {
                problems.push(format!(
                    "{at}.{kind}: {n:?}: system identities cannot approve, request or override"
                ));
            }
        }
    }
}

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

impl RawRule {
    /// The rule named `name`, with what it leaves out taken from `base`.
    fn resolve(self, name: &str, base: &Rule, problems: &mut Vec<String>) -> Rule {
        let approvals = self.approvals.unwrap_or(base.approvals);
        let approvers = self.approvers.unwrap_or_else(|| base.approvers.clone());
        let requesters = self.requesters.or_else(|| base.requesters.clone());
        check_names(&format!("{name}.approvers"), &approvers, problems);
        if let Some(r) = &requesters {
            check_names(&format!("{name}.requesters"), r, problems);
        }
        if approvals > MAX_APPROVALS {
            problems.push(format!(
                "{name}.approvals: {approvals}; at most {MAX_APPROVALS}"
            ));
        }
        if approvals > 0 && approvers.is_empty() {
            problems.push(format!(
                "{name}: {approvals} approval(s) needed but no approvers listed, so no change could ever be approved"
            ));
        }
        let Ok(count) = usize::try_from(approvals) else {
            return base.clone();
        };
        let distinct: std::collections::BTreeSet<&String> = approvers.users.iter().collect();
        if approvers.groups.is_empty() && distinct.len() < count {
            problems.push(format!(
                "{name}: {approvals} approvals needed but only {} approver(s) listed",
                distinct.len()
            ));
        }
        let ttl = match self.ttl {
            None => base.ttl,
            Some(t) => match humantime::parse_duration(&t) {
                Ok(d) if (TTL_RANGE.0..=TTL_RANGE.1).contains(&d) => d,
                Ok(_) => {
                    problems.push(format!(
                        "{name}.ttl: {t:?}; between {} and {}",
                        humantime::format_duration(TTL_RANGE.0),
                        humantime::format_duration(TTL_RANGE.1)
                    ));
                    base.ttl
                }
                Err(e) => {
                    problems.push(format!("{name}.ttl: {t:?}: {e}"));
                    base.ttl
                }
            },
        };
        // A namespace's freezes add to the default's: a freeze of the whole mesh holds
        // everywhere.
        let mut freezes = base.freezes.clone();
        freezes.extend(match self.freezes {
            None => Vec::new(),
            Some(fs) => fs
                .into_iter()
                .enumerate()
                .filter_map(|(i, f)| {
                    let at = format!("{name}.freezes[{i}]");
                    // RFC 3339 with its offset (`Z` or `+02:00`): a freeze is a moment, not a
                    // wall-clock time of some zone.
                    let time = |field: &str, v: &str, problems: &mut Vec<String>| {
                        // Through milliseconds: jiff's `SystemTime` conversion needs its `std`
                        // feature, which not every build of this crate turns on.
                        let parsed = v
                            .parse::<k8s_openapi::jiff::Timestamp>()
                            .map_err(|e| e.to_string())
                            .and_then(|t| {
                                u64::try_from(t.as_millisecond())
                                    .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
                                    .map_err(|_| "before 1970".to_owned())
                            });
                        parsed
                            .map_err(|e| {
                                problems.push(format!(
                                    "{at}.{field}: {v:?} is not an RFC 3339 time with an offset ({e})"
                                ));
                            })
                            .ok()
                    };
                    let from = time("from", &f.from, problems);
                    let to = time("to", &f.to, problems);
                    check_names(
                        &at,
                        &Principals {
                            users: Vec::new(),
                            groups: f.override_groups.clone(),
                        },
                        problems,
                    );
                    let (from, to) = (from?, to?);
                    if from >= to {
                        problems.push(format!("{at}: from must be before to"));
                        return None;
                    }
                    Some(Freeze {
                        from,
                        to,
                        override_groups: f.override_groups,
                    })
                })
                .collect(),
        });
        freezes.dedup();
        Rule {
            name: name.to_owned(),
            approvals,
            approvers,
            requesters,
            agents_propose_only: self.agents_propose_only.unwrap_or(base.agents_propose_only),
            freezes,
            ttl,
        }
    }
}

impl ApprovalPolicy {
    /// Reads a policy file's text, refusing it whole on any problem (all of them listed).
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::one(format!(
                "{} bytes; at most {MAX_POLICY_BYTES}",
                text.len()
            )));
        }
        mesh_model::input::check(text, mesh_model::input::InputLimits::CONFIG)
            .map_err(|e| PolicyError::one(e.to_string()))?;
        let raw: RawPolicy =
            serde_yaml_ng::from_str(text).map_err(|e| PolicyError::one(e.to_string()))?;
        let mut problems = Vec::new();
        // Absent means the first version: files written before it was stated stay readable.
        match raw.version {
            None | Some(VERSION) => {}
            Some(v) => problems.push(format!(
                "version: {v}; this mesh-mcp reads version {VERSION}"
            )),
        }
        let default = raw.default.resolve("default", &Rule::open(), &mut problems);
        let namespaces = raw
            .namespaces
            .into_iter()
            .map(|(ns, r)| {
                if !is_label(&ns) {
                    problems.push(format!("namespaces: {ns:?} is not a namespace name"));
                }
                let rule = r.resolve(&format!("namespaces.{ns}"), &default, &mut problems);
                (ns, rule)
            })
            .collect();
        check_names("agents", &raw.agents, &mut problems);
        if problems.is_empty() {
            Ok(Self {
                default,
                namespaces,
                agents: raw.agents,
            })
        } else {
            Err(PolicyError { problems })
        }
    }

    /// The rule for one namespace.
    pub fn rule(&self, namespace: &str) -> &Rule {
        self.namespaces.get(namespace).unwrap_or(&self.default)
    }

    /// Whether `s` is an agent whichever front end it calls through.
    pub fn is_agent(&self, s: &Subject) -> bool {
        self.agents.admits(s)
    }

    /// What a change writing `namespaces` answers to: every namespace's rule (the default's
    /// once when there are none).
    pub fn requirement<S: AsRef<str>>(&self, namespaces: &[S]) -> Requirement {
        let mut rules: Vec<Rule> = Vec::new();
        for ns in namespaces {
            let r = self.rule(ns.as_ref());
            if !rules.iter().any(|x| x.name == r.name) {
                rules.push(r.clone());
            }
        }
        if rules.is_empty() {
            rules.push(self.default.clone());
        }
        Requirement { rules }
    }
}

/// The rules a change answers to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    /// One per distinct rule of the namespaces written (never empty).
    pub rules: Vec<Rule>,
}

/// How a write may go ahead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// No approval needed: write now.
    Direct,
    /// Only once this many distinct people approve.
    Approval {
        /// How many.
        needed: u32,
    },
}

/// Why a request may not be made at all.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestRefused {
    /// The requester is not among a rule's requesters.
    #[error("{user} may not request changes here: {rule} lists who may")]
    NotRequester {
        /// The requester.
        user: String,
        /// The rule.
        rule: String,
    },
}

/// Why an approval was not counted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VoteRefused {
    /// The approver asked for the change (or their agent did, as them).
    #[error("{0} requested this change (directly or through an agent) and cannot approve it")]
    OwnRequest(String),
    /// The agent that proposed it.
    #[error("{0} proposed this change and cannot approve it")]
    Proposer(String),
    /// Agents never approve.
    #[error("{0} is an agent: agents propose, people approve")]
    Agent(String),
    /// This approver's approval is counted already.
    #[error("{0} has approved this change already; it needs a different approver")]
    Twice(String),
    /// Not an approver under one of the rules.
    #[error("{user} is not an approver under {rule}")]
    NotApprover {
        /// The approver.
        user: String,
        /// The rule that does not list them.
        rule: String,
    },
    /// A freeze holds and the approver is in none of its override groups.
    #[error("{rule} freezes changes until {until}; only members of {groups} may approve meanwhile")]
    Frozen {
        /// The rule.
        rule: String,
        /// When the freeze ends (RFC 3339).
        until: String,
        /// The override groups, comma-separated (`nobody` when none).
        groups: String,
    },
}

/// Who a request is from, as the approver checks see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requested<'a> {
    /// Whom the change is made as.
    pub requester: &'a Subject,
    /// The agent's own identity when an agent proposed it under an identity of its own.
    pub proposer: Option<&'a str>,
}

impl Requirement {
    /// The rules' names, comma-separated, for errors and the audit.
    pub fn names(&self) -> String {
        self.rules
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The most approvals any rule asks for.
    pub fn approvals(&self) -> u32 {
        self.rules.iter().map(|r| r.approvals).max().unwrap_or(0)
    }

    /// The shortest TTL of the rules.
    pub fn ttl(&self) -> Duration {
        self.rules
            .iter()
            .map(|r| r.ttl)
            .min()
            .unwrap_or(DEFAULT_TTL)
    }

    /// The freezes holding at `now` that `s` does not override.
    fn freezes_against<'a>(
        &'a self,
        s: &'a Subject,
        now: SystemTime,
    ) -> impl Iterator<Item = (&'a Rule, &'a Freeze)> + 'a {
        self.rules.iter().flat_map(move |r| {
            r.freezes
                .iter()
                .filter(move |f| f.holds(now) && !f.overridden_by(s))
                .map(move |f| (r, f))
        })
    }

    /// How a write by `requester` goes ahead at `now` (`agent`: an agent asked, for them):
    /// straight through, or once `needed` people approve. A freeze turns a direct write by
    /// someone outside its override groups into one that needs an approval.
    pub fn gate(
        &self,
        requester: &Subject,
        agent: bool,
        now: SystemTime,
    ) -> Result<Gate, RequestRefused> {
        for r in &self.rules {
            if let Some(req) = &r.requesters
                && !req.admits(requester)
            {
                return Err(RequestRefused::NotRequester {
                    user: requester.user.clone(),
                    rule: r.name.clone(),
                });
            }
        }
        let mut needed = self.approvals();
        if agent && self.rules.iter().any(|r| r.agents_propose_only) {
            needed = needed.max(1);
        }
        if self.freezes_against(requester, now).next().is_some() {
            needed = needed.max(1);
        }
        Ok(if needed == 0 {
            Gate::Direct
        } else {
            Gate::Approval { needed }
        })
    }

    /// Whether `approver`'s approval counts at `now`, given who asked and who has approved.
    pub fn check_approver(
        &self,
        policy: &ApprovalPolicy,
        approver: &Subject,
        request: &Requested<'_>,
        votes: &[String],
        now: SystemTime,
    ) -> Result<(), VoteRefused> {
        let user = || approver.user.clone();
        if approver.user == request.requester.user {
            return Err(VoteRefused::OwnRequest(user()));
        }
        if request.proposer == Some(approver.user.as_str()) {
            return Err(VoteRefused::Proposer(user()));
        }
        if policy.is_agent(approver) {
            return Err(VoteRefused::Agent(user()));
        }
        if votes.contains(&approver.user) {
            return Err(VoteRefused::Twice(user()));
        }
        if let Some(r) = self.rules.iter().find(|r| !r.approvers.admits(approver)) {
            return Err(VoteRefused::NotApprover {
                user: user(),
                rule: r.name.clone(),
            });
        }
        if let Some((r, f)) = self.freezes_against(approver, now).next() {
            return Err(VoteRefused::Frozen {
                rule: r.name.clone(),
                until: humantime::format_rfc3339_seconds(f.to).to_string(),
                groups: if f.override_groups.is_empty() {
                    "nobody".into()
                } else {
                    f.override_groups.join(", ")
                },
            });
        }
        Ok(())
    }
}

impl fmt::Display for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Direct => f.write_str("no approval needed"),
            Self::Approval { needed } => write!(f, "{needed} approval(s) needed"),
        }
    }
}

#[cfg(test)]
mod tests;
