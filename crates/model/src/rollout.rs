//! A zero-trust rollout as a state machine: least-privilege policy goes in with its Servers in
//! `accessPolicy: audit`, is observed until no would-be-denied traffic shows for a while (the
//! gate), and only then is enforced (`accessPolicy: deny`). [`step`] says what a request does to
//! a rollout in a given state; [`gate`] says whether the observation allows enforcing. The mesh
//! service is the adapter: it runs each phase change through the policy-change pipeline and
//! makes the transitions atomically in the store.
//!
//! ```text
//!             Audit                Enforce (gate open)
//!  Proposed ─────────> Audit ─────────────────────────> Enforced
//!     │  Rollback        │ ▲ Audit (re-apply a          │
//!     v                  │ │ re-proposed plan)          │ Rollback
//!  Withdrawn <───────────┘ └──────────────────────────────┘
//!            Rollback (removes what the rollout created)
//! ```
//!
//! Every arrow into an applied phase passes through `Moving { from, to }` while the pipeline
//! runs; its outcome lands in `to`, or back in `from` when the apply was refused. A move left
//! unconfirmed for longer than any apply takes (its replica died) may be taken over.

use std::{fmt, time::Duration};

/// A phase a rollout rests in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// Proposed and stored; nothing applied.
    Proposed,
    /// Applied with the Servers in `accessPolicy: audit`: nothing is denied, the proxies report
    /// what would be.
    Audit,
    /// Applied with the Servers in `accessPolicy: deny`.
    Enforced,
    /// Rolled back from audit: what the rollout created is gone. Final.
    Withdrawn,
}

impl Phase {
    /// Every phase.
    pub const ALL: [Self; 4] = [Self::Proposed, Self::Audit, Self::Enforced, Self::Withdrawn];

    /// The word stored for it (and shown to users).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Proposed => "proposed",
            Self::Audit => "audit",
            Self::Enforced => "enforced",
            Self::Withdrawn => "withdrawn",
        }
    }

    /// The phase a word names.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a rollout is: resting in a phase, or moving between two while a change is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RolloutState {
    /// Resting.
    At(Phase),
    /// A phase change is being applied.
    Moving {
        /// Where it returns if the change is refused.
        from: Phase,
        /// Where it lands once applied.
        to: Phase,
    },
}

impl RolloutState {
    /// The word stored for it: the phase, or `moving:<from>><to>`.
    pub fn word(self) -> String {
        match self {
            Self::At(p) => p.as_str().to_owned(),
            Self::Moving { from, to } => format!("moving:{from}>{to}"),
        }
    }

    /// The state a stored word names.
    pub fn parse(s: &str) -> Option<Self> {
        match s.strip_prefix("moving:") {
            None => Phase::parse(s).map(Self::At),
            Some(rest) => {
                let (from, to) = rest.split_once('>')?;
                Some(Self::Moving {
                    from: Phase::parse(from)?,
                    to: Phase::parse(to)?,
                })
            }
        }
    }
}

impl fmt::Display for RolloutState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.word())
    }
}

/// What a person (or agent) asks of a rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Apply the plan in audit mode (first time, or again after a re-proposal).
    Audit,
    /// Switch the Servers to deny.
    Enforce,
    /// Back to the previous phase.
    Rollback,
}

impl Action {
    /// The word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Audit => "audit",
            Self::Enforce => "enforce",
            Self::Rollback => "rollback",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A caller the audit-mode proxies admitted only because of audit mode: enforcing would deny it.
#[derive(Clone, Debug, PartialEq)]
pub struct WouldBeDenied {
    /// The caller: a workload (`ns/name`), or its identity when no edge names it.
    pub caller: String,
    /// The workload it called (`ns/name`).
    pub callee: String,
    /// Requests (or connections) in the observation.
    pub count: f64,
}

/// What the observation says about enforcing.
#[derive(Clone, Debug, PartialEq)]
pub enum Gate {
    /// The rollout is not in audit: there is nothing to observe.
    NotObserving,
    /// No would-be-denied traffic so far, but not for long enough yet.
    Waiting {
        /// Observed so far.
        observed: Duration,
        /// Still to go.
        remaining: Duration,
    },
    /// No would-be-denied traffic for the whole required time: enforcing is safe.
    Open {
        /// Observed.
        observed: Duration,
    },
    /// Traffic enforcing would deny appeared: never enforce; re-propose to admit it (or
    /// mesh it) first.
    Blocked {
        /// Who, into what, how much.
        callers: Vec<WouldBeDenied>,
        /// Observed.
        observed: Duration,
    },
}

impl Gate {
    /// Whether enforcing is allowed.
    pub fn is_open(&self) -> bool {
        matches!(self, Self::Open { .. })
    }

    /// The word for it (`waiting`, `open`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::NotObserving => "not-observing",
            Self::Waiting { .. } => "waiting",
            Self::Open { .. } => "open",
            Self::Blocked { .. } => "blocked",
        }
    }

    /// One line for a card or a terminal: "audit: 0 would-be denials in 30m — ready to enforce".
    pub fn summary(&self) -> String {
        let d = |d: &Duration| fmt_duration(*d);
        match self {
            Self::NotObserving => "not in audit: nothing is being observed".into(),
            Self::Waiting {
                observed,
                remaining,
            } => format!(
                "audit: 0 would-be denials in {}; {} more before enforcing",
                d(observed),
                d(remaining)
            ),
            Self::Open { observed } => format!(
                "audit: 0 would-be denials in {} — ready to enforce",
                d(observed)
            ),
            Self::Blocked { callers, observed } => {
                let total: f64 = callers.iter().map(|c| c.count).sum();
                let names: Vec<String> = callers
                    .iter()
                    .map(|c| format!("{} -> {}", c.caller, c.callee))
                    .collect();
                format!(
                    "audit: {total:.0} would-be denials in {} ({}): enforcing would break them; re-propose to admit them",
                    d(observed),
                    names.join(", ")
                )
            }
        }
    }
}

/// Whole seconds, as `1h 5m 3s` (sub-second parts only confuse a card).
fn fmt_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let parts: Vec<String> = [(h, "h"), (m, "m"), (s, "s")]
        .into_iter()
        .filter(|(v, _)| *v > 0)
        .map(|(v, u)| format!("{v}{u}"))
        .collect();
    parts.join(" ")
}

/// The gate of a rollout observing since `observed` ago, which needs `required` without
/// would-be-denied traffic; `seen` is what the proxies reported as would-be denied in that time.
/// `None` for `observed`: not in audit.
pub fn gate(observed: Option<Duration>, required: Duration, seen: Vec<WouldBeDenied>) -> Gate {
    let Some(observed) = observed else {
        return Gate::NotObserving;
    };
    let seen: Vec<WouldBeDenied> = seen.into_iter().filter(|w| w.count > 0.0).collect();
    if !seen.is_empty() {
        return Gate::Blocked {
            callers: seen,
            observed,
        };
    }
    if observed >= required {
        Gate::Open { observed }
    } else {
        Gate::Waiting {
            observed,
            remaining: required - observed,
        }
    }
}

/// Something that happens to a rollout.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Someone asked for `action`; `gate` is the observation now (consulted by Enforce), and
    /// `moving_for` how long an unconfirmed move has been in flight (for a take-over).
    Ask {
        /// What.
        action: Action,
        /// The gate at this moment.
        gate: Gate,
        /// How long the current move (if any) has gone unconfirmed.
        moving_for: Duration,
        /// How long a move may go unconfirmed before another request takes it over.
        retry_after: Duration,
    },
    /// The pipeline finished the move: applied (`true`) or refused (`false`).
    Outcome(bool),
}

/// Why a request moves nothing.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Refusal {
    /// Withdrawn: nothing more happens to this rollout.
    #[error("the rollout was withdrawn; start a new one")]
    Finished,
    /// Another change of this rollout is being applied.
    #[error("the rollout is {0} already: another change is being applied")]
    InProgress(RolloutState),
    /// Not the next step from here (e.g. enforcing what was never audited).
    #[error("cannot {action} a rollout in {at}: {hint}")]
    NotNext {
        /// Where it is.
        at: Phase,
        /// What was asked.
        action: Action,
        /// What can be done instead.
        hint: &'static str,
    },
    /// The gate is closed.
    #[error("the gate has not passed: {}", .0.summary())]
    GateClosed(Gate),
    /// An outcome for a rollout that was not moving.
    #[error("an apply outcome for a rollout in {0}, which is not moving")]
    NotMoving(RolloutState),
}

/// The state `event` takes a rollout in `state` to.
pub fn step(state: RolloutState, event: Event) -> Result<RolloutState, Refusal> {
    use Phase as P;
    use RolloutState as S;
    let moving = |from, to| Ok(S::Moving { from, to });
    match (state, event) {
        (S::Moving { from, to }, Event::Outcome(applied)) => {
            Ok(S::At(if applied { to } else { from }))
        }
        (s @ S::At(_), Event::Outcome(_)) => Err(Refusal::NotMoving(s)),
        (
            s @ S::Moving { .. },
            Event::Ask {
                moving_for,
                retry_after,
                ..
            },
        ) => {
            // Its replica died mid-apply: the same move is made again (server-side apply
            // makes a repeat harmless), never a different one.
            if moving_for >= retry_after {
                Ok(s)
            } else {
                Err(Refusal::InProgress(s))
            }
        }
        (S::At(P::Withdrawn), Event::Ask { .. }) => Err(Refusal::Finished),
        (S::At(at), Event::Ask { action, gate, .. }) => match (at, action) {
            (P::Proposed | P::Audit, Action::Audit) => moving(at, P::Audit),
            (P::Audit, Action::Enforce) if gate.is_open() => moving(P::Audit, P::Enforced),
            (P::Audit, Action::Enforce) => Err(Refusal::GateClosed(gate)),
            // A re-proposal made while enforcing adds callers; it is applied enforcing.
            (P::Enforced, Action::Enforce) => moving(P::Enforced, P::Enforced),
            (P::Enforced, Action::Rollback) => moving(P::Enforced, P::Audit),
            (P::Audit, Action::Rollback) => moving(P::Audit, P::Withdrawn),
            // Nothing was applied: nothing to undo.
            (P::Proposed, Action::Rollback) => Ok(S::At(P::Withdrawn)),
            (P::Proposed, Action::Enforce) => Err(Refusal::NotNext {
                at,
                action,
                hint: "start with audit: the proxies must first report what enforcing would deny",
            }),
            (P::Enforced, Action::Audit) => Err(Refusal::NotNext {
                at,
                action,
                hint: "roll back to return to audit",
            }),
            (P::Withdrawn, _) => Err(Refusal::Finished),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::{Action as A, Phase as P, RolloutState as S, *};

    const RETRY: Duration = Duration::from_secs(120);

    fn ask(action: A, gate: Gate) -> Event {
        Event::Ask {
            action,
            gate,
            moving_for: Duration::ZERO,
            retry_after: RETRY,
        }
    }

    fn open() -> Gate {
        Gate::Open {
            observed: Duration::from_secs(1800),
        }
    }

    fn blocked() -> Gate {
        Gate::Blocked {
            callers: vec![WouldBeDenied {
                caller: "emojivoto/intruder".into(),
                callee: "emojivoto/web".into(),
                count: 12.0,
            }],
            observed: Duration::from_secs(600),
        }
    }

    #[test]
    fn every_phase_and_action_has_exactly_the_expected_result() {
        let mv = |from, to| Ok(S::Moving { from, to });
        for at in P::ALL {
            for action in [A::Audit, A::Enforce, A::Rollback] {
                for gate in [open(), blocked()] {
                    let want = match (at, action) {
                        (P::Withdrawn, _) => Err(Refusal::Finished),
                        (P::Proposed | P::Audit, A::Audit) => mv(at, P::Audit),
                        (P::Audit, A::Enforce) if gate.is_open() => mv(P::Audit, P::Enforced),
                        (P::Audit, A::Enforce) => Err(Refusal::GateClosed(gate.clone())),
                        (P::Enforced, A::Enforce) => mv(P::Enforced, P::Enforced),
                        (P::Enforced, A::Rollback) => mv(P::Enforced, P::Audit),
                        (P::Audit, A::Rollback) => mv(P::Audit, P::Withdrawn),
                        (P::Proposed, A::Rollback) => Ok(S::At(P::Withdrawn)),
                        (P::Proposed, A::Enforce) | (P::Enforced, A::Audit) => {
                            assert!(matches!(
                                step(S::At(at), ask(action, gate.clone())),
                                Err(Refusal::NotNext { .. })
                            ));
                            continue;
                        }
                    };
                    assert_eq!(
                        step(S::At(at), ask(action, gate.clone())),
                        want,
                        "{at} + {action} ({})",
                        gate.as_str()
                    );
                }
            }
        }
    }

    #[test]
    fn outcomes_land_in_the_target_or_return_to_where_the_move_started() {
        let m = S::Moving {
            from: P::Audit,
            to: P::Enforced,
        };
        assert_eq!(step(m, Event::Outcome(true)), Ok(S::At(P::Enforced)));
        assert_eq!(step(m, Event::Outcome(false)), Ok(S::At(P::Audit)));
        assert_eq!(
            step(S::At(P::Audit), Event::Outcome(true)),
            Err(Refusal::NotMoving(S::At(P::Audit)))
        );
    }

    #[test]
    fn a_move_in_flight_is_taken_over_only_after_the_retry_delay() {
        let m = S::Moving {
            from: P::Proposed,
            to: P::Audit,
        };
        let at = |secs| Event::Ask {
            action: A::Enforce,
            gate: open(),
            moving_for: Duration::from_secs(secs),
            retry_after: RETRY,
        };
        assert_eq!(step(m, at(10)), Err(Refusal::InProgress(m)));
        // The same move again, whatever was asked: a take-over never changes direction.
        assert_eq!(step(m, at(120)), Ok(m));
    }

    #[test]
    fn the_gate_blocks_on_any_would_be_denial_and_opens_only_after_the_required_time() {
        let thirty = Duration::from_secs(1800);
        assert_eq!(gate(None, thirty, vec![]), Gate::NotObserving);
        let ten = Duration::from_secs(600);
        assert_eq!(
            gate(Some(ten), thirty, vec![]),
            Gate::Waiting {
                observed: ten,
                remaining: Duration::from_secs(1200)
            }
        );
        assert!(gate(Some(thirty), thirty, vec![]).is_open());
        // A would-be denial blocks however long the observation has run.
        let seen = vec![WouldBeDenied {
            caller: "emojivoto/intruder".into(),
            callee: "emojivoto/web".into(),
            count: 3.0,
        }];
        let g = gate(Some(Duration::from_secs(7200)), thirty, seen);
        assert_eq!(g.as_str(), "blocked");
        assert!(g.summary().contains("emojivoto/intruder -> emojivoto/web"));
        // A caller with no requests in the window is not evidence.
        let idle = vec![WouldBeDenied {
            caller: "emojivoto/idle".into(),
            callee: "emojivoto/web".into(),
            count: 0.0,
        }];
        assert!(gate(Some(thirty), thirty, idle).is_open());
        assert_eq!(
            gate(Some(thirty), thirty, vec![]).summary(),
            "audit: 0 would-be denials in 30m — ready to enforce"
        );
    }

    #[test]
    fn states_round_trip_through_their_stored_words() {
        let mut all: Vec<S> = P::ALL.into_iter().map(S::At).collect();
        for from in P::ALL {
            for to in P::ALL {
                all.push(S::Moving { from, to });
            }
        }
        for s in all {
            assert_eq!(S::parse(&s.word()), Some(s), "{s}");
        }
        for bad in [
            "",
            "moving:",
            "moving:audit",
            "moving:audit>nowhere",
            "enforcing",
        ] {
            assert_eq!(S::parse(bad), None, "{bad}");
        }
    }
}
