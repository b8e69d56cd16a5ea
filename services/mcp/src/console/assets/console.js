// The console's graph page: draws the mesh as SVG from the same watch gRPC clients use
// (server-sent events: a snapshot, then deltas), keeps every node where it first appeared so
// the picture does not jump as deltas arrive, and opens panels, the time slider and the
// what-if. Plain DOM, no libraries; text always goes in as text, never as markup.
'use strict';
(() => {
  const SVG = 'http://www.w3.org/2000/svg';
  const COL_W = 240, ROW_H = 58, NODE_W = 170, NODE_H = 34, TOP = 56, LEFT = 24;
  const csrf = document.querySelector('meta[name=csrf]').content;
  const canvas = document.getElementById('canvas');
  const panel = document.getElementById('panel');
  const statusEl = document.getElementById('status');
  const whenEl = document.getElementById('when');
  const slider = document.getElementById('slider');
  const changesEl = document.getElementById('changes');
  const filters = document.getElementById('filters');
  const search = document.getElementById('f-search');

  // The graph as the watch last described it, and the moments deltas reached the page.
  const live = { workloads: new Map(), edges: new Map(), version: 0, epoch: 0 };
  window.__lmcpDeltas = [];
  let source = null;
  let retryIn = 1000; // ms before reconnecting after the browser gave up, doubling to 30 s
  let past = null; // { graph, at, diff } while the slider is back in time
  // Bumped whenever the page changes between live and a moment: a slow answer for a moment the
  // person has left since is dropped.
  let generation = 0;
  let selected = null; // { edge: key } | { workload: name }
  // Where each node sits: its namespace's column and its row, fixed once given.
  let layout = { columns: new Map(), slots: new Map(), rows: new Map() };

  const wref = (w) => (w ? `${w.namespace}/${w.name}` : '');
  const dstName = (e) => (e.dst ? wref(e.dst) : e.dstAuthority || '?');
  const edgeKey = (e) => `${wref(e.src)}>${dstName(e)}|${e.protocol || ''}`;
  const tlsWord = (t) => ({ MTLS: 'mtls', PLAINTEXT: 'plaintext' })[t] || 'unknown';
  const verdictWord = (e) => {
    const d = e.policy && e.policy.decision;
    return ({ ALLOWED: 'allowed', DENIED: 'denied', AUDIT: 'audit', UNKNOWN: 'unknown' })[d] || 'none';
  };
  const mark = { allowed: '✓', denied: '✕', audit: '◌', unknown: '?', none: '' };
  const num = (v, digits = 2) => (v === undefined || v === null ? '–' : Number(v).toFixed(digits));

  function el(tag, attrs, ...kids) {
    const n = tag.startsWith('svg:') ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') n.setAttribute('class', v);
      else if (k.startsWith('on')) n.addEventListener(k.slice(2), v);
      else n.setAttribute(k, v === true ? '' : String(v));
    }
    for (const k of kids.flat(Infinity)) {
      if (k === undefined || k === null || k === false) continue;
      n.append(k instanceof Node ? k : document.createTextNode(String(k)));
    }
    return n;
  }

  // Replaces `node`'s children with `kids`, flattened, leaving out null and false.
  function fill(node, ...kids) {
    node.replaceChildren(...kids.flat(Infinity).filter((k) => k !== null && k !== undefined && k !== false)
      .map((k) => (k instanceof Node ? k : document.createTextNode(String(k)))));
  }

  function setStatus(text, cls) {
    statusEl.textContent = text;
    statusEl.className = `status ${cls || ''}`;
  }

  function params() {
    const p = new URLSearchParams();
    for (const [k, v] of new FormData(filters)) if (v !== '' && !(k === 'min_rps' && Number(v) === 0)) p.set(k, v);
    return p;
  }

  // ---- the live feed ----
  function connect() {
    if (source) source.close();
    live.workloads.clear();
    live.edges.clear();
    layout = { columns: new Map(), slots: new Map(), rows: new Map() };
    forget();
    setStatus('connecting…');
    source = new EventSource(`/ui/api/events?${params()}`);
    source.addEventListener('open', () => { retryIn = 1000; setStatus('live', 'ok'); });
    source.addEventListener('error', () => {
      if (source.readyState !== EventSource.CLOSED) { setStatus('reconnecting…', 'warn'); return; }
      // The browser gave up (the answer was not a stream): signed out, or busy; say which.
      setStatus('disconnected; retrying…', 'warn');
      const lost = source;
      fetch('/ui/api/graph?namespace=-', { credentials: 'same-origin' }).then((r) => {
        if (r.status === 401) { window.location.assign('/ui/login'); return; }
        setTimeout(() => { if (source === lost && !past) connect(); }, retryIn = Math.min(retryIn * 2, 30000));
      }).catch(() => setTimeout(() => { if (source === lost && !past) connect(); }, retryIn = Math.min(retryIn * 2, 30000)));
    });
    source.addEventListener('failed', (m) => setStatus(`watch failed: ${m.data}`, 'bad'));
    source.addEventListener('snapshot', (m) => {
      const g = JSON.parse(m.data);
      window.__lmcpSnapshotBytes = m.data.length;
      live.workloads.clear();
      live.edges.clear();
      for (const w of g.workloads || []) live.workloads.set(wref(w.ref), w);
      for (const e of g.edges || []) live.edges.set(edgeKey(e), e);
      live.version = Number(g.version || 0);
      live.epoch = Number(g.epoch || 0);
      showSources(g.sources);
      if (!past) draw();
    });
    source.addEventListener('delta', (m) => {
      const d = JSON.parse(m.data);
      const changed = { workloads: (d.removedWorkloads || []).length + (d.upsertedWorkloads || []).length > 0, edges: new Set() };
      for (const w of d.removedWorkloads || []) live.workloads.delete(wref(w));
      for (const w of d.upsertedWorkloads || []) live.workloads.set(wref(w.ref), w);
      for (const e of d.removedEdges || []) { live.edges.delete(edgeKey(e)); changed.edges.add(edgeKey(e)); }
      for (const e of d.upsertedEdges || []) { live.edges.set(edgeKey(e), e); changed.edges.add(edgeKey(e)); }
      live.version = Number(d.toVersion || 0);
      live.epoch = Number(d.epoch || 0);
      showSources(d.sources);
      // Arrival and drawn, by the page's clock (epoch milliseconds): what `make bench` reads.
      const seen = { at: performance.timeOrigin + performance.now(), generatedAt: d.generatedAt, version: live.version };
      if (!past) drawDelta(changed);
      seen.drawnAt = performance.timeOrigin + performance.now();
      window.__lmcpDeltas.push(seen);
      if (window.__lmcpDeltas.length > 1000) window.__lmcpDeltas.shift();
    });
    source.addEventListener('heartbeat', (m) => showSources(JSON.parse(m.data).sources));
  }

  function showSources(sources) {
    const bad = (sources || []).filter((s) => !s.ok);
    if (bad.length) setStatus(`stale: ${bad.map((s) => `${s.source}: ${s.error || 'not ok'}`).join('; ')}`, 'warn');
    else if (source && source.readyState === EventSource.OPEN) setStatus('live', 'ok');
  }

  // ---- layout: each namespace a block of columns, a workload's column its depth in the
  // namespace's call chain (callers left of callees), its row the next free one there. A slot,
  // once given, is kept: new workloads find room, old ones never move. ----
  const MAX_DEPTH = 4;
  const nsOf = (n) => (n.includes('/') ? n.split('/')[0] : '(external)');

  function depths(names, edges) {
    const callers = new Map();
    for (const e of edges.values()) {
      const a = wref(e.src), b = dstName(e);
      if (a === b || nsOf(a) !== nsOf(b)) continue;
      if (!callers.has(b)) callers.set(b, []);
      callers.get(b).push(a);
    }
    const memo = new Map();
    const depth = (n, seen) => {
      if (memo.has(n)) return memo.get(n);
      if (seen.has(n) || seen.size > MAX_DEPTH) return 0;
      seen.add(n);
      let d = 0;
      for (const c of callers.get(n) || []) d = Math.max(d, 1 + depth(c, seen));
      seen.delete(n);
      d = Math.min(d, MAX_DEPTH - 1);
      memo.set(n, d);
      return d;
    };
    const out = new Map();
    for (const n of names) out.set(n, depth(n, new Set()));
    return out;
  }

  // Fresh workloads get their slots in name order, namespaces in name order when several
  // arrive at once, so a fresh page and a reconnect agree.
  function place(workloads, edges) {
    const names = new Set(workloads.keys());
    for (const e of edges.values()) {
      names.add(wref(e.src));
      names.add(dstName(e));
    }
    names.delete('');
    const fresh = [...names].filter((n) => !layout.slots.has(n)).sort();
    if (!fresh.length) return names;
    const d = depths(names, edges);
    for (const ns of [...new Set(fresh.map(nsOf))].sort()) {
      if (layout.columns.has(ns)) continue;
      const width = 1 + Math.max(0, ...fresh.filter((n) => nsOf(n) === ns).map((n) => d.get(n) || 0));
      let first = 0;
      for (const c of layout.columns.values()) first = Math.max(first, c.first + c.width);
      layout.columns.set(ns, { first, width });
    }
    for (const n of fresh) {
      const c = layout.columns.get(nsOf(n));
      const col = c.first + Math.min(d.get(n) || 0, c.width - 1);
      const row = layout.rows.get(col) || 0;
      layout.rows.set(col, row + 1);
      layout.slots.set(n, { col, row, x: LEFT + col * COL_W, y: TOP + row * ROW_H });
    }
    return names;
  }

  function edgePath(a, b, bend) {
    const x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2;
    let x2 = b.x, y2 = b.y + NODE_H / 2;
    if (a.col === b.col) {
      // Within a namespace: loop out to the right, wider for rows further apart.
      x2 = b.x + NODE_W;
      const out = 40 + 12 * Math.abs(a.row - b.row) + bend;
      return [`M${x1},${y1} C${x1 + out},${y1} ${x2 + out},${y2} ${x2 + 6},${y2}`, (x1 + out * 0.75), (y1 + y2) / 2];
    }
    if (b.x < a.x) {
      const x1b = a.x, x2b = b.x + NODE_W;
      return [`M${x1b},${y1} C${x1b - 60},${y1 - bend} ${x2b + 60},${y2 - bend} ${x2b + 6},${y2}`, (x1b + x2b) / 2, (y1 + y2) / 2 - bend];
    }
    const dx = (x2 - x1) / 2;
    // Past a column of workloads: dip below its row instead of through its boxes.
    if (b.col - a.col > 1) bend += 60 * (b.col - a.col - 1);
    return [`M${x1},${y1} C${x1 + dx},${y1 + bend} ${x2 - dx},${y2 + bend} ${x2 - 6},${y2}`, (x1 + x2) / 2, (y1 + y2) / 2 + bend];
  }

  // ---- drawing: elements are kept per edge and per workload and updated in place, so a
  // delta changes attributes rather than the page (and what a person points at stays put) ----
  let svg = null;
  const drawn = { edges: new Map(), nodes: new Map(), ns: new Map(), layers: null };

  function setAttrs(n, attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) n.removeAttribute(k);
      else n.setAttribute(k, String(v));
    }
  }

  function forget() {
    svg = null;
    drawn.edges.clear();
    drawn.nodes.clear();
    drawn.ns.clear();
  }

  function frame() {
    if (svg) return;
    svg = el('svg:svg', { id: 'graph', role: 'img', 'aria-label': 'mesh graph' });
    svg.append(el('svg:defs', {},
      el('svg:marker', { id: 'head', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' }, el('svg:path', { d: 'M0,0 L10,5 L0,10 z', class: 'head' })),
      el('svg:marker', { id: 'head-hollow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' }, el('svg:path', { d: 'M0,0 L10,5 L0,10 z', class: 'head-hollow' })),
      el('svg:marker', { id: 'bar', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 8, markerHeight: 8, orient: 'auto' }, el('svg:path', { d: 'M8,0 L8,10', class: 'bar' }))));
    drawn.layers = { ns: el('svg:g', { class: 'namespaces' }), edges: el('svg:g', { class: 'edges' }), nodes: el('svg:g', { class: 'nodes' }) };
    svg.append(drawn.layers.ns, drawn.layers.edges, drawn.layers.nodes);
    fill(canvas, svg);
  }

  function pick(what) {
    selected = what;
    if (what.edge) showEdge(what.edge); else showWorkload(what.workload);
    draw();
  }

  function edgeEl(k) {
    let g = drawn.edges.get(k);
    if (g) return g;
    g = el('svg:g', { tabindex: 0, onclick: () => pick({ edge: k }), onkeydown: (ev) => { if (ev.key === 'Enter') pick({ edge: k }); } },
      el('svg:title'), el('svg:path', { class: 'hit' }), el('svg:path'), el('svg:text', { class: 'edge-label' }));
    drawn.layers.edges.append(g);
    drawn.edges.set(k, g);
    return g;
  }

  function nodeEl(n) {
    let g = drawn.nodes.get(n);
    if (g) return g;
    g = el('svg:g', { 'data-workload': n, tabindex: 0, onclick: () => pick({ workload: n }), onkeydown: (ev) => { if (ev.key === 'Enter') pick({ workload: n }); } },
      el('svg:rect', { width: NODE_W, height: NODE_H, rx: 6 }), el('svg:text', {}, n.includes('/') ? n.split('/')[1] : n));
    drawn.layers.nodes.append(g);
    drawn.nodes.set(n, g);
    return g;
  }

  function nsEl(ns) {
    let g = drawn.ns.get(ns);
    if (g) return g;
    g = el('svg:g', { class: 'namespace', 'data-namespace': ns }, el('svg:rect', { rx: 8 }), el('svg:text', { class: 'ns-label' }, ns));
    drawn.layers.ns.append(g);
    drawn.ns.set(ns, g);
    return g;
  }

  // Draws (or updates in place) edge `e` of `shown`; its key, or null without both slots.
  function drawEdge(shown, e, extra) {
    const k = edgeKey(e);
    const a = layout.slots.get(wref(e.src)), b = layout.slots.get(dstName(e));
    if (!a || !b) return null;
    const tls = tlsWord(e.tls), verdict = verdictWord(e);
    // A pair calling both ways: bend each way apart.
    const back = shown.edges.has(`${dstName(e)}>${wref(e.src)}|${e.protocol || ''}`);
    const [d, mx, my] = edgePath(a, b, back ? 14 : 0);
    const m = e.metrics || {};
    const head = verdict === 'denied' ? 'url(#bar)' : verdict === 'audit' ? 'url(#head-hollow)' : 'url(#head)';
    const g = edgeEl(k);
    setAttrs(g, {
      class: ['edge', `tls-${tls}`, `verdict-${verdict}`, extra, selected && selected.edge === k ? 'selected' : ''].filter(Boolean).join(' '),
      'data-src': wref(e.src), 'data-dst': dstName(e), 'data-tls': tls, 'data-verdict': verdict, 'data-key': k,
      // Looking back: how this edge differs from now (added since, removed since, changed).
      'data-diff': past ? (extra.split(' ')[0].replace('diff-', '') || 'same') : null,
    });
    const [title, hit, line, label] = g.children;
    title.textContent = `${wref(e.src)} → ${dstName(e)}: ${tls}, ${verdict}, ${num(m.rps || 0, 1)} rps`;
    setAttrs(hit, { d });
    setAttrs(line, { d, class: `edge-line tls-${tls}`, 'stroke-dasharray': tls === 'plaintext' ? '8 5' : tls === 'unknown' ? '2 4' : null, 'marker-end': head });
    setAttrs(label, { x: mx, y: my - 4 });
    label.textContent = `${mark[verdict]} ${num(m.rps || 0, 1)} rps`;
    return k;
  }

  // After a delta that changed only edges between workloads already placed: those edges alone.
  // Anything else (a workload, a fresh slot, looking back) redraws the whole picture.
  function drawDelta(changed) {
    if (past || !svg || changed.workloads) { draw(); return; }
    for (const k of changed.edges) {
      const e = live.edges.get(k);
      // A removed edge may leave a box nothing refers to; a new one may need a box: redraw all.
      if (!e || !drawn.nodes.has(wref(e.src)) || !drawn.nodes.has(dstName(e))) { draw(); return; }
    }
    for (const k of changed.edges) {
      const e = live.edges.get(k);
      if (e) drawEdge(live, e, '');
      else { const g = drawn.edges.get(k); if (g) { g.remove(); drawn.edges.delete(k); } }
      // Its reverse bends apart from it only while both exist.
      const [src, rest] = k.split('>');
      const [dst, proto] = rest.split('|');
      const back = live.edges.get(`${dst}>${src}|${proto}`);
      if (back) drawEdge(live, back, '');
    }
    setAttrs(svg, { 'data-version': live.version });
    document.body.dataset.version = String(live.version);
  }

  function draw() {
    frame();
    const shown = past ? past.graph : live;
    const names = place(shown.workloads, shown.edges);
    // Looking back: edges there now but not then are drawn faint (the difference).
    const ghosts = new Map();
    if (past) {
      for (const [k, e] of live.edges) if (!shown.edges.has(k)) ghosts.set(k, e);
      for (const e of ghosts.values()) { names.add(wref(e.src)); names.add(dstName(e)); }
      place(new Map(), ghosts);
    }
    let maxCol = 0, maxRow = 0;
    for (const n of names) {
      const s = layout.slots.get(n);
      if (!s) continue;
      maxCol = Math.max(maxCol, s.col);
      maxRow = Math.max(maxRow, s.row);
    }
    const width = LEFT * 2 + (maxCol + 1) * COL_W;
    const height = TOP + (maxRow + 1) * ROW_H + 30;
    setAttrs(svg, { width, height, viewBox: `0 0 ${width} ${height}`, 'data-version': live.version });
    const usedNs = new Set([...names].map(nsOf));
    for (const [ns, c] of layout.columns) {
      if (!usedNs.has(ns)) { const g = drawn.ns.get(ns); if (g) { g.remove(); drawn.ns.delete(ns); } continue; }
      let rows = 0;
      for (let i = c.first; i < c.first + c.width; i++) rows = Math.max(rows, layout.rows.get(i) || 0);
      const g = nsEl(ns);
      setAttrs(g.children[0], { x: LEFT + c.first * COL_W - 10, y: TOP - 34, width: c.width * COL_W - COL_W + NODE_W + 20, height: rows * ROW_H + 30 });
      setAttrs(g.children[1], { x: LEFT + c.first * COL_W, y: TOP - 14 });
    }
    const keep = new Set();
    for (const e of shown.edges.values()) {
      let extra = '';
      if (past) {
        const now = live.edges.get(edgeKey(e));
        if (!now) extra = 'diff-removed';
        else if (tlsWord(now.tls) !== tlsWord(e.tls) || verdictWord(now) !== verdictWord(e)) extra = 'diff-changed';
      }
      const k = drawEdge(shown, e, extra);
      if (k) keep.add(k);
    }
    for (const e of ghosts.values()) {
      const k = drawEdge(shown, e, 'diff-added ghost');
      if (k) keep.add(k);
    }
    for (const [k, g] of drawn.edges) if (!keep.has(k)) { g.remove(); drawn.edges.delete(k); }
    const text = search.value.trim().toLowerCase();
    for (const n of names) {
      const s = layout.slots.get(n);
      if (!s) continue;
      const w = shown.workloads.get(n);
      const g = nodeEl(n);
      setAttrs(g, { class: ['node', w && !w.meshed ? 'unmeshed' : '', !w && !n.includes('/') ? 'external' : '',
        text && n.toLowerCase().includes(text) ? 'match' : '', text && !n.toLowerCase().includes(text) ? 'dim' : '',
        selected && selected.workload === n ? 'selected' : ''].filter(Boolean).join(' ') });
      setAttrs(g.children[0], { x: s.x, y: s.y });
      setAttrs(g.children[1], { x: s.x + 10, y: s.y + 22 });
    }
    for (const [n, g] of drawn.nodes) if (!names.has(n)) { g.remove(); drawn.nodes.delete(n); }
    document.body.dataset.version = String(live.version);
  }

  // ---- panels ----
  function dl(pairs) {
    return el('dl', {}, pairs.filter(([, v]) => v !== undefined && v !== null && v !== '').map(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
  }

  function showEdge(k) {
    const shown = past ? past.graph : live;
    const e = shown.edges.get(k) || live.edges.get(k);
    if (!e) return;
    const m = e.metrics || {}, p = e.policy || {};
    const tls = tlsWord(e.tls);
    const chain = el('ol', { class: 'chain', id: 'explain-chain' }, (p.chain || []).map((c) => el('li', {}, c)));
    const fresh = el('div', { id: 'explain-now' });
    const routes = (e.routes || []).length ? el('table', { class: 'routes' },
      el('tr', {}, el('th', {}, 'route'), el('th', {}, 'rps'), el('th', {}, 'success'), el('th', {}, 'p99 ms')),
      e.routes.map((r) => el('tr', {}, el('td', {}, `${r.routeKind} ${r.routeNamespace ? `${r.routeNamespace}/` : ''}${r.routeName || ''}`),
        el('td', {}, num(r.rps)), el('td', {}, r.successRate === undefined ? '–' : `${num(r.successRate * 100, 1)}%`), el('td', {}, num(r.latencyP99Ms, 0))))) : null;
    fill(panel, 
      el('button', { class: 'close', onclick: () => { panel.hidden = true; selected = null; draw(); } }, '×'),
      el('h2', {}, `${wref(e.src)} → ${dstName(e)}`),
      dl([
        ['Protocol', e.protocol], ['TLS', tls + (e.noTlsReason ? ` (${e.noTlsReason})` : '')],
        ['Client identity', e.clientIdentity], ['Server identity', e.serverIdentity],
        ['Requests', `${num(m.rps || 0)} /s`], ['Success', m.successRate === undefined ? '–' : `${num(m.successRate * 100, 1)}%`],
        ['Latency p50 / p95 / p99', `${num(m.latencyP50Ms, 0)} / ${num(m.latencyP95Ms, 0)} / ${num(m.latencyP99Ms, 0)} ms`],
        ['TCP open', m.tcpOpenConnections ? num(m.tcpOpenConnections, 0) : ''],
      ]),
      el('h3', {}, 'Policy'),
      dl([
        ['Verdict', el('span', { class: `verdict verdict-${verdictWord(e)}`, id: 'edge-verdict' }, verdictWord(e))],
        ['Server', p.server], ['Default policy', p.defaultPolicy],
        ['Authorization policies', (p.authorizationPolicies || []).join(', ')], ['Route', p.httpRoute],
        ['Rate limit', p.rateLimit],
        ['Observed allowed /s', p.observedAllowRps === undefined ? '' : num(p.observedAllowRps)],
        ['Observed denied /s', p.observedDenyRps === undefined ? '' : num(p.observedDenyRps)],
        ['Allowed only by audit /s', p.observedAuditRps === undefined ? '' : num(p.observedAuditRps)],
        ['Disagreement', p.disagreement],
      ]),
      e.dst ? [el('h3', {}, 'Last hour'), plots(e)] : null,
      el('h4', {}, 'Why'), chain,
      e.dst ? el('button', { onclick: () => explain(e, fresh) }, 'Explain again from the cluster') : null, fresh,
      routes ? [el('h3', {}, 'Routes'), routes] : null,
      whatIf());
    panel.hidden = false;
  }

  // A small line plot of [time, value] points, with its last value and its peak.
  function sparkline(id, title, points, fmt) {
    const W = 260, H = 40;
    if (!points.length) return el('p', { id, class: 'note' }, `${title}: no data in the last hour`);
    const t0 = points[0][0], t1 = points[points.length - 1][0] || t0 + 1;
    const max = Math.max(...points.map((p) => p[1]), 1e-9);
    const xy = points.map(([t, v]) => `${((t - t0) / Math.max(t1 - t0, 1)) * W},${H - (v / max) * H}`).join(' ');
    return el('figure', { id, class: 'spark' },
      el('figcaption', {}, `${title}: ${fmt(points[points.length - 1][1])} now, peak ${fmt(max)}`),
      el('svg:svg', { width: W, height: H + 2, viewBox: `0 -1 ${W} ${H + 2}`, role: 'img', 'aria-label': title },
        el('svg:polyline', { points: xy, class: 'spark-line' })));
  }

  function plots(e) {
    const box = el('div', { id: 'plots' }, el('p', { class: 'note' }, 'reading Prometheus…'));
    const q = new URLSearchParams({ src: wref(e.src), dst: wref(e.dst) });
    fetch(`/ui/api/series?${q}`, { credentials: 'same-origin' }).then(async (r) => {
      if (!r.ok) { fill(box, el('p', { class: 'note' }, await r.text())); return; }
      const s = await r.json();
      fill(box, 
        sparkline('plot-rps', 'requests/s', s.rps, (v) => num(v)),
        sparkline('plot-success', 'success', s.success_rate, (v) => `${num(v * 100, 1)}%`),
        sparkline('plot-p99', 'p99', s.latency_p99_ms, (v) => `${num(v, 0)} ms`));
    }).catch((err) => fill(box, el('p', { class: 'error' }, String(err))));
    return box;
  }

  async function explain(e, into) {
    const q = new URLSearchParams({ from: wref(e.src), to: wref(e.dst) });
    const r = await fetch(`/ui/api/explain?${q}`, { credentials: 'same-origin' });
    if (!r.ok) { fill(into, el('p', { class: 'error' }, await r.text())); return; }
    const v = await r.json();
    fill(into, el('p', {}, `Now: ${(v.decision || 'none').toLowerCase()}`), el('ol', {}, (v.chain || []).map((c) => el('li', {}, c))));
  }

  function whatIf() {
    const out = el('div', { id: 'whatif-result' });
    const kind = el('select', { id: 'whatif-kind' }, el('option', { value: 'AuthorizationPolicy' }, 'AuthorizationPolicy'), el('option', { value: 'HTTPRoute' }, 'HTTPRoute'));
    const text = el('textarea', { id: 'whatif-manifest', rows: 8, placeholder: 'paste a manifest (YAML): what would it do to live traffic?' });
    const run = async () => {
      fill(out, el('p', {}, 'dry-running as you…'));
      const r = await fetch('/ui/api/whatif', {
        method: 'POST', credentials: 'same-origin',
        headers: { 'content-type': 'application/json', 'x-csrf-token': csrf },
        body: JSON.stringify({ kind: kind.value, manifest: text.value }),
      });
      if (!r.ok) { fill(out, el('p', { class: 'error' }, await r.text())); return; }
      const a = await r.json();
      const edges = a.affectedEdges || [];
      fill(out, 
        el('p', {}, edges.length ? `${edges.length} observed edge(s) would change verdict:` : 'No observed edge would change verdict.'),
        el('ul', {}, edges.map((x) => el('li', {}, `${wref(x.edge.src)} → ${x.edge.dst ? wref(x.edge.dst) : x.edge.dstAuthority}: ${(x.before || 'none').toLowerCase()} → ${(x.after || 'none').toLowerCase()} (${num(x.rps || 0)} rps)`))),
        (a.warnings || []).map((w) => el('p', { class: 'warning' }, w)),
        el('pre', { class: 'diff' }, a.diff || ''));
    };
    return el('section', { class: 'whatif' }, el('h3', {}, 'What would this change do?'), kind, text, el('button', { id: 'whatif-run', onclick: run }, 'Dry-run'), out);
  }

  function showWorkload(n) {
    const shown = past ? past.graph : live;
    const w = shown.workloads.get(n) || {};
    const inbound = [...shown.edges.values()].filter((e) => dstName(e) === n);
    const outbound = [...shown.edges.values()].filter((e) => wref(e.src) === n);
    const list = (edges, other) => el('ul', {}, edges.map((e) => el('li', {},
      el('a', { href: '#', onclick: (ev) => { ev.preventDefault(); pick({ edge: edgeKey(e) }); } },
        `${other(e)}: ${tlsWord(e.tls)}, ${verdictWord(e)}, ${num((e.metrics || {}).rps || 0, 1)} rps`))));
    fill(panel, 
      el('button', { class: 'close', onclick: () => { panel.hidden = true; selected = null; draw(); } }, '×'),
      el('h2', {}, n),
      dl([['Kind', w.ref && w.ref.kind], ['Service account', w.serviceAccount], ['Identity', w.identity],
        ['Meshed', w.ref ? String(Boolean(w.meshed)) : ''], ['Ready replicas', w.ref ? String(w.readyReplicas || 0) : '']]),
      el('h3', {}, `Called by (${inbound.length})`), list(inbound, (e) => wref(e.src)),
      el('h3', {}, `Calls (${outbound.length})`), list(outbound, dstName));
    panel.hidden = false;
  }

  // ---- history: the slider looks back, "what changed" since then ----
  function describe(c) {
    if (c.edgeAdded) return `edge added: ${wref(c.edgeAdded.src)} → ${dstName(c.edgeAdded)}`;
    if (c.edgeRemoved) return `edge removed: ${wref(c.edgeRemoved.src)} → ${dstName(c.edgeRemoved)}`;
    if (c.tlsChanged) return `TLS ${tlsWord(c.tlsChanged.from)} → ${tlsWord(c.tlsChanged.to)}: ${wref(c.tlsChanged.edge.src)} → ${dstName(c.tlsChanged.edge)}${c.tlsChanged.reason ? ` (${c.tlsChanged.reason})` : ''}`;
    if (c.verdictChanged) return `verdict ${(c.verdictChanged.from || 'none').toLowerCase()} → ${(c.verdictChanged.to || 'none').toLowerCase()}: ${wref(c.verdictChanged.edge.src)} → ${dstName(c.verdictChanged.edge)}${c.verdictChanged.by ? ` by ${c.verdictChanged.by}` : ''}`;
    if (c.regression) return `${c.regression.metric} worse: ${wref(c.regression.edge.src)} → ${dstName(c.regression.edge)} (${num(c.regression.from)} → ${num(c.regression.to)})`;
    if (c.object) {
      const o = c.object;
      const who = o.requestedBy ? ` by ${o.requestedBy}${o.approvedBy ? `, approved by ${o.approvedBy}` : ''}` : o.fieldManager ? ` by ${o.fieldManager}` : '';
      return `${o.kind} ${o.namespace}/${o.name} ${o.operation}${who}`;
    }
    return 'change';
  }

  const ago = (secs) => (secs >= 60 ? `${Math.floor(secs / 60)} min ${secs % 60} s ago` : `${secs} s ago`);

  async function lookBack(secs) {
    const mine = ++generation;
    if (source) { source.close(); source = null; }
    const at = `-${secs}s`;
    whenEl.textContent = ago(secs);
    setStatus('looking back (live paused)', 'warn');
    const p = params();
    p.set('at', at);
    const [gr, dr] = await Promise.all([
      fetch(`/ui/api/graph?${p}`, { credentials: 'same-origin' }),
      fetch(`/ui/api/diff?${new URLSearchParams({ from: at, ...(p.get('namespace') ? { namespace: p.get('namespace') } : {}) })}`, { credentials: 'same-origin' }),
    ]);
    if (mine !== generation) return; // moved on meanwhile
    if (!gr.ok) { setStatus(`cannot look back: ${await gr.text()}`, 'bad'); return; }
    const g = await gr.json();
    if (mine !== generation) return;
    const graph = { workloads: new Map(), edges: new Map() };
    for (const w of g.workloads || []) graph.workloads.set(wref(w.ref), w);
    for (const e of g.edges || []) graph.edges.set(edgeKey(e), e);
    past = { graph, at };
    document.body.dataset.past = at;
    draw();
    changesEl.hidden = false;
    if (dr.ok) {
      const d = await dr.json();
      if (mine !== generation) return;
      const items = (d.changes || []).map((c) => el('li', {}, `${c.at ? new Date(c.at).toLocaleTimeString() : ''} ${describe(c)}`));
      fill(changesEl, el('h3', {}, `What changed since ${ago(secs)}`),
        items.length ? el('ol', { id: 'change-list' }, items) : el('p', {}, 'Nothing changed.'),
        (d.notes || []).map((n) => el('p', { class: 'note' }, n)));
    } else {
      fill(changesEl, el('p', { class: 'error' }, await dr.text()));
    }
  }

  function goLive() {
    generation += 1;
    past = null;
    delete document.body.dataset.past;
    whenEl.textContent = 'live';
    changesEl.hidden = true;
    connect();
  }

  slider.addEventListener('change', () => {
    const v = Number(slider.value);
    if (v >= 0) goLive();
    else lookBack(-v);
  });
  slider.addEventListener('input', () => {
    const v = Number(slider.value);
    whenEl.textContent = v >= 0 ? 'live' : ago(-v);
  });
  filters.addEventListener('change', (ev) => {
    if (ev.target === search) return;
    if (past) lookBack(-Number(slider.value)); else connect();
  });
  filters.addEventListener('submit', (ev) => ev.preventDefault());
  search.addEventListener('input', () => draw());
  connect();
})();
