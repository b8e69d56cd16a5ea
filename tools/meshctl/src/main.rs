//! `meshctl`: ask linkerd-mcp about the mesh.

#[tokio::main]
async fn main() {
    let args: meshctl::Args = mesh_telemetry::parse_args("meshctl");
    if let Err(f) = meshctl::run(args).await {
        eprintln!("meshctl: {}", f.message.replace('\n', " "));
        std::process::exit(f.code);
    }
}
