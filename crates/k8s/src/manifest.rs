//! Reading manifests: files and folders of multi-document YAML (or JSON), document by document,
//! so one broken document does not hide the others.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// Largest manifest file read.
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// One parsed document.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// The file it came from.
    pub file: String,
    /// 1-based line of its first line in the file.
    pub line: usize,
    /// Its content.
    pub value: Value,
}

impl Document {
    /// `Kind ns/name` for messages.
    pub fn describe(&self) -> String {
        let m = &self.value["metadata"];
        let name = m["name"].as_str().unwrap_or("<no name>");
        let kind = self.value["kind"].as_str().unwrap_or("<no kind>");
        match m["namespace"].as_str() {
            Some(ns) => format!("{kind} {ns}/{name}"),
            None => format!("{kind} {name}"),
        }
    }
}

/// A problem with a manifest: where, and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// File (and line, when known): `policy.yaml:12`.
    pub location: String,
    /// The object, `Kind ns/name`, when known.
    pub object: String,
    /// The field path, when one is at fault.
    pub field: String,
    /// The rule, in words.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.location)?;
        if !self.object.is_empty() {
            write!(f, ": {}", self.object)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Splits YAML text into documents at `---` lines and parses each on its own.
pub fn parse_text(file: &str, text: &str) -> (Vec<Document>, Vec<Problem>) {
    let mut docs = Vec::new();
    let mut problems = Vec::new();
    let mut chunks: Vec<(usize, String)> = vec![(1, String::new())];
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("---") && line[3..].trim().is_empty() {
            chunks.push((i + 2, String::new()));
        } else {
            let c = &mut chunks.last_mut().expect("one chunk").1;
            c.push_str(line);
            c.push('\n');
        }
    }
    for (line, chunk) in chunks {
        if chunk
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            continue;
        }
        // Measured before parsing: deep nesting costs the parser time with its square.
        let limits = mesh_model::input::InputLimits {
            max_bytes: MAX_FILE_BYTES as usize,
            ..mesh_model::input::InputLimits::MANIFEST
        };
        if let Err(e) = mesh_model::input::check(&chunk, limits) {
            let at = match e {
                mesh_model::input::InputError::TooDeep { line: l, .. } => line + l - 1,
                mesh_model::input::InputError::TooLarge { .. } => line,
            };
            problems.push(Problem {
                location: format!("{file}:{at}"),
                object: String::new(),
                field: String::new(),
                message: format!("document {e}"),
            });
            continue;
        }
        match serde_yaml_ng::from_str::<Value>(&chunk) {
            Ok(Value::Null) => {}
            Ok(v) if v.is_object() => docs.push(Document {
                file: file.to_owned(),
                line,
                value: v,
            }),
            Ok(_) => problems.push(Problem {
                location: format!("{file}:{line}"),
                object: String::new(),
                field: String::new(),
                message: "document is not a Kubernetes object (a YAML mapping)".into(),
            }),
            Err(e) => {
                let at = e.location().map_or(line, |l| line + l.line() - 1);
                let msg = e.to_string();
                let msg = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
                problems.push(Problem {
                    location: format!("{file}:{at}"),
                    object: String::new(),
                    field: String::new(),
                    message: format!("not valid YAML: {msg}"),
                });
            }
        }
    }
    (docs, problems)
}

/// Reads one file: size-limited, UTF-8 only.
pub fn read_file(path: &Path) -> (Vec<Document>, Vec<Problem>) {
    let file = path.display().to_string();
    let problem = |message: String| {
        (
            Vec::new(),
            vec![Problem {
                location: file.clone(),
                object: String::new(),
                field: String::new(),
                message,
            }],
        )
    };
    match std::fs::metadata(path) {
        Ok(m) if m.len() > MAX_FILE_BYTES => {
            return problem(format!(
                "file is {} bytes; manifests larger than {MAX_FILE_BYTES} bytes are refused",
                m.len()
            ));
        }
        Ok(_) => {}
        Err(e) => return problem(format!("cannot read: {e}")),
    }
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return problem(format!("cannot read: {e}")),
    };
    match String::from_utf8(bytes) {
        Ok(text) => parse_text(&file, &text),
        Err(e) => problem(format!(
            "not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )),
    }
}

/// Reads a file, or every `*.yaml`/`*.yml`/`*.json` file below a folder (sorted).
pub fn read_path(path: &Path) -> (Vec<Document>, Vec<Problem>) {
    if !path.is_dir() {
        return read_file(path);
    }
    let mut files: Vec<PathBuf> = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .extension()
                .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
            {
                files.push(p);
            }
        }
    }
    files.sort();
    let (mut docs, mut problems) = (Vec::new(), Vec::new());
    for f in files {
        let (d, p) = read_file(&f);
        docs.extend(d);
        problems.extend(p);
    }
    (docs, problems)
}
