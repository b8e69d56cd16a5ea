//! Replays the manifest fuzz corpus (`crates/policy/fuzz/corpus/manifest/`, grown by
//! `make fuzz`) through reading, typing, validation and the policy set: nothing may panic.

use std::path::Path;

#[test]
fn the_manifest_corpus_replays_without_a_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/manifest");
    let mut seen = 0;
    for e in std::fs::read_dir(&dir).expect("the corpus") {
        let bytes = std::fs::read(e.expect("an entry").path()).expect("readable");
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let (docs, problems) = mesh_policy::document::parse_text("fuzz.yaml", text);
            let m = mesh_policy::Manifests::from_documents(docs, problems);
            let _ = m.validate();
            let _ = m.policy_set();
        }
        seen += 1;
    }
    assert!(seen > 1000, "{} holds {seen} inputs", dir.display());
}
