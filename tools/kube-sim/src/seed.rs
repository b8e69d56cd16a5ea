//! Seeding: every YAML manifest in a directory, loaded at start (CRDs first, then Namespaces,
//! then the rest), as an administrator would `kubectl apply` them.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::{StartError, api::App};

fn order(v: &Value) -> u8 {
    match v["kind"].as_str() {
        Some("CustomResourceDefinition") => 0,
        Some("Namespace") => 1,
        _ => 2,
    }
}

/// Parses multi-document YAML into objects (empty documents skipped).
pub(crate) fn documents(text: &str) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let v = Value::deserialize(doc).map_err(|e| e.to_string())?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// Loads documents in dependency order.
pub(crate) async fn load_text(app: &App, text: &str) -> Result<(), String> {
    let mut docs = documents(text)?;
    docs.sort_by_key(order);
    let mut st = app.state.lock().await;
    for d in docs {
        let what = format!(
            "{} {}",
            d["kind"].as_str().unwrap_or("?"),
            d["metadata"]["name"].as_str().unwrap_or("?")
        );
        crate::api::seed_create(&mut st, d).map_err(|e| format!("{what}: {e}"))?;
    }
    Ok(())
}

/// Loads every `*.yaml`/`*.yml` file below `dir`, all files' documents sorted together.
pub(crate) async fn load_dir(app: &App, dir: &Path) -> Result<(), StartError> {
    let err = |reason: String| StartError::Seed {
        file: dir.display().to_string(),
        reason,
    };
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| err(e.to_string()))? {
            let p = entry.map_err(|e| err(e.to_string()))?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut all = String::new();
    for f in &files {
        let text = std::fs::read_to_string(f).map_err(|e| StartError::Seed {
            file: f.display().to_string(),
            reason: e.to_string(),
        })?;
        documents(&text).map_err(|e| StartError::Seed {
            file: f.display().to_string(),
            reason: e,
        })?;
        all.push_str("\n---\n");
        all.push_str(&text);
    }
    load_text(app, &all).await.map_err(err)
}
