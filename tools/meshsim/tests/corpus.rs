//! Replays the topology reader's fuzz inputs (`tools/fuzz/seeds/topology/`, by hand, and
//! `tools/fuzz/corpus/topology/`, grown by `make fuzz`) and many prefixes of each built-in
//! topology's YAML: nothing may panic; `bad-*` seeds are refused; whole files read back.

use meshsim::Topology;

#[test]
fn the_topology_corpus_and_truncated_topologies_read_without_a_panic() {
    for (name, bytes) in mesh_testkit::fuzz_inputs("topology") {
        let Ok(text) = std::str::from_utf8(&bytes) else {
            continue;
        };
        let r = Topology::from_yaml(text);
        if name.starts_with("bad-") {
            assert!(r.is_err(), "{name} was accepted");
        }
    }
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
