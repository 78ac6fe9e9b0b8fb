// The SentryPeer dashboard. Everything shown comes from the node's JSON API and /live stream
// and is put on the page as text nodes: values an attacker chose (user agents, numbers,
// methods, SIP messages) can never become markup.
'use strict';

const LIVE_ROWS = 200;
const REFRESH_MS = 10000;
const state = { window: '24h', tab: 'source-ips' };

// An element with attributes and children; strings become text nodes.
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c ?? '')));
  return e;
}

function replace(id, ...children) {
  const box = document.getElementById(id);
  box.replaceChildren(...children);
  return box;
}

async function getJson(path) {
  const r = await fetch(path, { headers: { Accept: 'application/json' } });
  const body = await r.json().catch(() => ({}));
  return { status: r.status, body };
}

function table(headers, rows, numeric) {
  const head = el('tr', {}, ...headers.map((h) => el('th', { scope: 'col' }, h)));
  const body = rows.map((cells) => el('tr', {}, ...cells.map((c, i) =>
    el('td', numeric && numeric.includes(i) ? { class: 'n' } : {}, c))));
  return el('div', { class: 'scroll' }, el('table', {}, el('thead', {}, head), el('tbody', {}, ...body)));
}

function time(ts) {
  return ts ? String(ts).slice(0, 19) : '';
}

// --- Probes over time: a bar chart in SVG, built from numbers only.
function chart(series) {
  const counts = series.counts || [];
  const NS = 'http://www.w3.org/2000/svg';
  const w = 600, h = 130, pad = 14;
  const svg = document.createElementNS(NS, 'svg');
  svg.setAttribute('viewBox', `0 0 ${w} ${h}`);
  svg.setAttribute('preserveAspectRatio', 'none');
  const max = Math.max(1, ...counts);
  const bw = w / Math.max(1, counts.length);
  counts.forEach((n, i) => {
    if (!n) return;
    const r = document.createElementNS(NS, 'rect');
    const bh = (h - pad) * n / max;
    r.setAttribute('x', String(i * bw));
    r.setAttribute('y', String(h - bh));
    r.setAttribute('width', String(Math.max(bw - 0.5, 0.5)));
    r.setAttribute('height', String(bh));
    const t = document.createElementNS(NS, 'title');
    t.textContent = `${n}`;
    r.append(t);
    svg.append(r);
  });
  replace('chart', svg);
  replace('chart-caption', `Probes per ${series.step_seconds === 60 ? 'minute' : 'hour'} since ${time(series.start)} UTC; the highest bar is ${max}.`);
}

// --- The tabs: each reads one analytics endpoint for the window.
const TABS = {
  'source-ips': { path: '/source-ips', list: 'ip_addresses', key: 'ip_address', title: 'Source', total: 'ip_addresses_total' },
  'user-agents': { path: '/user-agents', list: 'user_agents', key: 'user_agent', title: 'User agent', total: 'user_agents_total' },
  'sip-methods': { path: '/sip-methods', list: 'sip_methods', key: 'sip_method', title: 'Method', total: 'sip_methods_total' },
  'countries': { path: '/countries', list: 'countries', key: 'country', title: 'Country', total: 'countries_total' },
  'called-numbers': { path: '/called-numbers', list: 'numbers', key: 'called_number', title: 'Number', total: 'numbers_total' },
};

async function loadTab() {
  const tab = TABS[state.tab];
  const w = encodeURIComponent(state.window);
  const { status, body } = await getJson(`${tab.path}?window=${w}`);
  if (status !== 200) {
    replace('panel', el('p', {}, `Could not read ${tab.path} (${status}).`));
    return;
  }
  chart(body.series || {});
  replace('total', `${body.probes_total} probes, ${body[tab.total]} distinct in ${body.window}`);
  const parts = [];
  if (state.tab === 'countries' && !body.geoip) {
    parts.push(el('p', { class: 'note' },
      'No GeoIP database: every source shows as unknown. Start the node with --geoip-db PATH ',
      '(a MaxMind-format country .mmdb such as DB-IP\'s free IP-to-Country Lite or GeoLite2 Country).'));
  }
  const rows = (body[tab.list] || []).map((r) => [r[tab.key], r.seen_count, time(r.seen_first), time(r.seen_last)]);
  parts.push(rows.length ? table([tab.title, 'Probes', 'First seen', 'Last seen'], rows, [1])
    : el('p', { class: 'muted' }, 'Nothing in this window.'));
  if (state.tab === 'source-ips') {
    const nets = await getJson(`/networks?window=${w}`);
    if (nets.status === 200) {
      const n = nets.body;
      parts.push(el('h3', {}, 'Networks (/24, /48)'));
      parts.push(table(['Network', 'Probes', 'Last seen'],
        (n.networks || []).map((r) => [r.network, r.seen_count, time(r.seen_last)]), [1]));
      if (n.geoip_asn) {
        parts.push(el('h3', {}, 'Autonomous systems'));
        parts.push(table(['AS', 'Probes', 'Last seen'],
          (n.autonomous_systems || []).map((r) => [r.autonomous_system, r.seen_count, time(r.seen_last)]), [1]));
      }
    }
  }
  const panel = replace('panel', ...parts);
  panel.setAttribute('aria-labelledby', `tab-${state.tab}`);
  panel.dataset.loaded = state.tab;
}

function selectTab(button, focus) {
  for (const b of document.querySelectorAll('#tabs [role=tab]')) {
    const on = b === button;
    b.setAttribute('aria-selected', String(on));
    b.tabIndex = on ? 0 : -1;
  }
  if (focus) button.focus();
  state.tab = button.dataset.tab;
  loadTab();
}

function setupTabs() {
  const tabs = [...document.querySelectorAll('#tabs [role=tab]')];
  tabs.forEach((b, i) => {
    b.addEventListener('click', () => selectTab(b, false));
    b.addEventListener('keydown', (ev) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[ev.key];
      if (step) {
        ev.preventDefault();
        selectTab(tabs[(i + step + tabs.length) % tabs.length], true);
      } else if (ev.key === 'Home' || ev.key === 'End') {
        ev.preventDefault();
        selectTab(tabs[ev.key === 'Home' ? 0 : tabs.length - 1], true);
      }
    });
  });
  for (const b of document.querySelectorAll('#windows [role=radio]')) {
    b.addEventListener('click', () => {
      for (const o of document.querySelectorAll('#windows [role=radio]')) {
        o.setAttribute('aria-checked', String(o === b));
      }
      state.window = b.dataset.window;
      loadTab();
    });
  }
}

// --- Search: an address's or number's history and standing.
async function lookup(value) {
  const { status, body } = await getJson(`/lookup/${encodeURIComponent(value)}`);
  if (status === 404) {
    replace('found', el('p', {}, `${value}: never seen here.`));
    return;
  }
  if (status !== 200) {
    replace('found', el('p', {}, `${value}: ${body.error || 'cannot look it up'} (${status}).`));
    return;
  }
  const key = body.kind === 'ip_address' ? body.ip_address : body.number;
  const standing = body.listed
    ? el('span', { class: 'listed' }, `listed until ${body.listed_until === 'forever' ? 'forever' : time(body.listed_until)}`)
    : el('span', { class: 'clear' }, 'not listed');
  const facts = el('dl', {},
    el('dt', {}, body.kind === 'ip_address' ? 'Address' : 'Number'), el('dd', {}, key),
    el('dt', {}, 'Standing'), el('dd', {}, standing),
    el('dt', {}, 'Probes'), el('dd', {}, body.seen_count),
    el('dt', {}, 'First seen'), el('dd', {}, time(body.seen_first)),
    el('dt', {}, 'Last seen'), el('dd', {}, time(body.seen_last)));
  const events = table(['Time (UTC)', 'Source', 'Method', 'Number', 'User agent'],
    (body.events || []).map((e) => [time(e.event_timestamp), e.source_ip, e.sip_method, e.called_number, e.sip_user_agent]));
  replace('found', facts, events);
}

// --- The live feed.
function live() {
  const tbody = document.querySelector('#live tbody');
  const status = document.getElementById('live-state');
  const source = new EventSource('/live');
  source.addEventListener('open', () => { status.textContent = '(connected)'; });
  source.addEventListener('error', () => { status.textContent = '(reconnecting…)'; });
  source.addEventListener('probe', (ev) => {
    let e;
    try { e = JSON.parse(ev.data); } catch { return; }
    const row = el('tr', {},
      el('td', {}, time(e.event_timestamp)), el('td', {}, e.source_ip),
      el('td', {}, e.sip_method), el('td', {}, e.called_number), el('td', {}, e.sip_user_agent));
    row.title = e.sip_message || '';
    tbody.prepend(row);
    while (tbody.rows.length > LIVE_ROWS) tbody.lastElementChild.remove();
  });
  source.addEventListener('dropped', (ev) => {
    tbody.prepend(el('tr', {}, el('td', { colspan: '5', class: 'muted' }, `… ${ev.data} events skipped (too fast to show)`)));
  });
}

// --- The node: identity, counters, WebHook outbox, peers.
async function loadNode() {
  const { status, body } = await getJson('/health-check');
  if (status !== 200) return;
  replace('node', `node ${body.node_id} · version ${body.version} · up ${body.uptime_seconds} s`);
  const counters = Object.entries(body.counters || {}).map(([k, v]) => [k, v]);
  const outputs = Object.entries(body.outputs || {}).map(([k, o]) => [k, o.written, o.dropped, o.failed, o.queue_depth]);
  replace('counters', el('h3', {}, 'Counters'), table(['Counter', 'Value'], counters, [1]),
    el('h3', {}, 'Outputs'), table(['Output', 'Written', 'Dropped', 'Failed', 'Queued'], outputs, [1, 2, 3, 4]));
  if (body.webhook) {
    const rows = Object.entries(body.webhook).map(([k, v]) => [k, v]);
    replace('webhook', el('h3', {}, 'WebHook outbox'), table(['', ''], rows, [1]));
  } else {
    replace('webhook', el('p', { class: 'muted' }, 'No WebHook configured (--webhook-url).'));
  }
  const peers = await getJson('/peers');
  if (peers.status !== 200) return;
  const p = peers.body;
  if (!p.peer_to_peer) {
    replace('peers', el('p', { class: 'muted' }, 'Peer to peer is off (-p).'));
    return;
  }
  const rows = (p.peers || []).map((x) => [x.peer_id, x.standing, x.events_authored, x.events_received, x.events_sent, x.events_rejected]);
  replace('peers', el('p', {}, `This node: ${p.peer_id}; ${p.peers_total} peers.`),
    rows.length ? table(['Peer', 'Standing', 'Authored', 'Received', 'Sent', 'Rejected'], rows, [2, 3, 4, 5])
      : el('p', { class: 'muted' }, 'No peers connected.'));
}

document.addEventListener('DOMContentLoaded', () => {
  setupTabs();
  document.getElementById('search').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const v = document.getElementById('q').value.trim();
    if (v) lookup(v);
  });
  live();
  loadTab();
  loadNode();
  setInterval(() => { loadTab(); loadNode(); }, REFRESH_MS);
});
