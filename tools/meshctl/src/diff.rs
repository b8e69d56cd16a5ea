//! `meshctl diff`: what changed in the mesh between two moments (`DiffMeshGraph`), as a table
//! read top to bottom in time, as proto3 JSON, or as a picture of the difference.

use std::{io::Write as _, path::PathBuf, time::Duration, time::SystemTime};

use mesh_proto::pb;

use crate::{EXIT_USAGE, Failure, connect, server_failure, with_token};

/// `meshctl diff` flags; each also reads `MESH_<FLAG>`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("span").required(true).args(["since", "from"])))]
pub struct DiffArgs {
    /// mesh-mcp gRPC address.
    #[arg(long, env = "MESH_SERVER")]
    pub server: String,
    /// Bearer token.
    #[arg(long, env = "MESH_TOKEN")]
    pub token: Option<String>,
    /// From this long ago until now, e.g. `90s`, `15m`, `1h`.
    #[arg(long, env = "MESH_SINCE", value_parser = mesh_telemetry::parse_since, conflicts_with_all = ["from", "to"])]
    pub since: Option<Duration>,
    /// The earlier moment: RFC 3339 in UTC (`2026-12-07T10:32:00Z`) or a duration ago (`-2h`).
    #[arg(long, env = "MESH_FROM", allow_hyphen_values = true, value_parser = crate::parse_at, requires = "to")]
    pub from: Option<SystemTime>,
    /// The later moment, as --from.
    #[arg(long, env = "MESH_TO", allow_hyphen_values = true, value_parser = crate::parse_at, requires = "from")]
    pub to: Option<SystemTime>,
    /// Only edges and objects in this namespace (repeatable).
    #[arg(
        short = 'n',
        long = "namespace",
        env = "MESH_NAMESPACE",
        value_delimiter = ','
    )]
    pub namespaces: Vec<String>,
    /// `table`, `json` (proto3 JSON of `linkerd.mcp.v1.MeshGraphDiff`), `png` or `svg` (the
    /// graph with added, removed and regressed edges and changed verdicts marked).
    #[arg(short = 'o', long, env = "MESH_OUTPUT", default_value = "table", value_parser = ["table", "json", "png", "svg"])]
    pub output: String,
    /// Write the output to this file instead of standard output.
    #[arg(long, env = "MESH_OUT")]
    pub out: Option<PathBuf>,
}

fn when(t: Option<&pbjson_types::Timestamp>) -> String {
    t.and_then(|t| mesh_proto::timestamp_from_pb(t).ok())
        .map_or_else(
            || "-".into(),
            |t| humantime::format_rfc3339_seconds(t).to_string(),
        )
}

/// How a graph of a past moment was made, one line each (after a table).
pub(crate) fn point_lines(what: &str, p: &pb::PointInTime) -> String {
    format!(
        "{what} at {}: {}; {}\n",
        when(p.at.as_ref()),
        p.objects_note,
        p.metrics_note
    )
}

/// The changes as a table, earliest first, with how each end was made.
pub fn diff_table(d: &pb::MeshGraphDiff) -> Result<String, String> {
    let changes = mesh_proto::diff_changes(d)
        .map_err(|e| format!("the server answered an unreadable diff: {e}"))?;
    let mut out = String::new();
    if changes.is_empty() {
        out.push_str(&format!(
            "nothing changed between {} and {}\n",
            when(d.from.as_ref()),
            when(d.to.as_ref())
        ));
    } else {
        let mut rows = vec![["WHEN", "CHANGE", "WHAT"].map(str::to_owned).to_vec()];
        for c in &changes {
            rows.push(vec![
                humantime::format_rfc3339_seconds(c.at).to_string(),
                c.what.label().to_owned(),
                c.what.to_string(),
            ]);
        }
        out.push_str(&mesh_render::columns(&rows, "  "));
        out.push_str(&format!(
            "{} changes between {} and {}\n",
            changes.len(),
            when(d.from.as_ref()),
            when(d.to.as_ref())
        ));
    }
    for n in &d.notes {
        out.push_str(&format!("note: {n}\n"));
    }
    for (what, p) in [("from", &d.from_point), ("to", &d.to_point)] {
        if let Some(p) = p
            && !p.objects_exact
        {
            out.push_str(&point_lines(what, p));
        }
    }
    Ok(out)
}

/// The picture of a diff that carries both graphs.
pub fn diff_picture(d: &pb::MeshGraphDiff, png: bool) -> Result<Vec<u8>, String> {
    let graph = |g: &Option<pb::MeshGraph>| {
        mesh_model::MeshGraph::try_from(g.clone().unwrap_or_default())
            .map_err(|e| format!("the server answered an unreadable graph: {e}"))
    };
    let (before, after) = (graph(&d.from_graph)?, graph(&d.to_graph)?);
    let changes = mesh_proto::diff_changes(d)
        .map_err(|e| format!("the server answered an unreadable diff: {e}"))?;
    if png {
        mesh_render::diff_png(&before, &after, &changes).map_err(|e| e.to_string())
    } else {
        Ok(mesh_render::diff_svg(&before, &after, &changes).into_bytes())
    }
}

/// Runs `meshctl diff`.
pub async fn diff(args: DiffArgs) -> Result<(), Failure> {
    let png = args.output == "png";
    if png && args.out.is_none() && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return Err(Failure::new(
            EXIT_USAGE,
            "-o png writes binary data: pass --out FILE or redirect standard output",
        ));
    }
    let now = SystemTime::now();
    let (from, to) = match (args.since, args.from, args.to) {
        (Some(since), None, None) => (now - since, None),
        (None, Some(from), Some(to)) => (from, Some(to)),
        _ => unreachable!("clap requires --since, or --from with --to"),
    };
    let picture = matches!(args.output.as_str(), "png" | "svg");
    let req = pb::DiffMeshGraphRequest {
        from: Some(mesh_proto::timestamp_to_pb(from)),
        to: to.map(mesh_proto::timestamp_to_pb),
        namespaces: args.namespaces.clone(),
        include_graphs: picture,
        ..Default::default()
    };
    let mut c = connect(&args.server, Duration::from_secs(10)).await?;
    let d = c
        .diff_mesh_graph(with_token(
            req,
            args.token.as_deref(),
            Some(Duration::from_secs(120)),
        )?)
        .await
        .map_err(|s| server_failure(&args.server, &s))?
        .into_inner();
    let bytes = match args.output.as_str() {
        "json" => {
            let mut s = serde_json::to_string_pretty(&d).expect("proto JSON always serializes");
            s.push('\n');
            s.into_bytes()
        }
        "png" | "svg" => diff_picture(&d, png).map_err(|e| Failure::new(1, e))?,
        _ => diff_table(&d).map_err(|e| Failure::new(1, e))?.into_bytes(),
    };
    match &args.out {
        Some(path) => std::fs::write(path, &bytes)
            .map_err(|e| Failure::new(1, format!("cannot write {}: {e}", path.display()))),
        None => std::io::stdout()
            .write_all(&bytes)
            .map_err(|e| Failure::new(1, format!("cannot write output: {e}"))),
    }
}
