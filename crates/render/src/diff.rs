//! Pictures of what changed between two graphs: the union of both graphs' nodes and edges, laid
//! out as the graph's picture is, each edge drawn by what happened to it. Every marking reads
//! without colour, because these pictures are read in chat clients, dark themes and printouts:
//! each has a line style and width of its own, and a tag in the label ("+ added",
//! "▼ success 99% → 60%"). Object changes are not edges; the caller lists them, and the
//! picture only counts them.
//!
//! The change list decides the markings; the graphs give the geometry and the metrics. An edge
//! in either graph that no change names is drawn faint, as unchanged.

use std::collections::{BTreeMap, BTreeSet};

use mesh_model::{
    Decision, Destination, Edge, EdgeKey, MeshGraph, TlsStatus, WorkloadRef,
    history::{Change, ChangeKind, Metric},
};

use crate::{
    COLLAPSE_THRESHOLD, Node, RenderError, View, ViewEdge,
    canvas::{EdgeLook, Legend, Stroke},
    collapse_note, drawing, dst_node, fmt_num, full_label, legend_namespaces, namespace_nodes,
    svg_to_png, verdict, workload_node, worst,
};

/// Tag lines an edge's label shows at most; a long history of one edge would otherwise push
/// everything else off the picture.
const MAX_TAGS: usize = 4;

/// What happened to an edge, weakest first: a line that stands for several edges (a namespace
/// pair) is drawn as the strongest of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
enum Mark {
    #[default]
    Unchanged,
    Removed,
    Added,
    Changed,
    Regressed,
}

impl Mark {
    const ALL: [Self; 5] = [
        Self::Added,
        Self::Removed,
        Self::Regressed,
        Self::Changed,
        Self::Unchanged,
    ];

    fn word(self) -> &'static str {
        match self {
            Self::Unchanged => "unchanged",
            Self::Removed => "removed",
            Self::Added => "added",
            Self::Changed => "changed",
            Self::Regressed => "regressed",
        }
    }

    /// Width and dashes tell the marks apart in greyscale; colour only helps.
    fn stroke(self) -> Stroke {
        let (colour, width, dash, double, opacity) = match self {
            Self::Unchanged => ("#616161", 1.5, "", false, 0.35),
            Self::Removed => ("#757575", 1.5, " stroke-dasharray=\"6,4\"", false, 1.0),
            Self::Added => ("#1565c0", 4.5, "", false, 1.0),
            Self::Changed => ("#e65100", 3.0, " stroke-dasharray=\"12,4,2,4\"", false, 1.0),
            Self::Regressed => ("#b71c1c", 7.0, "", true, 1.0),
        };
        Stroke {
            colour,
            width,
            dash,
            double,
            opacity,
        }
    }

    fn text_fill(self) -> &'static str {
        match self {
            Self::Unchanged => "#424242",
            Self::Removed => "#616161",
            Self::Added => "#0d47a1",
            Self::Changed => "#bf360c",
            Self::Regressed => "#b71c1c",
        }
    }

    fn caption(self) -> &'static str {
        match self {
            Self::Unchanged => "faint: unchanged",
            Self::Removed => "thin dashed grey: − removed",
            Self::Added => "thick solid: + added",
            Self::Changed => "dash-dot: ⚖ verdict or TLS changed",
            Self::Regressed => "double line: ▼ regressed",
        }
    }
}

/// One label line saying what changed. On a namespace pair only `kind` is shown, with a count,
/// since the numbers of several edges do not add up ("▼ success ×2").
#[derive(Clone, Debug, PartialEq)]
struct Tag {
    /// What changed: `+ added`, `▼ success`, `⚖ allowed → denied`.
    kind: String,
    /// The numbers or reason on one edge: ` 99% → 60%`.
    detail: String,
}

impl Tag {
    fn new(kind: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            detail: detail.into(),
        }
    }
}

/// One edge of either graph and what the changes say happened to it.
#[derive(Debug, Default)]
struct EdgeDiff<'a> {
    /// The edge as it is now, or as it was last seen when it is gone; `None` when only a
    /// change names it.
    edge: Option<&'a Edge>,
    /// Added or removed: the later of the two when the list has both (an edge that flapped).
    presence: Option<Mark>,
    /// The strongest other change.
    other: Mark,
    tags: Vec<Tag>,
}

impl EdgeDiff<'_> {
    fn mark(&self) -> Mark {
        self.presence.unwrap_or_default().max(self.other)
    }

    /// The verdict its head shows: the current one; a removed edge has none.
    fn head(&self) -> Option<Decision> {
        if self.mark() == Mark::Removed {
            return None;
        }
        self.edge.and_then(|e| verdict(&e.policy))
    }
}

fn tls_word(t: TlsStatus) -> &'static str {
    match t {
        TlsStatus::Mtls => "mTLS",
        TlsStatus::Plaintext => "plaintext",
        TlsStatus::Unknown => "TLS unknown",
    }
}

/// Every edge of both graphs and of the changes, with its marking and tags.
fn edge_diffs<'a>(
    before: &'a MeshGraph,
    after: &'a MeshGraph,
    changes: &'a [Change],
) -> BTreeMap<&'a EdgeKey, EdgeDiff<'a>> {
    let mut out: BTreeMap<&EdgeKey, EdgeDiff<'_>> = BTreeMap::new();
    // `after` last, so an edge in both is shown as it is now.
    for (k, e) in before.edges.iter().chain(&after.edges) {
        out.entry(k).or_default().edge = Some(e);
    }
    for c in changes {
        let Some(key) = c.what.edge() else {
            continue;
        };
        let d = out.entry(key).or_default();
        let (mark, tag) = match &c.what {
            ChangeKind::EdgeAdded(e) => {
                d.presence = Some(Mark::Added);
                d.edge = Some(after.edges.get(key).unwrap_or(e));
                (Mark::Unchanged, Tag::new("+ added", ""))
            }
            ChangeKind::EdgeRemoved(e) => {
                // The edge as last seen carrying traffic: `after` may still hold it, idle.
                d.presence = Some(Mark::Removed);
                d.edge = Some(e);
                (Mark::Unchanged, Tag::new("− removed", ""))
            }
            ChangeKind::TlsChanged {
                from, to, reason, ..
            } => {
                let reason: String = reason.chars().take(40).collect();
                let detail = if reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({reason})")
                };
                let kind = format!("{} → {}", tls_word(*from), tls_word(*to));
                (Mark::Changed, Tag::new(kind, detail))
            }
            ChangeKind::VerdictChanged { from, to, .. } => {
                let kind = format!("⚖ {} → {}", from.as_str(), to.as_str());
                (Mark::Changed, Tag::new(kind, ""))
            }
            ChangeKind::Regression {
                metric, from, to, ..
            } => {
                let (kind, detail) = match metric {
                    Metric::SuccessRate => (
                        "▼ success",
                        format!(" {}% → {}%", fmt_num(from * 100.0), fmt_num(to * 100.0)),
                    ),
                    Metric::LatencyP99 => (
                        "▼ p99",
                        format!(" {}ms → {}ms", fmt_num(*from), fmt_num(*to)),
                    ),
                    Metric::Rps => ("▼ rps", format!(" {} → {}", fmt_num(*from), fmt_num(*to))),
                };
                (Mark::Regressed, Tag::new(kind, detail))
            }
            ChangeKind::Object(_) => continue,
        };
        d.other = d.other.max(mark);
        if !d.tags.contains(&tag) {
            d.tags.push(tag);
        }
    }
    out
}

/// Label lines, at most [`MAX_TAGS`] of them and a count of the rest.
fn capped(mut lines: Vec<String>) -> Vec<String> {
    if lines.len() > MAX_TAGS {
        let rest = lines.len() - (MAX_TAGS - 1);
        lines.truncate(MAX_TAGS - 1);
        lines.push(format!("… {rest} more changes"));
    }
    lines
}

/// A diff as a view to lay out, with each view edge's marking and head alongside.
struct DiffView {
    view: View,
    looks: Vec<(Mark, Option<Decision>)>,
}

/// Every workload of both graphs, and an edge per edge key.
fn full(
    before: &MeshGraph,
    after: &MeshGraph,
    diffs: &BTreeMap<&EdgeKey, EdgeDiff<'_>>,
) -> DiffView {
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    for (g, other, word) in [(before, after, "(gone)"), (after, before, "(new)")] {
        for w in g.workloads.values() {
            let mut n = workload_node(w);
            if !other.workloads.contains_key(&w.id) {
                n.label.push('\n');
                n.label.push_str(word);
            }
            nodes.insert(n.id.clone(), n);
        }
    }
    let mut edges = Vec::new();
    let mut looks = Vec::new();
    for (key, d) in diffs {
        let from = key.src.to_string();
        nodes
            .entry(from.clone())
            .or_insert_with(|| workload_ref_node(&key.src));
        let (to, ns) = dst_node(&key.dst);
        nodes.entry(to.clone()).or_insert_with(|| Node {
            id: to.clone(),
            label: to.clone(),
            namespace: ns,
            meshed: false,
        });
        let mut lines = capped(
            d.tags
                .iter()
                .map(|t| format!("{}{}", t.kind, t.detail))
                .collect(),
        );
        lines.extend(d.edge.map(full_label));
        edges.push(ViewEdge {
            from,
            to,
            tls: d.edge.map_or(TlsStatus::Unknown, |e| e.tls),
            label: lines.join("\n"),
            // Heads come from the looks: the label already says what changed.
            policy: None,
        });
        looks.push((d.mark(), d.head()));
    }
    DiffView {
        view: View {
            nodes: nodes.into_values().collect(),
            edges,
            note: None,
        },
        looks,
    }
}

/// The node of a caller that neither graph lists: it reports traffic, so it has a proxy.
fn workload_ref_node(w: &WorkloadRef) -> Node {
    Node {
        id: w.to_string(),
        label: format!("{}\n{}", w.name, w.namespace),
        namespace: w.namespace.clone(),
        meshed: true,
    }
}

/// One node per namespace, and an edge per namespace pair that counts its edges' changes.
fn collapsed(
    workloads: &BTreeSet<&WorkloadRef>,
    diffs: &BTreeMap<&EdgeKey, EdgeDiff<'_>>,
) -> DiffView {
    #[derive(Default)]
    struct Pair {
        mark: Mark,
        kinds: Vec<(String, usize)>,
        unchanged: usize,
        head: Option<Decision>,
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for w in workloads {
        *counts.entry(&w.namespace).or_default() += 1;
    }
    let mut authorities = BTreeSet::new();
    let mut pairs: BTreeMap<(&str, &str), Pair> = BTreeMap::new();
    for (key, d) in diffs {
        counts.entry(&key.src.namespace).or_default();
        let to = match &key.dst {
            Destination::Workload(w) => {
                counts.entry(&w.namespace).or_default();
                w.namespace.as_str()
            }
            Destination::Authority(a) => {
                authorities.insert(a.clone());
                a.as_str()
            }
        };
        let p = pairs.entry((&key.src.namespace, to)).or_default();
        p.mark = p.mark.max(d.mark());
        p.head = worst(p.head, d.head());
        if d.mark() == Mark::Unchanged {
            p.unchanged += 1;
        }
        for t in &d.tags {
            match p.kinds.iter_mut().find(|(k, _)| *k == t.kind) {
                Some((_, n)) => *n += 1,
                None => p.kinds.push((t.kind.clone(), 1)),
            }
        }
    }
    let mut edges = Vec::new();
    let mut looks = Vec::new();
    for ((from, to), p) in pairs {
        let mut lines = capped(
            p.kinds
                .into_iter()
                .map(|(k, n)| if n > 1 { format!("{k} ×{n}") } else { k })
                .collect(),
        );
        match p.unchanged {
            0 => {}
            1 => lines.push("1 unchanged edge".into()),
            n => lines.push(format!("{n} unchanged edges")),
        }
        edges.push(ViewEdge {
            from: from.to_owned(),
            to: to.to_owned(),
            tls: TlsStatus::Unknown,
            label: lines.join("\n"),
            policy: None,
        });
        looks.push((p.mark, p.head));
    }
    DiffView {
        view: View {
            nodes: namespace_nodes(&counts, authorities),
            edges,
            note: Some(collapse_note(workloads.len())),
        },
        looks,
    }
}

/// The caption that sums the changes up: `changes: 1 added, 2 regressions`.
fn summary(changes: &[Change]) -> (String, Option<String>) {
    let mut n = [0_usize; 6];
    for c in changes {
        let i = match c.what {
            ChangeKind::EdgeAdded(_) => 0,
            ChangeKind::EdgeRemoved(_) => 1,
            ChangeKind::Regression { .. } => 2,
            ChangeKind::VerdictChanged { .. } => 3,
            ChangeKind::TlsChanged { .. } => 4,
            ChangeKind::Object(_) => 5,
        };
        n[i] += 1;
    }
    let plural =
        |k: usize, one: &str, many: &str| format!("{k} {}", if k == 1 { one } else { many });
    let parts: Vec<String> = [
        (n[0], "added", "added"),
        (n[1], "removed", "removed"),
        (n[2], "regression", "regressions"),
        (n[3], "verdict change", "verdict changes"),
        (n[4], "TLS change", "TLS changes"),
    ]
    .into_iter()
    .filter(|(k, _, _)| *k > 0)
    .map(|(k, one, many)| plural(k, one, many))
    .collect();
    let edges = if parts.is_empty() {
        "No edge changes".to_owned()
    } else {
        format!("Edge changes: {}", parts.join(", "))
    };
    let objects = (n[5] > 0).then(|| {
        format!(
            "{} (see list)",
            plural(n[5], "object change", "object changes")
        )
    });
    (edges, objects)
}

/// SVG of what changed from `before` to `after`: both graphs' nodes and edges, each edge marked
/// by the `changes` that name it (added, removed, regressed, verdict or TLS changed; the rest
/// faint), a caption counting the changes, and a legend of the markings. Past
/// [`COLLAPSE_THRESHOLD`] workloads it shows namespaces, with the changes counted per pair.
pub fn diff_svg(before: &MeshGraph, after: &MeshGraph, changes: &[Change]) -> String {
    let diffs = edge_diffs(before, after, changes);
    let workloads: BTreeSet<&WorkloadRef> = before
        .workloads
        .keys()
        .chain(after.workloads.keys())
        .collect();
    let DiffView { view, looks } = if workloads.len() > COLLAPSE_THRESHOLD {
        collapsed(&workloads, &diffs)
    } else {
        full(before, after, &diffs)
    };
    let d = drawing(&view);
    let mut legend = Legend::under(&d);
    let (edges, objects) = summary(changes);
    legend.caption(&edges);
    if let Some(objects) = objects {
        legend.caption(&objects);
    }
    if let Some(note) = &view.note {
        legend.caption(note);
    }
    legend.namespaces(&legend_namespaces(&view));
    let marks: Vec<(Stroke, Option<Decision>, &str)> = Mark::ALL
        .iter()
        .map(|m| (m.stroke(), None, m.caption()))
        .collect();
    legend.samples(&marks);
    let grey = Mark::Removed.stroke();
    let grey = Stroke { dash: "", ..grey };
    let verdicts: Vec<(Stroke, Option<Decision>, &str)> = [
        (Decision::Denied, "bar: denied now"),
        (Decision::Audit, "hollow head: audit now"),
    ]
    .into_iter()
    .filter(|(d, _)| looks.iter().any(|l| l.1 == Some(*d)))
    .map(|(d, caption)| (grey, Some(d), caption))
    .collect();
    if !verdicts.is_empty() {
        legend.samples(&verdicts);
    }
    d.page(
        &view,
        |i, v| {
            let (mark, head) = looks.get(i).copied().unwrap_or_default();
            EdgeLook {
                class: format!("diff-{}", mark.word()),
                title: format!("{} -> {}: {}", v.from, v.to, mark.word()),
                stroke: mark.stroke(),
                head,
                text_fill: mark.text_fill(),
                bold: false,
            }
        },
        &legend,
    )
}

/// [`diff_svg`] as a PNG.
pub fn diff_png(
    before: &MeshGraph,
    after: &MeshGraph,
    changes: &[Change],
) -> Result<Vec<u8>, RenderError> {
    svg_to_png(&diff_svg(before, after, changes))
}
