//! mesh-collector: builds the mesh graph. Today it holds the Prometheus source, which queries
//! linkerd-viz's Prometheus the way `linkerd viz stat`/`edges` do and turns the answers into
//! `mesh-model` samples; `meshctl graph --prometheus-url` uses it as a library.

pub mod prometheus;
pub mod promql;
pub mod publish;
pub mod run;

pub use self::{
    prometheus::{PromError, PrometheusSource},
    publish::Publisher,
};

/// Parses a metrics window such as `30s`, `1m` or `1h30m`.
pub fn parse_window(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("invalid window {s:?}: {e}"))?;
    if d < std::time::Duration::from_secs(1) {
        return Err(format!("invalid window {s:?}: must be at least 1s"));
    }
    Ok(d)
}
