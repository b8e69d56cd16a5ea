//! Pictures of the mesh graph: DOT text for Graphviz users (namespaces as clusters), SVG laid
//! out by layout-rs (pure Rust; it has no clusters, so namespaces are told apart by colour and a
//! legend), and PNG rasterised by resvg.
//!
//! mTLS edges are solid green, plaintext edges dashed red, unknown dotted grey; edge labels carry
//! RPS, success rate and p99, and the policy verdict where one was computed: a denied edge ends
//! in a bar and says DENIED, an audited one has a hollow head and says AUDIT, so verdicts read
//! in greyscale too. Past [`COLLAPSE_THRESHOLD`] workloads a picture is unreadable, so
//! the view collapses to one node per namespace and says so.
//!
//! [`diff_svg`] draws what changed between two graphs: both graphs' edges, each marked by a line
//! style and a word (added, removed, regressed, verdict or TLS changed), the rest faint.
//!
//! Text: layout-rs asks for the Times font, which minimal systems lack; resvg silently drops text
//! it has no font for. We rewrite the font to DejaVu Sans (Debian `fonts-dejavu-core`) and
//! refuse to rasterise when it is missing instead of producing a picture without words.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    sync::{Arc, OnceLock},
};

use layout::{
    core::{
        base::Orientation,
        color::Color,
        style::{LineStyleKind, StyleAttr},
    },
    std_shapes::{
        render::get_shape_size,
        shapes::{Arrow, Element, LineEndKind, ShapeKind},
    },
    topo::layout::VisualGraph,
};
use mesh_model::{Decision, Destination, Edge, MeshGraph, PolicyVerdict, TlsStatus, Workload};

mod canvas;
pub use canvas::{Drawing, DrawnEdge, DrawnNode, Rect};
mod diff;
pub use diff::{diff_png, diff_svg};
use resvg::{tiny_skia, usvg};

/// Above this many workloads the picture shows one node per namespace.
pub const COLLAPSE_THRESHOLD: usize = 300;

/// Largest PNG we produce, in pixels; bigger drawings are scaled down to fit.
const MAX_PIXELS: f64 = 8_000_000.0;

/// Nodes up to which layout-rs minimises edge crossings.
const OPTIMISE_UP_TO: usize = 60;

/// The font every picture uses.
pub const FONT_FAMILY: &str = "DejaVu Sans";

const PALETTE: [&str; 10] = [
    "#cfe2ff", "#ffe5b4", "#d1f2d9", "#f8d7da", "#e2d9f3", "#fff3bf", "#d0f0f5", "#f3d9e9",
    "#e9ecef", "#dfe8c4",
];
const MTLS: &str = "#2e7d32";
const PLAINTEXT: &str = "#c62828";
const UNKNOWN: &str = "#757575";

/// Why a picture could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// No usable font: text would vanish from the PNG.
    #[error("no '{FONT_FAMILY}' font found; install Debian's fonts-dejavu-core")]
    NoFont,
    /// The SVG did not parse (a bug in this crate).
    #[error("internal SVG error: {0}")]
    Svg(#[from] usvg::Error),
    /// The picture has no area or is too large to allocate.
    #[error("cannot allocate a {0}x{1} picture")]
    Size(u32, u32),
    /// PNG encoding failed.
    #[error("PNG encoding failed: {0}")]
    Png(String),
}

/// A node of the drawn view.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Stable id (`ns/name`, a namespace, or an authority).
    pub id: String,
    /// Text shown in the box.
    pub label: String,
    /// Namespace, for colour and clustering (empty for authorities).
    pub namespace: String,
    /// Whether it runs a proxy.
    pub meshed: bool,
}

/// An edge of the drawn view.
#[derive(Clone, Debug, PartialEq)]
pub struct ViewEdge {
    /// Source node id.
    pub from: String,
    /// Destination node id.
    pub to: String,
    /// TLS status.
    pub tls: TlsStatus,
    /// Text shown on the edge: metrics, and PLAINTEXT where it applies.
    pub label: String,
    /// The policy verdict; `None` where none was computed (no cluster known).
    pub policy: Option<Decision>,
}

/// What a picture shows: the graph itself, or its namespace-level summary.
#[derive(Clone, Debug, PartialEq)]
pub struct View {
    /// Nodes, sorted by id.
    pub nodes: Vec<Node>,
    /// Edges.
    pub edges: Vec<ViewEdge>,
    /// A note for the reader (e.g. that the view was collapsed).
    pub note: Option<String>,
}

fn edge_label(rps: f64, sr: Option<f64>, p99: Option<f64>) -> String {
    let mut s = format!("{} rps", fmt_num(rps));
    if let Some(sr) = sr {
        let _ = write!(s, " | {}%", fmt_num(sr * 100.0));
    }
    if let Some(p) = p99 {
        let _ = write!(s, " | p99 {}ms", fmt_num(p));
    }
    s
}

/// Rows of cells as aligned text columns, `gap` between them, one line each (trailing space
/// trimmed): the tables of `meshctl` and the chat bot.
pub fn columns<R: AsRef<[String]>>(rows: &[R], gap: &str) -> String {
    let n = rows.iter().map(|r| r.as_ref().len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.as_ref().get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let cells: Vec<String> = r
            .as_ref()
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join(gap).trim_end());
        out.push('\n');
    }
    out
}

/// A compact number: `12`, `3.4`, `0.25`.
pub fn fmt_num(v: f64) -> String {
    if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// The verdict to draw: none where policy was never evaluated for the edge.
fn verdict(p: &PolicyVerdict) -> Option<Decision> {
    p.is_evaluated().then_some(p.decision)
}

/// Of two verdicts summed into one namespace edge, the one a reader must not miss.
fn worst(a: Option<Decision>, b: Option<Decision>) -> Option<Decision> {
    let rank = |d: Option<Decision>| match d {
        None => 0,
        Some(Decision::Allowed) => 1,
        Some(Decision::Unknown) => 2,
        Some(Decision::Audit) => 3,
        Some(Decision::Denied) => 4,
    };
    if rank(b) > rank(a) { b } else { a }
}

fn dst_node(d: &Destination) -> (String, String) {
    match d {
        Destination::Workload(w) => (w.to_string(), w.namespace.clone()),
        Destination::Authority(a) => (a.clone(), String::new()),
    }
}

/// A workload's node: name, namespace, and whether it is unmeshed.
fn workload_node(w: &Workload) -> Node {
    let mut label = format!("{}\n{}", w.id.name, w.id.namespace);
    if !w.meshed {
        label.push_str("\n(unmeshed)");
    }
    Node {
        id: w.id.to_string(),
        label,
        namespace: w.id.namespace.clone(),
        meshed: w.meshed,
    }
}

/// An edge's text in the full view: metrics, PLAINTEXT, a rate limit's refusals and the
/// worst route.
fn full_label(e: &Edge) -> String {
    let m = &e.metrics;
    let mut label = edge_label(m.rps, m.success_rate, m.latency_p99_ms);
    if e.tls == TlsStatus::Plaintext {
        label.push_str("\nPLAINTEXT");
    }
    if let Some(r) = e.policy.observed_rate_limited_rps.filter(|r| *r > 0.0) {
        let _ = write!(label, "\nrate limited {} rps (429)", fmt_num(r));
    }
    // The route failing the most requests, when the proxies report routes.
    if let Some(r) = e.worst_route() {
        let _ = write!(
            label,
            "\nworst route {} {}%",
            r.id.short_name(),
            fmt_num(r.success_rate.unwrap_or(1.0) * 100.0)
        );
    }
    label
}

/// One node per namespace (with its workload count), then one per authority.
fn namespace_nodes(counts: &BTreeMap<&str, usize>, authorities: BTreeSet<String>) -> Vec<Node> {
    let mut nodes: Vec<Node> = counts
        .iter()
        .map(|(ns, n)| Node {
            id: (*ns).to_owned(),
            label: format!("{ns}\n{n} workloads"),
            namespace: (*ns).to_owned(),
            meshed: true,
        })
        .collect();
    nodes.extend(authorities.into_iter().map(|a| Node {
        id: a.clone(),
        label: a,
        namespace: String::new(),
        meshed: false,
    }));
    nodes
}

/// What a collapsed view tells its reader.
fn collapse_note(workloads: usize) -> String {
    format!(
        "{workloads} workloads: collapsed to one node per namespace; filter by namespace to see workloads"
    )
}

// === impl View ===

impl View {
    /// The view of `graph`: every workload, or one node per namespace past the threshold.
    pub fn of(graph: &MeshGraph) -> Self {
        if graph.workloads.len() > COLLAPSE_THRESHOLD {
            Self::collapsed(graph)
        } else {
            Self::full(graph)
        }
    }

    /// Every workload and edge.
    pub fn full(graph: &MeshGraph) -> Self {
        let mut nodes: BTreeMap<String, Node> = graph
            .workloads
            .values()
            .map(|w| (w.id.to_string(), workload_node(w)))
            .collect();
        let mut edges = Vec::new();
        for e in graph.edges.values() {
            let (to, ns) = dst_node(&e.key.dst);
            nodes.entry(to.clone()).or_insert_with(|| Node {
                id: to.clone(),
                label: to.clone(),
                namespace: ns,
                meshed: false,
            });
            edges.push(ViewEdge {
                from: e.key.src.to_string(),
                to,
                tls: e.tls,
                label: full_label(e),
                policy: verdict(&e.policy),
            });
        }
        Self {
            nodes: nodes.into_values().collect(),
            edges,
            note: None,
        }
    }

    /// One node per namespace; edges summed between namespaces.
    pub fn collapsed(graph: &MeshGraph) -> Self {
        #[derive(Default)]
        struct Agg {
            rps: f64,
            ok: f64,
            answered: f64,
            p99: Option<f64>,
            plaintext: bool,
            mtls: bool,
            policy: Option<Decision>,
        }
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for w in graph.workloads.keys() {
            *counts.entry(&w.namespace).or_default() += 1;
        }
        let mut agg: BTreeMap<(String, String), Agg> = BTreeMap::new();
        let mut extra: BTreeSet<String> = BTreeSet::new();
        for e in graph.edges.values() {
            let to = match &e.key.dst {
                Destination::Workload(w) => w.namespace.clone(),
                Destination::Authority(a) => {
                    extra.insert(a.clone());
                    a.clone()
                }
            };
            let a = agg.entry((e.key.src.namespace.clone(), to)).or_default();
            let m = &e.metrics;
            a.rps += m.rps;
            if let Some(sr) = m.success_rate {
                a.ok += sr * m.rps;
                a.answered += m.rps;
            }
            a.p99 = match (a.p99, m.latency_p99_ms) {
                (Some(x), Some(y)) => Some(x.max(y)),
                (x, y) => x.or(y),
            };
            a.plaintext |= e.tls == TlsStatus::Plaintext;
            a.mtls |= e.tls == TlsStatus::Mtls;
            a.policy = worst(a.policy, verdict(&e.policy));
        }
        let nodes = namespace_nodes(&counts, extra);
        let edges = agg
            .into_iter()
            .map(|((from, to), a)| {
                let sr = (a.answered > 0.0).then(|| a.ok / a.answered);
                let tls = match (a.plaintext, a.mtls) {
                    (true, _) => TlsStatus::Plaintext,
                    (false, true) => TlsStatus::Mtls,
                    _ => TlsStatus::Unknown,
                };
                let mut label = edge_label(a.rps, sr, a.p99);
                if a.plaintext {
                    label.push_str("\nsome PLAINTEXT");
                }
                ViewEdge {
                    from,
                    to,
                    tls,
                    label,
                    policy: a.policy,
                }
            })
            .collect();
        Self {
            nodes,
            edges,
            note: Some(collapse_note(graph.workloads.len())),
        }
    }

    fn colours(&self) -> BTreeMap<&str, &'static str> {
        let namespaces: BTreeSet<&str> = self
            .nodes
            .iter()
            .map(|n| n.namespace.as_str())
            .filter(|n| !n.is_empty())
            .collect();
        namespaces
            .into_iter()
            .enumerate()
            .map(|(i, ns)| (ns, PALETTE[i % PALETTE.len()]))
            .collect()
    }
}

fn tls_style(t: TlsStatus) -> (&'static str, &'static str) {
    match t {
        TlsStatus::Mtls => (MTLS, "solid"),
        TlsStatus::Plaintext => (PLAINTEXT, "dashed"),
        TlsStatus::Unknown => (UNKNOWN, "dotted"),
    }
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// DOT text for Graphviz, with one cluster per namespace.
pub fn dot(graph: &MeshGraph) -> String {
    let view = View::of(graph);
    let colours = view.colours();
    let mut out = String::from("digraph mesh {\n  rankdir=LR;\n");
    let _ = writeln!(
        out,
        "  node [shape=box, style=\"rounded,filled\", fontname=\"{FONT_FAMILY}\"];\n  edge [fontname=\"{FONT_FAMILY}\", fontsize=10];"
    );
    if let Some(note) = &view.note {
        let _ = writeln!(out, "  label=\"{}\";\n  labelloc=t;", dot_escape(note));
    }
    let mut by_ns: BTreeMap<&str, Vec<&Node>> = BTreeMap::new();
    for n in &view.nodes {
        by_ns.entry(n.namespace.as_str()).or_default().push(n);
    }
    let clustered = view.note.is_none();
    for (ns, nodes) in by_ns {
        let fill = colours.get(ns).copied().unwrap_or("#ffffff");
        let indent = if clustered && !ns.is_empty() {
            let _ = writeln!(
                out,
                "  subgraph \"cluster_{0}\" {{\n    label=\"{0}\";\n    style=rounded;\n    color=\"#9e9e9e\";",
                dot_escape(ns)
            );
            "    "
        } else {
            "  "
        };
        for n in nodes {
            let style = if n.meshed {
                "rounded,filled"
            } else {
                "rounded,filled,dashed"
            };
            let _ = writeln!(
                out,
                "{indent}\"{}\" [label=\"{}\", fillcolor=\"{fill}\", style=\"{style}\"];",
                dot_escape(&n.id),
                dot_escape(&n.label)
            );
        }
        if indent.len() == 4 {
            out.push_str("  }\n");
        }
    }
    for e in &view.edges {
        let (colour, style) = tls_style(e.tls);
        // Greyscale-safe verdicts, as in the SVG: a bar for denied, a hollow head for audit.
        let head = match e.policy {
            Some(Decision::Denied) => ", arrowhead=tee, penwidth=3",
            Some(Decision::Audit) => ", arrowhead=empty, penwidth=2",
            _ => ", penwidth=2",
        };
        let _ = writeln!(
            out,
            "  \"{}\" -> \"{}\" [label=\"{}\", color=\"{colour}\", fontcolor=\"{colour}\", style={style}{head}];",
            dot_escape(&e.from),
            dot_escape(&e.to),
            dot_escape(&canvas::label_text(e))
        );
    }
    out.push_str("}\n");
    out
}

/// SVG laid out by layout-rs and drawn by [`Drawing`]: labels beside their lines, the canvas
/// fitted to the drawing, and a legend of namespaces, TLS styles and (when the graph has
/// verdicts) policy verdicts.
pub fn svg(graph: &MeshGraph) -> String {
    let view = View::of(graph);
    drawing(&view).svg(&view, &legend_namespaces(&view))
}

/// The namespaces and their fills, in legend order.
fn legend_namespaces(view: &View) -> Vec<(&str, &'static str)> {
    view.colours().into_iter().collect()
}

/// Lays `view` out with layout-rs and places its labels.
pub fn drawing(view: &View) -> Drawing {
    let colours = view.colours();
    let mut vg = VisualGraph::new(Orientation::LeftToRight);
    let mut handles = BTreeMap::new();
    let mut fills = Vec::new();
    for (i, n) in view.nodes.iter().enumerate() {
        let fill = colours
            .get(n.namespace.as_str())
            .copied()
            .unwrap_or("#ffffff");
        fills.push(fill.to_owned());
        let look = StyleAttr::new(Color::fast("#37474f"), 2, Color::from_name(fill), 6, 14);
        let shape = ShapeKind::new_box(&n.label);
        let size = get_shape_size(Orientation::LeftToRight, &shape, look.font_size, false);
        let mut el = Element::create(shape, look, Orientation::LeftToRight, size);
        el.properties = canvas::tag("node", i);
        handles.insert(n.id.as_str(), vg.add_node(el));
    }
    for (i, e) in view.edges.iter().enumerate() {
        let look = StyleAttr::new(Color::fast(MTLS), 2, None, 0, 11);
        let mut arrow = Arrow::new(
            LineEndKind::None,
            LineEndKind::Arrow,
            LineStyleKind::Normal,
            &canvas::label_text(e),
            &look,
            &None,
            &None,
        );
        arrow.properties = canvas::tag("edge", i);
        if let (Some(a), Some(b)) = (handles.get(e.from.as_str()), handles.get(e.to.as_str())) {
            vg.add_edge(arrow, *a, *b);
        }
    }
    let mut canvas = canvas::Canvas::default();
    if !view.nodes.is_empty() {
        // Crossing minimisation is superlinear; past a few dozen nodes it costs seconds for
        // little gain in readability.
        let disable_opt = view.nodes.len() > OPTIMISE_UP_TO;
        vg.do_it(false, disable_opt, false, &mut canvas);
    }
    Drawing::new(canvas, view, &fills)
}

/// `s` as XML text: `&`, `<` and `>` escaped.
pub fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn fonts() -> Option<Arc<usvg::fontdb::Database>> {
    static DB: OnceLock<Option<Arc<usvg::fontdb::Database>>> = OnceLock::new();
    DB.get_or_init(|| {
        let mut db = usvg::fontdb::Database::new();
        db.load_system_fonts();
        db.set_sans_serif_family(FONT_FAMILY);
        db.set_serif_family(FONT_FAMILY);
        let found = db
            .faces()
            .any(|f| f.families.iter().any(|(name, _)| name == FONT_FAMILY));
        found.then(|| Arc::new(db))
    })
    .clone()
}

/// Parsing options that resolve every font to DejaVu; `None` when it is not installed.
pub fn svg_options() -> Result<usvg::Options<'static>, RenderError> {
    let fontdb = fonts().ok_or(RenderError::NoFont)?;
    Ok(usvg::Options {
        fontdb,
        font_family: FONT_FAMILY.to_owned(),
        ..usvg::Options::default()
    })
}

/// Rasterises an SVG to PNG on a white background.
pub fn svg_to_png(svg: &str) -> Result<Vec<u8>, RenderError> {
    let tree = usvg::Tree::from_str(svg, &svg_options()?)?;
    let size = tree.size();
    let area = f64::from(size.width()) * f64::from(size.height());
    // Scale very large drawings down: past this many pixels a PNG costs seconds to encode and
    // megabytes to send, and chat platforms shrink it anyway.
    let scale = if area > MAX_PIXELS {
        (MAX_PIXELS / area).sqrt() as f32
    } else {
        1.0
    };
    let (w, h) = (
        (size.width() * scale).ceil() as u32,
        (size.height() * scale).ceil() as u32,
    );
    let mut pixmap = tiny_skia::Pixmap::new(w, h).ok_or(RenderError::Size(w, h))?;
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(
        &tree,
        tiny_skia::Transform::from_scale(scale, scale),
        &mut pixmap.as_mut(),
    );
    pixmap
        .encode_png()
        .map_err(|e| RenderError::Png(e.to_string()))
}

/// The graph as a PNG.
pub fn png(graph: &MeshGraph) -> Result<Vec<u8>, RenderError> {
    svg_to_png(&svg(graph))
}

#[cfg(test)]
mod tests;
