//! `mesh-mcp`: serves the mesh graph.

#[tokio::main]
async fn main() {
    // stdout belongs to the MCP client in `mesh-mcp stdio`; logs go to stderr anyway.
    if std::env::args().nth(1).as_deref() == Some("stdio") {
        let args =
            <mesh_mcp::cli::StdioArgs as clap::Parser>::try_parse_from(std::env::args().skip(1))
                .unwrap_or_else(|e| {
                    if e.kind() == clap::error::ErrorKind::DisplayHelp {
                        e.exit()
                    }
                    mesh_telemetry::usage_exit("mesh-mcp stdio", e.to_string().trim())
                });
        mesh_telemetry::init_logging();
        if let Err(e) = mesh_mcp::cli::run_stdio(args).await {
            e.exit("mesh-mcp stdio");
        }
        return;
    }
    let args: mesh_mcp::cli::Args = mesh_telemetry::parse_args("mesh-mcp");
    mesh_telemetry::init_logging();
    if let Err(e) = mesh_mcp::cli::run(args).await {
        e.exit("mesh-mcp");
    }
}
