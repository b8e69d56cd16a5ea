//! Error paths against a stand-in that answers like a broken or empty Prometheus. The happy path
//! runs against real Prometheus in meshctl's end-to-end tests.

use std::time::Duration;

use axum::{Router, http::StatusCode, routing::post};

use super::*;

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
