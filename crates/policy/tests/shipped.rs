//! Every policy object Linkerd itself ships or applies in its CI (viz and multicluster install
//! output, integration tests, the emojivoto tutorial; `fixtures/linkerd-shipped/CASES.md` names
//! each source) is accepted by our admission rules, and read into the policy set.

use std::path::Path;

#[test]
fn every_policy_object_linkerd_ships_is_accepted() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/linkerd-shipped");
    let mut files = 0;
    let mut objects = 0;
    for e in std::fs::read_dir(&dir).expect("the fixtures") {
        let path = e.expect("an entry").path();
        if path.extension().is_none_or(|x| x != "yaml") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).expect("readable");
        let (docs, problems) = mesh_policy::document::parse_text(&name, &text);
        let m = mesh_policy::Manifests::from_documents(docs, problems);
        let found: Vec<String> = m
            .validate()
            .iter()
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect();
        assert!(
            found.is_empty(),
            "{name}: Linkerd accepts it, we refused: {found:#?}"
        );
        assert!(m.policy_count() >= 1, "{name}: no policy object was read");
        objects += m.policy_count();
        files += 1;
    }
    assert_eq!(files, 44, "every file of the fixture set was read");
    assert!(objects >= 44, "{objects} objects");
}
