//! mesh-prometheus: reads linkerd-viz's Prometheus the way `linkerd viz stat`/`edges` do. Every
//! PromQL string is built in [`promql`] from viz's templates; [`PrometheusSource`] runs them over
//! HTTP (bounded, timed out) and turns the vectors into a `mesh-model` graph with the proxies'
//! authorization counts attached. The collector's build loop and `meshctl graph --prometheus-url`
//! both use it; neither needs a Kubernetes client for it.

pub mod promql;
mod source;

pub use self::source::{
    DEFAULT_CONCURRENCY, Observation, PromError, PrometheusSource, RangeSeries, ReadReport,
    RulesMode, Series,
};

/// Parses a metrics window such as `30s`, `1m` or `1h30m`.
pub fn parse_window(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("invalid window {s:?}: {e}"))?;
    if d < std::time::Duration::from_secs(1) {
        return Err(format!("invalid window {s:?}: must be at least 1s"));
    }
    Ok(d)
}
