//! Reading manifests from disk: files and folders of YAML or JSON, size-limited, handed to the
//! policy core's document parser one file at a time.

use std::path::{Path, PathBuf};

use mesh_policy::{
    Manifests,
    document::{Document, MAX_FILE_BYTES, Problem, parse_text},
};

/// Reads a file or folder of manifests and types what it holds.
pub fn read_manifests(path: &Path) -> Manifests {
    let (docs, problems) = read_path(path);
    Manifests::from_documents(docs, problems)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_and_non_utf8_files_are_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.yaml");
        std::fs::write(&big, vec![b'#'; (MAX_FILE_BYTES + 1) as usize]).unwrap();
        let (_, p) = read_file(&big);
        assert!(
            p[0].message
                .ends_with("manifests larger than 8388608 bytes are refused"),
            "{}",
            p[0]
        );
        let bin = dir.path().join("bin.yaml");
        std::fs::write(&bin, b"kind: \xff\xfe").unwrap();
        let (_, p) = read_file(&bin);
        assert_eq!(p[0].message, "not UTF-8 text (invalid byte at offset 6)");
    }
}
