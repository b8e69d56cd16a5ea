//! The command language shared by Slack (`/mesh <text>`) and Discord (`/mesh <sub> [args]`).

/// A workload named `namespace/name`, both DNS labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadArg {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl std::fmt::Display for WorkloadArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Which apply RPC a change goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApplyKind {
    /// `ApplyAuthorizationPolicy`.
    Authz,
    /// `ApplyHTTPRoute`.
    Route,
}

impl ApplyKind {
    /// The command word.
    pub fn word(self) -> &'static str {
        match self {
            Self::Authz => "authz",
            Self::Route => "route",
        }
    }

    /// From the command word.
    pub fn from_word(w: &str) -> Option<Self> {
        match w {
            "authz" => Some(Self::Authz),
            "route" => Some(Self::Route),
            _ => None,
        }
    }
}

/// What `alerts on` subscribes to.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AlertFilter {
    /// Only these namespaces (empty: all).
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Only these kinds (empty: all).
    #[serde(default)]
    pub kinds: Vec<String>,
}

/// The alert kinds, as `alerts on kind=...` names them.
pub const ALERT_KINDS: [&str; 5] = [
    "plaintext",
    "new-caller",
    "failing",
    "denied",
    "policy-denies",
];

/// A parsed command.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// `graph [namespace]`.
    Graph {
        /// Only this namespace.
        namespace: Option<String>,
    },
    /// `edges <ns/workload>`: every edge touching it.
    Edges(WorkloadArg),
    /// `who-calls <ns/workload>`.
    WhoCalls(WorkloadArg),
    /// `routes <ns/workload>`: the routes of its calls (Linkerd 2.14+ proxies).
    Routes(WorkloadArg),
    /// `tls`: plaintext edges.
    Tls,
    /// `failing [threshold]`: edges below a success rate (default 0.95).
    Failing {
        /// A success rate in (0, 1].
        threshold: f64,
    },
    /// `explain <src> <dst> [port]`.
    Explain {
        /// The client.
        from: WorkloadArg,
        /// The server.
        to: WorkloadArg,
        /// Its port (0: the destination's own).
        port: u32,
    },
    /// `policy <ns/workload>`: the policy objects and verdicts for its inbound edges.
    Policy(WorkloadArg),
    /// `lockdown <namespace>[/<workload>] [since=7d]`: least-privilege policy proposed from the
    /// traffic observed.
    Lockdown {
        /// The namespace.
        namespace: String,
        /// One workload of it.
        workload: Option<String>,
        /// How far back to look (mesh-mcp reads its Prometheus); `None`: its graph's window.
        since: Option<std::time::Duration>,
    },
    /// `rollout start <namespace>[/<workload>] [since=7d] [observe=30m]` or `rollout <id>`.
    Rollout(RolloutCommand),
    /// `authz apply` / `route apply`: opens the manifest form.
    Apply(ApplyKind),
    /// `alerts on [ns=a,b] [kind=plaintext,...]` / `alerts off`.
    Alerts {
        /// On or off.
        on: bool,
        /// What to send.
        filter: AlertFilter,
    },
    /// `diff <duration> [namespace]`: what changed in the mesh since then.
    Diff {
        /// How far back.
        since: std::time::Duration,
        /// Only this namespace.
        namespace: Option<String>,
    },
    /// `help`.
    Help,
}

/// Every command with its arguments, for help and usage replies.
pub const USAGE: &[(&str, &str)] = &[
    (
        "graph [namespace]",
        "the call graph as a picture, with a summary",
    ),
    (
        "edges <ns/workload>",
        "every edge into and out of a workload",
    ),
    (
        "who-calls <ns/workload>",
        "the callers of a workload, with their rates",
    ),
    (
        "routes <ns/workload>",
        "each route of its calls (HTTPRoute, GRPCRoute, default) with rates, success, p99",
    ),
    ("tls", "edges that are not mTLS"),
    (
        "failing [threshold]",
        "edges below a success rate (default 0.95)",
    ),
    (
        "explain <ns/src> <ns/dst> [port]",
        "may src reach dst, and which policy says so",
    ),
    ("policy <ns/workload>", "the policy protecting a workload"),
    (
        "diff <duration> [namespace]",
        "what changed since then (e.g. `diff 1h`): objects and who changed them, edges, TLS, verdicts, regressions, with a picture",
    ),
    (
        "lockdown <namespace>[/<workload>] [since=7d]",
        "least-privilege policy proposed from observed traffic",
    ),
    (
        "rollout start <namespace>[/<workload>] [since=7d] [observe=30m]",
        "roll least-privilege policy out audit-first; each phase needs approval",
    ),
    (
        "rollout <id>",
        "a rollout's phase, gate and buttons for its next step",
    ),
    (
        "authz apply",
        "propose an AuthorizationPolicy (opens a form; needs approval)",
    ),
    (
        "route apply",
        "propose an HTTPRoute (opens a form; needs approval)",
    ),
    (
        "alerts on [ns=a,b] [kind=plaintext,new-caller,failing,denied]",
        "alerts in this channel",
    ),
    ("alerts off", "no more alerts in this channel"),
    ("help", "this list"),
];

/// What `rollout` asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RolloutCommand {
    /// Start a rollout (proposed; nothing applied).
    Start {
        /// The namespace.
        namespace: String,
        /// One workload of it.
        workload: Option<String>,
        /// How far back to look at traffic.
        since: Option<std::time::Duration>,
        /// How long audit must show no would-be denials.
        observe: Option<std::time::Duration>,
    },
    /// The card of a rollout.
    Show {
        /// Its id.
        id: String,
    },
}

/// A command that could not be parsed: what is wrong and how it is used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Usage {
    /// What is wrong, one sentence.
    pub problem: String,
    /// The usage line(s) that apply.
    pub usage: Vec<String>,
}

impl Usage {
    fn of(problem: impl Into<String>, command: &str) -> Self {
        Self {
            problem: problem.into(),
            usage: USAGE
                .iter()
                .filter(|(u, _)| u.split_whitespace().next() == Some(command))
                .map(|(u, _)| format!("/mesh {u}"))
                .collect(),
        }
    }
}

/// Longest command text accepted; a slash command is one line, not a manifest.
const MAX_TEXT: usize = 500;

/// Is `s` a DNS-1123 label (what Kubernetes names namespaces and most workloads with)?
pub use mesh_model::is_dns_label as is_label;

fn workload(arg: Option<&str>, command: &str) -> Result<WorkloadArg, Usage> {
    let Some(arg) = arg else {
        return Err(Usage::of(
            "which workload? name it as namespace/name",
            command,
        ));
    };
    let Some((ns, name)) = arg.split_once('/') else {
        return Err(Usage::of(
            format!("`{}` is not namespace/name", clip(arg)),
            command,
        ));
    };
    if !is_label(ns) || !is_label(name) {
        return Err(Usage::of(
            format!(
                "`{}` is not namespace/name of Kubernetes names (lower-case letters, digits, '-')",
                clip(arg)
            ),
            command,
        ));
    }
    Ok(WorkloadArg {
        namespace: ns.into(),
        name: name.into(),
    })
}

/// At most 60 characters of user input, for quoting it back.
pub fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(60).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// `<namespace>[/<workload>]`, both Kubernetes names.
fn target(word: Option<&&str>, command: &str) -> Result<(String, Option<String>), Usage> {
    let Some(target) = word else {
        return Err(Usage::of("which namespace?", command));
    };
    let (namespace, workload) = match target.split_once('/') {
        Some((ns, w)) => (ns, Some(w)),
        None => (*target, None),
    };
    if !is_label(namespace) || workload.is_some_and(|w| !is_label(w)) {
        return Err(Usage::of(
            format!(
                "`{}` is not a namespace (or namespace/workload) of Kubernetes names",
                clip(target)
            ),
            command,
        ));
    }
    Ok((namespace.to_owned(), workload.map(str::to_owned)))
}

/// `key=duration` options, each at most once, in any order; nothing else.
fn durations<const N: usize>(
    words: &[&str],
    keys: [&str; N],
    command: &str,
) -> Result<[Option<std::time::Duration>; N], Usage> {
    let mut out = [None; N];
    for w in words {
        let parsed = w
            .split_once('=')
            .and_then(|(k, v)| keys.iter().position(|x| *x == k).map(|i| (i, v)));
        let Some((i, v)) = parsed else {
            let say: Vec<String> = keys.iter().map(|k| format!("{k}=…")).collect();
            return Err(Usage::of(
                format!("unexpected `{}`; say {}", clip(w), say.join(" or ")),
                command,
            ));
        };
        if out[i].is_some() {
            return Err(Usage::of(format!("{} given twice", keys[i]), command));
        }
        let d = humantime::parse_duration(v).map_err(|_| {
            Usage::of(
                format!("`{}` is not a duration like 7d or 30m", clip(v)),
                command,
            )
        })?;
        out[i] = Some(d);
    }
    Ok(out)
}

fn no_more(words: &[&str], command: &str) -> Result<(), Usage> {
    match words.first() {
        None => Ok(()),
        Some(w) => Err(Usage::of(format!("unexpected `{}`", clip(w)), command)),
    }
}

/// Parses the text after `/mesh`.
pub fn parse(text: &str) -> Result<Command, Usage> {
    if text.len() > MAX_TEXT {
        return Err(Usage::of(
            format!(
                "the command is {} characters; at most {MAX_TEXT}",
                text.len()
            ),
            "help",
        ));
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    let Some((&verb, rest)) = words.split_first() else {
        return Ok(Command::Help);
    };
    let verb_lc = verb.to_ascii_lowercase();
    match verb_lc.as_str() {
        "help" => Ok(Command::Help),
        "graph" => {
            let namespace = match rest.first() {
                None => None,
                Some(ns) if is_label(ns) => Some((*ns).to_owned()),
                Some(ns) => {
                    return Err(Usage::of(
                        format!("`{}` is not a namespace name", clip(ns)),
                        "graph",
                    ));
                }
            };
            no_more(rest.get(1..).unwrap_or_default(), "graph")?;
            Ok(Command::Graph { namespace })
        }
        "diff" => {
            let Some(d) = rest.first() else {
                return Err(Usage::of("since when? e.g. `diff 1h`", "diff"));
            };
            let since = mesh_telemetry::parse_since(d).map_err(|e| Usage::of(e, "diff"))?;
            let namespace = match rest.get(1) {
                None => None,
                Some(ns) if is_label(ns) => Some((*ns).to_owned()),
                Some(ns) => {
                    return Err(Usage::of(
                        format!("`{}` is not a namespace name", clip(ns)),
                        "diff",
                    ));
                }
            };
            no_more(rest.get(2..).unwrap_or_default(), "diff")?;
            Ok(Command::Diff { since, namespace })
        }
        "edges" | "who-calls" | "routes" | "policy" => {
            let w = workload(rest.first().copied(), &verb_lc)?;
            no_more(rest.get(1..).unwrap_or_default(), &verb_lc)?;
            Ok(match verb_lc.as_str() {
                "edges" => Command::Edges(w),
                "who-calls" => Command::WhoCalls(w),
                "routes" => Command::Routes(w),
                _ => Command::Policy(w),
            })
        }
        "lockdown" => {
            let (namespace, workload) = target(rest.first(), "lockdown")?;
            let [since] = durations(rest.get(1..).unwrap_or_default(), ["since"], "lockdown")?;
            Ok(Command::Lockdown {
                namespace,
                workload,
                since,
            })
        }
        "rollout" => match rest.first() {
            None => Err(Usage::of("start a rollout, or which one?", "rollout")),
            Some(&"start") => {
                let (namespace, workload) = target(rest.get(1), "rollout")?;
                let [since, observe] = durations(
                    rest.get(2..).unwrap_or_default(),
                    ["since", "observe"],
                    "rollout",
                )?;
                Ok(Command::Rollout(RolloutCommand::Start {
                    namespace,
                    workload,
                    since,
                    observe,
                }))
            }
            Some(id) => {
                if id.len() > 80 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                    return Err(Usage::of(
                        format!("`{}` is not a rollout id", clip(id)),
                        "rollout",
                    ));
                }
                no_more(rest.get(1..).unwrap_or_default(), "rollout")?;
                Ok(Command::Rollout(RolloutCommand::Show {
                    id: (*id).to_owned(),
                }))
            }
        },
        "tls" => {
            no_more(rest, "tls")?;
            Ok(Command::Tls)
        }
        "failing" => {
            let threshold = match rest.first() {
                None => 0.95,
                Some(t) => match t.trim_end_matches('%').parse::<f64>() {
                    Ok(v) if t.ends_with('%') && v > 0.0 && v <= 100.0 => v / 100.0,
                    Ok(v) if v > 0.0 && v <= 1.0 => v,
                    _ => {
                        return Err(Usage::of(
                            format!("`{}` is not a success rate: give 0.9 or 90%", clip(t)),
                            "failing",
                        ));
                    }
                },
            };
            no_more(rest.get(1..).unwrap_or_default(), "failing")?;
            Ok(Command::Failing { threshold })
        }
        "explain" => {
            if rest.len() < 2 {
                return Err(Usage::of("name the client and the server", "explain"));
            }
            let from = workload(rest.first().copied(), "explain")?;
            let to = workload(rest.get(1).copied(), "explain")?;
            let port = match rest.get(2) {
                None => 0,
                Some(p) => match p.parse::<u16>() {
                    Ok(p) if p > 0 => u32::from(p),
                    _ => {
                        return Err(Usage::of(
                            format!("`{}` is not a port (1-65535)", clip(p)),
                            "explain",
                        ));
                    }
                },
            };
            no_more(rest.get(3..).unwrap_or_default(), "explain")?;
            Ok(Command::Explain { from, to, port })
        }
        "authz" | "route" => {
            let kind = ApplyKind::from_word(&verb_lc).unwrap_or(ApplyKind::Authz);
            match rest {
                ["apply"] => Ok(Command::Apply(kind)),
                [] => Err(Usage::of("what should it do? try `apply`", &verb_lc)),
                [w, ..] => Err(Usage::of(
                    format!(
                        "`{}`: the manifest comes from the form `{verb_lc} apply` opens \
                         (slash commands carry no files)",
                        clip(w)
                    ),
                    &verb_lc,
                )),
            }
        }
        "alerts" => match rest.split_first() {
            Some((&"off", more)) => {
                no_more(more, "alerts")?;
                Ok(Command::Alerts {
                    on: false,
                    filter: AlertFilter::default(),
                })
            }
            Some((&"on", more)) => {
                let mut filter = AlertFilter::default();
                for w in more {
                    let (k, v) = w.split_once('=').unwrap_or((w, ""));
                    let values: Vec<String> = v
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect();
                    match k {
                        "ns" | "namespace"
                            if !values.is_empty() && values.iter().all(|v| is_label(v)) =>
                        {
                            filter.namespaces.extend(values);
                        }
                        "kind"
                            if !values.is_empty()
                                && values.iter().all(|v| ALERT_KINDS.contains(&v.as_str())) =>
                        {
                            filter.kinds.extend(values);
                        }
                        _ => {
                            return Err(Usage::of(
                                format!(
                                    "`{}` is not a filter: ns=<namespaces> or kind=<{}>",
                                    clip(w),
                                    ALERT_KINDS.join("|")
                                ),
                                "alerts",
                            ));
                        }
                    }
                }
                Ok(Command::Alerts { on: true, filter })
            }
            _ => Err(Usage::of("say `alerts on` or `alerts off`", "alerts")),
        },
        _ => Err(Usage {
            problem: format!("`{}` is not a command", clip(verb)),
            usage: USAGE.iter().map(|(u, _)| format!("/mesh {u}")).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
    use super::*;

    fn w(ns: &str, n: &str) -> WorkloadArg {
        WorkloadArg {
            namespace: ns.into(),
            name: n.into(),
        }
    }

    #[test]
    fn every_command_parses() {
        assert_eq!(parse("").unwrap(), Command::Help);
        assert_eq!(parse("graph").unwrap(), Command::Graph { namespace: None });
        assert_eq!(
            parse(" graph  emojivoto ").unwrap(),
            Command::Graph {
                namespace: Some("emojivoto".into())
            }
        );
        assert_eq!(
            parse("edges emojivoto/web").unwrap(),
            Command::Edges(w("emojivoto", "web"))
        );
        assert_eq!(
            parse("who-calls a/b").unwrap(),
            Command::WhoCalls(w("a", "b"))
        );
        assert_eq!(parse("policy a/b").unwrap(), Command::Policy(w("a", "b")));
        assert_eq!(parse("routes a/b").unwrap(), Command::Routes(w("a", "b")));
        assert_eq!(
            parse("lockdown emojivoto since=7d").unwrap(),
            Command::Lockdown {
                namespace: "emojivoto".into(),
                workload: None,
                since: Some(std::time::Duration::from_secs(7 * 86_400)),
            }
        );
        assert_eq!(
            parse("lockdown emojivoto/web").unwrap(),
            Command::Lockdown {
                namespace: "emojivoto".into(),
                workload: Some("web".into()),
                since: None,
            }
        );
        assert!(
            parse("lockdown")
                .unwrap_err()
                .problem
                .contains("which namespace?")
        );
        assert!(
            parse("lockdown x since=soon")
                .unwrap_err()
                .problem
                .contains("not a duration")
        );
        assert_eq!(
            parse("rollout start emojivoto/web observe=20m since=7d").unwrap(),
            Command::Rollout(RolloutCommand::Start {
                namespace: "emojivoto".into(),
                workload: Some("web".into()),
                since: Some(std::time::Duration::from_secs(7 * 86_400)),
                observe: Some(std::time::Duration::from_secs(20 * 60)),
            })
        );
        assert_eq!(
            parse("rollout emojivoto-1a2b3c4d").unwrap(),
            Command::Rollout(RolloutCommand::Show {
                id: "emojivoto-1a2b3c4d".into()
            })
        );
        for (bad, want) in [
            ("rollout", "start a rollout, or which one?"),
            ("rollout start", "which namespace?"),
            (
                "rollout start x observe=1h observe=2h",
                "observe given twice",
            ),
            ("rollout start x when=1h", "say since=… or observe=…"),
            ("rollout a/b", "is not a rollout id"),
        ] {
            let u = parse(bad).unwrap_err();
            assert!(u.problem.contains(want), "{bad}: {}", u.problem);
            assert!(
                u.usage.iter().any(|l| l.starts_with("/mesh rollout")),
                "{u:?}"
            );
        }
        assert_eq!(parse("tls").unwrap(), Command::Tls);
        assert_eq!(
            parse("failing").unwrap(),
            Command::Failing { threshold: 0.95 }
        );
        assert_eq!(
            parse("failing 90%").unwrap(),
            Command::Failing { threshold: 0.9 }
        );
        assert_eq!(
            parse("failing 0.5").unwrap(),
            Command::Failing { threshold: 0.5 }
        );
        assert_eq!(
            parse("explain a/b c/d 8080").unwrap(),
            Command::Explain {
                from: w("a", "b"),
                to: w("c", "d"),
                port: 8080
            }
        );
        assert_eq!(
            parse("authz apply").unwrap(),
            Command::Apply(ApplyKind::Authz)
        );
        assert_eq!(
            parse("route apply").unwrap(),
            Command::Apply(ApplyKind::Route)
        );
        assert_eq!(
            parse("alerts on ns=emojivoto kind=plaintext,denied").unwrap(),
            Command::Alerts {
                on: true,
                filter: AlertFilter {
                    namespaces: vec!["emojivoto".into()],
                    kinds: vec!["plaintext".into(), "denied".into()]
                }
            }
        );
        assert!(matches!(
            parse("alerts off").unwrap(),
            Command::Alerts { on: false, .. }
        ));
    }

    #[test]
    fn bad_input_gets_a_reason_and_the_usage() {
        for (text, problem, usage) in [
            (
                "frobnicate",
                "`frobnicate` is not a command",
                "/mesh graph [namespace]",
            ),
            ("edges", "which workload?", "/mesh edges <ns/workload>"),
            ("edges web", "`web` is not namespace/name", "/mesh edges"),
            ("edges a/*bold*", "Kubernetes names", "/mesh edges"),
            (
                "who-calls <!channel>/x",
                "Kubernetes names",
                "/mesh who-calls",
            ),
            ("failing 2", "not a success rate", "/mesh failing"),
            (
                "explain a/b",
                "name the client and the server",
                "/mesh explain",
            ),
            ("explain a/b c/d 99999", "not a port", "/mesh explain"),
            ("authz", "try `apply`", "/mesh authz apply"),
            ("authz apply extra", "`apply`", "/mesh authz apply"),
            (
                "route kubectl",
                "slash commands carry no files",
                "/mesh route apply",
            ),
            (
                "alerts maybe",
                "`alerts on` or `alerts off`",
                "/mesh alerts on",
            ),
            (
                "alerts on kind=everything",
                "not a filter",
                "/mesh alerts off",
            ),
            ("tls now", "unexpected `now`", "/mesh tls"),
        ] {
            let u = parse(text).unwrap_err();
            assert!(u.problem.contains(problem), "{text}: {}", u.problem);
            assert!(
                u.usage.iter().any(|l| l.starts_with(usage)),
                "{text}: {:?}",
                u.usage
            );
        }
        let long = "graph ".repeat(200);
        assert!(parse(&long).unwrap_err().problem.contains("at most 500"));
        let u = parse(&format!("edges {}", "x".repeat(200))).unwrap_err();
        assert!(
            u.problem.chars().count() < 120,
            "quoted input is clipped: {}",
            u.problem
        );
    }
}
