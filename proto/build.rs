//! Generates the prost/tonic code and the proto3-JSON serde impls from `linkerd/mcp/v1/*.proto`.
//! protoc comes from `protoc-bin-vendored`, so no system protoc is needed.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let descriptors = out.join("mesh_descriptor.bin");
    let protos = ["linkerd/mcp/v1/mesh.proto"];

    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    // Maps as BTreeMap: JSON and text renderings list keys in a stable order.
    config.btree_map(["."]);
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptors)
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_with_config(config, &protos, &["."])?;

    // The server once more, answering GetMeshGraph with a pre-encoded graph (`EncodedGraph`) and
    // WatchMeshGraph with pre-encoded events (`EncodedEvent`): the same bytes on the wire,
    // encoded once per version and filter instead of per request or per stream.
    // Every other type is the one generated above.
    let server_out = out.join("server");
    std::fs::create_dir_all(&server_out)?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_client(false)
        .out_dir(&server_out)
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .extern_path(".linkerd.mcp.v1.MeshGraph", "crate::EncodedGraph")
        .extern_path(".linkerd.mcp.v1.MeshGraphEvent", "crate::EncodedEvent")
        .extern_path(".linkerd.mcp.v1", "crate::pb")
        .compile_with_config(config, &protos, &["."])?;

    let set = std::fs::read(&descriptors)?;
    pbjson_build::Builder::new()
        .register_descriptors(&set)?
        .btree_map(["."])
        .build(&[".linkerd.mcp.v1"])?;

    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
