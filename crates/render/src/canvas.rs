//! Our own drawing of a layout-rs layout. layout-rs places nodes and routes edges well, but its
//! SVG writer draws edge labels along their own line (text reads as struck through), grows the
//! canvas by ten pixels per character of every text (a large blank band) and cannot tell a
//! denied edge from an allowed one. So layout-rs draws into [`Canvas`], which only records the
//! geometry; [`Drawing`] then places each label beside its line on a background, fits the
//! canvas to what is drawn, and writes SVG in which every edge's TLS and policy verdict can be
//! told apart without colour: dash patterns for TLS, arrowheads and words for the verdict. The
//! diff picture uses the same page with its own `EdgeLook` per edge (what changed).

use std::fmt::Write as _;

use layout::core::{
    format::{ClipHandle, RenderBackend},
    geometry::Point,
    style::StyleAttr,
};
use mesh_model::{Decision, TlsStatus};

use crate::{FONT_FAMILY, MTLS, PLAINTEXT, UNKNOWN, View, ViewEdge, xml_escape};

/// Colour of the words of a denied edge.
const DENIED_TEXT: &str = "#b71c1c";

const EDGE_FONT: f64 = 11.0;
const NODE_FONT: f64 = 14.0;
const MARGIN: f64 = 12.0;
/// DejaVu Sans is about this wide per character, in ems (a little generous, so boxes hold).
const CHAR_EM: f64 = 0.62;
const LINE_EM: f64 = 1.25;

/// An axis-aligned box: left, top, width, height.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rect {
    /// Left edge.
    pub x: f64,
    /// Top edge.
    pub y: f64,
    /// Width.
    pub w: f64,
    /// Height.
    pub h: f64,
}

impl Rect {
    fn overlaps(&self, o: &Rect) -> bool {
        self.x < o.x + o.w && o.x < self.x + self.w && self.y < o.y + o.h && o.y < self.y + self.h
    }

    fn grow(&mut self, o: &Rect) {
        let (x1, y1) = (self.x.min(o.x), self.y.min(o.y));
        let x2 = (self.x + self.w).max(o.x + o.w);
        let y2 = (self.y + self.h).max(o.y + o.h);
        *self = Rect {
            x: x1,
            y: y1,
            w: x2 - x1,
            h: y2 - y1,
        };
    }
}

/// Whether the segment from `a` to `b` touches `r` grown by one pixel (Liang-Barsky clipping:
/// exact, and cheap enough to test every label spot against every line).
fn segment_hits(r: &Rect, a: (f64, f64), b: (f64, f64)) -> bool {
    let (x0, y0, x1, y1) = (r.x - 1.0, r.y - 1.0, r.x + r.w + 1.0, r.y + r.h + 1.0);
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let (mut lo, mut hi) = (0.0_f64, 1.0_f64);
    for (p, q) in [
        (-dx, a.0 - x0),
        (dx, x1 - a.0),
        (-dy, a.1 - y0),
        (dy, y1 - a.1),
    ] {
        if p == 0.0 {
            if q < 0.0 {
                return false;
            }
        } else {
            let t = q / p;
            if p < 0.0 {
                lo = lo.max(t);
            } else {
                hi = hi.min(t);
            }
            if lo > hi {
                return false;
            }
        }
    }
    true
}

/// Whether the polyline `line` touches `r`, after a cheap test of its bounding box.
fn line_hits(r: &Rect, line: &[(f64, f64)], bbox: &Rect) -> bool {
    bbox.overlaps(&Rect {
        x: r.x - 1.0,
        y: r.y - 1.0,
        w: r.w + 2.0,
        h: r.h + 2.0,
    }) && line.windows(2).any(|w| segment_hits(r, w[0], w[1]))
}

/// The bounding box of a polyline.
fn bbox(line: &[(f64, f64)]) -> Rect {
    let (mut x0, mut y0, mut x1, mut y1) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
    for p in line {
        (x0, y0, x1, y1) = (x0.min(p.0), y0.min(p.1), x1.max(p.0), y1.max(p.1));
    }
    if x0 > x1 {
        return Rect::default();
    }
    Rect {
        x: x0,
        y: y0,
        w: x1 - x0,
        h: y1 - y0,
    }
}

/// The box a block of text takes, centred on `c`.
fn text_box(c: (f64, f64), text: &str, font: f64) -> Rect {
    let lines = text.lines().count().max(1) as f64;
    let chars = text.lines().map(|l| l.chars().count()).max().unwrap_or(0) as f64;
    let (w, h) = (chars * font * CHAR_EM + 8.0, lines * font * LINE_EM + 4.0);
    Rect {
        x: c.0 - w / 2.0,
        y: c.1 - h / 2.0,
        w,
        h,
    }
}

/// A node as drawn.
#[derive(Clone, Debug)]
pub struct DrawnNode {
    /// Its box.
    pub rect: Rect,
    /// Fill colour.
    pub fill: String,
    /// Whether it runs a proxy (unmeshed nodes get a dashed border).
    pub meshed: bool,
    /// The text in it.
    pub label: String,
}

/// An edge as drawn: its curve, sampled, and where its label went.
#[derive(Clone, Debug)]
pub struct DrawnEdge {
    /// Index into the view's edges.
    pub index: usize,
    /// The SVG path data of the curve.
    pub path_data: String,
    /// Points along the curve, start to end.
    pub samples: Vec<(f64, f64)>,
    /// The label's background box (the text is centred in it).
    pub label_box: Rect,
}

/// One cubic Bézier segment: start, two control points, end.
type Cubic = [(f64, f64); 4];

/// Points along the segments, start to end.
fn sample(cubics: &[Cubic]) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    for [a, b, c, e] in cubics {
        for i in 0..=16 {
            let t = f64::from(i) / 16.0;
            let u = 1.0 - t;
            let w = [u * u * u, 3.0 * u * u * t, 3.0 * u * t * t, t * t * t];
            out.push((
                w[0] * a.0 + w[1] * b.0 + w[2] * c.0 + w[3] * e.0,
                w[0] * a.1 + w[1] * b.1 + w[2] * c.1 + w[3] * e.1,
            ));
        }
    }
    out
}

/// SVG path data of the segments.
fn path_data(cubics: &[Cubic]) -> String {
    let mut d = String::new();
    for (i, [a, b, c, e]) in cubics.iter().enumerate() {
        if i == 0 {
            let _ = write!(d, "M {:.1} {:.1}", a.0, a.1);
        }
        let _ = write!(
            d,
            " C {:.1} {:.1}, {:.1} {:.1}, {:.1} {:.1}",
            b.0, b.1, c.0, c.1, e.0, e.1
        );
    }
    d
}

/// What layout-rs drew, recorded for our own rendering.
#[derive(Debug, Default)]
pub(crate) struct Canvas {
    nodes: Vec<(Rect, Option<usize>)>,
    /// Each edge's curve as cubic Bézier segments (start, control, control, end).
    arrows: Vec<(usize, Vec<Cubic>)>,
}

fn prop_index(properties: Option<&str>, key: &str) -> Option<usize> {
    properties?
        .strip_prefix(key)?
        .strip_prefix('=')?
        .parse()
        .ok()
}

/// The property that carries a view index through layout-rs to [`Canvas`].
pub(crate) fn tag(key: &str, index: usize) -> Option<String> {
    Some(format!("{key}={index}"))
}

impl RenderBackend for Canvas {
    fn draw_rect(
        &mut self,
        xy: Point,
        size: Point,
        _look: &StyleAttr,
        properties: Option<String>,
        _clip: Option<ClipHandle>,
    ) {
        let rect = Rect {
            x: xy.x,
            y: xy.y,
            w: size.x,
            h: size.y,
        };
        self.nodes
            .push((rect, prop_index(properties.as_deref(), "node")));
    }

    fn draw_line(&mut self, _: Point, _: Point, _: &StyleAttr, _: Option<String>) {}

    fn draw_circle(&mut self, _: Point, _: Point, _: &StyleAttr, _: Option<String>) {}

    // Node text is drawn from the view's labels, centred in the node's box.
    fn draw_text(&mut self, _: Point, _: &str, _: &StyleAttr) {}

    fn draw_arrow(
        &mut self,
        path: &[(Point, Point)],
        _dashed: bool,
        head: (bool, bool),
        _look: &StyleAttr,
        properties: Option<String>,
        _text: &str,
    ) {
        let Some(index) = prop_index(properties.as_deref(), "edge") else {
            return;
        };
        if path.len() < 2 {
            return;
        }
        // layout-rs's path: M p0 C c0, c1, p1, then S c, p for each further point (the first
        // control point of each S is the mirror of the previous second one).
        let p = |q: Point| (q.x, q.y);
        let mut cubics = vec![[p(path[0].0), p(path[0].1), p(path[1].0), p(path[1].1)]];
        let (mut end, mut c2) = (p(path[1].1), p(path[1].0));
        for q in &path[2..] {
            let c1 = (2.0 * end.0 - c2.0, 2.0 * end.1 - c2.1);
            cubics.push([end, c1, p(q.0), p(q.1)]);
            (end, c2) = (p(q.1), p(q.0));
        }
        // layout-rs draws an edge it laid out backwards from its end, with the head at the
        // start: turn it around so every curve runs from source to destination.
        if head == (true, false) {
            cubics.reverse();
            for c in &mut cubics {
                c.reverse();
            }
        }
        self.arrows.push((index, cubics));
    }

    fn create_clip(&mut self, _: Point, _: Point, _: usize) -> ClipHandle {
        0
    }
}

/// The policy word shown on an edge and in the legend.
fn verdict_word(d: Decision) -> &'static str {
    match d {
        Decision::Allowed => "allowed",
        Decision::Denied => "DENIED",
        Decision::Audit => "AUDIT",
        Decision::Unknown => "policy ?",
    }
}

fn tls_look(t: TlsStatus) -> (&'static str, &'static str, &'static str) {
    match t {
        TlsStatus::Mtls => (MTLS, "", "mtls"),
        TlsStatus::Plaintext => (PLAINTEXT, " stroke-dasharray=\"9,5\"", "plaintext"),
        TlsStatus::Unknown => (UNKNOWN, " stroke-dasharray=\"2,4\"", "unknown"),
    }
}

/// The text of an edge's label: its metrics (and PLAINTEXT), then a verdict other than allowed.
pub(crate) fn label_text(e: &ViewEdge) -> String {
    match e.policy {
        Some(d) if d != Decision::Allowed => format!("{}\n{}", e.label, verdict_word(d)),
        _ => e.label.clone(),
    }
}

/// The drawing of a view, fitted to its content.
#[derive(Debug)]
pub struct Drawing {
    /// Nodes.
    pub nodes: Vec<DrawnNode>,
    /// Edges with their labels placed.
    pub edges: Vec<DrawnEdge>,
    /// The box everything drawn fits in (before the margin).
    pub bounds: Rect,
}

impl Drawing {
    /// Places labels beside their lines, away from nodes where it can, and fits the bounds.
    pub(crate) fn new(canvas: Canvas, view: &View, fills: &[String]) -> Self {
        let mut nodes = Vec::new();
        for (rect, idx) in &canvas.nodes {
            let Some(i) = *idx else { continue };
            let (Some(n), Some(fill)) = (view.nodes.get(i), fills.get(i)) else {
                continue;
            };
            nodes.push(DrawnNode {
                rect: *rect,
                fill: fill.clone(),
                meshed: n.meshed,
                label: n.label.clone(),
            });
        }
        let mut placed: Vec<Rect> = nodes.iter().map(|n| n.rect).collect();
        let mut edges = Vec::new();
        // layout-rs routes two edges between the same nodes (a -> b and b -> a, or two
        // protocols) along one curve; spread them apart so each line and its head show.
        let pair = |i: usize| {
            view.edges.get(i).map(|e| {
                if e.from <= e.to {
                    (e.from.as_str(), e.to.as_str())
                } else {
                    (e.to.as_str(), e.from.as_str())
                }
            })
        };
        let mut siblings: std::collections::BTreeMap<(&str, &str), Vec<usize>> =
            std::collections::BTreeMap::new();
        for (i, (index, _)) in canvas.arrows.iter().enumerate() {
            if let Some(k) = pair(*index) {
                siblings.entry(k).or_default().push(i);
            }
        }
        let mut shift = vec![0.0; canvas.arrows.len()];
        for group in siblings.values().filter(|g| g.len() > 1) {
            let k = group.len() as f64;
            for (rank, &i) in group.iter().enumerate() {
                shift[i] = (rank as f64 - (k - 1.0) / 2.0) * 12.0;
            }
        }
        let mut curves = Vec::new();
        for (i, (index, mut cubics)) in canvas.arrows.into_iter().enumerate() {
            let Some(e) = view.edges.get(index) else {
                continue;
            };
            if shift[i] != 0.0 {
                // Along the normal of the chord, taken in the pair's own order, so that a -> b
                // and b -> a move to opposite sides.
                let (first, last) = (cubics[0][0], cubics[cubics.len() - 1][3]);
                let flip = if e.from <= e.to { 1.0 } else { -1.0 };
                let (dx, dy) = ((last.0 - first.0) * flip, (last.1 - first.1) * flip);
                let len = dx.hypot(dy).max(1e-6);
                let (nx, ny) = (-dy / len * shift[i], dx / len * shift[i]);
                for c in &mut cubics {
                    for q in c.iter_mut() {
                        *q = (q.0 + nx, q.1 + ny);
                    }
                }
            }
            let samples = sample(&cubics);
            curves.push((index, path_data(&cubics), samples, label_text(e)));
        }
        let lines: Vec<(&[(f64, f64)], Rect)> = curves
            .iter()
            .map(|c| (c.2.as_slice(), bbox(&c.2)))
            .collect();
        let mut labels = Vec::new();
        for (i, (_, _, _, text)) in curves.iter().enumerate() {
            let label_box = place_label(&lines, i, text, &placed);
            placed.push(label_box);
            labels.push(label_box);
        }
        for ((index, path_data, samples, _), label_box) in curves.into_iter().zip(labels) {
            edges.push(DrawnEdge {
                index,
                path_data,
                samples,
                label_box,
            });
        }
        let mut bounds: Option<Rect> = None;
        let mut add = |r: Rect| match &mut bounds {
            Some(b) => b.grow(&r),
            None => bounds = Some(r),
        };
        for n in &nodes {
            add(n.rect);
        }
        for e in &edges {
            add(e.label_box);
            for s in &e.samples {
                add(Rect {
                    x: s.0 - 6.0,
                    y: s.1 - 6.0,
                    w: 12.0,
                    h: 12.0,
                });
            }
        }
        Self {
            nodes,
            edges,
            bounds: bounds.unwrap_or_default(),
        }
    }
}

/// A spot for the label of `lines[own]` near the middle of its curve that its own line does
/// not cross; among those, the first that covers no node, earlier label or other line, else the
/// first that covers no node or label. Each line comes with its bounding box.
fn place_label(lines: &[(&[(f64, f64)], Rect)], own: usize, text: &str, avoid: &[Rect]) -> Rect {
    let (samples, own_box) = lines[own];
    let n = samples.len();
    let mid = samples.get(n / 2).copied().unwrap_or((0.0, 0.0));
    let (a, b) = (
        samples
            .get(n / 2 - usize::from(n > 1))
            .copied()
            .unwrap_or(mid),
        samples
            .get((n / 2 + 1).min(n.saturating_sub(1)))
            .copied()
            .unwrap_or(mid),
    );
    let (tx, ty) = (b.0 - a.0, b.1 - a.1);
    let len = tx.hypot(ty);
    // The normal of the curve at its middle; straight up when the curve has no direction.
    let normal = if len > 0.0 {
        (-ty / len, tx / len)
    } else {
        (0.0, -1.0)
    };
    let size = text_box((0.0, 0.0), text, EDGE_FONT);
    let hits_line = |r: &Rect| line_hits(r, samples, &own_box);
    let mut first_clear = None;
    let mut clear_of_boxes = None;
    for along in [0.0, -0.25, 0.25] {
        let m = samples
            .get(((n as f64) * (0.5 + along)) as usize)
            .copied()
            .unwrap_or(mid);
        for gap in [4.0, 10.0, 20.0, 34.0] {
            for side in [1.0, -1.0] {
                let (nx, ny) = (normal.0 * side, normal.1 * side);
                let reach = nx.abs() * size.w / 2.0 + ny.abs() * size.h / 2.0 + gap;
                let r = text_box((m.0 + nx * reach, m.1 + ny * reach), text, EDGE_FONT);
                if hits_line(&r) {
                    continue;
                }
                first_clear.get_or_insert(r);
                if avoid.iter().any(|o| o.overlaps(&r)) {
                    continue;
                }
                clear_of_boxes.get_or_insert(r);
                let crosses = lines
                    .iter()
                    .enumerate()
                    .any(|(j, (l, b))| j != own && line_hits(&r, l, b));
                if !crosses {
                    return r;
                }
            }
        }
    }
    clear_of_boxes.or(first_clear).unwrap_or_else(|| {
        // No spot clears the line (a tight loop): far above the middle is still readable.
        let far = size.h + 40.0;
        text_box((mid.0, mid.1 - far), text, EDGE_FONT)
    })
}

/// The arrowhead of an edge: filled when allowed (or no verdict), hollow in audit, and a bar
/// across the line when denied; `scale` times its usual size, for heavy lines.
fn head(samples: &[(f64, f64)], decision: Option<Decision>, colour: &str, scale: f64) -> String {
    let n = samples.len();
    if n < 2 {
        return String::new();
    }
    let tip = samples[n - 1];
    let back = samples[n.saturating_sub(3)];
    let (dx, dy) = (tip.0 - back.0, tip.1 - back.1);
    let len = dx.hypot(dy).max(1e-6);
    let (ux, uy) = (dx / len, dy / len);
    let (px, py) = (-uy, ux);
    match decision {
        Some(Decision::Denied) => {
            // A tee: the line stops at a bar, as in "blocked".
            let (cx, cy) = (tip.0 - ux * 3.0 * scale, tip.1 - uy * 3.0 * scale);
            let half = 8.0 * scale;
            format!(
                "<line class=\"head-denied\" x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{colour}\" stroke-width=\"{}\"/>\n",
                cx + px * half,
                cy + py * half,
                cx - px * half,
                cy - py * half,
                4.0 * scale
            )
        }
        d => {
            let base = (tip.0 - ux * HEAD * scale, tip.1 - uy * HEAD * scale);
            let half = 5.0 * scale;
            let fill = if d == Some(Decision::Audit) {
                "white"
            } else {
                colour
            };
            format!(
                "<polygon class=\"head\" points=\"{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}\" fill=\"{fill}\" stroke=\"{colour}\" stroke-width=\"1.5\"/>\n",
                tip.0,
                tip.1,
                base.0 + px * half,
                base.1 + py * half,
                base.0 - px * half,
                base.1 - py * half
            )
        }
    }
}

/// Length of an arrowhead at scale 1.
const HEAD: f64 = 11.0;

/// `line` without its last `cut` pixels: a heavy line stops where its head begins instead of
/// showing beside the head's narrow tip.
fn trim_end(line: &[(f64, f64)], cut: f64) -> Vec<(f64, f64)> {
    let mut left = cut;
    let mut end = line.len();
    while end >= 2 {
        let (a, b) = (line[end - 2], line[end - 1]);
        let len = (b.0 - a.0).hypot(b.1 - a.1);
        if len >= left {
            let t = (len - left) / len.max(1e-9);
            let mut out = line[..end - 1].to_vec();
            out.push((a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t));
            return out;
        }
        left -= len;
        end -= 1;
    }
    line.iter().take(1).copied().collect()
}

fn text_block(out: &mut String, c: (f64, f64), text: &str, font: f64, fill: &str, bold: bool) {
    let lines: Vec<&str> = text.lines().collect();
    let lh = font * LINE_EM;
    let first = c.1 - (lines.len() as f64 - 1.0) * lh / 2.0 + font * 0.35;
    let weight = if bold { " font-weight=\"bold\"" } else { "" };
    let _ = write!(
        out,
        "<text x=\"{:.1}\" y=\"{first:.1}\" text-anchor=\"middle\" font-size=\"{font}\" fill=\"{fill}\"{weight}>",
        c.0
    );
    for (i, l) in lines.iter().enumerate() {
        let dy = if i == 0 { 0.0 } else { lh };
        let _ = write!(
            out,
            "<tspan x=\"{:.1}\" dy=\"{dy:.1}\">{}</tspan>",
            c.0,
            xml_escape(l)
        );
    }
    out.push_str("</text>\n");
}

/// How an edge's line is stroked. The graph strokes by TLS, the diff by what changed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stroke {
    /// Line, head and label-frame colour.
    pub(crate) colour: &'static str,
    /// Line width.
    pub(crate) width: f64,
    /// An SVG dash attribute (` stroke-dasharray="…"`), empty for a solid line.
    pub(crate) dash: &'static str,
    /// A white core along the middle, so the line reads as a double line without colour.
    pub(crate) double: bool,
    /// Below 1 the whole edge (line, head and label) is faded.
    pub(crate) opacity: f64,
}

impl Stroke {
    /// The graph's stroke for a TLS status.
    pub(crate) fn tls(t: TlsStatus, width: f64) -> Self {
        let (colour, dash, _) = tls_look(t);
        Self {
            colour,
            width,
            dash,
            double: false,
            opacity: 1.0,
        }
    }

    /// How much larger than usual the head of this line is: heavy lines get heavy heads.
    fn head_scale(&self) -> f64 {
        (self.width / 4.0).max(1.0)
    }

    /// The line along `samples` (drawn as `path_data` when given), then its head.
    fn draw(
        &self,
        out: &mut String,
        path_data: Option<&str>,
        samples: &[(f64, f64)],
        decision: Option<Decision>,
    ) {
        let scale = self.head_scale();
        if scale > 1.0 && decision != Some(Decision::Denied) {
            let mut d = String::new();
            for (i, p) in trim_end(samples, HEAD * scale - 1.0).iter().enumerate() {
                let _ = write!(
                    d,
                    "{}{:.1} {:.1}",
                    if i == 0 { "M " } else { " L " },
                    p.0,
                    p.1
                );
            }
            self.path(out, &d);
        } else if let Some(d) = path_data {
            self.path(out, d);
        } else if let (Some(a), Some(b)) = (samples.first(), samples.last()) {
            self.path(out, &format!("M {} {} L {} {}", a.0, a.1, b.0, b.1));
        }
        out.push_str(&head(samples, decision, self.colour, scale));
    }

    fn path(&self, out: &mut String, d: &str) {
        let _ = writeln!(
            out,
            "<path d=\"{d}\" fill=\"none\" stroke=\"{}\" stroke-width=\"{}\"{}/>",
            self.colour, self.width, self.dash
        );
        if self.double {
            let _ = writeln!(
                out,
                "<path class=\"core\" d=\"{d}\" fill=\"none\" stroke=\"white\" stroke-width=\"{:.1}\"/>",
                self.width / 3.0
            );
        }
    }

    /// ` opacity="…"` when faded, else nothing.
    fn opacity_attr(&self) -> String {
        if self.opacity < 1.0 {
            format!(" opacity=\"{}\"", self.opacity)
        } else {
            String::new()
        }
    }
}

/// How one edge is drawn, apart from its geometry and label text.
#[derive(Clone, Debug)]
pub(crate) struct EdgeLook {
    /// Classes after `edge`, for readers of the SVG and for tests.
    pub(crate) class: String,
    /// The tooltip (plain text; escaped when written).
    pub(crate) title: String,
    /// The line.
    pub(crate) stroke: Stroke,
    /// The verdict the head shows: a bar for denied, hollow for audit, else filled.
    pub(crate) head: Option<Decision>,
    /// Colour of the label's words.
    pub(crate) text_fill: &'static str,
    /// Whether the label is bold.
    pub(crate) bold: bool,
}

/// The graph's look of an edge: TLS as colour and dashes, the verdict as head and words.
pub(crate) fn graph_look(v: &ViewEdge) -> EdgeLook {
    let (_, _, tls) = tls_look(v.tls);
    let denied = v.policy == Some(Decision::Denied);
    let stroke = Stroke::tls(v.tls, if denied { 3.0 } else { 2.0 });
    EdgeLook {
        class: format!(
            "tls-{tls} verdict-{}",
            v.policy.map_or("none", Decision::as_str)
        ),
        title: format!(
            "{} -> {}: {tls}{}",
            v.from,
            v.to,
            v.policy
                .map(|d| format!(", policy {}", verdict_word(d).to_lowercase()))
                .unwrap_or_default()
        ),
        stroke,
        head: v.policy,
        text_fill: if denied { DENIED_TEXT } else { stroke.colour },
        bold: denied,
    }
}

/// The rows under a drawing: captions, namespaces and line samples, each row below the last.
#[derive(Debug)]
pub(crate) struct Legend {
    out: String,
    /// Baseline of the next row.
    y: f64,
    /// Baseline of the last row written.
    bottom: f64,
    /// Right end of the widest row.
    right: f64,
    /// Past this x a row of samples goes on in a new row, so a small drawing does not get a
    /// page several times its width.
    wrap_at: f64,
}

/// Vertical distance between legend rows of samples.
const ROW: f64 = 24.0;

impl Legend {
    /// An empty legend placed under `d`.
    pub(crate) fn under(d: &Drawing) -> Self {
        let y = d.bounds.h + 2.0 * MARGIN + 16.0;
        Self {
            out: String::new(),
            y,
            bottom: y,
            right: 0.0,
            wrap_at: (d.bounds.w + 2.0 * MARGIN).max(1000.0),
        }
    }

    /// A line of text for the reader.
    pub(crate) fn caption(&mut self, text: &str) {
        let _ = writeln!(
            self.out,
            "<text x=\"{MARGIN}\" y=\"{}\" font-size=\"13\">{}</text>",
            self.y,
            xml_escape(text)
        );
        self.right = self
            .right
            .max(MARGIN + 13.0 * CHAR_EM * text.chars().count() as f64);
        self.bottom = self.y;
        self.y += 22.0;
    }

    /// A swatch per namespace, in its fill.
    pub(crate) fn namespaces(&mut self, namespaces: &[(&str, &str)]) {
        if namespaces.is_empty() {
            return;
        }
        let (mut x, y) = (MARGIN, self.y);
        for (ns, fill) in namespaces {
            let _ = writeln!(
                self.out,
                "<rect x=\"{x}\" y=\"{}\" width=\"14\" height=\"14\" fill=\"{fill}\" stroke=\"#37474f\"/>\n<text x=\"{}\" y=\"{y}\" font-size=\"13\">{}</text>",
                y - 11.0,
                x + 20.0,
                xml_escape(ns)
            );
            x += 40.0 + 13.0 * CHAR_EM * ns.chars().count() as f64;
        }
        self.right = self.right.max(x);
        self.bottom = y;
        self.y += ROW;
    }

    /// A row of samples: a short line in each stroke with its head, and a caption.
    pub(crate) fn samples(&mut self, items: &[(Stroke, Option<Decision>, &str)]) {
        let mut x = MARGIN;
        for (stroke, decision, caption) in items {
            let width = 48.0 + 13.0 * CHAR_EM * caption.chars().count() as f64 + 24.0;
            if x > MARGIN && x + width > self.wrap_at {
                self.y += ROW;
                x = MARGIN;
            }
            let y = self.y;
            let samples: Vec<(f64, f64)> = (0..=8).map(|i| (x + f64::from(i) * 5.0, y)).collect();
            let _ = writeln!(self.out, "<g{}>", stroke.opacity_attr());
            stroke.draw(&mut self.out, None, &samples, *decision);
            let _ = writeln!(
                self.out,
                "</g>\n<text x=\"{}\" y=\"{}\" font-size=\"13\" fill=\"#000000\">{}</text>",
                x + 48.0,
                y + 4.5,
                xml_escape(caption)
            );
            x += width;
            self.right = self.right.max(x);
        }
        self.bottom = self.y;
        self.y += ROW;
    }
}

impl Drawing {
    /// The graph's SVG: the drawing, then a legend of namespaces, TLS styles and (when the view
    /// has verdicts) policy verdicts.
    pub(crate) fn svg(&self, view: &View, namespaces: &[(&str, &str)]) -> String {
        let mut legend = Legend::under(self);
        if let Some(note) = &view.note {
            legend.caption(note);
        }
        legend.namespaces(namespaces);
        legend.samples(&[
            (Stroke::tls(TlsStatus::Mtls, 2.0), None, "solid green: mTLS"),
            (
                Stroke::tls(TlsStatus::Plaintext, 2.0),
                None,
                "dashed red: plaintext",
            ),
            (
                Stroke::tls(TlsStatus::Unknown, 2.0),
                None,
                "dotted grey: TLS unknown",
            ),
        ]);
        if view.edges.iter().any(|e| e.policy.is_some()) {
            let mtls = Stroke::tls(TlsStatus::Mtls, 2.0);
            legend.samples(&[
                (mtls, Some(Decision::Allowed), "allowed by policy"),
                (mtls, Some(Decision::Denied), "DENIED by policy (bar)"),
                (
                    mtls,
                    Some(Decision::Audit),
                    "AUDIT: would be denied (hollow)",
                ),
                (
                    mtls,
                    Some(Decision::Unknown),
                    "policy ?: depends on the request",
                ),
            ]);
        }
        self.page(view, |_, v| graph_look(v), &legend)
    }

    /// The SVG page: the drawing moved to the margin, each edge drawn as `look` says (given its
    /// index in the view), then the legend under it, on white.
    pub(crate) fn page(
        &self,
        view: &View,
        look: impl Fn(usize, &ViewEdge) -> EdgeLook,
        legend: &Legend,
    ) -> String {
        let b = self.bounds;
        let (dx, dy) = (MARGIN - b.x, MARGIN - b.y);
        let mut body = String::new();
        for e in &self.edges {
            let Some(v) = view.edges.get(e.index) else {
                continue;
            };
            edge_svg(&mut body, e, &look(e.index, v), &label_text(v));
        }
        for n in &self.nodes {
            let r = n.rect;
            let (stroke, width, dash) = if n.meshed {
                ("#37474f", 2, "")
            } else {
                ("#757575", 1, " stroke-dasharray=\"4,3\"")
            };
            let _ = writeln!(
                body,
                "<rect class=\"node\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" rx=\"6\" fill=\"{}\" stroke=\"{stroke}\" stroke-width=\"{width}\"{dash}/>",
                r.x, r.y, r.w, r.h, n.fill
            );
            text_block(
                &mut body,
                (r.x + r.w / 2.0, r.y + r.h / 2.0),
                &n.label,
                NODE_FONT,
                "#000000",
                false,
            );
        }
        let width = (b.w + 2.0 * MARGIN).max(legend.right).ceil();
        let height = (legend.bottom + MARGIN).ceil();
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"no\"?>\n<svg width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" xmlns=\"http://www.w3.org/2000/svg\" font-family=\"'{FONT_FAMILY}', sans-serif\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<g transform=\"translate({dx:.1} {dy:.1})\">\n{body}</g>\n{}</svg>\n",
            legend.out
        )
    }
}

/// One edge: its line, its head, and its label on a white background drawn first, so no line
/// (its own included) shows through the words.
fn edge_svg(out: &mut String, e: &DrawnEdge, look: &EdgeLook, text: &str) {
    let s = look.stroke;
    let _ = writeln!(
        out,
        "<g class=\"edge {}\"{}><title>{}</title>",
        look.class,
        s.opacity_attr(),
        xml_escape(&look.title)
    );
    s.draw(out, Some(&e.path_data), &e.samples, look.head);
    let r = e.label_box;
    let _ = writeln!(
        out,
        "<rect class=\"label\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" rx=\"3\" fill=\"white\" fill-opacity=\"0.92\" stroke=\"{}\" stroke-width=\"0.6\"/>",
        r.x, r.y, r.w, r.h, s.colour
    );
    text_block(
        out,
        (r.x + r.w / 2.0, r.y + r.h / 2.0),
        text,
        EDGE_FONT,
        look.text_fill,
        look.bold,
    );
    out.push_str("</g>\n");
}
