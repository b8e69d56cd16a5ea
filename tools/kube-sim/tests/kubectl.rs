//! kube-sim through `kubectl`, a client nobody here wrote. kubectl (client-go) sends bearer
//! tokens only over TLS, so these tests run kube-sim with its self-signed certificate.
//! kubectl's client-side schema check needs the OpenAPI documents kube-sim does not serve, so
//! commands that send objects pass `--validate=false`; the server still validates.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::{path::PathBuf, process::Command, time::Duration};

use kube_sim::{Config, KubeSim};
use mesh_testkit::require_tool;

const TOKENS: &str =
    "admin-token,admin,uid-admin,\"system:masters\"\nalice-token,alice,uid-alice,\"devs\"\n";

struct Cluster {
    sim: KubeSim,
    dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Self {
        let sim = KubeSim::start(Config {
            tokens: TOKENS.into(),
            tls: true,
            bookmark_interval: Duration::from_secs(1),
            ..Config::default()
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), sim.ca_pem().unwrap()).unwrap();
        std::fs::write(
            dir.path().join("kubeconfig"),
            "apiVersion: v1\nkind: Config\n",
        )
        .unwrap();
        sim.load_yaml(include_str!("fixtures/widgets-crd.yaml"))
            .await
            .unwrap();
        sim.load_yaml(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n---\n\
             apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: cm-read, namespace: demo}\n\
             rules: [{apiGroups: [\"\"], resources: [configmaps], verbs: [get, list]}]\n---\n\
             apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: devs, namespace: demo}\n\
             subjects: [{kind: Group, name: devs}]\nroleRef: {kind: Role, name: cm-read, apiGroup: rbac.authorization.k8s.io}\n",
        )
        .await
        .unwrap();
        Self { sim, dir }
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Runs kubectl as `token`; returns (exit code, stdout, stderr).
    fn kubectl(&self, token: &str, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(require_tool("kubectl"))
            .env("KUBECONFIG", self.dir.path().join("kubeconfig"))
            .env("HOME", self.dir.path())
            .args(["--server", &self.sim.url(), "--token", token])
            .arg(format!(
                "--certificate-authority={}",
                self.dir.path().join("ca.crt").display()
            ))
            .arg(format!(
                "--cache-dir={}",
                self.dir.path().join("cache").display()
            ))
            .args(["--request-timeout", "20s"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn admin(&self, args: &[&str]) -> (i32, String, String) {
        self.kubectl("admin-token", args)
    }
}

fn cm(data: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c, namespace: demo}}\ndata: {{{data}}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_gets_creates_and_discovers() {
    let c = Cluster::start().await;
    let (code, out, err) = c.admin(&["create", "namespace", "made-by-kubectl"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "namespace/made-by-kubectl created");
    let (code, out, _) = c.admin(&["get", "namespaces", "-o", "name"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("namespace/demo") && out.contains("namespace/made-by-kubectl"),
        "{out}"
    );
    let (code, out, err) = c.admin(&["api-resources", "--api-group=example.com", "-o", "name"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "widgets.example.com");
    let (code, _, err) = c.admin(&["get", "widgets", "-n", "demo"]);
    assert_eq!(code, 0, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_server_side_apply_conflicts_removal_and_sharing() {
    let c = Cluster::start().await;
    let apply = |file: &PathBuf, extra: &[&str]| {
        let mut args = vec![
            "apply",
            "--server-side",
            "--validate=false",
            "-f",
            file.to_str().unwrap(),
        ];
        args.extend(extra);
        c.admin(&args)
    };
    let first = c.file("a.yaml", &cm("a: \"1\", b: \"1\""));
    let (code, out, err) = apply(&first, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "configmap/c serverside-applied");

    // Another manager changing a field kubectl owns: the real conflict message.
    let other = c.file("b.yaml", &cm("a: \"2\""));
    let (code, _, err) = apply(&other, &["--field-manager=other"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with(
            "error: Apply failed with 1 conflict: conflict with \"kubectl\" using v1: .data.a"
        ),
        "{err}"
    );

    // The same value is shared: both managers own .data.b.
    let share = c.file("s.yaml", &cm("b: \"1\""));
    let (code, _, err) = apply(&share, &["--field-manager=other"]);
    assert_eq!(code, 0, "{err}");
    let (_, mf, _) = c.admin(&[
        "get",
        "cm",
        "c",
        "-n",
        "demo",
        "--show-managed-fields",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
    ]);
    assert_eq!(mf, "kubectl other");

    // kubectl re-applies without b: other still owns b, so it stays; without a, a goes.
    let only_b = c.file("c.yaml", &cm("b: \"1\""));
    apply(&only_b, &[]);
    let (_, data, _) = c.admin(&["get", "cm", "c", "-n", "demo", "-o", "jsonpath={.data}"]);
    assert_eq!(data, r#"{"b":"1"}"#);

    // Forced, other takes a field from kubectl.
    let (code, _, err) = apply(
        &c.file("d.yaml", &cm("b: \"2\"")),
        &["--field-manager=other", "--force-conflicts"],
    );
    assert_eq!(code, 0, "{err}");
    let (_, data, _) = c.admin(&["get", "cm", "c", "-n", "demo", "-o", "jsonpath={.data}"]);
    assert_eq!(data, r#"{"b":"2"}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_server_dry_run_stores_nothing() {
    let c = Cluster::start().await;
    let before = c.sim.resource_version().await;
    let f = c.file("a.yaml", &cm("a: \"1\""));
    let (code, out, err) = c.admin(&[
        "apply",
        "--server-side",
        "--validate=false",
        "--dry-run=server",
        "-f",
        f.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("serverside-applied (server dry run)"), "{out}");
    let (code, _, err) = c.admin(&["get", "cm", "c", "-n", "demo"]);
    assert_eq!(code, 1);
    assert!(err.contains("configmaps \"c\" not found"), "{err}");
    assert_eq!(c.sim.resource_version().await, before);
    assert!(
        c.sim
            .requests()
            .await
            .iter()
            .any(|r| r.method == "PATCH" && r.query.contains("dryRun=All"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_sees_schema_violations_with_the_field() {
    let c = Cluster::start().await;
    let f = c.file(
        "w.yaml",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w, namespace: demo}\nspec: {port: 70000, podSelector: {}}\n",
    );
    let (code, _, err) = c.admin(&[
        "apply",
        "--server-side",
        "--validate=false",
        "-f",
        f.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(
        // kubectl rebuilds the message from the Status details.
        err.contains("The Widget \"w\" is invalid: spec.port: Invalid value: 70000: spec.port in body should be less than or equal to 65535"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_auth_can_i_and_impersonation() {
    let c = Cluster::start().await;
    let can = |token: &str, args: &[&str]| {
        let mut a = vec!["auth", "can-i"];
        a.extend(args);
        let (code, out, _) = c.kubectl(token, &a);
        (code, out.trim().to_owned())
    };
    assert_eq!(
        can(
            "admin-token",
            &[
                "list",
                "configmaps",
                "-n",
                "demo",
                "--as",
                "alice",
                "--as-group",
                "devs"
            ]
        ),
        (0, "yes".into())
    );
    assert_eq!(
        can(
            "admin-token",
            &["list", "configmaps", "-n", "demo", "--as", "alice"]
        ),
        (1, "no".into())
    );
    assert_eq!(
        can(
            "admin-token",
            &[
                "create",
                "configmaps",
                "-n",
                "demo",
                "--as",
                "alice",
                "--as-group",
                "devs"
            ]
        ),
        (1, "no".into())
    );
    assert_eq!(
        can("alice-token", &["get", "configmaps", "-n", "demo"]),
        (0, "yes".into())
    );
    // RBAC denial and refused impersonation, in the real server's words.
    let (code, _, err) = c.kubectl("alice-token", &["get", "configmaps", "-n", "default"]);
    assert_eq!(code, 1);
    assert!(err.contains("configmaps is forbidden: User \"alice\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"default\""), "{err}");
    let (code, _, err) = c.kubectl(
        "alice-token",
        &["get", "configmaps", "-n", "demo", "--as", "admin"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("users \"admin\" is forbidden: User \"alice\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_its_seeds_to_kubectl() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, TOKENS).unwrap();
    std::fs::write(
        dir.path().join("kubeconfig"),
        "apiVersion: v1\nkind: Config\n",
    )
    .unwrap();
    let ca = dir.path().join("ca.crt");
    let port = mesh_testkit::free_port();
    let seed = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("seed/demo");
    let mut child = mesh_testkit::ChildGuard::spawn(
        "kube-sim",
        Command::new(env!("CARGO_BIN_EXE_kube-sim"))
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--tls",
                "--with-linkerd-crds",
            ])
            .arg("--token-file")
            .arg(&tokens)
            .arg("--tls-ca-out")
            .arg(&ca)
            .arg("--seed")
            .arg(&seed),
        &dir.path().join("kube-sim.log"),
    );
    let ready = mesh_testkit::poll(Duration::from_secs(20), Duration::from_millis(100), || {
        let up = ca.exists() && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        async move { up.then_some(()) }
    })
    .await;
    assert!(
        ready.is_some() && child.is_running(),
        "{}",
        std::fs::read_to_string(dir.path().join("kube-sim.log")).unwrap_or_default()
    );
    let out = Command::new(require_tool("kubectl"))
        .env("KUBECONFIG", dir.path().join("kubeconfig"))
        .env("HOME", dir.path())
        .args([
            "--server",
            &format!("https://127.0.0.1:{port}"),
            "--token",
            "admin-token",
        ])
        .arg(format!("--certificate-authority={}", ca.display()))
        .args(["get", "deployments", "-n", "booksapp", "-o", "name"])
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        names.lines().count(),
        4,
        "{names}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(names.contains("deployment.apps/webapp"));

    // Bad configuration: one line, exit 64.
    let bad = Command::new(env!("CARGO_BIN_EXE_kube-sim"))
        .args(["--token-file", "/nonexistent"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(64));
    assert_eq!(String::from_utf8_lossy(&bad.stderr).lines().count(), 1);
}
