//! `meshctl`: ask linkerd-mcp about the mesh.

use clap::{Parser, error::ErrorKind};

#[tokio::main]
async fn main() {
    let args = match meshctl::Args::try_parse() {
        Ok(a) => a,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) => {
            // One clear line, as for every linkerd-mcp command.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("meshctl: {}", first.trim_start_matches("error: "));
            std::process::exit(meshctl::EXIT_USAGE);
        }
    };
    if let Err(f) = meshctl::run(args).await {
        eprintln!("meshctl: {}", f.message.replace('\n', " "));
        std::process::exit(f.code);
    }
}
