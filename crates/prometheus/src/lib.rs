//! mesh-prometheus: reads linkerd-viz's Prometheus the way `linkerd viz stat`/`edges` do. Every
//! PromQL string is built in [`promql`] from viz's templates; [`PrometheusSource`] runs them over
//! HTTP (bounded, timed out) and turns the vectors into a `mesh-model` graph with the proxies'
//! authorization counts attached. The collector's build loop and `meshctl graph --prometheus-url`
//! both use it; neither needs a Kubernetes client for it.

pub mod promql;
mod source;

pub use self::source::{Observation, PromError, PrometheusSource, Series};

/// Longest look back a history question may ask (Prometheus keeps 15 days by default; long
/// term stores keep more).
pub const MAX_LOOKBACK: std::time::Duration = std::time::Duration::from_secs(400 * 86_400);

/// Parses how far back to look, such as `90s`, `1h` or `2d`: at least a second, at most
/// [`MAX_LOOKBACK`].
pub fn parse_since(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration such as 90s, 15m or 1h: {e}"))?;
    if d < std::time::Duration::from_secs(1) {
        return Err(format!("{s:?}: a duration of at least 1s"));
    }
    if d > MAX_LOOKBACK {
        return Err(format!(
            "{s:?}: longer than {} days",
            MAX_LOOKBACK.as_secs() / 86_400
        ));
    }
    Ok(d)
}

/// Parses a moment: an RFC 3339 time in UTC (`2026-12-07T10:32:00Z`), or a duration before
/// `now` written with a minus sign (`-90s`, `-1h`).
pub fn parse_moment(s: &str, now: std::time::SystemTime) -> Result<std::time::SystemTime, String> {
    let s = s.trim();
    if let Some(ago) = s.strip_prefix('-') {
        return Ok(now - parse_since(ago)?);
    }
    humantime::parse_rfc3339_weak(s).map_err(|e| {
        format!("{s:?} is not a time: give RFC 3339 in UTC (2026-12-07T10:32:00Z) or a duration ago (-1h): {e}")
    })
}

/// Parses a metrics window such as `30s`, `1m` or `1h30m`.
pub fn parse_window(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("invalid window {s:?}: {e}"))?;
    if d < std::time::Duration::from_secs(1) {
        return Err(format!("invalid window {s:?}: must be at least 1s"));
    }
    Ok(d)
}

#[cfg(test)]
mod moment_tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    #[test]
    fn moments_are_rfc3339_or_a_duration_ago_and_bad_ones_say_why() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(parse_moment("-90s", now), Ok(now - Duration::from_secs(90)));
        assert_eq!(
            parse_moment("2026-12-07T10:32:00Z", now),
            Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_639_520))
        );
        for bad in ["yesterday", "-", "-1x", "2026-13-07T10:32:00Z", ""] {
            let e = parse_moment(bad, now).unwrap_err();
            assert!(
                e.contains(&format!("{:?}", bad.trim_start_matches('-'))) || e.contains(bad),
                "{bad}: {e}"
            );
        }
        assert!(parse_since("0s").unwrap_err().contains("at least 1s"));
        assert!(parse_since("1000d").unwrap_err().contains("longer than"));
        assert_eq!(parse_since("1h"), Ok(Duration::from_secs(3600)));
    }
}
