//! `mesh-chatbot`: the mesh in Slack and Discord.

#[tokio::main]
async fn main() {
    let args: mesh_chatbot::cli::Args = mesh_telemetry::parse_args("mesh-chatbot");
    mesh_telemetry::init_logging();
    if let Err(e) = mesh_chatbot::cli::run(args).await {
        e.exit("mesh-chatbot");
    }
}
