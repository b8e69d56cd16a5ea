//! What the graph page reads and asks: the graph (now or at a moment), its live feed as
//! server-sent events, what changed, an edge's explanation and last hour, and the what-if of a
//! pasted manifest.

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{
    Json,
    extract::{Query, State},
    http::HeaderMap,
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures_util::StreamExt as _;
use mesh_proto::{pb, server::mesh_service_server::MeshService};
use tokio::sync::Semaphore;

use super::{
    Console, MAX_STREAMS, Refused, SESSION_STREAMS, as_viewer, check_csrf, json, same_origin,
    viewer,
};

/// How long one live stream runs before the browser is made to reconnect (and show it is
/// still signed in).
const STREAM_FOR: Duration = Duration::from_secs(300);

/// Filters of the graph reads, as the page's query string carries them.
#[derive(serde::Deserialize, Default)]
pub(super) struct Filters {
    namespace: Option<String>,
    workload: Option<String>,
    tls: Option<String>,
    min_rps: Option<f64>,
    /// A past moment: RFC 3339, or a duration ago (`-1h`).
    at: Option<String>,
}

impl Filters {
    fn namespaces(&self) -> Vec<String> {
        self.namespace
            .iter()
            .flat_map(|n| n.split(','))
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect()
    }

    fn tls(&self) -> Result<i32, Refused> {
        match self.tls.as_deref() {
            None | Some("") => Ok(0),
            Some(t) => pb::TlsStatus::from_str_name(&t.to_ascii_uppercase())
                .map(|v| v as i32)
                .ok_or_else(|| {
                    Refused::BadRequest(format!("tls: {t:?} is not mtls, plaintext or unknown"))
                }),
        }
    }

    fn min_rps(&self) -> Result<f64, Refused> {
        match self.min_rps {
            Some(r) if !r.is_finite() || r < 0.0 => Err(Refused::BadRequest(
                "min_rps: a number of requests per second, 0 or more".into(),
            )),
            r => Ok(r.unwrap_or(0.0)),
        }
    }
}

pub(super) async fn graph(
    State(c): State<Console>,
    headers: HeaderMap,
    Query(q): Query<Filters>,
) -> Result<Response, Refused> {
    viewer(&c, &headers, false).await?;
    let (tls, min_rps) = (q.tls()?, q.min_rps()?);
    let at =
        q.at.as_deref()
            .filter(|v| !v.is_empty())
            .map(|v| crate::past::moment("at", v, std::time::SystemTime::now()))
            .transpose();
    let at = at.map_err(Refused::BadRequest)?;
    let req = pb::GetMeshGraphRequest {
        namespaces: q.namespaces(),
        workload: q.workload.clone().unwrap_or_default(),
        tls,
        min_rps,
        include_policies: false,
        at,
    };
    Ok(json(&c.service.view(req).await?.to_pb()))
}

/// Where an event leaves the graph's history: the SSE event id a reconnecting browser sends
/// back as `Last-Event-ID`.
fn position_id(ev: &pb::MeshGraphEvent) -> Option<String> {
    match ev.event.as_ref()? {
        pb::mesh_graph_event::Event::Snapshot(g) => Some(format!("{}.{}", g.epoch, g.version)),
        pb::mesh_graph_event::Event::Delta(d) => Some(format!("{}.{}", d.epoch, d.to_version)),
        pb::mesh_graph_event::Event::Heartbeat(h) => h
            .position
            .as_ref()
            .map(|p| format!("{}.{}", p.epoch, p.version)),
    }
}

/// `Last-Event-ID` as a watch position; anything else starts afresh with a snapshot.
fn resume_from(headers: &HeaderMap) -> Option<pb::GraphPosition> {
    let (e, v) = headers
        .get("last-event-id")?
        .to_str()
        .ok()?
        .split_once('.')?;
    Some(pb::GraphPosition {
        epoch: e.parse().ok()?,
        version: v.parse().ok()?,
    })
}

/// The live picture's feed: `WatchMeshGraph` with the page's filters, as server-sent events
/// (`snapshot`, `delta`, `heartbeat`, each the proto3 JSON of the gRPC message), resumed from
/// `Last-Event-ID` after a reconnect.
pub(super) async fn events(
    State(c): State<Console>,
    headers: HeaderMap,
    Query(q): Query<Filters>,
) -> Result<Response, Refused> {
    let v = viewer(&c, &headers, false).await?;
    let (tls, min_rps) = (q.tls()?, q.min_rps()?);
    let mine = {
        let mut shares = c.session_streams.lock().await;
        if shares.len() >= MAX_STREAMS {
            // Forget sessions holding no picture: the map stays as small as what is open.
            shares.retain(|_, s| s.available_permits() < SESSION_STREAMS);
        }
        shares
            .entry(v.id.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(SESSION_STREAMS)))
            .clone()
    };
    let Ok(own) = mine.try_acquire_owned() else {
        return Err(Refused::Busy(format!(
            "this session has {SESSION_STREAMS} live pictures open; close a tab"
        )));
    };
    let Ok(permit) = c.streams.clone().try_acquire_owned() else {
        return Err(Refused::Busy(format!(
            "{MAX_STREAMS} live pictures are open; try again shortly"
        )));
    };
    let permit = (permit, own);
    let mut req = pb::WatchMeshGraphRequest {
        namespaces: q.namespaces(),
        workload: q.workload.clone().unwrap_or_default(),
        tls,
        min_rps,
        include_policies: false,
        resume_from: resume_from(&headers),
    };
    let stream =
        match MeshService::watch_mesh_graph(&c.service, tonic::Request::new(req.clone())).await {
            Ok(s) => s.into_inner(),
            // A position this replica cannot resume from (it lags the one the browser was on, or
            // the epoch moved): start afresh with a snapshot rather than leave the page dark.
            Err(s) if s.code() == tonic::Code::InvalidArgument && req.resume_from.is_some() => {
                req.resume_from = None;
                MeshService::watch_mesh_graph(&c.service, tonic::Request::new(req))
                    .await?
                    .into_inner()
            }
            Err(s) => return Err(s.into()),
        };
    // Each stream ends after a while: the browser reconnects from where it was, through the
    // sign-in check again, so a session ended meanwhile stops its picture too.
    let stream = stream.take_until(tokio::time::sleep(STREAM_FOR));
    let events = stream.map(move |item| {
        // The permit lives as long as the stream.
        let _held = &permit;
        let ev = match item {
            Ok(mesh_proto::EncodedEvent::Shared(bytes)) => {
                <pb::MeshGraphEvent as prost::Message>::decode(bytes).map_err(|e| e.to_string())
            }
            Ok(mesh_proto::EncodedEvent::Own(ev)) => Ok(*ev),
            Err(s) => Err(s.message().to_owned()),
        };
        let out = match ev {
            Ok(ev) => {
                let name = match &ev.event {
                    Some(pb::mesh_graph_event::Event::Snapshot(_)) => "snapshot",
                    Some(pb::mesh_graph_event::Event::Delta(_)) => "delta",
                    Some(pb::mesh_graph_event::Event::Heartbeat(_)) => "heartbeat",
                    None => "empty",
                };
                let id = position_id(&ev);
                let data = match &ev.event {
                    Some(pb::mesh_graph_event::Event::Snapshot(g)) => serde_json::to_string(&g),
                    Some(pb::mesh_graph_event::Event::Delta(d)) => serde_json::to_string(&d),
                    Some(pb::mesh_graph_event::Event::Heartbeat(h)) => serde_json::to_string(&h),
                    None => Ok("{}".to_owned()),
                };
                let e = Event::default()
                    .event(name)
                    .data(data.unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string())));
                match id {
                    Some(id) => e.id(id),
                    None => e,
                }
            }
            Err(why) => Event::default().event("failed").data(why),
        };
        Ok::<_, Infallible>(out)
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

#[derive(serde::Deserialize, Default)]
pub(super) struct DiffQuery {
    from: Option<String>,
    to: Option<String>,
    namespace: Option<String>,
}

/// What changed between two moments (`DiffMeshGraph`), for the time slider.
pub(super) async fn diff(
    State(c): State<Console>,
    headers: HeaderMap,
    Query(q): Query<DiffQuery>,
) -> Result<Response, Refused> {
    viewer(&c, &headers, false).await?;
    let span = crate::past::span(
        None,
        q.from.as_deref(),
        q.to.as_deref(),
        std::time::SystemTime::now(),
    );
    let (from, to) = span.map_err(Refused::BadRequest)?;
    let req = pb::DiffMeshGraphRequest {
        from: Some(from),
        to,
        namespaces: Filters {
            namespace: q.namespace,
            ..Filters::default()
        }
        .namespaces(),
        ..Default::default()
    };
    Ok(json(&c.service.diff(req).await?))
}

#[derive(serde::Deserialize)]
pub(super) struct ExplainQuery {
    from: String,
    to: String,
    #[serde(default)]
    port: u32,
}

/// Why `from` may or may not reach `to` (`ExplainAccess`), for the edge panel.
pub(super) async fn explain(
    State(c): State<Console>,
    headers: HeaderMap,
    Query(q): Query<ExplainQuery>,
) -> Result<Response, Refused> {
    let v = viewer(&c, &headers, false).await?;
    let req = pb::ExplainAccessRequest {
        from: q.from,
        to: q.to,
        port: q.port,
        ..Default::default()
    };
    let verdict = MeshService::explain_access(&c.service, as_viewer(&v, req)).await?;
    Ok(json(&verdict.into_inner()))
}

#[derive(serde::Deserialize)]
pub(super) struct SeriesQuery {
    /// The caller, `namespace/name`.
    src: String,
    /// The callee, `namespace/name`.
    dst: String,
}

/// How far back the edge panel's plots reach, and their resolution.
const SERIES_SPAN: Duration = Duration::from_secs(3600);
const SERIES_STEP: Duration = Duration::from_secs(30);
/// The rate window of each point: a minute, as `linkerd viz` reads golden metrics.
const SERIES_RATE: Duration = Duration::from_secs(60);

/// The edge's requests per second, success rate and p99 over the last hour, from Prometheus
/// (viz's outbound series, one range query each): the edge panel's plots.
pub(super) async fn series(
    State(c): State<Console>,
    headers: HeaderMap,
    Query(q): Query<SeriesQuery>,
) -> Result<Response, Refused> {
    viewer(&c, &headers, false).await?;
    let url = c.service.prometheus.clone().ok_or_else(|| {
        Refused::Status(tonic::Status::failed_precondition(
            "this mesh-mcp reads no Prometheus (--prometheus-url): no history to plot",
        ))
    })?;
    let view = c
        .service
        .view(pb::GetMeshGraphRequest {
            workload: q.src.clone(),
            ..Default::default()
        })
        .await?;
    let edge = view
        .graph
        .edges
        .values()
        .find(|e| {
            let dst = match &e.key.dst {
                mesh_model::Destination::Workload(w) => format!("{}/{}", w.namespace, w.name),
                mesh_model::Destination::Authority(a) => a.clone(),
            };
            format!("{}/{}", e.key.src.namespace, e.key.src.name) == q.src && dst == q.dst
        })
        .ok_or_else(|| {
            Refused::Status(tonic::Status::not_found(format!(
                "no edge {} -> {} in the graph",
                q.src, q.dst
            )))
        })?;
    let mesh_model::Destination::Workload(dst) = &edge.key.dst else {
        return Err(Refused::BadRequest(
            "plots are for edges between workloads, not to an authority".into(),
        ));
    };
    let src = &edge.key.src;
    let queries = mesh_prometheus::promql::EdgeSeries::new(
        (&src.namespace, &src.kind, &src.name),
        (&dst.namespace, &dst.kind, &dst.name),
        SERIES_RATE,
    )
    .ok_or_else(|| {
        Refused::BadRequest(format!(
            "{}s and {}s carry no owner label in viz's series",
            src.kind, dst.kind
        ))
    })?;
    let prom = mesh_prometheus::PrometheusSource::new(&url, SERIES_RATE, Duration::from_secs(10))
        .map_err(|e| Refused::Status(tonic::Status::failed_precondition(e.to_string())))?;
    let end = std::time::SystemTime::now();
    let start = end - SERIES_SPAN;
    let range = |query: String| {
        let prom = prom.clone();
        async move {
            let got = prom.query_range(&query, start, end, SERIES_STEP).await;
            got.map(|series| {
                series
                    .into_iter()
                    .next()
                    .map(|s| {
                        s.values
                            .into_iter()
                            .filter_map(|(t, v)| {
                                v.parse::<f64>()
                                    .ok()
                                    .filter(|v| v.is_finite())
                                    .map(|v| (t, v))
                            })
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
            })
        }
    };
    let (rps, success, p99) = tokio::join!(
        range(queries.rps),
        range(queries.success),
        range(queries.p99)
    );
    let unavailable =
        |e: mesh_prometheus::PromError| Refused::Status(tonic::Status::unavailable(e.to_string()));
    Ok(json(&serde_json::json!({
        "step_seconds": SERIES_STEP.as_secs(),
        "rps": rps.map_err(unavailable)?,
        "success_rate": success.map_err(unavailable)?,
        "latency_p99_ms": p99.map_err(unavailable)?,
    })))
}

#[derive(serde::Deserialize)]
pub(super) struct WhatIf {
    /// `AuthorizationPolicy` (the default) or `HTTPRoute`: which apply the manifest goes to.
    #[serde(default)]
    kind: String,
    manifest: String,
}

/// "What would this change do": the pasted manifest dry-run as the viewer (their RBAC, the
/// server's admission) with the edges whose verdict it would change. Nothing is written.
pub(super) async fn whatif(
    State(c): State<Console>,
    headers: HeaderMap,
    Json(w): Json<WhatIf>,
) -> Result<Response, Refused> {
    same_origin(&c, &headers)?;
    let v = viewer(&c, &headers, false).await?;
    check_csrf(&headers, &v, None)?;
    let req = pb::ApplyRequest {
        source: Some(pb::apply_request::Source::Manifest(w.manifest)),
        dry_run: true,
        ..Default::default()
    };
    let answer = match w.kind.as_str() {
        "" | "AuthorizationPolicy" => {
            MeshService::apply_authorization_policy(&c.service, as_viewer(&v, req)).await
        }
        "HTTPRoute" => MeshService::apply_http_route(&c.service, as_viewer(&v, req)).await,
        other => {
            return Err(Refused::BadRequest(format!(
                "kind: {other:?}; AuthorizationPolicy or HTTPRoute"
            )));
        }
    };
    Ok(json(&answer?.into_inner()))
}
