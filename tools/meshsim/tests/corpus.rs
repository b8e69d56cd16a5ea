//! Replays the topology reader's fuzz inputs (`tools/fuzz/seeds/topology/`, by hand, and
//! `tools/fuzz/corpus/topology/`, grown by `make fuzz`) and many prefixes of each built-in
//! topology's YAML: nothing may panic; `bad-*` seeds are refused; whole files read back.

use std::path::Path;

use meshsim::Topology;

#[test]
fn the_topology_corpus_and_truncated_topologies_read_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut seen = 0;
    let seeds = std::fs::read_dir(root.join("seeds/topology")).expect("the seeds");
    let corpus = std::fs::read_dir(root.join("corpus/topology")).expect("the corpus");
    for e in seeds.chain(corpus) {
        let p = e.expect("an entry").path();
        let name = p
            .file_name()
            .expect("a file")
            .to_string_lossy()
            .into_owned();
        let Ok(text) = std::fs::read_to_string(&p) else {
            continue;
        };
        let r = Topology::from_yaml(&text);
        if name.starts_with("bad-") {
            assert!(r.is_err(), "{name} was accepted");
        }
        seen += 1;
    }
    assert!(seen > 2, "the seeds and the corpus are read");
    for name in ["emojivoto", "booksapp"] {
        let t = meshsim::builtin(name).expect("a built-in topology");
        let yaml = t.to_yaml();
        assert_eq!(Topology::from_yaml(&yaml).expect("reads back"), t, "{name}");
        // About 200 cuts, at character boundaries.
        let step = (yaml.len() / 200).max(1);
        for cut in (0..yaml.len()).step_by(step) {
            if yaml.is_char_boundary(cut) {
                let _ = Topology::from_yaml(&yaml[..cut]);
            }
        }
    }
}
