//! The approval of a policy change, as a state machine. One pure function,
//! [`step`]`(state, event, now)`, says what an event does to an approval in a given state at a
//! given moment: the [`Transition`] the store must make (a compare-and-set from one state to
//! another, possibly only once the approval has sat in its state for a while), or the
//! [`Refusal`] saying why nothing may happen. The chat bot and the store are adapters: the
//! bot turns clicks and apply outcomes into events, the store makes the transition atomically.
//!
//! ```text
//!              Approve                 Outcome(Applied|Stale|Failed|Unknown)
//!   Pending ─────────────> Applying ─────────────────────────────────────────> that state
//!      │                    │    ▲
//!      │ Reject             └────┘ Approve, once it has been Applying for retry_after
//!      v                           (its replica died mid-apply: take it over)
//!   Rejected                Stale ──Redo──> Redone   (a fresh dry-run becomes a new approval)
//! ```
//!
//! Clicks on an approval past its expiry are refused; an apply outcome never is (the apply
//! already happened and must be recorded).

use std::{
    fmt,
    time::{Duration, SystemTime},
};

/// Where an approval is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ApprovalState {
    /// Dry-run, waiting for a decision.
    Pending,
    /// Approved; the apply is in flight.
    Applying,
    /// Applied.
    Applied,
    /// Not applied: an object changed since the reviewed dry-run.
    Stale,
    /// Not applied: the apply was refused.
    Failed,
    /// The mesh service did not confirm the apply: it may or may not have happened.
    Unknown,
    /// Rejected by the requester or an approver.
    Rejected,
    /// A stale approval whose change was dry-run again (as a new approval).
    Redone,
}

impl ApprovalState {
    /// Every state, for tables and tests.
    pub const ALL: [Self; 8] = [
        Self::Pending,
        Self::Applying,
        Self::Applied,
        Self::Stale,
        Self::Failed,
        Self::Unknown,
        Self::Rejected,
        Self::Redone,
    ];

    /// The word stored for it (and shown to users).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Applying => "applying",
            Self::Applied => "applied",
            Self::Stale => "stale",
            Self::Failed => "failed",
            Self::Unknown => "unknown",
            Self::Rejected => "rejected",
            Self::Redone => "redone",
        }
    }

    /// The state a stored word names.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

impl fmt::Display for ApprovalState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an apply came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// Applied.
    Applied,
    /// Refused because an object moved since the review.
    Stale,
    /// Refused for another reason.
    Failed,
    /// Not confirmed either way.
    Unknown,
}

impl ApplyOutcome {
    /// The state it leaves the approval in.
    pub fn state(self) -> ApprovalState {
        match self {
            Self::Applied => ApprovalState::Applied,
            Self::Stale => ApprovalState::Stale,
            Self::Failed => ApprovalState::Failed,
            Self::Unknown => ApprovalState::Unknown,
        }
    }
}

/// Something that happens to an approval. A click carries the approval's deadline (clicks after
/// it are refused); an apply's outcome carries none (the apply already happened).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApprovalEvent {
    /// Someone allowed to approve clicked Approve. On an approval already being applied, this
    /// is a take-over, allowed once it has been applying for `retry_after` (longer than any
    /// apply may take: its replica died).
    Approve {
        /// When the approval stops being approvable.
        expires_at: SystemTime,
        /// How long an attempt may stay unconfirmed before another click takes it over.
        retry_after: Duration,
    },
    /// The requester or an approver clicked Reject.
    Reject {
        /// When the approval stops being approvable.
        expires_at: SystemTime,
    },
    /// Someone asked for a fresh dry-run of a stale approval.
    Redo {
        /// When the approval stops being approvable.
        expires_at: SystemTime,
    },
    /// The apply finished.
    Outcome(ApplyOutcome),
}

impl ApprovalEvent {
    /// The deadline of a click; `None` for an outcome.
    fn expires_at(self) -> Option<SystemTime> {
        match self {
            Self::Approve { expires_at, .. }
            | Self::Reject { expires_at }
            | Self::Redo { expires_at } => Some(expires_at),
            Self::Outcome(_) => None,
        }
    }
}

/// The transition the store must make, atomically: from `from` to `to`, and only if the
/// approval has been in `from` for at least `min_age` by the store's clock (zero: at once).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The state it must still be in.
    pub from: ApprovalState,
    /// The state it goes to.
    pub to: ApprovalState,
    /// How long it must have been in `from` (a take-over waits for the dead attempt's deadline).
    pub min_age: Duration,
}

impl Transition {
    /// Whether this transition takes over an attempt abandoned by a replica that died.
    pub fn is_take_over(&self) -> bool {
        self.from == ApprovalState::Applying && self.to == ApprovalState::Applying
    }
}

/// Why an event moves nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Past its expiry: nothing may be decided any more.
    #[error("the approval has expired")]
    Expired,
    /// Being applied, by an attempt younger than the take-over delay.
    #[error("the approval is being applied")]
    InProgress,
    /// Already decided (applied, rejected, ...).
    #[error("the approval is {0} already")]
    Decided(ApprovalState),
    /// Only a stale approval can be dry-run again.
    #[error("only a stale approval can be dry-run again; this one is {0}")]
    NothingToRedo(ApprovalState),
    /// An outcome arrived for an approval that is not being applied.
    #[error("an apply outcome for an approval that is {0}, not applying")]
    NotApplying(ApprovalState),
}

impl Refusal {
    /// A label for counting refusals (`/metrics`).
    pub fn metric_label(self) -> &'static str {
        match self {
            Self::Expired => "expired_click",
            Self::InProgress | Self::Decided(_) => "second_click",
            Self::NothingToRedo(_) => "nothing_to_redo",
            Self::NotApplying(_) => "outcome_out_of_order",
        }
    }
}

/// Whether an approval that expires at `expires_at` has expired at `now`.
pub fn expired(expires_at: SystemTime, now: SystemTime) -> bool {
    expires_at <= now
}

/// What `event` does to an approval in `state`, at `now`.
pub fn step(
    state: ApprovalState,
    event: ApprovalEvent,
    now: SystemTime,
) -> Result<Transition, Refusal> {
    use ApprovalEvent as E;
    use ApprovalState as S;
    let to = |to: S| Transition {
        from: state,
        to,
        min_age: Duration::ZERO,
    };
    if event.expires_at().is_some_and(|at| expired(at, now)) {
        return Err(Refusal::Expired);
    }
    match (state, event) {
        (S::Pending, E::Approve { .. }) => Ok(to(S::Applying)),
        (S::Applying, E::Approve { retry_after, .. }) => Ok(Transition {
            min_age: retry_after,
            ..to(S::Applying)
        }),
        (S::Pending, E::Reject { .. }) => Ok(to(S::Rejected)),
        (S::Applying, E::Reject { .. }) => Err(Refusal::InProgress),
        (S::Stale, E::Redo { .. }) => Ok(to(S::Redone)),
        (S::Applying, E::Outcome(o)) => Ok(to(o.state())),
        (s, E::Redo { .. }) => Err(Refusal::NothingToRedo(s)),
        (s, E::Outcome(_)) => Err(Refusal::NotApplying(s)),
        (s, E::Approve { .. } | E::Reject { .. }) => Err(Refusal::Decided(s)),
    }
}

/// What one more approval does to an approval in `state` that needs `needed` distinct
/// approvers and, counting this one, has `have`: the checks of [`step`] (expiry, decided,
/// in progress), and the approval stays [`ApprovalState::Pending`] until the last one needed.
pub fn step_vote(
    state: ApprovalState,
    have: u32,
    needed: u32,
    event: ApprovalEvent,
    now: SystemTime,
) -> Result<Transition, Refusal> {
    let t = step(state, event, now)?;
    if state == ApprovalState::Pending
        && matches!(event, ApprovalEvent::Approve { .. })
        && have < needed
    {
        return Ok(Transition {
            from: ApprovalState::Pending,
            to: ApprovalState::Pending,
            min_age: Duration::ZERO,
        });
    }
    Ok(t)
}

/// What the store found when it could not make a transition: the approval was no longer in the
/// state the transition started from. Says why nothing happened.
pub fn refusal_after_race(now_in: ApprovalState, attempted: Transition) -> Refusal {
    if now_in == ApprovalState::Applying {
        Refusal::InProgress
    } else if attempted.from == ApprovalState::Stale {
        Refusal::NothingToRedo(now_in)
    } else {
        Refusal::Decided(now_in)
    }
}

#[cfg(test)]
mod tests {
    use super::{ApplyOutcome as O, ApprovalEvent as E, ApprovalState as S, *};

    const RETRY: Duration = Duration::from_secs(120);

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// The clicks, on an approval that expires at 100 s.
    fn approve() -> E {
        E::Approve {
            expires_at: at(100),
            retry_after: RETRY,
        }
    }
    fn reject() -> E {
        E::Reject {
            expires_at: at(100),
        }
    }
    fn redo() -> E {
        E::Redo {
            expires_at: at(100),
        }
    }

    /// Before expiry (now 50 s).
    fn live(state: S, event: E) -> Result<Transition, Refusal> {
        step(state, event, at(50))
    }

    #[test]
    fn every_state_and_event_has_exactly_the_expected_result() {
        let events = [
            approve(),
            reject(),
            redo(),
            E::Outcome(O::Applied),
            E::Outcome(O::Stale),
            E::Outcome(O::Failed),
            E::Outcome(O::Unknown),
        ];
        let mv = |from, to| {
            Ok(Transition {
                from,
                to,
                min_age: Duration::ZERO,
            })
        };
        for state in S::ALL {
            for event in events {
                let want = match (state, event) {
                    (S::Pending, E::Approve { .. }) => mv(S::Pending, S::Applying),
                    (S::Pending, E::Reject { .. }) => mv(S::Pending, S::Rejected),
                    (S::Applying, E::Approve { .. }) => Ok(Transition {
                        from: S::Applying,
                        to: S::Applying,
                        min_age: RETRY,
                    }),
                    (S::Applying, E::Reject { .. }) => Err(Refusal::InProgress),
                    (S::Applying, E::Outcome(o)) => mv(S::Applying, o.state()),
                    (S::Stale, E::Redo { .. }) => mv(S::Stale, S::Redone),
                    (s, E::Redo { .. }) => Err(Refusal::NothingToRedo(s)),
                    (s, E::Outcome(_)) => Err(Refusal::NotApplying(s)),
                    (s, _) => Err(Refusal::Decided(s)),
                };
                assert_eq!(live(state, event), want, "{state} + {event:?}");
            }
        }
    }

    #[test]
    fn approvals_short_of_the_threshold_keep_it_pending() {
        let stay = Ok(Transition {
            from: S::Pending,
            to: S::Pending,
            min_age: Duration::ZERO,
        });
        assert_eq!(step_vote(S::Pending, 1, 2, approve(), at(50)), stay);
        assert_eq!(
            step_vote(S::Pending, 2, 2, approve(), at(50)),
            live(S::Pending, approve())
        );
        assert_eq!(
            step_vote(S::Pending, 1, 2, approve(), at(100)),
            Err(Refusal::Expired)
        );
        assert_eq!(
            step_vote(S::Rejected, 1, 2, approve(), at(50)),
            Err(Refusal::Decided(S::Rejected))
        );
        assert_eq!(
            step_vote(S::Pending, 0, 2, reject(), at(50)),
            live(S::Pending, reject())
        );
    }

    #[test]
    fn clicks_expire_at_their_deadline_but_outcomes_never_do() {
        for (now, expired_now) in [(99, false), (100, true), (500, true)] {
            for event in [approve(), reject()] {
                let r = step(S::Pending, event, at(now));
                assert_eq!(r == Err(Refusal::Expired), expired_now, "{now} {event:?}");
            }
        }
        assert_eq!(step(S::Stale, redo(), at(100)), Err(Refusal::Expired));
        // The apply was made before the deadline; its outcome is recorded after it.
        assert_eq!(
            step(S::Applying, E::Outcome(O::Applied), at(101)).map(|m| m.to),
            Ok(S::Applied)
        );
    }

    #[test]
    fn a_dead_replicas_attempt_is_taken_over_only_after_the_retry_delay() {
        let m = live(S::Applying, approve()).expect("a take-over transition");
        assert!(m.is_take_over());
        assert_eq!(m.min_age, RETRY, "the store waits out the first attempt");
        assert!(!live(S::Pending, approve()).unwrap().is_take_over());
        // The store refused (the attempt is younger): the click is told it is in progress.
        assert_eq!(refusal_after_race(S::Applying, m), Refusal::InProgress);
    }

    #[test]
    fn a_lost_race_says_what_won() {
        let approved = live(S::Pending, approve()).unwrap();
        assert_eq!(
            refusal_after_race(S::Rejected, approved),
            Refusal::Decided(S::Rejected)
        );
        let redone = live(S::Stale, redo()).unwrap();
        assert_eq!(
            refusal_after_race(S::Redone, redone),
            Refusal::NothingToRedo(S::Redone)
        );
    }

    #[test]
    fn states_round_trip_through_their_stored_words() {
        for s in S::ALL {
            assert_eq!(S::parse(s.as_str()), Some(s));
        }
        assert_eq!(S::parse("approved"), None);
        assert_eq!(
            Refusal::Decided(S::Applied).to_string(),
            "the approval is applied already"
        );
    }
}
