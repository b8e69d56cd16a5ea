//! Helpers for linkerd-mcp's tests: free loopback ports, child processes that are killed by PID
//! when dropped (also when a test panics), real `prometheus` started on a free port, bounded
//! polling, a parser for the Prometheus text exposition, and a headless Chromium ([`Browser`]).
//!
//! Tests never skip for want of a tool: `make test` installs `prometheus`, `redis-server` and
//! friends first, and [`require_tool`] fails loudly when one is missing.

use std::{
    collections::BTreeMap,
    future::Future,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

mod browser;
pub use browser::Browser;

/// A free port on 127.0.0.1 (bound, then released for the caller to bind).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0 must work")
}

/// The path of a tool on `PATH`, or a panic saying how to get it.
pub fn require_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` is not installed: run `make test`, which installs it with apt-get")
        })
}

/// A child process killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    name: String,
}

impl ChildGuard {
    /// Spawns `cmd` with stdout and stderr sent to `log`.
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Self {
        let out = std::fs::File::create(log).expect("create log file");
        let err = out.try_clone().expect("clone log handle");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self {
            child,
            name: name.to_owned(),
        }
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends it `signal` (`TERM`, `STOP`, `CONT`, `KILL`) with kill(1), by its PID.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {} failed", self.name);
    }

    /// Waits up to `limit` for it to exit; whether it did.
    pub fn wait_exit(&mut self, limit: std::time::Duration) -> bool {
        let until = std::time::Instant::now() + limit;
        while std::time::Instant::now() < until {
            if !self.is_running() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        false
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Err(e) = self.child.kill() {
            eprintln!("killing {} (pid {}): {e}", self.name, self.child.id());
        }
        let _ = self.child.wait();
    }
}

/// A counter or gauge from an admin port's `/metrics` (Prometheus text), if it answers.
pub async fn admin_metric(port: u16, name: &str) -> Option<f64> {
    let text = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// The inputs of fuzz target `target` (`tools/fuzz`): its hand-written seeds, then the corpus
/// `make fuzz` grew, each with its file name (seeds say what they expect: `ok-*`, `bad-*`).
/// Both must exist and hold something, so a moved corpus cannot make a replay vacuous.
pub fn fuzz_inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for kind in ["seeds", "corpus"] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tools/fuzz")
            .join(kind)
            .join(target);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("a directory entry").path())
            .collect();
        assert!(!files.is_empty(), "{} is empty", dir.display());
        files.sort();
        out.extend(files.into_iter().map(|p| {
            let name = p
                .file_name()
                .expect("a file")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(&p).expect("readable"))
        }));
    }
    out
}

/// Runs the official MCP Python SDK driver (`services/mcp/tests/mcp_client.py`, in the venv
/// `make test` installs under `.tools/mcp-venv`) with `plan`, bounded to 120 s; its JSON answer.
pub async fn python_mcp_client(plan: &serde_json::Value) -> serde_json::Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join(".tools/mcp-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: `make test` (scripts/deps.sh) installs the MCP Python SDK there",
        python.display()
    );
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(python)
            .arg(root.join("services/mcp/tests/mcp_client.py"))
            .arg(plan.to_string())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the MCP client did not finish within 120 s")
    .expect("the MCP client starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the MCP client failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// Checks that `docs/cli/<doc>.txt` holds what `bin args... --help` prints, so the
/// configuration reference in the docs cannot drift from the binaries. With `UPDATE_CLI_DOCS=1`
/// it rewrites the file instead (then review the diff).
pub fn check_cli_doc(bin: &str, args: &[&str], doc: &str) {
    let out = Command::new(bin)
        .args(args)
        .arg("--help")
        .env("COLUMNS", "100")
        .output()
        .expect("run --help");
    assert!(out.status.success(), "{bin} {args:?} --help failed");
    let help = String::from_utf8(out.stdout).expect("UTF-8 help");
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/cli")
        .join(format!("{doc}.txt"));
    if std::env::var_os("UPDATE_CLI_DOCS").is_some() {
        std::fs::create_dir_all(path.parent().expect("docs/cli")).expect("create docs/cli");
        std::fs::write(&path, &help).expect("write the reference");
        return;
    }
    let written = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        written == help,
        "{} is not what `{doc} --help` prints; run the tests with UPDATE_CLI_DOCS=1 and review \
         the diff",
        path.display()
    );
}

/// Polls `check` every `every` until it returns `Some`, for at most `limit`.
pub async fn poll<T, F, Fut>(limit: Duration, every: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() + every > deadline {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

/// A real Prometheus server on a free loopback port, killed when dropped.
#[derive(Debug)]
pub struct Prometheus {
    /// Base URL, e.g. `http://127.0.0.1:40123`.
    pub url: String,
    /// Where its config, data and log live.
    pub dir: tempfile::TempDir,
    port: u16,
    guard: Option<ChildGuard>,
    flags: Vec<String>,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` every second (job `linkerd-proxy`, honouring the
    /// target's labels as linkerd-viz's relabelling would produce them), and waits until it is
    /// ready to answer queries (at most 60 s).
    pub async fn start(targets: &[SocketAddr]) -> Self {
        Self::start_every(targets, Duration::from_secs(1)).await
    }

    /// As [`Prometheus::start`], scraping every `interval` (benchmarks use linkerd-viz's 15 s
    /// against big simulated meshes).
    pub async fn start_every(targets: &[SocketAddr], interval: Duration) -> Self {
        Self::start_prepared(targets, interval, &[], |_| ()).await
    }

    /// As [`Prometheus::start_every`], with extra command-line `flags`, once `prepare` has
    /// filled its data folder (e.g. with blocks backfilled by `promtool`).
    pub async fn start_prepared(
        targets: &[SocketAddr],
        interval: Duration,
        flags: &[&str],
        prepare: impl FnOnce(&std::path::Path),
    ) -> Self {
        Self::start_full(targets, interval, flags, None, prepare).await
    }

    /// As [`Prometheus::start_every`], evaluating the rules file `rules` (e.g. what
    /// `mesh-collector print-rules` prints) as linkerd-viz's Prometheus would.
    pub async fn start_with_rules(targets: &[SocketAddr], interval: Duration, rules: &str) -> Self {
        Self::start_full(targets, interval, &[], Some(rules), |_| ()).await
    }

    async fn start_full(
        targets: &[SocketAddr],
        interval: Duration,
        flags: &[&str],
        rules: Option<&str>,
        prepare: impl FnOnce(&std::path::Path),
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let every = interval.as_millis();
        let mut config =
            format!("global:\n  scrape_interval: {every}ms\n  evaluation_interval: {every}ms\n");
        if let Some(rules) = rules {
            let file = dir.path().join("linkerd-mcp_rules.yml");
            std::fs::write(&file, rules).expect("write the rules");
            config.push_str(&format!("rule_files: ['{}']\n", file.display()));
        }
        config.push_str(&scrape_config(targets, interval));
        std::fs::write(dir.path().join("prometheus.yml"), config).expect("write prometheus.yml");
        prepare(&dir.path().join("data"));
        let mut p = Self {
            url: format!("http://127.0.0.1:{port}"),
            dir,
            port,
            guard: None,
            flags: flags.iter().map(|f| (*f).to_owned()).collect(),
        };
        p.restart().await;
        p
    }

    /// Kills it (the data stays), as an outage would.
    pub fn stop(&mut self) {
        self.guard = None;
    }

    /// Starts it again on the same port and data (or the first time), and waits until ready.
    pub async fn restart(&mut self) {
        self.guard = None;
        let bin = require_tool("prometheus");
        let dir = self.dir.path();
        self.guard = Some(ChildGuard::spawn(
            "prometheus",
            Command::new(bin)
                .arg(format!(
                    "--config.file={}",
                    dir.join("prometheus.yml").display()
                ))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
                .arg("--log.level=warn")
                .args(&self.flags),
            &dir.join("prometheus.log"),
        ));
        let ok = answers_ok(&format!("{}/-/ready", self.url)).await;
        let log = std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();
        assert!(
            ok.is_some(),
            "prometheus did not become ready in 60 s:\n{log}"
        );
    }

    /// Its PID (0 while stopped).
    pub fn pid(&self) -> u32 {
        self.guard.as_ref().map_or(0, ChildGuard::pid)
    }

    /// Runs an instant query and returns the number of series in the result.
    pub async fn series_count(&self, query: &str) -> usize {
        let r = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", query)])
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        let Ok(r) = r else { return 0 };
        let v: serde_json::Value = r.json().await.unwrap_or_default();
        v["data"]["result"].as_array().map_or(0, Vec::len)
    }
}

/// Whether `url` answers a GET with a success within 60 s (polled every 200 ms).
async fn answers_ok(url: &str) -> Option<()> {
    let client = reqwest::Client::new();
    poll(Duration::from_secs(60), Duration::from_millis(200), || {
        let r = client.get(url).timeout(Duration::from_secs(2)).send();
        async move { r.await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
    })
    .await
}

/// A scrape config for `targets` every `interval` (job `linkerd-proxy`, honouring the
/// target's labels as linkerd-viz's relabelling would produce them).
fn scrape_config(targets: &[SocketAddr], interval: Duration) -> String {
    let list = targets
        .iter()
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let every = interval.as_millis();
    let timeout = every * 9 / 10;
    format!(
        "scrape_configs:\n  - job_name: linkerd-proxy\n    honor_labels: true\n    \
         scrape_interval: {every}ms\n    scrape_timeout: {timeout}ms\n    static_configs:\n      - targets: [{list}]\n"
    )
}

/// A real single-node VictoriaMetrics (Debian's `victoria-metrics`) on a free loopback port,
/// scraping with its own Prometheus-compatible scraper; killed when dropped.
#[derive(Debug)]
pub struct VictoriaMetrics {
    /// Base URL of its Prometheus query API, e.g. `http://127.0.0.1:40123`.
    pub url: String,
    /// Its config, data and log.
    pub dir: tempfile::TempDir,
    guard: ChildGuard,
}

impl VictoriaMetrics {
    /// Starts it scraping `targets` every `interval`, with extra `flags` (e.g. a lower
    /// `-search.maxUniqueTimeseries`), and waits until it answers (at most 60 s). Data is
    /// visible to queries 1 s after it is scraped (the default holds it back 30 s).
    pub async fn start(targets: &[SocketAddr], interval: Duration, flags: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let every = interval.as_millis();
        let config = format!(
            "global:\n  scrape_interval: {every}ms\n{}",
            scrape_config(targets, interval)
        );
        let file = dir.path().join("scrape.yml");
        std::fs::write(&file, config).expect("write scrape.yml");
        let bin = require_tool("victoria-metrics");
        let guard = ChildGuard::spawn(
            "victoria-metrics",
            Command::new(bin)
                .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
                .arg(format!(
                    "-storageDataPath={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("-promscrape.config={}", file.display()))
                .args([
                    "-search.latencyOffset=1s",
                    "-search.disableCache",
                    "-retentionPeriod=1d",
                    "-loggerLevel=WARN",
                ])
                .args(flags),
            &dir.path().join("victoria-metrics.log"),
        );
        let url = format!("http://127.0.0.1:{port}");
        let ok = answers_ok(&format!("{url}/health")).await;
        let log =
            std::fs::read_to_string(dir.path().join("victoria-metrics.log")).unwrap_or_default();
        assert!(
            ok.is_some(),
            "victoria-metrics did not answer in 60 s:\n{log}"
        );
        Self { url, dir, guard }
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }
}

/// A real `redis-server` on a free loopback port (no persistence), killed when dropped.
#[derive(Debug)]
pub struct Redis {
    /// `redis://127.0.0.1:PORT`.
    pub url: String,
    /// Its port.
    pub port: u16,
    /// Its working folder and log.
    pub dir: tempfile::TempDir,
    /// With TLS: the CA (PEM) that signed its certificate; the URL is then `rediss://`.
    pub tls_ca: Option<String>,
    guard: Option<ChildGuard>,
    spawned: usize,
}

impl Redis {
    /// Starts redis-server serving TLS only, with a fresh self-signed certificate for
    /// 127.0.0.1 (its PEM in [`Redis::tls_ca`]).
    pub async fn start_tls() -> Self {
        let port = free_port();
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
            .expect("generate a certificate");
        let ca = cert.cert.pem();
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("tls.crt"), &ca).expect("write certificate");
        std::fs::write(dir.path().join("tls.key"), cert.signing_key.serialize_pem())
            .expect("write key");
        let mut r = Self {
            url: format!("rediss://127.0.0.1:{port}"),
            port,
            dir,
            tls_ca: Some(ca),
            guard: None,
            spawned: 0,
        };
        r.spawn().await;
        r
    }

    /// Starts redis-server and waits (at most 20 s) until it accepts connections.
    pub async fn start() -> Self {
        let port = free_port();
        let mut r = Self {
            url: format!("redis://127.0.0.1:{port}"),
            port,
            dir: tempfile::tempdir().expect("tempdir"),
            tls_ca: None,
            guard: None,
            spawned: 0,
        };
        r.spawn().await;
        r
    }

    async fn spawn(&mut self) {
        let bin = require_tool("redis-server");
        self.spawned += 1;
        let log = self.dir.path().join(format!("redis-{}.log", self.spawned));
        let mut cmd = Command::new(bin);
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path());
        if self.tls_ca.is_some() {
            let (crt, key) = (
                self.dir.path().join("tls.crt"),
                self.dir.path().join("tls.key"),
            );
            cmd.args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(&crt)
                .arg("--tls-key-file")
                .arg(&key)
                .arg("--tls-ca-cert-file")
                .arg(&crt)
                .args(["--tls-auth-clients", "no"]);
        } else {
            cmd.args(["--port", &self.port.to_string()]);
        }
        self.guard = Some(ChildGuard::spawn("redis-server", &mut cmd, &log));
        let port = self.port;
        let up = poll(
            Duration::from_secs(20),
            Duration::from_millis(50),
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
        assert!(
            up.is_some(),
            "redis-server did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Kills it (SIGKILL): everything it held is gone, as after a crash.
    pub fn stop(&mut self) {
        self.guard = None;
    }

    /// Starts an empty redis-server again on the same port.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.guard.as_ref().map_or(0, ChildGuard::pid)
    }
}

/// One sample of a text exposition.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Metric name as written (`response_latency_ms_bucket`, ...).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// Parses the Prometheus text exposition (comments skipped). Panics on malformed lines: it is
/// for tests of our own output.
pub fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (head, value) = line.rsplit_once(' ').expect("sample has a value");
        let value: f64 = value.parse().expect("sample value is a number");
        let (name, labels) = match head.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}').expect("labels close")),
            None => (head, ""),
        };
        let mut map = BTreeMap::new();
        let mut rest = labels;
        while !rest.is_empty() {
            let (k, after) = rest.split_once("=\"").expect("label has a value");
            let mut v = String::new();
            let mut chars = after.char_indices();
            let mut end = after.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(if n == 'n' { '\n' } else { n });
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => v.push(c),
                }
            }
            map.insert(k.to_owned(), v);
            rest = after[end..].trim_start_matches(',');
        }
        out.push(Sample {
            name: name.to_owned(),
            labels: map,
            value,
        });
    }
    out
}
