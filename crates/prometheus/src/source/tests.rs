//! Error paths against a stand-in that answers like a broken or empty Prometheus. The happy path
//! runs against real Prometheus in meshctl's end-to-end tests.

use std::time::Duration;

use axum::{Router, http::StatusCode, routing::post};

use std::collections::HashMap;

use super::*;
use crate::promql::Reads;

async fn stand_in(router: Router) -> (String, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(l, router).await.unwrap();
    });
    (url, task)
}

fn source(url: &str, timeout: Duration) -> PrometheusSource {
    PrometheusSource::new(url, Duration::from_secs(60), timeout).unwrap()
}

/// One read of the stand-in at `url` with the defaults (rules `auto`), which must succeed.
async fn observe(url: &str) -> Observation {
    source(url, Duration::from_secs(2))
        .observe(SystemTime::now())
        .await
        .unwrap()
}

#[tokio::test]
async fn unreachable_prometheus_says_so() {
    let port = mesh_testkit::free_port();
    let err = source(&format!("http://127.0.0.1:{port}"), Duration::from_secs(2))
        .graph(SystemTime::now())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "cannot reach Prometheus at http://127.0.0.1:{port}: "
        )),
        "{msg}"
    );
    assert!(msg.to_lowercase().contains("refused"), "{msg}");
}

#[tokio::test]
async fn prometheus_error_bodies_are_reported_with_the_query() {
    let (url, task) = stand_in(Router::new().route(
        "/api/v1/query",
        post(|| async {
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                r#"{"status":"error","errorType":"execution","error":"query timed out in expression evaluation"}"#,
            )
        }),
    ))
    .await;
    let err = source(&url, Duration::from_secs(2))
        .graph(SystemTime::now())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("Prometheus refused a query (422, execution): query timed out"),
        "{msg}"
    );
    assert!(msg.contains("query: "), "{msg}");
    task.abort();
}

#[tokio::test]
async fn something_that_is_not_prometheus_is_named() {
    let (url, task) =
        stand_in(Router::new().route("/api/v1/query", post(|| async { "<html>login</html>" })))
            .await;
    let msg = source(&url, Duration::from_secs(2))
        .graph(SystemTime::now())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("with a body that is not a query result: <html>login</html>"),
        "{msg}"
    );
    task.abort();
}

#[tokio::test]
async fn slow_prometheus_times_out() {
    let (url, task) = stand_in(Router::new().route(
        "/api/v1/query",
        post(|| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "{}"
        }),
    ))
    .await;
    let err = source(&url, Duration::from_millis(300))
        .graph(SystemTime::now())
        .await
        .unwrap_err();
    assert!(matches!(err, PromError::Timeout { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!("Prometheus at {url} did not answer within 300ms")
    );
    task.abort();
}

#[tokio::test]
async fn empty_results_are_a_clear_error() {
    let (url, task) = stand_in(Router::new().route(
        "/api/v1/query",
        post(|| async { r#"{"status":"success","data":{"resultType":"vector","result":[]}}"# }),
    ))
    .await;
    let msg = source(&url, Duration::from_secs(2))
        .graph(SystemTime::now())
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        msg,
        format!(
            "Prometheus at {url} has no linkerd-proxy traffic metrics in the last 1m: is it linkerd-viz's Prometheus, and is meshed traffic flowing?"
        )
    );
    task.abort();
}

#[test]
fn bad_urls_are_refused() {
    let e = PrometheusSource::new("ftp://x", Duration::from_secs(60), Duration::from_secs(1))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid Prometheus URL \"ftp://x\": scheme \"ftp\" is not http or https"
    );
    assert!(
        PrometheusSource::new("not a url", Duration::from_secs(60), Duration::from_secs(1))
            .is_err()
    );
}

#[test]
fn series_map_to_workloads_destinations_and_tls() {
    let s: Series = serde_json::from_str(
        r#"{"metric":{"namespace":"emojivoto","deployment":"web","dst_namespace":"emojivoto","dst_statefulset":"db","tls":"disabled"},"value":[1,"3"]}"#,
    )
    .unwrap();
    assert_eq!(src_of(&s).unwrap().to_string(), "emojivoto/web");
    assert_eq!(
        dst_of(&s),
        Some(Destination::Workload(WorkloadRef {
            namespace: "emojivoto".into(),
            kind: "StatefulSet".into(),
            name: "db".into()
        }))
    );
    assert_eq!(tls_of(&s), TlsObservation::Disabled);
    let ext: Series = serde_json::from_str(r#"{"metric":{"namespace":"a","deployment":"w","authority":"api.example.com:443","tls":"no_identity","no_tls_reason":"not_provided_by_service_discovery"},"value":[1,"NaN"]}"#).unwrap();
    assert_eq!(
        dst_of(&ext),
        Some(Destination::Authority("api.example.com:443".into()))
    );
    assert_eq!(ext.number(), None);
}

/// A stand-in that records every query and answers with `answer(query)`: the rules' info
/// series for `timestamp(linkerd_mcp:rules_info)`, else one outbound series per query.
async fn recording_stand_in(
    answer: impl Fn(&str) -> (StatusCode, String) + Clone + Send + Sync + 'static,
) -> (
    String,
    tokio::task::JoinHandle<()>,
    std::sync::Arc<tokio::sync::Mutex<Vec<String>>>,
) {
    let seen = std::sync::Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let (url, task) = stand_in(Router::new().route(
        "/api/v1/query",
        post(
            move |axum::Form(form): axum::Form<HashMap<String, String>>| async move {
                let q = form.get("query").cloned().unwrap_or_default();
                log.lock().await.push(q.clone());
                answer(&q)
            },
        ),
    ))
    .await;
    (url, task, seen)
}

fn vector(series: &[(&[(&str, &str)], f64)]) -> (StatusCode, String) {
    let result: Vec<serde_json::Value> = series
        .iter()
        .map(|(labels, v)| {
            let metric: serde_json::Map<String, serde_json::Value> = labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
                .collect();
            serde_json::json!({"metric": metric, "value": [1.0, v.to_string()]})
        })
        .collect();
    (
        StatusCode::OK,
        serde_json::json!({"status": "success", "data": {"resultType": "vector", "result": result}})
            .to_string(),
    )
}

/// One successful outbound call from `ns`/x to b/y.
fn edge_from(ns: &str) -> (StatusCode, String) {
    vector(&[(
        &[
            ("namespace", ns),
            ("deployment", "x"),
            ("dst_namespace", "b"),
            ("dst_deployment", "y"),
            ("classification", "success"),
            ("tls", "true"),
            (
                "server_id",
                "y.b.serviceaccount.identity.linkerd.cluster.local",
            ),
        ],
        6.0,
    )])
}

/// Seconds since the epoch, `ago` before now.
fn secs_ago(ago: u64) -> f64 {
    (SystemTime::now() - Duration::from_secs(ago))
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        .floor()
}

fn rules_info(version: &'static str, at: f64) -> impl Fn(&str) -> (StatusCode, String) + Clone {
    move |q: &str| {
        if q == "timestamp(linkerd_mcp:rules_info)" {
            vector(&[(
                &[("version", version), ("window", "1m"), ("interval", "10s")],
                at,
            )])
        } else if q.starts_with("linkerd_mcp:outbound_response_total:")
            || q.starts_with(r#"sum(increase(response_total{direction="outbound"}"#)
        {
            edge_from("a")
        } else {
            vector(&[])
        }
    }
}

#[tokio::test]
async fn loaded_rules_of_this_version_are_read_and_dated_by_their_evaluation() {
    let evaluated = secs_ago(4);
    let (url, task, seen) = recording_stand_in(rules_info("1", evaluated)).await;
    let o = observe(&url).await;
    assert_eq!(o.read.reads, Reads::Recorded);
    assert_eq!(o.read.fallback, None);
    assert_eq!(
        o.read.data_time,
        SystemTime::UNIX_EPOCH + Duration::from_secs_f64(evaluated)
    );
    assert_eq!(
        o.read.detail(Duration::from_secs(60)),
        "recording rules v1 (1m)"
    );
    assert_eq!(o.graph.edges.len(), 1);
    let seen = seen.lock().await;
    // Every query of the build reads a recorded series, never a proxy's.
    for q in seen.iter().skip(1) {
        assert!(
            q.starts_with("linkerd_mcp:")
                || q.contains("(0.5, linkerd_mcp:")
                || q.contains("(0.95, linkerd_mcp:")
                || q.contains("(0.99, linkerd_mcp:"),
            "{q}"
        );
    }
    assert_eq!(
        seen.len(),
        1 + GraphQueries::new(Duration::from_secs(60)).all().len()
    );
    task.abort();
}

#[tokio::test]
async fn rules_of_another_version_are_not_read_and_the_reason_is_given() {
    let (url, task, seen) = recording_stand_in(rules_info("0", secs_ago(4))).await;
    let o = observe(&url).await;
    assert_eq!(o.read.reads, Reads::Raw);
    assert_eq!(
        o.read.detail(Duration::from_secs(60)),
        "raw series (the recording rules loaded are v0 (1m), not v1 (1m))"
    );
    assert!(
        seen.lock()
            .await
            .iter()
            .skip(1)
            .all(|q| !q.contains("linkerd_mcp:")),
        "raw series only"
    );
    let err = source(&url, Duration::from_secs(2))
        .with_rules(RulesMode::Require)
        .observe(SystemTime::now())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "recording rules are required, but the recording rules loaded are v0 (1m), not v1 (1m): \
         load the output of `mesh-collector print-rules --window 1m` into the Prometheus that \
         scrapes the proxies"
    );
    // Off: not even asked.
    seen.lock().await.clear();
    source(&url, Duration::from_secs(2))
        .with_rules(RulesMode::Off)
        .observe(SystemTime::now())
        .await
        .unwrap();
    assert!(!seen.lock().await.iter().any(|q| q.contains("rules_info")));
    task.abort();
}

/// How many first characters the query's shard matcher covers (36 without one).
fn shard_width(q: &str) -> usize {
    let Some(at) = q.find(r#"namespace=~""#) else {
        return NAMESPACE_CHARS.len();
    };
    let rest = &q[at + r#"namespace=~""#.len()..];
    let pos = |c: char| NAMESPACE_CHARS.find(c).unwrap();
    match rest.strip_prefix('[') {
        Some(r) => {
            let mut c = r.chars();
            let lo = c.next().unwrap();
            c.next();
            let hi = c.next().unwrap();
            pos(hi) - pos(lo) + 1
        }
        None => 1,
    }
}

const NAMESPACE_CHARS: &str = "0123456789abcdefghijklmnopqrstuvwxyz";

const TOO_MANY: &str = r#"{"status":"error","errorType":"422","error":"error when executing query: the number of matching unique timeseries exceeds 300000; either narrow down the search or increase -search.maxUniqueTimeseries"}"#;

#[tokio::test]
async fn a_query_refused_as_too_large_is_split_by_namespace_and_the_parts_added_up() {
    // The responses query is refused unless it covers at most 9 first characters; each part
    // answers with a caller in a namespace of its own.
    let (url, task, _) = recording_stand_in(|q: &str| {
        if q.contains("rules_info") {
            return vector(&[]);
        }
        if !q.starts_with("sum(increase(response_total{direction=\"outbound\"") {
            return vector(&[]);
        }
        match shard_width(q) {
            w if w > 9 => (StatusCode::UNPROCESSABLE_ENTITY, TOO_MANY.to_owned()),
            _ => {
                let at = q.find(r#"namespace=~"["#).unwrap() + r#"namespace=~"["#.len();
                edge_from(&format!("{}ns", &q[at..=at]))
            }
        }
    })
    .await;
    let o = observe(&url).await;
    let mut callers: Vec<&str> = o
        .graph
        .edges
        .keys()
        .map(|k| k.src.namespace.as_str())
        .collect();
    callers.sort_unstable();
    assert_eq!(callers, ["0ns", "9ns", "ins", "rns"]);
    assert_eq!(o.read.splits, 1);
    // The rules' check, thirty queries whole, the refused one, its two halves (refused too)
    // and their four halves.
    assert_eq!(o.read.queries, 1 + 30 + 1 + 2 + 4);
    task.abort();
}

#[tokio::test]
async fn a_query_too_large_for_one_namespace_letter_names_the_shard() {
    let (url, task, _) = recording_stand_in(|q: &str| {
        if q.contains("rules_info") {
            vector(&[])
        } else {
            (StatusCode::UNPROCESSABLE_ENTITY, TOO_MANY.to_owned())
        }
    })
    .await;
    let err = source(&url, Duration::from_secs(2))
        .with_concurrency(1)
        .observe(SystemTime::now())
        .await
        .unwrap_err();
    assert!(matches!(err, PromError::TooLarge { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.starts_with(
            "Prometheus refused a query as too large even when split down to the namespaces \
             namespace=~\"0.*\": Prometheus refused a query (422, 422): error when executing"
        ),
        "{msg}"
    );
    assert!(
        msg.contains("namespace=~\\\"0.*\\\"") || msg.contains(r#"namespace=~"0.*""#),
        "{msg}"
    );
    task.abort();
}

#[test]
fn too_large_is_told_apart_from_other_refusals() {
    let refused = |error: &str| PromError::Query {
        status: 422,
        error_type: "execution".into(),
        error: error.into(),
        query: "q".into(),
    };
    for big in [
        "query processing would load too many samples into memory in query execution",
        "cannot select more than -search.maxSamplesPerQuery=1000 samples",
        "error when searching tsids: the number of matching timeseries exceeds 600; either \
         narrow down the search or increase -search.max* command-line flag values at vmselect",
        "the query exceeded the maximum number of series (limit: 100000)",
    ] {
        assert!(refused(big).too_large(), "{big}");
    }
    assert!(!refused("query timed out in expression evaluation").too_large());
    assert!(!refused("context deadline exceeded").too_large());
    assert!(!refused("rate limit exceeded").too_large());
    assert!(!refused("parse error at char 3").too_large());
}

#[tokio::test]
async fn rules_that_stopped_or_fail_are_not_read() {
    // Last evaluated 100 s ago, though every 10 s.
    let (url, task, _) = recording_stand_in(rules_info("1", secs_ago(100))).await;
    let o = observe(&url).await;
    assert_eq!(o.read.reads, Reads::Raw);
    let why = o.read.fallback.unwrap();
    assert!(
        why.starts_with("the recording rules were last evaluated 10")
            && why.ends_with("s ago, though every 10s"),
        "{why}"
    );
    task.abort();

    // Evaluated now, but the rules API reports one failing (its series are stale).
    let answer = rules_info("1", secs_ago(2));
    let (url, task) = stand_in(
        Router::new()
            .route(
                "/api/v1/query",
                post(move |axum::Form(form): axum::Form<HashMap<String, String>>| {
                    let answer = answer.clone();
                    async move { answer(form.get("query").map_or("", String::as_str)) }
                }),
            )
            .route(
                "/api/v1/rules",
                axum::routing::get(|| async {
                    r#"{"status":"success","data":{"groups":[{"name":"linkerd-mcp-1m","rules":[
                        {"name":"linkerd_mcp:rules_info","health":"ok","lastError":""},
                        {"name":"linkerd_mcp:outbound_response_latency_ms_bucket:irate1m","health":"err",
                         "lastError":"query processing would load too many samples into memory in query execution"}]}]}}"#
                }),
            ),
    )
    .await;
    let o = observe(&url).await;
    assert_eq!(o.read.reads, Reads::Raw);
    assert_eq!(
        o.read.fallback.as_deref(),
        Some(
            "the recording rule linkerd_mcp:outbound_response_latency_ms_bucket:irate1m fails: \
             query processing would load too many samples into memory in query execution"
        )
    );
    task.abort();
}

#[tokio::test]
async fn a_failed_rules_check_falls_back_to_the_raw_series() {
    let (url, task, _) = recording_stand_in(|q: &str| {
        if q.contains("rules_info") {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"status":"error","errorType":"unavailable","error":"busy"}"#.to_owned(),
            )
        } else if q.starts_with(r#"sum(increase(response_total{direction="outbound"}"#) {
            edge_from("a")
        } else {
            vector(&[])
        }
    })
    .await;
    let o = observe(&url).await;
    assert_eq!(o.read.reads, Reads::Raw);
    assert!(
        o.read
            .fallback
            .as_deref()
            .is_some_and(|w| w.starts_with("the recording rules could not be checked: Prometheus refused a query (503, unavailable): busy")),
        "{:?}",
        o.read.fallback
    );
    task.abort();
}
