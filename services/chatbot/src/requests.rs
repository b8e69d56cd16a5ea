//! mesh-mcp's approval requests in chat: the bot is one front end of the one approval service.
//! Requests from any front end (an agent over MCP, `meshctl apply`, this bot) get a card in
//! the namespace's channel, with the approvals so far ("1 of 2: bob"); Approve and Reject are
//! decided by mesh-mcp as the person who clicked (the bot delegates), and every card of a
//! request is redrawn as it changes, whoever approved it and wherever.
//!
//! ```text
//!  WatchApprovals ─> new pending request from elsewhere ─> card in its namespace's channels
//!                 └> any change ─> every card of it redrawn (the lease holder only)
//!  click ─> Approve / Reject on behalf of the clicker ─> the card, or why not (privately)
//! ```

use std::{collections::BTreeMap, fmt::Write as _, sync::Arc, time::Duration};

use mesh_proto::pb;
use mesh_store::AlertStore;
use tokio::sync::watch;

use crate::{
    approvals::{Approvals, ClickOutcome},
    identity::Platform,
    mcp_error::McpError,
    reply::{Reply, Tone},
};

/// The cards the bot shows of approval requests: members `target|message|id`.
pub const CARDS: &str = "approval-request-cards";
/// Requests whose card was posted (by any replica): each is posted once.
const POSTED: &str = "approval-requests-posted";
/// Every id mesh-mcp gives an approval request starts so (the bot's own rollout approvals do
/// not).
pub const ID_PREFIX: &str = "ap-";

/// Where cards of requests from other front ends go: `--approval-channel [NAMESPACE=]TARGET`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Channels {
    /// For namespaces without channels of their own.
    pub default: Vec<String>,
    /// By namespace.
    pub namespaces: BTreeMap<String, Vec<String>>,
}

impl Channels {
    /// Reads the flag's values: `slack:C1` (default), `payments=slack:C2` (one namespace).
    pub fn parse(values: &[String]) -> Result<Self, String> {
        let mut c = Self::default();
        for v in values {
            let (ns, target) = match v.split_once('=') {
                Some((ns, t)) => (Some(ns), t),
                None => (None, v.as_str()),
            };
            let ok = match target.split_once(':') {
                Some(("slack", ch)) => !ch.is_empty(),
                Some(("discord", ch)) => ch.parse::<u64>().is_ok(),
                _ => false,
            };
            if !ok {
                return Err(format!(
                    "--approval-channel {v}: the target must be slack:<channel id> or \
                     discord:<channel id>"
                ));
            }
            match ns {
                Some("") => {
                    return Err(format!("--approval-channel {v}: empty namespace"));
                }
                Some(ns) => c
                    .namespaces
                    .entry(ns.to_owned())
                    .or_default()
                    .push(target.to_owned()),
                None => c.default.push(target.to_owned()),
            }
        }
        Ok(c)
    }

    /// The channels of a request writing `namespaces`, each once.
    pub fn of(&self, namespaces: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for ns in namespaces {
            for t in self.namespaces.get(ns).unwrap_or(&self.default) {
                if !out.contains(t) {
                    out.push(t.clone());
                }
            }
        }
        if namespaces.is_empty() {
            out.clone_from(&self.default);
        }
        out
    }
}

fn state(a: &pb::Approval) -> &'static str {
    mesh_proto::approval_state_word(a.state)
}

/// Who asked: "alice", or "proposed by copilot for alice" when an agent proposed it.
fn requester(a: &pb::Approval) -> String {
    let who = mesh_proto::approval_requester(a);
    if a.agent.is_empty() {
        who
    } else {
        format!("proposed by {who}")
    }
}

/// The card of a request, as it is now.
pub fn card(a: &pb::Approval) -> Reply {
    let what = mesh_proto::approval_target(a).unwrap_or_else(|| "policy change".into());
    let (title, tone) = match state(a) {
        "pending" => (format!("Approval needed: {what}"), Tone::Info),
        "applying" => (format!("Being applied: {what}"), Tone::Info),
        "applied" => (format!("Applied: {what}"), Tone::Good),
        "stale" => (format!("Not applied: {what} changed"), Tone::Bad),
        "failed" => (format!("Not applied: {what}"), Tone::Bad),
        "unknown" => (format!("Outcome unknown: {what}"), Tone::Warn),
        "rejected" => (format!("Rejected: {what}"), Tone::Bad),
        "expired" => (format!("Expired: {what}"), Tone::Bad),
        other => (format!("{other}: {what}"), Tone::Warn),
    };
    let mut r = Reply::new(title)
        .field("Requested by", requester(a))
        .field("Acts as", {
            let id = a.on_behalf_of.clone().unwrap_or_default();
            if id.groups.is_empty() {
                id.user
            } else {
                format!("{} [{}]", id.user, id.groups.join(", "))
            }
        })
        .field("Via", a.front_end.clone())
        .field("Rule", a.rule.clone())
        .field("Approvals", mesh_proto::approval_tally(a));
    if !a.reason.is_empty() {
        r = r.field("Reason", a.reason.clone());
    }
    if !a.rejected_by.is_empty() {
        r = r.field("Rejected by", a.rejected_by.clone());
    }
    if !a.audit_id.is_empty() {
        r = r.field("Audit id", a.audit_id.clone());
    }
    if state(a) == "pending"
        && let Some(t) = a
            .expires_at
            .as_ref()
            .and_then(|t| mesh_proto::timestamp_from_pb(t).ok())
    {
        r = r.field("Expires", humantime::format_rfc3339_seconds(t).to_string());
    }
    let objects: String = a.objects.iter().fold(String::new(), |mut s, o| {
        let action = mesh_proto::approval_action(a.state, &o.action);
        let _ = writeln!(s, "{action} {} {}/{}", o.kind, o.namespace, o.name);
        s
    });
    r = r.code(objects, "objects.txt");
    if state(a) == "pending" {
        let affected: Vec<String> = a
            .affected_edges
            .iter()
            .map(|e| {
                let edge = e.edge.clone().unwrap_or_default();
                let w = |r: Option<pb::WorkloadRef>| {
                    r.map(|r| format!("{}/{}", r.namespace, r.name))
                        .unwrap_or_default()
                };
                format!(
                    "{} -> {}  {} -> {}  {:.2} rps",
                    w(edge.src),
                    w(edge.dst),
                    e.before().as_str_name().to_ascii_lowercase(),
                    e.after().as_str_name().to_ascii_lowercase(),
                    e.rps
                )
            })
            .collect();
        r = if affected.is_empty() {
            r.text("What-if: no observed edge changes its decision.")
        } else {
            r.text("What-if: observed edges whose decision changes")
                .code(affected.join("\n"), "affected-edges.txt")
        };
        r = r.code(a.diff.clone(), "diff.txt");
        r.buttons = crate::approvals::decision_buttons(&a.id);
    }
    if !a.outcome.is_empty() {
        r = r.code(a.outcome.clone(), "outcome.txt");
    }
    for w in &a.warnings {
        r = r.note(format!("Warning: {w}"));
    }
    r.tone = tone;
    r.note(format!(
        "Approval {}: each approver acts as themselves; the change is made as the requester \
         once enough people approve.",
        a.id
    ))
}

impl<S: mesh_store::ApprovalStore + Clone> Approvals<S> {
    /// A click on a mesh-mcp approval request's card: decided by mesh-mcp as the clicker.
    pub(crate) async fn decide(
        &self,
        platform: Platform,
        chat_user: &str,
        action: &str,
        id: &str,
    ) -> ClickOutcome {
        let clicker = match self.identity(platform, chat_user) {
            Ok(k) => k,
            Err(r) => return ClickOutcome::private(*r),
        };
        let mcp = self.mcp().clone();
        let mut c = mcp.client();
        // A change asked for in chat is made as the person the bot vouched for then: if the map
        // no longer holds them, the bot does not approve on their behalf.
        if action == "approve" {
            let asked = match mcp.request(pb::GetApprovalRequest { id: id.to_owned() }) {
                Ok(r) => c.get_approval(r).await.map_err(McpError::from),
                Err(e) => Err(e),
            };
            if let Ok(a) = asked.map(tonic::Response::into_inner)
                && a.front_end == "chat"
            {
                let user = a.on_behalf_of.map(|i| i.user).unwrap_or_default();
                if !self.identities().borrow().maps_to(&user) {
                    self.metrics().approval("requester_unmapped");
                    return ClickOutcome::private(Reply::refusal(
                        "The requester is no longer mapped",
                        format!(
                            "{user} is no longer in the bot's identity map, so the change \
                             cannot be made as them from chat; nothing was applied."
                        ),
                    ));
                }
            }
        }
        let req = pb::DecideApprovalRequest {
            id: id.to_owned(),
            on_behalf_of: Some(pb::Identity {
                user: clicker.user.clone(),
                groups: clicker.groups.clone(),
            }),
            reason: format!("in {platform}"),
            front_end: "chat".into(),
        };
        let res = match (action, mcp.change_request(req)) {
            (_, Err(e)) => Err(e),
            ("approve", Ok(r)) => c.approve(r).await.map_err(McpError::from),
            ("reject", Ok(r)) => c.reject(r).await.map_err(McpError::from),
            (other, _) => {
                return ClickOutcome::private(Reply::refusal(
                    "Unknown button",
                    format!(
                        "`{}` is not an action on approval requests.",
                        crate::command::clip(other)
                    ),
                ));
            }
        };
        match res {
            Ok(a) => {
                let a = a.into_inner();
                self.metrics().approval(state(&a));
                ClickOutcome::card(card(&a))
            }
            Err(e) => {
                self.metrics().approval("refused_by_policy");
                let title = match action {
                    "approve" => "Your approval was not counted",
                    _ => "Not rejected",
                };
                let private = Reply::refusal(title, e.message().to_owned());
                // An expired request's card still offers its buttons: redrawn as expired.
                let now = match mcp.request(pb::GetApprovalRequest { id: id.to_owned() }) {
                    Ok(r) => c
                        .get_approval(r)
                        .await
                        .ok()
                        .map(tonic::Response::into_inner)
                        .filter(|a| state(a) == "expired")
                        .map(|a| card(&a)),
                    Err(_) => None,
                };
                ClickOutcome {
                    card: now,
                    private: Some(private),
                    post: None,
                }
            }
        }
    }
}

/// Remembers that `message` in `target` shows approval request `id`, so it is redrawn as the
/// request changes.
pub async fn track_card(app: &crate::app::App, target: &str, message: &str, id: &str) {
    let member = format!("{target}|{message}|{id}");
    if let Err(e) = app.store.mark(CARDS, &member, true).await {
        tracing::warn!(%e, approval = id, "could not remember an approval card: it will not be kept current");
    }
}

/// Follows mesh-mcp's approval requests while this replica holds the alert lease: posts a
/// card of each new request from another front end to its namespace's channels (once, across
/// replicas), and redraws every card of a request when it changes. Reconnects with backoff.
pub async fn keep_cards(
    app: Arc<crate::app::App>,
    leader: watch::Receiver<bool>,
    channels: Channels,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let stream = match app.mcp.stream_request(pb::WatchApprovalsRequest::default()) {
            Ok(r) => app.mcp.client().watch_approvals(r).await,
            Err(e) => {
                tracing::warn!(%e, "cannot watch approval requests");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        match stream {
            Ok(s) => {
                backoff = Duration::from_millis(200);
                // What was decided while the bot was not watching: the stream starts with
                // what is pending, so the cards it tracks are brought up to date first.
                if *leader.borrow() {
                    catch_up(&app, &channels).await;
                }
                let mut s = s.into_inner();
                while let Ok(Some(a)) = s.message().await {
                    if *leader.borrow() {
                        show(&app, &channels, &a).await;
                    }
                }
            }
            Err(e) => tracing::debug!(%e, "approval watch refused"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Redraws the tracked cards (at most 50 a time) from their requests as they are now.
async fn catch_up(app: &crate::app::App, channels: &Channels) {
    let cards = app.store.members(CARDS).await.unwrap_or_default();
    let mut ids: Vec<&str> = cards.iter().filter_map(|m| m.rsplit('|').next()).collect();
    ids.sort_unstable();
    ids.dedup();
    for id in ids.into_iter().take(50) {
        let Ok(r) = app
            .mcp
            .request(pb::GetApprovalRequest { id: id.to_owned() })
        else {
            continue;
        };
        if let Ok(a) = app.mcp.client().get_approval(r).await {
            show(app, channels, &a.into_inner()).await;
        }
    }
}

async fn show(app: &crate::app::App, channels: &Channels, a: &pb::Approval) {
    let cards = app.store.members(CARDS).await.unwrap_or_default();
    let suffix = format!("|{}", a.id);
    let mine: Vec<&String> = cards.iter().filter(|m| m.ends_with(&suffix)).collect();
    let new = state(a) == "pending" && a.front_end != "chat" && mine.is_empty();
    if new && app.store.mark(POSTED, &a.id, true).await.unwrap_or(false) {
        for target in channels.of(&a.namespaces) {
            match app.post_card(&target, &card(a)).await {
                Ok(Some(message)) => track_card(app, &target, &message, &a.id).await,
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(%e, approval = %a.id, %target, "could not post an approval card")
                }
            }
        }
        app.metrics.approval("card_posted");
        return;
    }
    // Applying is a moment between the last approval and its outcome; the click that made it
    // redraws its own card with the outcome.
    if state(a) == "applying" {
        return;
    }
    for member in mine {
        let mut parts = member.splitn(3, '|');
        let (Some(target), Some(message)) = (parts.next(), parts.next()) else {
            continue;
        };
        if let Err(e) = app.edit_card(target, message, &card(a)).await {
            tracing::warn!(%e, approval = %a.id, "could not redraw an approval card");
        }
        if !matches!(state(a), "pending" | "applying") {
            let _ = app.store.mark(CARDS, member, false).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_go_by_namespace_with_a_default() {
        let c = Channels::parse(&[
            "slack:C0ALL".into(),
            "payments=slack:C0PAY".into(),
            "payments=discord:42".into(),
        ])
        .unwrap();
        assert_eq!(c.of(&["payments".into()]), ["slack:C0PAY", "discord:42"]);
        assert_eq!(c.of(&["web".into(), "shop".into()]), ["slack:C0ALL"]);
        assert_eq!(
            c.of(&["web".into(), "payments".into()]),
            ["slack:C0ALL", "slack:C0PAY", "discord:42"]
        );
        for bad in ["payments=", "C0", "discord:x", "=slack:C1", "teams:1"] {
            assert!(Channels::parse(&[bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_card_says_who_proposed_for_whom_and_the_approvals_so_far() {
        let a = pb::Approval {
            id: "ap-1".into(),
            state: pb::ApprovalState::Pending.into(),
            requested_by: "alice".into(),
            on_behalf_of: Some(pb::Identity {
                user: "alice".into(),
                groups: vec![],
            }),
            agent: "copilot".into(),
            reason: "only web calls voting".into(),
            needed: 2,
            approvals: vec![pb::ApprovalVote {
                user: "bob".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let r = card(&a);
        let field = |k: &str| {
            r.fields
                .iter()
                .find(|(f, _)| f == k)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(field("Requested by"), "proposed by copilot for alice");
        assert_eq!(field("Approvals"), "1 of 2: bob");
        assert_eq!(field("Reason"), "only web calls voting");
        assert_eq!(r.buttons.len(), 2);
        let applied = card(&pb::Approval {
            state: pb::ApprovalState::Applied.into(),
            ..a
        });
        assert!(applied.buttons.is_empty() && applied.title.starts_with("Applied"));
    }
}
