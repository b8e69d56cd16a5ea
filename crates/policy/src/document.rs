//! Manifest documents: multi-document YAML (or JSON) text split and parsed document by document,
//! so one broken document does not hide the others. Reading files is `mesh-k8s`'s job.

use serde_json::Value;

/// Largest manifest text (one file, or one request) parsed.
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
