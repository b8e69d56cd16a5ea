//! A real browser for tests and benchmarks: Debian's Chromium, headless, driven over WebDriver
//! (chromedriver) with fantoccini.

use std::{process::Command, time::Duration};

use crate::{ChildGuard, free_port, poll, require_tool};

/// A headless Chromium under chromedriver, both killed by PID when dropped.
pub struct Browser {
    /// The WebDriver session.
    pub client: fantoccini::Client,
    _driver: ChildGuard,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free port and a Chromium session with a fresh profile; the
    /// flags keep Chromium off the network it would otherwise call home on.
    pub async fn start() -> Self {
        let chromium = require_tool("chromium");
        let driver = require_tool("chromedriver");
        let profile = tempfile::tempdir().expect("a temporary directory");
        let port = free_port();
        let guard = ChildGuard::spawn(
            "chromedriver",
            Command::new(driver).arg(format!("--port={port}")),
            &profile.path().join("chromedriver.log"),
        );
        let url = format!("http://127.0.0.1:{port}");
        poll(Duration::from_secs(20), Duration::from_millis(100), || {
            let url = url.clone();
            async move {
                reqwest::get(format!("{url}/status"))
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
            }
        })
        .await
        .expect("chromedriver answers /status within 20 s");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                    format!("--user-data-dir={}", profile.path().join("profile").display()),
                    "--window-size=1280,900",
                ],
            }),
        );
        // chromedriver is plain HTTP on loopback: no TLS stack to pick.
        let http = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = fantoccini::ClientBuilder::new(http)
            .capabilities(caps)
            .connect(&url)
            .await
            .expect("a Chromium session");
        Self {
            client,
            _driver: guard,
            _profile: profile,
        }
    }

    /// The attribute `attr` of the first element matching `css`, if any.
    pub async fn attr(&self, css: &str, attr: &str) -> Option<String> {
        let e = self.client.find(fantoccini::Locator::Css(css)).await.ok()?;
        e.attr(attr).await.ok().flatten()
    }

    /// Waits (bounded) until the element `css` exists with `attr` equal to `want`.
    pub async fn until_attr(&self, css: &str, attr: &str, want: &str, limit: Duration) {
        let got = poll(limit, Duration::from_millis(200), || async {
            (self.attr(css, attr).await.as_deref() == Some(want)).then_some(())
        })
        .await;
        if got.is_none() {
            let now = self.attr(css, attr).await;
            let src = self.client.source().await.unwrap_or_default();
            panic!(
                "{css} never had {attr}={want:?} within {limit:?} (it has {now:?}); page:\n{}",
                src.chars().take(4000).collect::<String>()
            );
        }
    }

    /// Waits (bounded) until the page's text contains `needle`.
    pub async fn until_text(&self, css: &str, needle: &str, limit: Duration) -> String {
        let got = poll(limit, Duration::from_millis(200), || async {
            let e = self.client.find(fantoccini::Locator::Css(css)).await.ok()?;
            let t = e.text().await.ok()?;
            t.contains(needle).then_some(t)
        })
        .await;
        match got {
            Some(t) => t,
            None => panic!(
                "{css} never said {needle:?} within {limit:?}; page:\n{}",
                self.client
                    .source()
                    .await
                    .unwrap_or_default()
                    .chars()
                    .take(4000)
                    .collect::<String>()
            ),
        }
    }
}
