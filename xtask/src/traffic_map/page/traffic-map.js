// The traffic map: asks Prometheus (through the page's own server, same origin) for
// Istio's standard metrics every few seconds and draws services, their versions and
// the traffic between them as SVG. No framework, no build step.
//
// DOM hooks (read by xtask/tests/traffic_map.rs, stable on purpose):
//   <g class="edge"  data-edge="productpage->reviews" data-protocol="http|tcp" data-rps
//                    data-error-rate data-p99 data-mtls="true|false|partial">
//   <g class="split" data-edge="productpage->reviews" data-version="v1" data-rps data-share>
//   <g class="node"  data-node="reviews" data-versions="v1 v2 v3">
//   <body data-updates="N" data-state="ok|error|loading">
'use strict';

const params = new URLSearchParams(location.search);
// The rate window; short so a routing change shows within seconds (the lab's Prometheus
// scrapes every second). `?window=1m` widens it.
const WINDOW = /^[1-9][0-9]*[smh]$/.test(params.get('window') || '') ? params.get('window') : '30s';
const REFRESH_MS = Math.max(1000, Number(params.get('refresh_ms')) || 2000);

const QUERIES = {
  requests:
    'sum by (reporter, source_canonical_service, source_version, destination_service_name, ' +
    'destination_canonical_service, destination_version, connection_security_policy, response_code) ' +
    `(rate(istio_requests_total[${WINDOW}]))`,
  p99:
    'histogram_quantile(0.99, sum by (reporter, source_canonical_service, destination_service_name, ' +
    'destination_canonical_service, le) ' +
    `(rate(istio_request_duration_milliseconds_bucket[${WINDOW}])))`,
  tcp:
    'sum by (reporter, source_canonical_service, source_workload, destination_service_name, ' +
    'destination_service, connection_security_policy) ' +
    `(rate(istio_tcp_connections_opened_total[${WINDOW}]))`,
};

// Which reporter's series an edge uses when both ends report it (never both: that
// would count every request twice). The waypoint sees every hop of its namespace.
const L7_REPORTERS = ['waypoint', 'destination', 'source'];
const L4_REPORTERS = ['destination', 'source'];

const SVG = 'http://www.w3.org/2000/svg';
const BOX_W = 170;
const COL_W = 340;
const HEAD_H = 30;
const PILL_H = 22;
const PILL_GAP = 6;

async function query(promql) {
  const r = await fetch('api/v1/query?query=' + encodeURIComponent(promql), { cache: 'no-store' });
  const text = await r.text();
  if (!r.ok) throw new Error(`Prometheus answered ${r.status}: ${text.slice(0, 300)}`);
  const body = JSON.parse(text);
  if (body.status !== 'success') throw new Error(`Prometheus: ${body.error || body.status}`);
  return body.data.result;
}

function value(sample) {
  const v = parseFloat(sample.value[1]);
  return Number.isFinite(v) ? v : NaN;
}

function known(v) {
  return v && v !== 'unknown' ? v : '';
}

function sourceName(m) {
  return known(m.source_canonical_service) || known(m.source_workload) || 'unknown';
}

function destinationName(m) {
  return (
    known(m.destination_service_name) ||
    known(m.destination_canonical_service) ||
    known((m.destination_service || '').split('.')[0]) ||
    'unknown'
  );
}

// For each source->destination pair, the reporter whose series count it.
function chosenReporters(samples, order) {
  const seen = new Map();
  for (const s of samples) {
    if (!(value(s) > 0)) continue;
    const key = sourceName(s.metric) + '->' + destinationName(s.metric);
    const r = s.metric.reporter || '';
    const best = seen.get(key);
    const rank = (x) => (order.indexOf(x) === -1 ? order.length : order.indexOf(x));
    if (best === undefined || rank(r) < rank(best)) seen.set(key, r);
  }
  return seen;
}

function isError(code) {
  const c = Number(code);
  return c === 0 || c >= 500;
}

// The graph from the three answers: nodes (services with the versions seen) and edges.
function buildModel(requests, p99s, tcp) {
  const nodes = new Map();
  const node = (name) => {
    if (!nodes.has(name)) nodes.set(name, { name, versions: new Map() });
    return nodes.get(name);
  };
  const edges = new Map();
  const reporters = chosenReporters(requests, L7_REPORTERS);
  for (const s of requests) {
    const v = value(s);
    const m = s.metric;
    const key = sourceName(m) + '->' + destinationName(m);
    if (!(v > 0) || reporters.get(key) !== (m.reporter || '')) continue;
    const src = node(sourceName(m));
    const dst = node(destinationName(m));
    const sv = known(m.source_version);
    if (sv && !src.versions.has(sv)) src.versions.set(sv, 0);
    const version = m.destination_version || 'unknown';
    dst.versions.set(version, (dst.versions.get(version) || 0) + v);
    if (!edges.has(key)) {
      edges.set(key, {
        key, source: src.name, target: dst.name, protocol: 'http',
        rps: 0, errorRps: 0, mtlsRps: 0, p99: NaN, versions: new Map(),
      });
    }
    const e = edges.get(key);
    e.rps += v;
    if (isError(m.response_code)) e.errorRps += v;
    if (m.connection_security_policy === 'mutual_tls') e.mtlsRps += v;
    e.versions.set(version, (e.versions.get(version) || 0) + v);
  }
  for (const s of p99s) {
    const key = sourceName(s.metric) + '->' + destinationName(s.metric);
    const e = edges.get(key);
    if (e && reporters.get(key) === (s.metric.reporter || '') && Number.isFinite(value(s))) e.p99 = value(s);
  }
  // L4: connections per second between services that have no L7 edge (no waypoint on the path).
  const l4 = chosenReporters(tcp, L4_REPORTERS);
  for (const s of tcp) {
    const v = value(s);
    const m = s.metric;
    const key = sourceName(m) + '->' + destinationName(m);
    if (!(v > 0) || l4.get(key) !== (m.reporter || '')) continue;
    if (edges.has(key) && edges.get(key).protocol === 'http') continue;
    node(sourceName(m));
    node(destinationName(m));
    if (!edges.has(key)) {
      edges.set(key, {
        key, source: sourceName(m), target: destinationName(m), protocol: 'tcp',
        rps: 0, errorRps: 0, mtlsRps: 0, p99: NaN, versions: new Map(),
      });
    }
    const e = edges.get(key);
    e.rps += v;
    if (m.connection_security_policy === 'mutual_tls') e.mtlsRps += v;
  }
  return { nodes, edges: [...edges.values()] };
}

// Columns by distance from the callers that nobody calls (cycles cut after n rounds).
function layout(model) {
  const depth = new Map([...model.nodes.keys()].map((n) => [n, 0]));
  for (let round = 0; round < model.nodes.size; round++) {
    let changed = false;
    for (const e of model.edges) {
      if (e.source === e.target) continue;
      const d = depth.get(e.source) + 1;
      if (d > depth.get(e.target)) {
        depth.set(e.target, d);
        changed = true;
      }
    }
    if (!changed) break;
  }
  const columns = [];
  for (const [name, d] of depth) (columns[d] = columns[d] || []).push(name);
  const pos = new Map();
  let height = 0;
  columns.forEach((names, col) => {
    let y = 70;
    for (const name of names.sort()) {
      const versions = [...model.nodes.get(name).versions.keys()].filter((v) => v !== 'unknown').sort();
      const h = HEAD_H + versions.length * (PILL_H + PILL_GAP) + (versions.length ? 6 : 0);
      pos.set(name, { x: 24 + col * COL_W, y, h, versions });
      y += h + 50;
    }
    height = Math.max(height, y);
  });
  return { pos, width: 24 + columns.length * COL_W, height: Math.max(height, 200) };
}

function el(name, attrs, parent) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (parent) parent.appendChild(e);
  return e;
}

function text(parent, x, y, str, cls, anchor) {
  const t = el('text', { x, y, class: cls || '', 'text-anchor': anchor || 'start' }, parent);
  t.textContent = str;
  return t;
}

function fmtRate(v) {
  return v >= 10 ? v.toFixed(1) : v.toFixed(2);
}

function fmtPct(f) {
  return (100 * f).toFixed(f > 0 && f < 0.01 ? 2 : f === 0 || f === 1 ? 0 : 1) + '%';
}

function health(e) {
  if (e.protocol === 'tcp') return 'tcp';
  const r = e.rps > 0 ? e.errorRps / e.rps : 0;
  return r >= 0.2 ? 'failing' : r >= 0.001 ? 'degraded' : 'healthy';
}

function mtls(e) {
  return e.mtlsRps >= e.rps * 0.9999 ? 'true' : e.mtlsRps > 0 ? 'partial' : 'false';
}

// A closed (mutual TLS) or open padlock, 10x12, at x,y (top left).
function lock(parent, x, y, closed) {
  const g = el('g', { class: closed ? 'lock closed' : 'lock open', transform: `translate(${x},${y})` }, parent);
  el('title', {}, g).textContent = closed ? 'mutual TLS' : 'not (all) mutual TLS';
  el('path', { d: closed ? 'M2.5 6 V3.5 a2.5 2.5 0 0 1 5 0 V6' : 'M2.5 6 V3.5 a2.5 2.5 0 0 1 5 0 V2', class: 'shackle' }, g);
  el('rect', { x: 0.5, y: 5.5, width: 9, height: 6.5, rx: 1.2, class: 'body' }, g);
  return g;
}

function pillY(p, i) {
  return p.y + HEAD_H + i * (PILL_H + PILL_GAP) + PILL_H / 2;
}

function drawNode(svg, model, name, p) {
  const n = model.nodes.get(name);
  const g = el('g', { class: 'node' + (name === 'unknown' ? ' unknown' : ''), 'data-node': name, 'data-versions': p.versions.join(' ') }, svg);
  el('rect', { x: p.x, y: p.y, width: BOX_W, height: p.h, rx: 8, class: 'box' }, g);
  text(g, p.x + 12, p.y + 20, name, 'name');
  p.versions.forEach((v, i) => {
    const y = pillY(p, i) - PILL_H / 2;
    const vg = el('g', { class: 'version', 'data-node': name, 'data-version': v }, g);
    el('rect', { x: p.x + 10, y, width: BOX_W - 20, height: PILL_H, rx: PILL_H / 2, class: 'pill' }, vg);
    text(vg, p.x + 22, y + 15, v, 'vname');
    const rps = n.versions.get(v) || 0;
    if (rps > 0) text(vg, p.x + BOX_W - 20, y + 15, fmtRate(rps) + ' rps', 'vrate', 'end');
  });
}

function curve(x1, y1, x2, y2) {
  const dx = Math.max(30, (x2 - x1) / 2);
  return `M${x1},${y1} C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}`;
}

function drawEdge(layer, e, pos) {
  const s = pos.get(e.source);
  const t = pos.get(e.target);
  const width = (1.5 + Math.min(6, Math.log2(1 + e.rps) * 1.5)).toFixed(2);
  const g = el('g', {
    class: `edge ${health(e)} ${e.protocol}`,
    'data-edge': e.key,
    'data-protocol': e.protocol,
    'data-rps': e.rps.toFixed(4),
    'data-error-rate': (e.rps > 0 ? e.errorRps / e.rps : 0).toFixed(4),
    'data-p99': Number.isFinite(e.p99) ? e.p99.toFixed(1) : '',
    'data-mtls': mtls(e),
  }, layer);
  const sx = s.x + BOX_W;
  const sy = s.y + HEAD_H / 2;
  const splits = [...e.versions.entries()].filter(([v]) => t.versions.includes(v));
  const backwards = t.x <= s.x;
  const jx = backwards ? t.x - 30 : Math.max(sx + 40, t.x - 70);
  const jy = splits.length ? splits.reduce((a, [v]) => a + pillY(t, t.versions.indexOf(v)), 0) / splits.length : t.y + HEAD_H / 2;
  const end = splits.length ? [jx, jy] : [t.x, t.y + HEAD_H / 2];
  const trunk = { d: curve(sx, sy, end[0], end[1]), class: 'trunk', 'stroke-width': width };
  if (!splits.length) trunk['marker-end'] = 'url(#arrow)';
  el('path', trunk, g);
  // The label, two short lines above the trunk's middle: the rate, then errors, p99
  // and a padlock for mutual TLS.
  const lx = backwards ? (sx + end[0]) / 2 : (sx + t.x) / 2;
  const ly = (sy + end[1]) / 2 - 22;
  const rate = fmtRate(e.rps) + (e.protocol === 'tcp' ? ' conn/s' : ' rps');
  const detail = e.protocol === 'http'
    ? `${fmtPct(e.rps > 0 ? e.errorRps / e.rps : 0)} err · p99 ${Number.isFinite(e.p99) ? Math.round(e.p99) + ' ms' : '–'}`
    : '';
  text(g, lx, ly, rate, 'label', 'middle');
  const second = text(g, lx - 7, ly + 13, detail, 'label', 'middle');
  const half = detail ? second.getComputedTextLength() / 2 : -7;
  lock(g, lx - 7 + half + 3, ly + 3, mtls(e) === 'true');
  for (const [v, rps] of splits) {
    const vy = pillY(t, t.versions.indexOf(v));
    const share = e.rps > 0 ? rps / e.rps : 0;
    const sg = el('g', {
      class: 'split', 'data-edge': e.key, 'data-version': v,
      'data-rps': rps.toFixed(4), 'data-share': share.toFixed(4),
    }, g);
    el('path', { d: curve(jx, jy, t.x, vy), class: 'branch', 'stroke-width': Math.max(1.2, width * Math.sqrt(share)).toFixed(2), 'marker-end': 'url(#arrow)' }, sg);
    text(sg, t.x - 8, vy - 5, fmtPct(share), 'share', 'end');
  }
}

function drawGraph(model) {
  const svg = document.getElementById('graph');
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const { pos, width, height } = layout(model);
  svg.setAttribute('viewBox', `0 0 ${Math.max(width, 600)} ${height}`);
  svg.setAttribute('width', Math.max(width, 600));
  svg.setAttribute('height', height);
  const defs = el('defs', {}, svg);
  // Fixed-size arrowheads (user space), not scaled by the edge's stroke width.
  const marker = el('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerUnits: 'userSpaceOnUse', markerWidth: 9, markerHeight: 9, orient: 'auto-start-reverse' }, defs);
  el('path', { d: 'M0,0 L10,5 L0,10 z', class: 'arrowhead' }, marker);
  if (!model.edges.length) {
    text(svg, 24, 40, `No requests in the last ${WINDOW}: send some traffic through the gateway.`, 'empty');
    return;
  }
  const edgeLayer = el('g', { class: 'edges' }, svg);
  const nodeLayer = el('g', { class: 'nodes' }, svg);
  for (const [name, p] of pos) drawNode(nodeLayer, model, name, p);
  // Edges in the layer below the nodes, so a box is never crossed out by a line.
  for (const e of model.edges.sort((a, b) => a.key.localeCompare(b.key))) drawEdge(edgeLayer, e, pos);
}

function drawTable(model) {
  const body = document.querySelector('#edges tbody');
  while (body.firstChild) body.removeChild(body.firstChild);
  for (const e of model.edges) {
    const rows = e.versions.size ? [...e.versions.entries()].sort() : [['', e.rps]];
    for (const [v, rps] of rows) {
      const tr = document.createElement('tr');
      const cells = [
        e.source, e.target, v, fmtRate(rps) + (e.protocol === 'tcp' ? ' conn/s' : ' rps'),
        e.rps > 0 ? fmtPct(rps / e.rps) : '', e.protocol === 'http' ? fmtPct(e.rps > 0 ? e.errorRps / e.rps : 0) : '',
        Number.isFinite(e.p99) ? Math.round(e.p99) + ' ms' : '', { true: 'mutual TLS', partial: 'partly', false: 'no' }[mtls(e)],
      ];
      for (const c of cells) tr.appendChild(document.createElement('td')).textContent = c;
      body.appendChild(tr);
    }
  }
}

let updates = 0;

async function refresh() {
  const status = document.getElementById('status');
  try {
    const [requests, p99s, tcp] = await Promise.all([query(QUERIES.requests), query(QUERIES.p99), query(QUERIES.tcp)]);
    const model = buildModel(requests, p99s, tcp);
    drawGraph(model);
    drawTable(model);
    updates += 1;
    document.body.dataset.updates = String(updates);
    document.body.dataset.state = 'ok';
    status.textContent = `updated ${new Date().toLocaleTimeString()} · ${model.edges.length} edges`;
  } catch (err) {
    document.body.dataset.state = 'error';
    status.textContent = `cannot update: ${err.message}`;
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

document.getElementById('window').textContent = `rates over the last ${WINDOW}, refreshed every ${REFRESH_MS / 1000} s`;
document.getElementById('promql').textContent = Object.values(QUERIES).join('\n\n');
refresh();
