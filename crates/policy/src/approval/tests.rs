#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
use super::*;

const POLICY: &str = r#"
version: 1
default:
  approvals: 1
  approvers: { groups: [mesh-admins] }
  ttl: 30m
namespaces:
  payments:
    approvals: 2
    approvers: { users: [bob, carol, dave] }
    requesters: { users: [alice], groups: [payments-devs] }
    agents_propose_only: true
    ttl: 1h
    freezes:
      - { from: "2026-12-24T00:00:00Z", to: "2026-12-27T00:00:00Z", override_groups: [sre-oncall] }
  sandbox:
    approvals: 0
agents: { users: [copilot] }
"#;

fn at(rfc: &str) -> SystemTime {
    humantime::parse_rfc3339_weak(rfc).unwrap()
}

fn policy() -> ApprovalPolicy {
    ApprovalPolicy::parse(POLICY).unwrap()
}

#[test]
fn namespace_rules_take_what_they_leave_out_from_the_default() {
    let p = policy();
    let sandbox = p.rule("sandbox");
    assert_eq!(sandbox.approvals, 0);
    assert_eq!(sandbox.approvers, p.default.approvers);
    assert_eq!(sandbox.ttl, Duration::from_secs(1800));
    let pay = p.rule("payments");
    assert_eq!((pay.approvals, pay.ttl), (2, Duration::from_secs(3600)));
    assert!(pay.agents_propose_only && !p.default.agents_propose_only);
    assert_eq!(p.rule("anything-else").name, "default");
    assert!(p.is_agent(&Subject::new("copilot", &[])));
}

#[test]
fn a_change_answers_to_every_namespace_it_writes() {
    let p = policy();
    let r = p.requirement(&["payments", "web", "sandbox"]);
    assert_eq!(
        r.names(),
        "namespaces.payments, default, namespaces.sandbox"
    );
    assert_eq!(r.approvals(), 2);
    assert_eq!(r.ttl(), Duration::from_secs(1800));
    // bob approves payments but is not in mesh-admins, which the default asks for.
    let alice = Subject::new("alice", &[]);
    let asked = Requested {
        requester: &alice,
        proposer: None,
    };
    let now = at("2026-12-07T12:00:00Z");
    assert_eq!(
        r.check_approver(&p, &Subject::new("bob", &[]), &asked, &[], now),
        Err(VoteRefused::NotApprover {
            user: "bob".into(),
            rule: "default".into()
        })
    );
    assert_eq!(
        r.check_approver(&p, &Subject::new("bob", &["mesh-admins"]), &asked, &[], now),
        Ok(())
    );
    // No namespace at all: the default alone.
    assert_eq!(p.requirement::<&str>(&[]).names(), "default");
}

#[test]
fn the_gate_says_when_a_write_waits_for_people() {
    let p = policy();
    let now = at("2026-12-07T12:00:00Z");
    let alice = Subject::new("alice", &[]);
    let sandbox = p.requirement(&["sandbox"]);
    assert_eq!(sandbox.gate(&alice, false, now), Ok(Gate::Direct));
    assert_eq!(sandbox.gate(&alice, true, now), Ok(Gate::Direct));
    let pay = p.requirement(&["payments"]);
    assert_eq!(
        pay.gate(&alice, false, now),
        Ok(Gate::Approval { needed: 2 })
    );
    assert_eq!(
        pay.gate(&Subject::new("eve", &["devs"]), false, now),
        Err(RequestRefused::NotRequester {
            user: "eve".into(),
            rule: "namespaces.payments".into()
        })
    );
    assert!(
        pay.gate(&Subject::new("erin", &["payments-devs"]), false, now)
            .is_ok()
    );
    // Agents propose only: an otherwise direct rule still waits for one person.
    let mut q = p.clone();
    q.namespaces.get_mut("sandbox").unwrap().agents_propose_only = true;
    let sandbox = q.requirement(&["sandbox"]);
    assert_eq!(
        sandbox.gate(&alice, true, now),
        Ok(Gate::Approval { needed: 1 })
    );
    assert_eq!(sandbox.gate(&alice, false, now), Ok(Gate::Direct));
}

#[test]
fn approvers_are_refused_for_the_reason_that_applies() {
    let p = policy();
    let r = p.requirement(&["payments"]);
    let now = at("2026-12-07T12:00:00Z");
    let alice = Subject::new("alice", &[]);
    let by_alice = Requested {
        requester: &alice,
        proposer: None,
    };
    let check = |who: &Subject, asked: &Requested<'_>, votes: &[String]| {
        r.check_approver(&p, who, asked, votes, now)
    };
    // Alice approving her own change, or her agent's (made as her).
    assert_eq!(
        check(&alice, &by_alice, &[]),
        Err(VoteRefused::OwnRequest("alice".into()))
    );
    // An agent with an identity of its own that proposed it.
    let by_agent = Requested {
        requester: &alice,
        proposer: Some("copilot"),
    };
    assert_eq!(
        check(&Subject::new("copilot", &[]), &by_agent, &[]),
        Err(VoteRefused::Proposer("copilot".into()))
    );
    // Any agent, even one that proposed nothing here.
    assert_eq!(
        check(&Subject::new("copilot", &[]), &by_alice, &[]),
        Err(VoteRefused::Agent("copilot".into()))
    );
    let bob = Subject::new("bob", &[]);
    assert_eq!(check(&bob, &by_alice, &[]), Ok(()));
    assert_eq!(
        check(&bob, &by_alice, &["bob".into()]),
        Err(VoteRefused::Twice("bob".into()))
    );
    assert!(matches!(
        check(&Subject::new("mallory", &["mesh-admins"]), &by_alice, &[]),
        Err(VoteRefused::NotApprover { .. })
    ));
}

#[test]
fn a_freeze_stops_approvals_and_direct_writes_but_not_its_override_groups() {
    let p = policy();
    let r = p.requirement(&["payments"]);
    let alice = Subject::new("alice", &[]);
    let asked = Requested {
        requester: &alice,
        proposer: None,
    };
    let frozen = at("2026-12-25T09:00:00Z");
    let bob = Subject::new("bob", &[]);
    let err = r.check_approver(&p, &bob, &asked, &[], frozen).unwrap_err();
    assert_eq!(
        err.to_string(),
        "namespaces.payments freezes changes until 2026-12-27T00:00:00Z; only members of \
         sre-oncall may approve meanwhile"
    );
    let oncall = Subject::new("carol", &["sre-oncall"]);
    assert_eq!(r.check_approver(&p, &oncall, &asked, &[], frozen), Ok(()));
    // The window's end is open.
    assert_eq!(
        r.check_approver(&p, &bob, &asked, &[], at("2026-12-27T00:00:00Z")),
        Ok(())
    );
    // A rule that needs no approval still needs one during its freeze.
    let mut q = p.clone();
    q.namespaces.get_mut("payments").unwrap().approvals = 0;
    let r = q.requirement(&["payments"]);
    assert_eq!(
        r.gate(&alice, false, frozen),
        Ok(Gate::Approval { needed: 1 })
    );
    assert_eq!(
        r.gate(&Subject::new("alice", &["sre-oncall"]), false, frozen),
        Ok(Gate::Direct)
    );
}

#[test]
fn a_broken_file_is_refused_whole_with_every_problem_named() {
    let bad = r#"
version: 1
default:
  approvals: 2
  approvers: { users: [bob, "system:admin"], groups: ["system:masters"] }
  ttl: 3s
namespaces:
  Payments_1: { approvals: 11 }
  web:
    approvals: 3
    approvers: { users: [bob, carol] }
    freezes: [{ from: "2026-12-27T00:00:00Z", to: "2026-12-24T00:00:00Z" }, { from: soon, to: "2026-12-24T00:00:00Z" }]
agents: { groups: ["system:serviceaccounts"] }
"#;
    let err = ApprovalPolicy::parse(bad).unwrap_err();
    let text = err.to_string();
    for want in [
        "default.approvers.users: \"system:admin\": system identities",
        "default.approvers.groups: \"system:masters\"",
        "default.ttl: \"3s\"; between 1m and 7days",
        "namespaces: \"Payments_1\" is not a namespace name",
        "namespaces.Payments_1.approvals: 11; at most 10",
        "namespaces.web: 3 approvals needed but only 2 approver(s) listed",
        "namespaces.web.freezes[0]: from must be before to",
        "namespaces.web.freezes[1].from: \"soon\" is not an RFC 3339 time with an offset",
        "agents.groups: \"system:serviceaccounts\"",
    ] {
        assert!(text.contains(want), "{want:?} not in {text}");
    }
    for (text, want) in [
        ("version: 2", "version: 2; this mesh-mcp reads version 1"),
        (
            "version: 1\ndefault: { approvals: 1 }",
            "no approvers listed",
        ),
        (
            "version: 1\ndefault: { aprovals: 1 }",
            "unknown field `aprovals`",
        ),
        ("version: 1\nnamespaces: [web]", "invalid type"),
    ] {
        let err = ApprovalPolicy::parse(text).unwrap_err().to_string();
        assert!(err.contains(want), "{text:?}: {want:?} not in {err}");
    }
    let huge = format!("version: 1\n#{}", "x".repeat(MAX_POLICY_BYTES));
    assert!(
        ApprovalPolicy::parse(&huge)
            .unwrap_err()
            .to_string()
            .contains("at most 262144")
    );
}

#[test]
fn the_documented_example_is_a_valid_policy() {
    let p = ApprovalPolicy::parse(include_str!(
        "../../../../docs/examples/approval-policy.yaml"
    ))
    .unwrap();
    assert_eq!(p.rule("payments").approvals, 2);
    assert!(p.rule("emojivoto").agents_propose_only);
    assert!(p.is_agent(&Subject::new("agent:copilot", &[])));
}

#[test]
fn without_a_file_every_write_goes_straight_through() {
    let p = ApprovalPolicy::default();
    let now = SystemTime::UNIX_EPOCH;
    let r = p.requirement(&["web"]);
    assert_eq!(
        r.gate(&Subject::new("alice", &[]), true, now),
        Ok(Gate::Direct)
    );
    assert!(matches!(
        r.check_approver(
            &p,
            &Subject::new("bob", &["mesh-admins"]),
            &Requested {
                requester: &Subject::new("alice", &[]),
                proposer: None
            },
            &[],
            now
        ),
        Err(VoteRefused::NotApprover { .. })
    ));
}

#[test]
fn freezes_add_up_keep_their_offsets_and_a_file_without_version_is_the_first() {
    let p = ApprovalPolicy::parse(
        "default:\n  approvers: { groups: [a] }\n  freezes: [{ from: \"2026-12-24T00:00:00+02:00\", to: \"2026-12-25T00:00:00Z\" }]\n\
         namespaces:\n  web:\n    freezes: [{ from: \"2027-01-01T00:00:00Z\", to: \"2027-01-02T00:00:00Z\" }]\n",
    )
    .unwrap();
    let web = p.rule("web");
    assert_eq!(
        web.freezes.len(),
        2,
        "the default's freeze holds in web too"
    );
    assert_eq!(web.freezes[0].from, at("2026-12-23T22:00:00Z"));
    assert_eq!(p.default.freezes.len(), 1);
}
