//! The approvals page: pending requests with their reviewed diff and what-if, decided as the
//! signed-in person.

use askama::Template;
use axum::{
    Form,
    extract::{Path, State},
    http::{HeaderMap, header},
    response::{IntoResponse, Redirect, Response},
};
use mesh_proto::{pb, server::mesh_service_server::MeshService};

use super::{Console, FRONT_END, Refused, as_viewer, check_csrf, html, same_origin, viewer};

/// One request as the approvals page shows it.
pub(super) struct Card {
    a: pb::Approval,
    state: &'static str,
    pending: bool,
    on_behalf_of: String,
    votes: Vec<String>,
    affected: Vec<String>,
}

#[derive(Template)]
#[template(path = "console/approvals.html")]
pub(super) struct ApprovalsPage {
    user: String,
    csrf: String,
    notice: String,
    cards: Vec<Card>,
}

/// The cookie that carries what a decision did to the page shown after it: a cookie, not the
/// URL, so nobody can send a link that puts words of theirs on the approvals page.
const NOTICE_COOKIE: &str = "lmcp_notice";

fn edge_name(e: Option<&pb::EdgeRef>) -> String {
    let Some(e) = e else {
        return "?".into();
    };
    let name = |w: Option<&pb::WorkloadRef>| {
        w.map_or_else(String::new, |w| format!("{}/{}", w.namespace, w.name))
    };
    let dst = match e.dst.as_ref() {
        Some(_) => name(e.dst.as_ref()),
        None => e.dst_authority.clone(),
    };
    format!("{} -> {}", name(e.src.as_ref()), dst)
}

fn decision_word(d: i32) -> String {
    pb::policy_verdict::Decision::try_from(d)
        .map_or("unknown", |d| match d {
            pb::policy_verdict::Decision::Allowed => "allowed",
            pb::policy_verdict::Decision::Denied => "denied",
            pb::policy_verdict::Decision::Audit => "audit",
            pb::policy_verdict::Decision::Unknown => "unknown",
            pb::policy_verdict::Decision::Unspecified => "none",
        })
        .to_owned()
}

/// Requests per second as a person reads them: 2 significant decimals under 10.
fn rps(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.0}")
    }
}

/// Pending requests first, then the latest decided ones, with the reviewed diff and what-if.
pub(super) async fn page(
    State(c): State<Console>,
    headers: HeaderMap,
) -> Result<Response, Refused> {
    let v = viewer(&c, &headers, true).await?;
    let pending = pb::ApprovalState::Pending as i32;
    let list = |states: Vec<i32>, limit: u32| {
        MeshService::list_approvals(
            &c.service,
            as_viewer(
                &v,
                pb::ListApprovalsRequest {
                    states,
                    limit,
                    ..Default::default()
                },
            ),
        )
    };
    // Every pending request (up to the service's cap of 200), then the latest others.
    let mut cards_of = list(vec![pending], 0).await?.into_inner().approvals;
    let decided = list(Vec::new(), 50).await?.into_inner().approvals;
    cards_of.extend(decided.into_iter().filter(|a| a.state != pending));
    let list = cards_of;
    let cards = list
        .into_iter()
        .map(|a| Card {
            state: mesh_proto::approval_state_word(a.state),
            pending: a.state == pending,
            on_behalf_of: a
                .on_behalf_of
                .as_ref()
                .map_or_else(String::new, |i| i.user.clone()),
            votes: a
                .approvals
                .iter()
                .map(|v| {
                    let mut s = format!("{} ({})", v.user, v.front_end);
                    if !v.reason.is_empty() {
                        s.push_str(&format!(": {}", v.reason));
                    }
                    s
                })
                .collect(),
            affected: a
                .affected_edges
                .iter()
                .map(|e| {
                    format!(
                        "{}: {} -> {} ({} rps)",
                        edge_name(e.edge.as_ref()),
                        decision_word(e.before),
                        decision_word(e.after),
                        rps(e.rps)
                    )
                })
                .collect(),
            a,
        })
        .collect();
    let mut page = html(&ApprovalsPage {
        user: v.caller.user,
        csrf: v.session.csrf,
        notice: super::session::cookie_value(&headers, NOTICE_COOKIE)
            .map(|v| {
                serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("n={v}"))
                    .ok()
                    .and_then(|mut p| p.pop())
                    .map(|(_, n)| n)
                    .unwrap_or_default()
            })
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect(),
        cards,
    });
    // Shown once.
    page.headers_mut().append(
        header::SET_COOKIE,
        c.sessions.notice_cookie(NOTICE_COOKIE, "", 0),
    );
    Ok(page)
}

#[derive(serde::Deserialize)]
pub(super) struct DecideForm {
    csrf: String,
    #[serde(default)]
    reason: String,
}

/// Approves or rejects a request as the viewer, under the same approval policy as every other
/// front end; back to the page with what happened.
pub(super) async fn decide(
    State(c): State<Console>,
    headers: HeaderMap,
    Path((id, decision)): Path<(String, String)>,
    Form(f): Form<DecideForm>,
) -> Result<Response, Refused> {
    same_origin(&c, &headers)?;
    let v = viewer(&c, &headers, true).await?;
    check_csrf(&headers, &v, Some(&f.csrf))?;
    let req = pb::DecideApprovalRequest {
        id: id.clone(),
        reason: f.reason,
        front_end: FRONT_END.into(),
        ..Default::default()
    };
    let done = match decision.as_str() {
        "approve" => MeshService::approve(&c.service, as_viewer(&v, req)).await,
        "reject" => MeshService::reject(&c.service, as_viewer(&v, req)).await,
        other => {
            return Err(Refused::BadRequest(format!("{other:?}: approve or reject")));
        }
    };
    let notice = match done {
        Ok(a) => {
            let a = a.into_inner();
            let mut s = format!("{id}: {}", mesh_proto::approval_state_word(a.state));
            if !a.outcome.is_empty() {
                s.push_str(&format!(" ({})", a.outcome));
            }
            s
        }
        Err(s) => format!("{id}: refused: {}", s.message()),
    };
    // URL-encoded: a cookie value holds no spaces, commas or semicolons.
    let value = serde_urlencoded::to_string([("n", notice)]).unwrap_or_default();
    let value = value.strip_prefix("n=").unwrap_or_default();
    let cookie = c.sessions.notice_cookie(NOTICE_COOKIE, value, 60);
    Ok((
        [(header::SET_COOKIE, cookie)],
        Redirect::to("/ui/approvals"),
    )
        .into_response())
}
