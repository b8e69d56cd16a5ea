//! Fuzzes the manifest reader, typing and validation: any bytes must give documents and
//! problems, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let (docs, problems) = mesh_policy::document::parse_text("fuzz.yaml", text);
        let m = mesh_policy::Manifests::from_documents(docs, problems);
        let _ = m.validate();
        let _ = m.policy_set();
    }
});
