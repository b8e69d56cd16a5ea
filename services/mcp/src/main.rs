//! `mesh-mcp`: serves the mesh graph.

#[tokio::main]
async fn main() {
    let args: mesh_mcp::cli::Args = mesh_telemetry::parse_args("mesh-mcp");
    mesh_telemetry::init_logging();
    if let Err((code, msg)) = mesh_mcp::cli::run(args).await {
        eprintln!("mesh-mcp: {msg}");
        std::process::exit(code);
    }
}
