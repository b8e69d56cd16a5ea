use std::time::{Duration, SystemTime};

use mesh_model::{
    Edge, EdgeKey, Protocol, Workload, WorkloadRef,
    history::{Change, ChangeKind, ObjectChange, Operation, Thresholds, graph_changes},
};
use resvg::usvg;

use super::*;

fn w(ns: &str, name: &str) -> WorkloadRef {
    WorkloadRef {
        namespace: ns.into(),
        kind: "Deployment".into(),
        name: name.into(),
    }
}

fn graph(edges: &[(WorkloadRef, WorkloadRef, TlsStatus)]) -> MeshGraph {
    let mut g = MeshGraph::empty(Duration::from_secs(60), SystemTime::UNIX_EPOCH);
    for (a, b, tls) in edges {
        for x in [a, b] {
            g.workloads.insert(
                x.clone(),
                Workload {
                    id: x.clone(),
                    meshed: true,
                    ..Workload::default()
                },
            );
        }
        let mut e = Edge::new(EdgeKey {
            src: a.clone(),
            dst: Destination::Workload(b.clone()),
            protocol: Protocol::Http,
        });
        e.tls = *tls;
        e.metrics.rps = 12.5;
        e.metrics.success_rate = Some(0.985);
        e.metrics.latency_p99_ms = Some(15.0);
        g.edges.insert(e.key.clone(), e);
    }
    g
}

fn emojivoto() -> MeshGraph {
    let ns = "emojivoto";
    graph(&[
        (w(ns, "vote-bot"), w(ns, "web"), TlsStatus::Mtls),
        (w(ns, "web"), w(ns, "emoji"), TlsStatus::Mtls),
        (w(ns, "web"), w(ns, "voting"), TlsStatus::Plaintext),
        (w("other", "batch"), w(ns, "web"), TlsStatus::Unknown),
    ])
}

#[test]
fn dot_has_namespace_clusters_and_styled_edges() {
    let d = dot(&emojivoto());
    assert!(d.starts_with("digraph mesh {"));
    assert!(d.contains("subgraph \"cluster_emojivoto\" {"), "{d}");
    assert!(d.contains("subgraph \"cluster_other\" {"), "{d}");
    assert!(d.contains(r##""emojivoto/web" -> "emojivoto/emoji" [label="12.5 rps | 98.5% | p99 15ms", color="#2e7d32", fontcolor="#2e7d32", style=solid"##), "{d}");
    assert!(d.contains(r##""emojivoto/web" -> "emojivoto/voting" [label="12.5 rps | 98.5% | p99 15ms\nPLAINTEXT", color="#c62828", fontcolor="#c62828", style=dashed"##), "{d}");
    assert!(d.contains("style=dotted"));
    assert_eq!(d.matches('{').count(), d.matches('}').count());
}

#[test]
fn svg_carries_names_labels_and_a_legend_in_dejavu() {
    let s = svg(&emojivoto());
    for text in [
        "vote-bot",
        "voting",
        "12.5 rps | 98.5% | p99 15ms",
        "PLAINTEXT",
        "emojivoto",
        "solid green: mTLS",
        "dashed red: plaintext",
    ] {
        assert!(s.contains(text), "{text} missing");
    }
    assert!(!s.contains("Times"), "layout-rs's Times must be replaced");
    assert!(s.contains(FONT_FAMILY));
    assert!(s.contains(MTLS) && s.contains(PLAINTEXT));
}

fn count_text(g: &usvg::Group, rendered: &mut usize, empty: &mut usize) {
    for n in g.children() {
        match n {
            usvg::Node::Group(g) => count_text(g, rendered, empty),
            usvg::Node::Text(t) => {
                if t.flattened().has_children() {
                    *rendered += 1
                } else {
                    *empty += 1
                }
            }
            _ => {}
        }
    }
}

#[test]
fn png_is_produced_and_its_text_survives() {
    let g = emojivoto();
    let png = png(&g).expect("png");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(png.len() > 5_000, "{} bytes", png.len());
    // Every text element must have been turned into glyph outlines, i.e. a font was found.
    let tree = usvg::Tree::from_str(&svg(&g), &svg_options().unwrap()).unwrap();
    let (mut rendered, mut empty) = (0, 0);
    count_text(tree.root(), &mut rendered, &mut empty);
    assert!(rendered >= 10, "{rendered} text elements rendered");
    assert_eq!(empty, 0, "text without glyphs");
}

#[test]
fn large_graphs_collapse_to_namespaces_with_a_note() {
    let edges: Vec<_> = (0..200)
        .map(|i| {
            (
                w(&format!("ns{}", i % 4), &format!("a{i}")),
                w(&format!("ns{}", (i + 1) % 4), &format!("b{i}")),
                TlsStatus::Mtls,
            )
        })
        .collect();
    let g = graph(&edges);
    assert_eq!(g.workloads.len(), 400);
    let v = View::of(&g);
    assert_eq!(v.nodes.len(), 4);
    assert_eq!(v.edges.len(), 4);
    assert!(
        v.note
            .as_deref()
            .unwrap()
            .starts_with("400 workloads: collapsed to one node per namespace")
    );
    assert_eq!(v.edges[0].label, "625 rps | 98.5% | p99 15ms");
    let s = svg(&g);
    assert!(s.contains("400 workloads: collapsed"));
    // A namespace filter narrows it back to workloads.
    let narrowed = g.filter_namespaces(&["ns0".into()]);
    assert!(View::of(&narrowed).note.is_none());
}

#[test]
fn empty_graph_still_renders() {
    let g = MeshGraph::empty(Duration::from_secs(60), SystemTime::UNIX_EPOCH);
    assert!(dot(&g).contains("digraph"));
    assert!(!png(&g).unwrap().is_empty());
}

#[test]
fn numbers_are_compact() {
    assert_eq!(fmt_num(12.0), "12");
    assert_eq!(fmt_num(12.34), "12.3");
    assert_eq!(fmt_num(0.25), "0.25");
    assert_eq!(fmt_num(0.5), "0.5");
    assert_eq!(fmt_num(1234.5), "1234");
}

/// emojivoto with verdicts: vote-bot -> web denied, web -> emoji in audit, web -> voting
/// allowed, batch -> web undecided (per-route policy).
fn with_verdicts() -> MeshGraph {
    let mut g = emojivoto();
    for e in g.edges.values_mut() {
        e.policy.chain = vec!["a step".into()];
        e.policy.decision = match (e.key.src.name.as_str(), e.key.dst.to_string().as_str()) {
            ("vote-bot", _) => Decision::Denied,
            (_, "emojivoto/emoji") => Decision::Audit,
            ("batch", _) => Decision::Unknown,
            _ => Decision::Allowed,
        };
    }
    g
}

fn edge_group<'a>(svg: &'a str, from: &str, to: &str) -> &'a str {
    let title = format!("<title>{from} -&gt; {to}:");
    let start = svg
        .find(&title)
        .unwrap_or_else(|| panic!("no edge {from} -> {to}"));
    let open = svg[..start].rfind("<g class=\"edge").unwrap();
    let end = start + svg[start..].find("</g>").unwrap();
    &svg[open..end]
}

#[test]
fn verdicts_are_told_apart_without_colour() {
    let s = svg(&with_verdicts());
    let denied = edge_group(&s, "emojivoto/vote-bot", "emojivoto/web");
    assert!(denied.contains("verdict-denied"), "{denied}");
    assert!(denied.contains("policy denied</title>"), "{denied}");
    assert!(denied.contains(">DENIED<"), "the label says it: {denied}");
    assert!(
        denied.contains("class=\"head-denied\""),
        "a bar, not an arrowhead: {denied}"
    );
    let audit = edge_group(&s, "emojivoto/web", "emojivoto/emoji");
    assert!(
        audit.contains(">AUDIT<") && audit.contains("fill=\"white\" stroke"),
        "{audit}"
    );
    let allowed = edge_group(&s, "emojivoto/web", "emojivoto/voting");
    assert!(
        allowed.contains("verdict-allowed") && !allowed.contains("DENIED"),
        "{allowed}"
    );
    let unknown = edge_group(&s, "other/batch", "emojivoto/web");
    assert!(unknown.contains(">policy ?<"), "{unknown}");
    for legend in [
        "DENIED by policy (bar)",
        "AUDIT: would be denied (hollow)",
        "policy ?: depends on the request",
    ] {
        assert!(s.contains(legend), "legend {legend:?} missing");
    }
    // The same shapes, not only colours, in DOT.
    let d = dot(&with_verdicts());
    assert!(
        d.contains("DENIED\", color=") && d.contains("arrowhead=tee"),
        "{d}"
    );
    // A graph without verdicts shows no verdict legend.
    assert!(!svg(&emojivoto()).contains("DENIED by policy"));
}

#[test]
fn no_label_crosses_its_own_line_and_the_canvas_fits() {
    for g in [with_verdicts(), emojivoto(), busy()] {
        let view = View::of(&g);
        let d = drawing(&view);
        assert_eq!(d.edges.len(), view.edges.len());
        for e in &d.edges {
            let r = e.label_box;
            for w in e.samples.windows(2) {
                for i in 0..=20 {
                    let t = f64::from(i) / 20.0;
                    let p = (
                        w[0].0 + (w[1].0 - w[0].0) * t,
                        w[0].1 + (w[1].1 - w[0].1) * t,
                    );
                    assert!(
                        !(p.0 > r.x && p.0 < r.x + r.w && p.1 > r.y && p.1 < r.y + r.h),
                        "edge {} crosses its label box {r:?} at {p:?}",
                        view.edges[e.index].label
                    );
                }
            }
        }
        // The page is the drawing plus the legend: no blank band above it.
        let s = svg(&g);
        let tree = usvg::Tree::from_str(&s, &svg_options().unwrap()).unwrap();
        let page = tree.size();
        let drawn = d.bounds;
        let legend_rows = 3.0 * 24.0 + 40.0;
        assert!(
            f64::from(page.height()) <= drawn.h + legend_rows + 40.0,
            "page {}x{} for a drawing of {}x{}",
            page.width(),
            page.height(),
            drawn.w,
            drawn.h
        );
    }
}

#[test]
fn an_edge_label_names_its_worst_route() {
    let mut g = emojivoto();
    let e = g.edges.values_mut().next().unwrap();
    let route = |name: &str, kind: &str, rps: f64, sr: f64| mesh_model::RouteStats {
        id: mesh_model::RouteId {
            kind: kind.into(),
            name: name.into(),
            ..Default::default()
        },
        rps,
        success_rate: Some(sr),
        ..Default::default()
    };
    e.routes = vec![
        route("list", "HTTPRoute", 10.0, 0.99),
        route("vote", "HTTPRoute", 2.0, 0.5),
        route("http", "default", 0.5, 1.0),
    ];
    let v = View::of(&g);
    let labelled: Vec<&str> = v
        .edges
        .iter()
        .map(|e| e.label.as_str())
        .filter(|l| l.contains("worst route"))
        .collect();
    assert_eq!(
        labelled,
        ["12.5 rps | 98.5% | p99 15ms\nworst route vote 50%"]
    );
    // A rate limit's refusals are named too.
    g.edges
        .values_mut()
        .next()
        .unwrap()
        .policy
        .observed_rate_limited_rps = Some(1.0);
    assert!(
        View::of(&g)
            .edges
            .iter()
            .any(|e| e.label.contains("\nrate limited 1 rps (429)"))
    );
    // An edge whose routes all succeed names none.
    for r in &mut g.edges.values_mut().next().unwrap().routes {
        r.success_rate = Some(1.0);
    }
    assert!(
        View::of(&g)
            .edges
            .iter()
            .all(|e| !e.label.contains("worst"))
    );
}

/// A busier mesh than emojivoto: a hub calling everyone, a ring in both directions (two edges
/// between each neighbouring pair share one route in layout-rs) and a cross-namespace call.
fn busy() -> MeshGraph {
    let mut edges = Vec::new();
    for i in 0..8 {
        let ns = if i % 2 == 0 { "shop" } else { "ops" };
        let next = if (i + 1) % 2 == 0 { "shop" } else { "ops" };
        let (a, b) = (
            w(ns, &format!("svc{i}")),
            w(next, &format!("svc{}", (i + 1) % 8)),
        );
        let tls = [TlsStatus::Mtls, TlsStatus::Plaintext, TlsStatus::Unknown][i % 3];
        edges.push((w("shop", "hub"), a.clone(), TlsStatus::Mtls));
        edges.push((a.clone(), b.clone(), tls));
        edges.push((b, a, TlsStatus::Mtls));
    }
    graph(&edges)
}

/// An attribute of the first element in `tag` (its text up to `>`).
fn attr(tag: &str, name: &str) -> f64 {
    let key = format!(" {name}=\"");
    let start = tag
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {tag}"))
        + key.len();
    let len = tag[start..].find('"').unwrap();
    tag[start..start + len].parse().unwrap()
}

#[test]
fn every_label_sits_on_a_background_that_holds_its_text() {
    for g in [with_verdicts(), emojivoto(), busy()] {
        assert_labels_on_backgrounds(&svg(&g), View::of(&g).edges.len());
    }
}

/// Every one of the `edges` edge groups of `s` draws a white background first, then its label,
/// and the label as laid out in DejaVu fits in the background.
fn assert_labels_on_backgrounds(s: &str, edges: usize) {
    // The drawing's offset: labels are drawn inside it.
    let shift = &s[s.find("<g transform=\"translate(").unwrap() + 24..];
    let (dx, dy) = shift[..shift.find(')').unwrap()].split_once(' ').unwrap();
    let (dx, dy): (f64, f64) = (dx.parse().unwrap(), dy.parse().unwrap());
    let groups: Vec<&str> = s.split("<g class=\"edge").skip(1).collect();
    assert_eq!(groups.len(), edges);
    let mut rects = Vec::new();
    for g in &groups {
        let group = &g[..g.find("</g>").unwrap()];
        let rect = group
            .find("<rect class=\"label\"")
            .unwrap_or_else(|| panic!("a label without background: {group}"));
        let text = group.find("<text").expect("a label");
        assert!(
            rect < text,
            "the background is drawn first, behind the text: {group}"
        );
        let tag = &group[rect..rect + group[rect..].find('>').unwrap()];
        assert!(tag.contains("fill=\"white\""), "{tag}");
        rects.push((
            attr(tag, "x") + dx,
            attr(tag, "y") + dy,
            attr(tag, "width"),
            attr(tag, "height"),
        ));
    }
    // The background is sized from the text: the laid-out text, in DejaVu, fits in it.
    let tree = usvg::Tree::from_str(s, &svg_options().unwrap()).unwrap();
    let mut texts = Vec::new();
    collect_text_boxes(tree.root(), &mut texts);
    for (x, y, w, h) in rects {
        let (cx, cy) = (x + w / 2.0, y + h / 2.0);
        let nearest = texts
            .iter()
            .min_by(|a, b| {
                let d = |t: &usvg::Rect| {
                    (f64::from(t.x() + t.width() / 2.0) - cx)
                        .hypot(f64::from(t.y() + t.height() / 2.0) - cy)
                };
                d(a).total_cmp(&d(b))
            })
            .unwrap();
        let (tx, ty) = (f64::from(nearest.x()), f64::from(nearest.y()));
        let (tr, tb) = (f64::from(nearest.right()), f64::from(nearest.bottom()));
        assert!(
            tx >= x - 0.5 && ty >= y - 0.5 && tr <= x + w + 0.5 && tb <= y + h + 0.5,
            "text {nearest:?} spills out of its background {:?}",
            (x, y, w, h)
        );
    }
}

fn collect_text_boxes(g: &usvg::Group, out: &mut Vec<usvg::Rect>) {
    for n in g.children() {
        match n {
            usvg::Node::Group(g) => collect_text_boxes(g, out),
            usvg::Node::Text(t) => out.push(t.abs_bounding_box()),
            _ => {}
        }
    }
}

/// Before and after of a small mesh in which every kind of change happens once: vote-bot -> web
/// goes away, web -> translate appears, web -> emoji fails 40% of its requests, web -> voting
/// loses mTLS and is denied; batch -> web stays as it was. Plus one object change.
fn changed_mesh() -> (MeshGraph, MeshGraph, Vec<Change>) {
    let ns = "emojivoto";
    let before = graph(&[
        (w(ns, "vote-bot"), w(ns, "web"), TlsStatus::Mtls),
        (w(ns, "web"), w(ns, "emoji"), TlsStatus::Mtls),
        (w(ns, "web"), w(ns, "voting"), TlsStatus::Mtls),
        (w("other", "batch"), w(ns, "web"), TlsStatus::Unknown),
    ]);
    let mut after = graph(&[
        (w(ns, "web"), w(ns, "emoji"), TlsStatus::Mtls),
        (w(ns, "web"), w(ns, "voting"), TlsStatus::Plaintext),
        (w("other", "batch"), w(ns, "web"), TlsStatus::Unknown),
        (w(ns, "web"), w(ns, "translate"), TlsStatus::Mtls),
    ]);
    let mut before = before;
    for (g, decision) in [
        (&mut before, Decision::Allowed),
        (&mut after, Decision::Denied),
    ] {
        for e in g.edges.values_mut() {
            if e.key.dst.to_string() == "emojivoto/voting" {
                e.policy.chain = vec!["a step".into()];
                e.policy.decision = decision;
            }
        }
    }
    for e in after.edges.values_mut() {
        if e.key.dst.to_string() == "emojivoto/emoji" {
            e.metrics.success_rate = Some(0.6);
        }
        if e.key.dst.to_string() == "emojivoto/voting" {
            e.no_tls_reason = "<no identity> & no luck".into();
        }
    }
    let mut changes: Vec<Change> = graph_changes(&before, &after, &Thresholds::default())
        .into_iter()
        .map(|what| Change {
            at: SystemTime::UNIX_EPOCH,
            what,
        })
        .collect();
    changes.push(Change {
        at: SystemTime::UNIX_EPOCH,
        what: ChangeKind::Object(Box::new(ObjectChange {
            group: "policy.linkerd.io".into(),
            kind: "AuthorizationPolicy".into(),
            namespace: ns.into(),
            name: "voting".into(),
            operation: Operation::Deleted,
            resource_version: "7".into(),
            field_manager: "kubectl".into(),
            requested_by: String::new(),
            via: String::new(),
            approved_by: String::new(),
            audit_id: String::new(),
            diff: vec![],
        })),
    });
    (before, after, changes)
}

#[test]
fn a_diff_marks_each_change_in_line_and_words_and_explains_them() {
    let (before, after, changes) = changed_mesh();
    let s = diff_svg(&before, &after, &changes);
    let added = edge_group(&s, "emojivoto/web", "emojivoto/translate");
    assert!(
        added.contains("diff-added")
            && added.contains("+ added")
            && added.contains("stroke-width=\"4.5\""),
        "{added}"
    );
    let removed = edge_group(&s, "emojivoto/vote-bot", "emojivoto/web");
    assert!(
        removed.contains("diff-removed")
            && removed.contains("− removed")
            && removed.contains("stroke-dasharray=\"6,4\""),
        "{removed}"
    );
    let regressed = edge_group(&s, "emojivoto/web", "emojivoto/emoji");
    assert!(
        regressed.contains("diff-regressed")
            && regressed.contains("▼ success 98.5% → 60%")
            && regressed.contains("class=\"core\""),
        "a double line and the numbers: {regressed}"
    );
    let changed = edge_group(&s, "emojivoto/web", "emojivoto/voting");
    for text in [
        "diff-changed",
        "⚖ allowed → denied",
        "mTLS → plaintext (&lt;no identity&gt; &amp; no luck)",
        "class=\"head-denied\"",
        "stroke-dasharray=\"12,4,2,4\"",
    ] {
        assert!(changed.contains(text), "{text} missing: {changed}");
    }
    let unchanged = edge_group(&s, "other/batch", "emojivoto/web");
    assert!(
        unchanged.contains("diff-unchanged") && unchanged.contains("opacity=\"0.35\""),
        "drawn faint: {unchanged}"
    );
    for text in [
        "Edge changes: 1 added, 1 removed, 1 regression, 1 verdict change, 1 TLS change",
        "1 object change (see list)",
        "thick solid: + added",
        "thin dashed grey: − removed",
        "double line: ▼ regressed",
        "dash-dot: ⚖ verdict or TLS changed",
        "faint: unchanged",
        "bar: denied now",
        // vote-bot calls no one any more; translate is new.
        "(gone)",
        "(new)",
    ] {
        assert!(s.contains(text), "{text} missing");
    }
    assert_labels_on_backgrounds(&s, 5);
    // It parses, every text gets glyphs, and it rasterises.
    let tree = usvg::Tree::from_str(&s, &svg_options().unwrap()).unwrap();
    let (mut rendered, mut empty) = (0, 0);
    count_text(tree.root(), &mut rendered, &mut empty);
    assert!(rendered >= 15, "{rendered} text elements rendered");
    assert_eq!(empty, 0, "text without glyphs");
    let png = diff_png(&before, &after, &changes).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}

#[test]
fn an_unchanged_graph_diffs_to_faint_edges_only() {
    let g = with_verdicts();
    let s = diff_svg(&g, &g, &[]);
    let groups = s.matches("<g class=\"edge").count();
    assert_eq!(groups, g.edges.len());
    assert_eq!(
        s.matches("<g class=\"edge diff-unchanged\"").count(),
        groups
    );
    for marking in [
        "diff-added",
        "diff-removed",
        "diff-regressed",
        "diff-changed",
        "(new)",
        "(gone)",
        "object change",
    ] {
        assert!(!s.contains(marking), "{marking} in an unchanged diff");
    }
    assert!(s.contains("No edge changes"));
    // The legend still explains the markings, and the denied edge's bar.
    assert!(s.contains("thick solid: + added") && s.contains("bar: denied now"));
    assert!(!diff_png(&g, &g, &[]).unwrap().is_empty());
    let empty = MeshGraph::empty(Duration::from_secs(60), SystemTime::UNIX_EPOCH);
    assert!(!diff_png(&empty, &empty, &[]).unwrap().is_empty());
}

#[test]
fn a_large_diff_collapses_and_counts_changes_per_namespace_pair() {
    let edges: Vec<_> = (0..200)
        .map(|i| {
            (
                w(&format!("ns{}", i % 4), &format!("a{i}")),
                w(&format!("ns{}", (i + 1) % 4), &format!("b{i}")),
                TlsStatus::Mtls,
            )
        })
        .collect();
    let before = graph(&edges);
    let mut after = before.clone();
    // Three ns0 -> ns1 edges stop; one ns1 -> ns2 edge loses half its traffic.
    let gone: Vec<EdgeKey> = after
        .edges
        .keys()
        .filter(|k| k.src.namespace == "ns0")
        .take(3)
        .cloned()
        .collect();
    for k in &gone {
        after.edges.remove(k);
    }
    let slow = after
        .edges
        .values_mut()
        .find(|e| e.key.src.namespace == "ns1")
        .unwrap();
    slow.metrics.rps = 1.0;
    let changes: Vec<Change> = graph_changes(&before, &after, &Thresholds::default())
        .into_iter()
        .map(|what| Change {
            at: SystemTime::UNIX_EPOCH,
            what,
        })
        .collect();
    assert_eq!(changes.len(), 4);
    let s = diff_svg(&before, &after, &changes);
    assert!(s.contains("400 workloads: collapsed to one node per namespace"));
    let removed = edge_group(&s, "ns0", "ns1");
    assert!(
        removed.contains("diff-removed")
            && removed.contains("− removed ×3")
            && removed.contains("47 unchanged edges"),
        "{removed}"
    );
    let slower = edge_group(&s, "ns1", "ns2");
    assert!(
        slower.contains("diff-regressed") && slower.contains(">▼ rps<"),
        "{slower}"
    );
    assert_eq!(s.matches("<g class=\"edge").count(), 4);
    usvg::Tree::from_str(&s, &svg_options().unwrap()).unwrap();
}
