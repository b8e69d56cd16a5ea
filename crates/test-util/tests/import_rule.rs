//! The workspace's import rule, read from `cargo metadata`'s resolved graph (normal dependencies,
//! followed transitively):
//! - the pure crates (`mesh-model`, `mesh-policy`) reach no Kubernetes client, gRPC, async
//!   runtime, HTTP or Redis crate, and no service;
//! - libraries (`crates/*`, `proto`) never reach a service;
//! - the chatbot reaches no Kubernetes client.
//!
//! It fails naming each offending path, so a new dependency that breaks the layering is caught
//! the day it is added.

use std::{
    collections::{BTreeMap, BTreeSet},
    process::Command,
};

use serde_json::{Value, json};

const SERVICES: [&str; 3] = ["mesh-collector", "mesh-mcp", "mesh-chatbot"];
const PURE: [&str; 2] = ["mesh-model", "mesh-policy"];
/// Crates that do I/O or bring a runtime: the pure crates must not reach them.
const IO: [&str; 9] = [
    "kube",
    "kube-client",
    "tonic",
    "tokio",
    "redis",
    "reqwest",
    "hyper",
    "axum",
    "prost",
];

/// The package name of every node and its normal (not dev, not build) dependencies.
fn graph(meta: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let name_of: BTreeMap<&str, &str> = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["id"].as_str()?, p["name"].as_str()?)))
        .collect();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for node in meta["resolve"]["nodes"].as_array().into_iter().flatten() {
        let Some(name) = node["id"].as_str().and_then(|id| name_of.get(id)) else {
            continue;
        };
        let deps = out.entry((*name).to_owned()).or_default();
        for d in node["deps"].as_array().into_iter().flatten() {
            let normal = d["dep_kinds"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|k| k["kind"].is_null());
            if let Some(dep) = d["pkg"].as_str().and_then(|id| name_of.get(id))
                && normal
            {
                deps.insert((*dep).to_owned());
            }
        }
    }
    out
}

/// A shortest chain of normal dependencies from `from` to any crate `bad` accepts.
fn path_to(
    g: &BTreeMap<String, BTreeSet<String>>,
    from: &str,
    bad: &dyn Fn(&str) -> bool,
) -> Option<Vec<String>> {
    let mut seen = BTreeSet::from([from.to_owned()]);
    let mut queue = std::collections::VecDeque::from([vec![from.to_owned()]]);
    while let Some(path) = queue.pop_front() {
        let last = path.last().expect("a path has a start");
        for d in g.get(last).into_iter().flatten() {
            let mut next = path.clone();
            next.push(d.clone());
            if bad(d) {
                return Some(next);
            }
            if seen.insert(d.clone()) {
                queue.push_back(next);
            }
        }
    }
    None
}

/// Every broken rule, one line each (`crate -> dep -> ... -> offender: why`).
fn violations(meta: &Value) -> Vec<String> {
    let g = graph(meta);
    let members: BTreeSet<String> = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["source"].is_null())
        .filter_map(|p| {
            let dir = p["manifest_path"].as_str()?;
            let library = dir.contains("/crates/") || dir.contains("/proto/");
            library.then(|| p["name"].as_str().map(str::to_owned))?
        })
        .collect();
    let mut out = Vec::new();
    let mut check = |from: &str, bad: &dyn Fn(&str) -> bool, why: &str| {
        if let Some(p) = path_to(&g, from, bad) {
            out.push(format!("{}: {why}", p.join(" -> ")));
        }
    };
    let service = |d: &str| SERVICES.contains(&d);
    for pure in PURE {
        check(
            pure,
            &|d: &str| IO.contains(&d) || service(d),
            "a pure crate reaches I/O or a service",
        );
    }
    for lib in &members {
        check(lib, &service, "a library reaches a service");
    }
    check(
        "mesh-chatbot",
        &|d: &str| d == "kube" || d == "kube-client",
        "the chatbot reaches a Kubernetes client",
    );
    out
}

fn workspace_metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

#[test]
fn the_workspace_keeps_its_import_rule() {
    let meta = workspace_metadata();
    let g = graph(&meta);
    for name in PURE.iter().chain(&SERVICES) {
        assert!(g.contains_key(*name), "{name} is not in the workspace");
    }
    let found = violations(&meta);
    assert!(
        found.is_empty(),
        "import rule broken:\n{}",
        found.join("\n")
    );
}

/// The rule catches what it is for: a library that gains a service, a pure crate that gains
/// tokio through another crate, and a chatbot that gains kube.
#[test]
fn a_broken_layering_is_named_with_its_path() {
    let pkg = |name: &str, dir: &str| {
        json!({"id": name, "name": name, "source": null,
               "manifest_path": format!("/w/{dir}/{name}/Cargo.toml")})
    };
    let dep = |to: &str| json!({"pkg": to, "dep_kinds": [{"kind": null}]});
    let dev = |to: &str| json!({"pkg": to, "dep_kinds": [{"kind": "dev"}]});
    let meta = json!({
        "packages": [
            pkg("mesh-model", "crates"), pkg("mesh-policy", "crates"), pkg("mesh-render", "crates"),
            pkg("helper", "crates"), pkg("mesh-collector", "services"),
            pkg("mesh-mcp", "services"), pkg("mesh-chatbot", "services"),
            {"id": "tokio", "name": "tokio", "source": "registry",
             "manifest_path": "/r/tokio/Cargo.toml"},
            {"id": "kube", "name": "kube", "source": "registry",
             "manifest_path": "/r/kube/Cargo.toml"},
        ],
        "resolve": {"nodes": [
            {"id": "mesh-model", "deps": [dev("tokio")]},
            {"id": "mesh-policy", "deps": [dep("mesh-model"), dep("helper")]},
            {"id": "helper", "deps": [dep("tokio")]},
            {"id": "mesh-render", "deps": [dep("mesh-collector")]},
            {"id": "mesh-collector", "deps": []},
            {"id": "mesh-mcp", "deps": []},
            {"id": "mesh-chatbot", "deps": [dep("kube")]},
            {"id": "tokio", "deps": []},
            {"id": "kube", "deps": []},
        ]},
    });
    let found = violations(&meta);
    assert_eq!(
        found,
        [
            "mesh-policy -> helper -> tokio: a pure crate reaches I/O or a service",
            "mesh-render -> mesh-collector: a library reaches a service",
            "mesh-chatbot -> kube: the chatbot reaches a Kubernetes client",
        ],
        "a dev-dependency (mesh-model -> tokio) does not count; the rest does"
    );
}
