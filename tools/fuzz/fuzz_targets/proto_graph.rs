//! Fuzzes the wire decoders clients run on mesh-mcp's answers: any bytes decode as a graph, a
//! watch event or a delta, or are refused, and what decodes maps onto the model or is refused
//! naming the field, never a panic. Replayed in `make test` by `proto/tests/corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_proto::pb;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(g) = pb::MeshGraph::decode(data) {
        let _ = mesh_model::MeshGraph::try_from(g);
    }
    if let Ok(d) = pb::GraphDelta::decode(data) {
        let _ = mesh_model::GraphDelta::try_from(d);
    }
    let _ = pb::MeshGraphEvent::decode(data);
});
