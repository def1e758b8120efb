// Ballast dashboard: plain JavaScript, no framework, no build step (the file is embedded as is).
//
// index.html is the application: hash routes #/ (overview), #/vs/<name> (a virtual service),
// #/events (events). login.html shares this file (body[data-page="login"]). Every page reads the
// controller's JSON API (/api/v1, docs/api.md) with the session cookie and polls it every 2 s;
// charts use uPlot (vendor/uPlot.iife.min.js, bundled from npm at build time).
//
// Elements the browser test looks for carry data-testid (and data-band, data-state, data-score).

const API = '/api/v1';
const POLL_MS = 2000;
const BANDS = ['green', 'yellow', 'orange', 'red'];
const EVENT_TYPES = [
  'se_joined', 'se_lost', 'se_returned', 'se_removed', 'vs_placed', 'vs_moved', 'vs_unplaced',
  'config_applied', 'config_failed', 'object_changed', 'health_changed', 'server_up',
  'server_down', 'pool_up', 'pool_down', 'vs_up', 'vs_down', 'anomaly',
];
const EVENT_TONES = {
  se_lost: 'bad', config_failed: 'bad', server_down: 'bad', pool_down: 'bad', vs_down: 'bad',
  vs_unplaced: 'bad', anomaly: 'bad',
  se_joined: 'good', se_returned: 'good', server_up: 'good', pool_up: 'good', vs_up: 'good',
  config_applied: 'good',
  health_changed: 'warn', vs_moved: 'warn',
};
const WINDOWS = {
  '5m': { label: '5 min', from: -300, step: 10, every: 2000 },
  '1h': { label: '1 h', from: -3600, step: 30, every: 10000 },
  '24h': { label: '24 h', from: -86400, step: 600, every: 60000 },
  '7d': { label: '7 d', from: -604800, step: 3600, every: 300000 },
};
const DEFAULT_WINDOW = '5m';

// ---- DOM helpers -------------------------------------------------------------------------------

// h('td', {class: 'num', 'data-testid': 'x'}, 'text', childNode, [more]): text is always text
// (textContent), never parsed as HTML. Attributes with null/undefined/false values are left out.
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function svgEl(tag, attrs) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  setAttrs(el, attrs);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

function replaceChildren(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

// One row spanning a table of `columns` columns, saying it has nothing to show.
function emptyRow(columns, text) {
  return h('tr', {}, h('td', { colspan: columns, class: 'empty' }, text));
}

// A table body's rows, or one "empty" row spanning the table when there are none.
function fillBody(tbody, rows, columns, emptyText) {
  replaceChildren(tbody, rows.length ? rows : emptyRow(columns, emptyText));
}

// A column heading of table(): its text, or numCol(text) for a right-aligned (numeric) column.
function numCol(text) {
  return { text, class: 'num' };
}

// A table in its scrolling wrapper: one header row of column headings, then `body` (a tbody,
// filled later by fillBody).
function table(testid, headers, body) {
  const th = (c) => (typeof c === 'string' ? h('th', { scope: 'col' }, c) : h('th', { scope: 'col', class: c.class }, c.text));
  return h(
    'div',
    { class: 'table-wrap' },
    h('table', { 'data-testid': testid }, h('thead', {}, h('tr', {}, headers.map(th))), body),
  );
}

// A panel (section) labelled by the h2 with this id; panelHead() puts more beside the heading.
function section(id, ...children) {
  return h('section', { class: 'panel', 'aria-labelledby': id }, ...children);
}

function panel(id, title, ...children) {
  return section(id, h('h2', { id }, title), ...children);
}

function panelHead(id, title, ...rest) {
  return h('div', { class: 'panel-head' }, h('h2', { id }, title), ...rest);
}

// A name in a URL path: each segment escaped, the slashes of server names ("pool/addr") kept.
function pathName(name) {
  return String(name).split('/').map(encodeURIComponent).join('/');
}

// ---- API ---------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(path, status, message) {
    super(message);
    this.path = path;
    this.status = status; // 0: the controller could not be reached
  }
}

let leaving = false;

function toLogin() {
  if (leaving) return;
  leaving = true;
  location.replace('login.html' + location.hash);
}

async function api(path, init = {}) {
  let r;
  try {
    r = await fetch(API + path, {
      credentials: 'same-origin',
      cache: 'no-store',
      ...init,
      headers: { Accept: 'application/json', ...(init.headers || {}) },
    });
  } catch (e) {
    throw new ApiError(path, 0, String(e.message || e));
  }
  if (r.status === 401) {
    toLogin();
    throw new ApiError(path, 401, 'unauthorized');
  }
  const text = r.status === 204 ? '' : await r.text();
  let body = null;
  if (text) {
    try {
      body = JSON.parse(text);
    } catch {
      body = null;
    }
  }
  if (!r.ok) {
    const why = body && typeof body.error === 'string' ? body.error : `HTTP ${r.status}`;
    throw new ApiError(path, r.status, why);
  }
  return body;
}

// Runs the GETs of one refresh side by side. get(path) resolves to the body, or to undefined
// when it failed (the failure is kept for the banner): one missing part does not blank a page.
// get(path, {missingOk: true}): a 404 is no error but "nothing yet" (null), as analytics and
// health answer for an object that has not reported yet.
function batch() {
  const errors = [];
  const get = (path, { missingOk = false } = {}) =>
    api(path).catch((e) => {
      if (missingOk && e instanceof ApiError && e.status === 404) return null;
      errors.push(e);
      return undefined;
    });
  return { get, errors };
}

// ---- formatting --------------------------------------------------------------------------------

const DASH = '—';

function finite(v) {
  return typeof v === 'number' && Number.isFinite(v);
}

function fmtNumber(v, digits = 0) {
  if (!finite(v)) return DASH;
  return v.toLocaleString(undefined, { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}

// 0.0123 -> "0.012", 12.34 -> "12.3", 1234 -> "1.2 k", 2500000 -> "2.5 M".
function fmtCompact(v) {
  if (!finite(v)) return DASH;
  const a = Math.abs(v);
  if (a === 0) return '0';
  if (a >= 1e9) return `${(v / 1e9).toFixed(a >= 1e10 ? 0 : 1)} G`;
  if (a >= 1e6) return `${(v / 1e6).toFixed(a >= 1e7 ? 0 : 1)} M`;
  if (a >= 1e3) return `${(v / 1e3).toFixed(a >= 1e4 ? 0 : 1)} k`;
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  if (a >= 0.01) return v.toFixed(2);
  return v.toPrecision(2);
}

function fmtRate(v, unit = '/s') {
  return finite(v) ? `${fmtCompact(v)}${unit}` : DASH;
}

function fmtMs(v) {
  if (!finite(v)) return DASH;
  if (v >= 10000) return `${(v / 1000).toFixed(1)} s`;
  if (v >= 1000) return `${(v / 1000).toFixed(2)} s`;
  if (v >= 100) return `${v.toFixed(0)} ms`;
  if (v >= 10) return `${v.toFixed(1)} ms`;
  if (v === 0) return '0 ms';
  return `${v.toFixed(2)} ms`;
}

function fmtPercent(v) {
  if (!finite(v)) return DASH;
  return `${v.toFixed(Math.abs(v) < 10 ? 1 : 0)} %`;
}

function fmtAge(seconds) {
  if (!finite(seconds)) return DASH;
  if (seconds < 1) return 'just now';
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 129600) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

// An API time: ISO 8601 text or unix seconds.
function toDate(t) {
  if (t === null || t === undefined || t === '') return null;
  const d = typeof t === 'number' ? new Date(t > 1e12 ? t : t * 1000) : new Date(t);
  return Number.isNaN(d.getTime()) ? null : d;
}

function fmtClock(t) {
  const d = toDate(t);
  if (!d) return DASH;
  const sameDay = d.toDateString() === new Date().toDateString();
  const time = d.toLocaleTimeString(undefined, { hour12: false });
  return sameDay ? time : `${d.toLocaleDateString()} ${time}`;
}

function lastValue(values) {
  if (!Array.isArray(values)) return null;
  for (let i = values.length - 1; i >= 0; i--) if (finite(values[i])) return values[i];
  return null;
}

function hasData(values) {
  return Array.isArray(values) && values.some(finite);
}

// ---- small components --------------------------------------------------------------------------

function bandOf(health) {
  const band = health && health.band;
  return BANDS.includes(band) ? band : null;
}

// A health score as a coloured pill: the number, the band in words (shown with `showBand`,
// else for screen readers only), data-band and data-score for tests.
function scoreBadge(health, testid, { big = false, showBand = false } = {}) {
  const score = health && finite(health.score) ? health.score : null;
  const band = score === null ? null : bandOf(health);
  const title = score === null ? 'no score yet' : `health score ${Math.round(score)}${band ? `, ${band}` : ''}`;
  return h(
    'span',
    {
      class: `score band-${band || 'none'}${big ? ' big' : ''}`,
      'data-testid': testid,
      'data-band': band || '',
      'data-score': score === null ? '' : String(Math.round(score)),
      title,
    },
    h('span', { class: 'score-value' }, score === null ? DASH : String(Math.round(score))),
    band && showBand ? h('span', { class: 'band-name' }, band) : null,
    band && !showBand ? h('span', { class: 'visually-hidden' }, ` (${band})`) : null,
  );
}

function stateBadge(state, testid, detail) {
  const s = state || 'unknown';
  return h('span', { class: 'state', 'data-state': s, 'data-testid': testid, title: detail || null }, s);
}

const PENALTY_KINDS = ['resources', 'security', 'anomaly'];

function penaltyList(health) {
  const p = (health && health.penalties) || {};
  return h(
    'div',
    { class: 'penalties' },
    PENALTY_KINDS.map((k) => {
      const v = p[k] && finite(p[k].value) ? p[k].value : null;
      return h(
        'span',
        { class: `penalty${v ? ' active' : ''}`, title: p[k] && p[k].reasons ? p[k].reasons.join('; ') : null },
        `${k} ${v === null ? DASH : v > 0 ? `−${fmtNumber(v, 1)}` : fmtNumber(v, 1)}`,
      );
    }),
  );
}

// Every reason of a score: its `reasons`, or (from an answer without them) those of the
// performance score and of each penalty.
function reasonsOf(health) {
  if (!health) return [];
  if (Array.isArray(health.reasons)) return health.reasons.filter((r) => typeof r === 'string' && r);
  const all = [...(Array.isArray(health.performance_reasons) ? health.performance_reasons : [])];
  for (const k of PENALTY_KINDS) {
    const p = health.penalties && health.penalties[k];
    if (p && Array.isArray(p.reasons)) all.push(...p.reasons);
  }
  return all.filter((r) => typeof r === 'string' && r);
}

function reasonList(health) {
  const reasons = reasonsOf(health);
  if (!reasons.length) return h('span', { class: 'muted small' }, health ? 'no penalty' : DASH);
  return h('ul', { class: 'reasons' }, reasons.map((r) => h('li', {}, r)));
}

// The cells of a score, its penalties and its reasons (a pool or a server of the VS page).
function healthCells(health, testid) {
  return [h('td', {}, scoreBadge(health, testid)), h('td', {}, penaltyList(health)), h('td', {}, reasonList(health))];
}

// How far a service engine has applied the configuration: a badge, then "vACKED/CURRENT".
function syncCell(state, title, se, ...more) {
  return h(
    'td',
    {},
    stateBadge(state, null, title),
    h('span', { class: 'muted small' }, ` v${se.acked_version ?? DASH}/${se.config_version ?? DASH}`),
    ...more,
  );
}

function eventTypeBadge(type) {
  return h('span', { class: 'ev-type', 'data-tone': EVENT_TONES[type] || null }, type || DASH);
}

function eventObject(object) {
  const o = object || '';
  if (o.startsWith('virtual_services/')) {
    const name = o.slice('virtual_services/'.length);
    return h('a', { href: `#/vs/${pathName(name)}` }, o);
  }
  return h('span', { class: 'mono' }, o || DASH);
}

function eventDetails(details) {
  if (!details || typeof details !== 'object') return '';
  return Object.entries(details)
    .map(([k, v]) => {
      if (Array.isArray(v) && v.every((x) => typeof x !== 'object')) return `${k}: ${v.join('; ')}`;
      return `${k}=${v !== null && typeof v === 'object' ? JSON.stringify(v) : v}`;
    })
    .join('  ');
}

const EVENT_COLUMNS = ['Time', 'Type', 'Object', 'Message'];

// A row of an events table (EVENT_COLUMNS, then `more` cells); attrs: the row's data-testid and
// data-* attributes.
function eventRow(ev, attrs, ...more) {
  return h(
    'tr',
    attrs,
    h('td', { class: 'time' }, fmtClock(ev.time)),
    h('td', {}, eventTypeBadge(ev.type)),
    h('td', {}, eventObject(ev.object)),
    h('td', {}, ev.message || ''),
    ...more,
  );
}

// Adds the events of an answer ({items}) to log.items, where log.lastId is the highest id seen
// (null before the first answer, 0 after an empty one); past `max` events only the last `keep`
// are kept. Returns whether the answer had a list of events.
function collectEvents(log, answer, max, keep) {
  if (!answer || !Array.isArray(answer.items)) return false;
  for (const ev of answer.items) {
    if (log.lastId === null || ev.id > log.lastId) log.lastId = ev.id;
    log.items.push(ev);
  }
  if (log.lastId === null) log.lastId = 0;
  if (log.items.length > max) log.items = log.items.slice(-keep);
  return true;
}

// A sparkline of a series (nulls are gaps), scaled from 0 to its maximum. It starts at the first
// value (an object that reports since a minute uses the whole width); a single value is a flat line.
function sparkline(series, { label, kind = 'rate', width = 120, height = 28 } = {}) {
  let values = series.slice(Math.max(0, series.findIndex(finite)));
  if (values.length === 1) values = [values[0], values[0]];
  const n = values.length;
  const max = Math.max(...values.filter(finite), 0);
  const top = max > 0 ? max : 1;
  const x = (i) => (n > 1 ? (i / (n - 1)) * width : width / 2);
  const y = (v) => height - 1 - (v / top) * (height - 2);
  let line = '';
  let area = '';
  let run = [];
  const flush = () => {
    if (!run.length) return;
    // A value alone between gaps (the first report, or the newest point still empty) would be a
    // path of one point, which draws nothing: widen it into a short dash.
    if (run.length === 1) {
      const [i, v] = run[0];
      const cx = Math.min(Math.max(x(i), 3), width - 3);
      line += `M${(cx - 3).toFixed(1)},${y(v).toFixed(1)}L${(cx + 3).toFixed(1)},${y(v).toFixed(1)}`;
      run = [];
      return;
    }
    line += `M${run.map(([i, v]) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join('L')}`;
    const first = x(run[0][0]).toFixed(1);
    const last = x(run[run.length - 1][0]).toFixed(1);
    area += `M${first},${height}L${run.map(([i, v]) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join('L')}L${last},${height}Z`;
    run = [];
  };
  values.forEach((v, i) => (finite(v) ? run.push([i, v]) : flush()));
  flush();
  const svg = svgEl('svg', {
    class: `spark ${kind}`,
    width,
    height,
    viewBox: `0 0 ${width} ${height}`,
    role: 'img',
    'aria-label': label,
  });
  svg.append(svgEl('path', { class: 'area', d: area || 'M0,0' }), svgEl('path', { class: 'line', d: line || 'M0,0' }));
  return svg;
}

function metricCell(values, fmt, { label, kind, testid }) {
  if (!hasData(values)) return h('td', { class: 'num muted small', 'data-testid': testid }, 'no traffic yet');
  return h(
    'td',
    { class: 'num', 'data-testid': testid },
    h(
      'div',
      { class: 'metric-cell' },
      sparkline(values, { label, kind }),
      h('span', { class: 'value' }, fmt(lastValue(values))),
    ),
  );
}

// ---- banner and "live" indicator ---------------------------------------------------------------

const ui = {
  banner: null,
  live: null,
  report(errors) {
    if (!this.banner) return;
    const real = errors.filter((e) => !(e instanceof ApiError) || e.status !== 401);
    if (!real.length) {
      this.banner.hidden = true;
      this.banner.textContent = '';
      this.live.dataset.state = 'ok';
      this.live.textContent = `live · updated ${new Date().toLocaleTimeString(undefined, { hour12: false })}`;
      return;
    }
    const offline = real.find((e) => e instanceof ApiError && e.status === 0);
    this.live.dataset.state = 'error';
    this.live.textContent = offline ? 'offline · retrying' : 'partly updated';
    this.banner.hidden = false;
    if (offline) {
      this.banner.textContent = `The controller cannot be reached (${offline.message}); retrying every ${POLL_MS / 1000} s.`;
    } else {
      const shown = real.slice(0, 3).map((e) => (e instanceof ApiError ? `GET ${API}${e.path}: ${e.status} ${e.message}` : String(e.message || e)));
      const more = real.length > 3 ? ` (and ${real.length - 3} more)` : '';
      this.banner.textContent = `Some data could not be loaded: ${shown.join('; ')}${more}`;
    }
  },
};

// Runs fn now and then every `ms` after each run ends (never two runs at once); now() runs it
// again as soon as the current run ends.
class Poller {
  constructor(fn, ms) {
    this.fn = fn;
    this.ms = ms;
    this.timer = null;
    this.running = false;
    this.again = false;
    this.stopped = false;
  }

  start() {
    this.run();
    return this;
  }

  now() {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    clearTimeout(this.timer);
    this.run();
  }

  async run() {
    this.running = true;
    try {
      await this.fn();
    } catch (e) {
      ui.report([e]);
    } finally {
      this.running = false;
    }
    if (this.stopped) return;
    if (this.again) {
      this.again = false;
      this.run();
      return;
    }
    this.timer = setTimeout(() => this.run(), this.ms);
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
  }
}

// ---- charts (uPlot) ----------------------------------------------------------------------------

const COLORS = {
  blue: '#2457c5', green: '#1e9e55', teal: '#168a8a', orange: '#e07a10', red: '#d1342f',
  grey: '#7d8797', purple: '#7b47c9', dark: '#1d2330', pink: '#c2408e',
};

function isolatedPoints(values) {
  const idxs = [];
  for (let i = 0; i < values.length; i++) {
    if (finite(values[i]) && !finite(values[i - 1]) && !finite(values[i + 1])) idxs.push(i);
  }
  return idxs.length ? idxs : null;
}

// One chart of analytics series. spec: {title, testid, series: [{key, label, color, dash, right,
// scale}], fmt (left axis and legend), rightFmt, transform: {key: fn}, emptyText}.
class Chart {
  constructor(parent, spec) {
    this.spec = spec;
    this.plot = null;
    this.empty = h('div', { class: 'chart-empty', hidden: true }, spec.emptyText || 'no traffic yet');
    this.box = h('div', { class: 'plot' });
    this.el = h(
      'figure',
      { class: 'chart panel', 'data-testid': spec.testid },
      h('h3', {}, spec.title),
      this.box,
      this.empty,
    );
    parent.append(this.el);
    this.resize = new ResizeObserver(() => {
      if (this.plot) this.plot.setSize(this.size());
    });
    this.resize.observe(this.box);
  }

  size() {
    return { width: Math.max(240, Math.floor(this.box.clientWidth || 400)), height: 220 };
  }

  options() {
    const spec = this.spec;
    const fmt = spec.fmt || fmtCompact;
    const rightFmt = spec.rightFmt || fmtCompact;
    const zeroBased = (u, min, max) => [0, finite(max) && max > 0 ? max * 1.1 : 1];
    const scales = { x: { time: true }, y: { range: zeroBased } };
    const axes = [
      { stroke: '#5d6778', grid: { stroke: '#eceff4' }, ticks: { stroke: '#dfe3ea' } },
      {
        scale: 'y',
        stroke: '#5d6778',
        size: 64,
        grid: { stroke: '#eceff4' },
        ticks: { stroke: '#dfe3ea' },
        values: (u, splits) => splits.map((v) => fmt(v)),
      },
    ];
    if (spec.series.some((s) => s.right)) {
      scales.right = { range: zeroBased };
      axes.push({
        scale: 'right',
        side: 1,
        stroke: '#5d6778',
        size: 56,
        grid: { show: false },
        values: (u, splits) => splits.map((v) => rightFmt(v)),
      });
    }
    return {
      ...this.size(),
      scales,
      axes,
      legend: { live: true },
      cursor: { drag: { x: true, y: false } },
      // 24-hour clock and ISO dates on the time axis (uPlot's default is 12-hour, M/D/YY).
      fmtDate: (tpl) =>
        window.uPlot.fmtDate(
          tpl
            .replaceAll('{h}{aa}', '{HH}:00')
            .replaceAll('{h}', '{HH}')
            .replaceAll('{aa}', '')
            .replaceAll('{M}/{D}/{YY}', '{YYYY}-{MM}-{DD}')
            .replaceAll('{M}/{D}', '{MM}-{DD}'),
        ),
      series: [
        { value: (u, v) => (v === null || v === undefined ? DASH : fmtClock(v)) },
        ...spec.series.map((s) => ({
          label: s.label,
          stroke: s.color,
          width: s.width || 1.5,
          dash: s.dash,
          scale: s.right ? 'right' : 'y',
          spanGaps: false,
          // Dots where the points are far apart (uPlot decides), and always for a value without
          // a neighbour (the first report, a gap on both sides), which no line would show.
          points: { filter: (u, si, show) => (show ? null : isolatedPoints(u.data[si])) },
          value: (u, v) => (v === null || v === undefined ? DASH : (s.right ? rightFmt : fmt)(v)),
        })),
      ],
    };
  }

  // d: an analytics answer ({timestamps, series}); null when there is none yet (404), undefined
  // when it could not be loaded.
  update(d) {
    const spec = this.spec;
    const ts = d && Array.isArray(d.timestamps) ? d.timestamps : [];
    const cols = spec.series.map((s) => {
      const raw = (d && d.series && d.series[s.key]) || [];
      const f = spec.transform && spec.transform[s.key];
      return ts.map((_, i) => (finite(raw[i]) ? (f ? f(raw[i]) : raw[i]) : null));
    });
    this.empty.hidden = cols.some(hasData);
    if (d === undefined) this.empty.textContent = 'no data (see the banner)';
    else this.empty.textContent = spec.emptyText || 'no traffic yet';
    const data = [ts, ...cols];
    if (typeof window.uPlot !== 'function') {
      this.empty.hidden = false;
      this.empty.textContent = 'charting library not loaded';
      return;
    }
    if (!this.plot) this.plot = new window.uPlot(this.options(), data, this.box);
    else this.plot.setData(data);
  }

  destroy() {
    this.resize.disconnect();
    if (this.plot) this.plot.destroy();
    this.plot = null;
  }
}

// ---- pages -------------------------------------------------------------------------------------

function pageHeader(title, ...rest) {
  return [h('h1', {}, title, ...rest)];
}

function analyticsPath(kind, name, metrics, from, step) {
  const q = new URLSearchParams({ metric: metrics.join(','), from: String(from), step: String(step) });
  return `/analytics/${kind}/${pathName(name)}?${q.toString().replace(/%2C/g, ',')}`;
}

class OverviewPage {
  constructor(main) {
    this.key = 'overview';
    document.title = 'Overview · Ballast';
    this.vsBody = h('tbody', { 'data-testid': 'vs-table-body' });
    this.seBody = h('tbody', { 'data-testid': 'se-table-body' });
    this.tiles = h('div', { class: 'summary', 'data-testid': 'summary' });
    main.append(
      ...pageHeader('Overview'),
      h('p', { class: 'muted' }, 'Every virtual service and service engine, with its health score (0–100). Refreshed every 2 s.'),
      this.tiles,
      panel(
        'vs-heading',
        'Virtual services',
        table(
          'vs-table',
          ['Name', 'Score', 'Listen', 'Pool', 'Service engines', numCol('Requests/s (10 min)'), numCol('p90 latency (10 min)')],
          this.vsBody,
        ),
      ),
      panel(
        'se-heading',
        'Service engines',
        table(
          'se-table',
          ['Name', 'State', 'Score', numCol('CPU'), numCol('Connections'), 'Virtual services', 'Configuration', 'Last report'],
          this.seBody,
        ),
      ),
    );
    this.poller = new Poller(() => this.refresh(), POLL_MS).start();
  }

  async refresh() {
    const { get, errors } = batch();
    const [vss, health, ses, placements] = await Promise.all([
      get('/virtual_services'),
      get('/health/vs'),
      get('/ses'),
      get('/placements'),
    ]);
    const list = (vss && vss.items) || [];
    // The sparklines have a point every 10 s: reloaded every 10 s (and for a new virtual service).
    const due = Date.now() - (this.trafficAt || 0) >= 10000;
    if (due) this.trafficAt = Date.now();
    this.traffic = this.traffic || new Map();
    const traffic = await Promise.all(
      list.map(async (vs) => {
        if (!due && this.traffic.has(vs.name)) return this.traffic.get(vs.name);
        const path = analyticsPath('vs', vs.name, ['requests_per_s', 'latency_total_p90_ms'], -600, 10);
        const a = await get(path, { missingOk: true });
        if (a === null || a) this.traffic.set(vs.name, a);
        else this.traffic.delete(vs.name); // failed: try again next time
        return a;
      }),
    );
    if (this.stopped) return;
    const healthOf = new Map(((health && health.items) || []).map((x) => [x.name, x]));
    const placed = new Map(((placements && placements.items) || []).map((p) => [p.virtual_service, p.ses || []]));
    const seList = (ses && ses.items) || [];

    fillBody(
      this.vsBody,
      list.map((vs, i) => {
        const a = traffic[i];
        const series = (a && a.series) || {};
        const where = placed.get(vs.name);
        const metric = (key, fmt, what, kind, id) =>
          metricCell(series[key] || [], fmt, { label: `${what} of ${vs.name}, last 10 minutes`, kind, testid: `vs-${id}-${vs.name}` });
        return h(
          'tr',
          { 'data-testid': `vs-row-${vs.name}` },
          h('th', { scope: 'row' }, h('a', { href: `#/vs/${pathName(vs.name)}`, 'data-testid': `vs-link-${vs.name}` }, vs.name)),
          h('td', {}, scoreBadge(healthOf.get(vs.name), `vs-score-${vs.name}`)),
          h('td', {}, h('span', { class: 'mono' }, vs.listen || DASH), h('span', { class: 'muted small' }, ` ${vs.protocol || ''}`)),
          h('td', {}, vs.pool || DASH),
          h('td', {}, where === undefined ? DASH : where.length ? where.join(', ') : h('span', { class: 'error-text' }, 'not placed')),
          metric('requests_per_s', (v) => fmtRate(v), 'requests per second', 'rate', 'rps'),
          metric('latency_total_p90_ms', fmtMs, 'p90 latency', 'latency', 'latency'),
        );
      }),
      7,
      vss ? 'No virtual services yet: create one with `ballast ctl apply -f FILE`.' : 'Virtual services could not be loaded.',
    );

    fillBody(
      this.seBody,
      seList.map((se) => {
        const load = se.load || {};
        const inSync = se.acked_version === se.config_version;
        return h(
          'tr',
          { 'data-testid': `se-row-${se.name}` },
          h('th', { scope: 'row' }, se.name, h('div', { class: 'muted small mono' }, se.address || '')),
          h('td', {}, stateBadge(se.state, `se-state-${se.name}`)),
          h('td', {}, scoreBadge(se.health, `se-score-${se.name}`)),
          h('td', { class: 'num' }, fmtPercent(load.cpu_percent)),
          h('td', { class: 'num' }, fmtNumber(load.connections_active)),
          h('td', {}, (se.virtual_services || []).length ? se.virtual_services.join(', ') : h('span', { class: 'muted' }, 'none')),
          syncCell(inSync ? 'in-sync' : 'syncing', `acknowledged ${se.acked_version ?? DASH} of ${se.config_version ?? DASH}`, se),
          h('td', { class: 'muted' }, fmtAge(se.last_seen_age_s)),
        );
      }),
      8,
      ses ? 'No service engine has registered yet.' : 'Service engines could not be loaded.',
    );

    // Summary tiles.
    const bands = { green: 0, yellow: 0, orange: 0, red: 0 };
    for (const vs of list) {
      const b = bandOf(healthOf.get(vs.name));
      if (b) bands[b]++;
    }
    const totalRps = traffic.reduce((sum, a) => sum + (lastValue(a && a.series && a.series.requests_per_s) || 0), 0);
    const connected = seList.filter((s) => s.state === 'connected').length;
    const tile = (label, value, testid) =>
      h('div', { class: 'tile', 'data-testid': testid }, h('div', { class: 'label' }, label), h('div', { class: 'big-value' }, value));
    replaceChildren(
      this.tiles,
      tile('Virtual services', String(list.length), 'tile-vs'),
      tile('Healthy (green)', `${bands.green} / ${list.length}`, 'tile-green'),
      tile('Needs attention', String(bands.yellow + bands.orange + bands.red), 'tile-attention'),
      tile('Requests/s', fmtCompact(totalRps), 'tile-rps'),
      tile('Service engines', `${connected} / ${seList.length} connected`, 'tile-se'),
    );
    ui.report(errors);
  }

  destroy() {
    this.stopped = true;
    this.poller.stop();
  }
}

const TRAFFIC_METRICS = [
  'requests_per_s', 'responses_1xx_per_s', 'responses_2xx_per_s', 'responses_3xx_per_s',
  'responses_4xx_per_s', 'responses_5xx_per_s', 'connections_per_s',
];
const LATENCY_PHASES = ['connect', 'header', 'response', 'transfer', 'total'];
const ERROR_METRICS = ['errors_per_s', 'resets_per_s', 'timeouts_per_s', 'error_rate'];

class VsPage {
  constructor(main, name, params) {
    this.name = name;
    this.key = `vs:${name}`;
    this.window = WINDOWS[params.get('window')] ? params.get('window') : DEFAULT_WINDOW;
    this.events = { items: [], lastId: null }; // collectEvents()
    this.chartsAt = 0;
    this.pool = null;
    document.title = `${name} · Ballast`;

    this.scoreSlot = h('span', {});
    this.meta = h('div', { class: 'meta', 'data-testid': 'vs-meta' });
    this.healthFacts = h('div', {});
    this.windowButtons = Object.entries(WINDOWS).map(([key, w]) =>
      h(
        'button',
        {
          type: 'button',
          'aria-pressed': String(key === this.window),
          'data-window': key,
          'data-testid': `window-${key}`,
          onclick: () => this.setWindow(key),
        },
        w.label,
      ),
    );
    const charts = h('div', { class: 'charts' });
    this.serverBody = h('tbody', { 'data-testid': 'server-table-body' });
    this.placementBody = h('tbody', { 'data-testid': 'placement-table-body' });
    this.eventBody = h('tbody', { 'data-testid': 'vs-events-body' });

    main.append(
      h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, h('a', { href: '#/' }, 'Overview'), ' / ', name),
      h('h1', {}, h('span', { 'data-testid': 'vs-name' }, name), this.scoreSlot),
      this.meta,
      (this.details = h(
        'div',
        { 'data-testid': 'vs-details' },
        h(
          'div',
          { class: 'grid-2' },
          panel('health-heading', 'Health', this.healthFacts),
          panel(
            'placement-heading',
            'Placement',
            table('placement-table', ['Service engine', 'State', 'Score', 'Configuration'], this.placementBody),
          ),
        ),
        panelHead(
          'charts-heading',
          'Traffic, latency and errors',
          h('div', { class: 'segmented', role: 'group', 'aria-label': 'Time window' }, this.windowButtons),
        ),
        charts,
        panel(
          'servers-heading',
          'Pool and servers',
          table('server-table', ['Server', 'State', 'Score', 'Penalties', 'Reasons'], this.serverBody),
        ),
        section(
          'events-heading',
          panelHead(
            'events-heading',
            'Recent events',
            h('a', { href: `#/events?object=${encodeURIComponent(name)}` }, 'All events of this virtual service'),
          ),
          table('vs-events', EVENT_COLUMNS, this.eventBody),
        ),
      )),
    );

    this.charts = {
      traffic: new Chart(charts, {
        title: 'Traffic (per second)',
        testid: 'chart-traffic',
        fmt: fmtCompact,
        series: [
          { key: 'requests_per_s', label: 'requests', color: 'rgba(36, 87, 197, 0.45)', width: 4 },
          { key: 'responses_2xx_per_s', label: '2xx', color: COLORS.green },
          { key: 'responses_3xx_per_s', label: '3xx', color: COLORS.teal },
          { key: 'responses_4xx_per_s', label: '4xx', color: COLORS.orange },
          { key: 'responses_5xx_per_s', label: '5xx', color: COLORS.red },
          { key: 'responses_1xx_per_s', label: '1xx', color: COLORS.grey },
          { key: 'connections_per_s', label: 'new connections', color: COLORS.purple, dash: [4, 4] },
        ],
      }),
      latency: new Chart(charts, {
        title: 'Latency breakdown (p90 per phase)',
        testid: 'chart-latency',
        fmt: fmtMs,
        series: [
          { key: 'latency_total_p90_ms', label: 'total', color: COLORS.dark, width: 2 },
          { key: 'latency_connect_p90_ms', label: 'connect', color: COLORS.teal },
          { key: 'latency_header_p90_ms', label: 'request header', color: COLORS.orange },
          { key: 'latency_response_p90_ms', label: 'server response', color: COLORS.blue },
          { key: 'latency_transfer_p90_ms', label: 'transfer', color: COLORS.pink },
        ],
      }),
      errors: new Chart(charts, {
        title: 'Errors',
        testid: 'chart-errors',
        fmt: (v) => fmtRate(v),
        rightFmt: fmtPercent,
        transform: { error_rate: (v) => v * 100 }, // a fraction of the requests (0..1) -> %
        series: [
          { key: 'errors_per_s', label: 'errors/s', color: COLORS.red, width: 2 },
          { key: 'resets_per_s', label: 'resets/s', color: COLORS.orange },
          { key: 'timeouts_per_s', label: 'timeouts/s', color: COLORS.purple },
          { key: 'error_rate', label: 'error rate', color: COLORS.dark, dash: [5, 4], right: true },
        ],
      }),
    };
    this.poller = new Poller(() => this.refresh(), POLL_MS).start();
  }

  update(params) {
    const w = params.get('window');
    if (w && WINDOWS[w] && w !== this.window) this.setWindow(w, false);
  }

  setWindow(key, writeHash = true) {
    this.window = key;
    for (const b of this.windowButtons) b.setAttribute('aria-pressed', String(b.dataset.window === key));
    if (writeHash) history.replaceState(null, '', `#/vs/${pathName(this.name)}?window=${key}`);
    this.chartsAt = 0; // load the charts of the new window at once
    this.poller.now();
  }

  async refresh() {
    const { get, errors } = batch();
    const w = WINDOWS[this.window];
    const chartsDue = Date.now() - this.chartsAt >= w.every;
    const metrics = [...TRAFFIC_METRICS, ...LATENCY_PHASES.map((p) => `latency_${p}_p90_ms`), ...ERROR_METRICS];
    const eventsPath = this.events.lastId === null ? '/events?limit=500' : `/events?since_id=${this.events.lastId}&limit=1000`;
    const windowAsked = this.window;
    const [vs, health, status, serverHealth, poolHealth, ses, analytics, events] = await Promise.all([
      get(`/virtual_services/${pathName(this.name)}`, { missingOk: true }),
      get(`/health/vs/${pathName(this.name)}`, { missingOk: true }),
      get(`/virtual_services/${pathName(this.name)}/status`, { missingOk: true }),
      get('/health/server'),
      this.pool ? get(`/health/pool/${pathName(this.pool)}`, { missingOk: true }) : Promise.resolve(undefined),
      get('/ses'),
      chartsDue ? get(analyticsPath('vs', this.name, metrics, w.from, w.step), { missingOk: true }) : Promise.resolve(false),
      get(eventsPath),
    ]);
    if (this.stopped) return;
    // No such virtual service (a stale link, or deleted meanwhile): say so, and keep looking in
    // case it is created.
    this.details.hidden = vs === null;
    if (vs === null) {
      replaceChildren(this.scoreSlot);
      replaceChildren(
        this.meta,
        h('span', { class: 'error-text', 'data-testid': 'vs-missing' }, `There is no virtual service named “${this.name}”. `),
        h('a', { href: '#/' }, 'Back to the overview.'),
      );
      ui.report(errors);
      return;
    }
    const pool = (vs && vs.pool) || (status && status.pool) || this.pool;
    const poolChanged = pool !== this.pool;
    this.pool = pool;

    // Title line and facts.
    replaceChildren(this.scoreSlot, scoreBadge(health, 'vs-page-score', { big: true, showBand: true }));
    if (vs) {
      replaceChildren(
        this.meta,
        [
          ['listen', vs.listen],
          ['protocol', vs.protocol],
          ['pool', vs.pool],
          ['SE group', vs.se_group || 'default'],
          ['version', vs.version],
        ].map(([k, v]) => h('span', {}, `${k} `, h('b', {}, v ?? DASH))),
      );
    }
    this.renderHealth(health);

    // Charts: only when due (every 2 s for 5 min, less often for longer windows).
    if (chartsDue && windowAsked === this.window) {
      this.chartsAt = Date.now();
      for (const c of Object.values(this.charts)) c.update(analytics);
    }

    this.renderServers(status, serverHealth, poolHealth);
    this.renderPlacement(status, ses);
    this.renderEvents(events);
    ui.report(errors);
    if (poolChanged && pool && !poolHealth) this.poller.now(); // load the pool's health at once
  }

  renderHealth(health) {
    if (!health) {
      replaceChildren(this.healthFacts, h('p', { class: 'muted' }, 'No health score yet.'));
      return;
    }
    const fact = (k, ...v) => [h('dt', {}, k), h('dd', {}, ...v)];
    replaceChildren(
      this.healthFacts,
      h(
        'dl',
        { class: 'facts', 'data-testid': 'vs-health' },
        fact('Score', scoreBadge(health, 'vs-health-score', { showBand: true })),
        fact('Previous score', finite(health.previous_score) ? fmtNumber(health.previous_score) : DASH),
        fact('Performance', finite(health.performance_score) ? fmtNumber(health.performance_score) : DASH),
        fact('Penalties', penaltyList(health)),
        fact('Reasons', reasonList(health)),
        fact('Updated', fmtClock(health.updated)),
      ),
    );
  }

  renderServers(status, serverHealth, poolHealth) {
    const pool = this.pool;
    const rows = [];
    if (pool) {
      rows.push(
        h(
          'tr',
          { class: 'group', 'data-testid': `pool-row-${pool}` },
          h('td', {}, `pool ${pool}`),
          h('td', {}, ''),
          healthCells(poolHealth, 'pool-score'),
        ),
      );
    }
    const healthByAddress = new Map();
    for (const x of (serverHealth && serverHealth.items) || []) {
      if (pool && typeof x.name === 'string' && x.name.startsWith(`${pool}/`)) healthByAddress.set(x.name.slice(pool.length + 1), x);
    }
    const addresses = [];
    for (const s of (status && status.servers) || []) addresses.push(s.address);
    for (const a of healthByAddress.keys()) if (!addresses.includes(a)) addresses.push(a);
    // Per server, its state on each engine: {"se-1": "up"} (values other than a state ignored).
    const statesOf = (s) => {
      const out = {};
      for (const [se, st] of Object.entries((s && s.health) || {})) if (typeof st === 'string') out[se] = st;
      return out;
    };
    const reported = new Map(((status && status.servers) || []).map((s) => [s.address, statesOf(s)]));
    for (const address of addresses) {
      const perSe = reported.get(address) || {};
      const states = [...new Set(Object.values(perSe))];
      const state = states.length === 0 ? 'unknown' : states.length === 1 ? states[0] : 'mixed';
      const detail = Object.entries(perSe).map(([se, st]) => `${se}: ${st}`).join(', ');
      const hx = healthByAddress.get(address);
      rows.push(
        h(
          'tr',
          { 'data-testid': `server-row-${address}` },
          h('td', { class: 'mono' }, address),
          h(
            'td',
            {},
            stateBadge(state, `server-state-${address}`, detail || 'not reported by any service engine yet'),
            states.length > 1 || Object.keys(perSe).length > 1 ? h('div', { class: 'muted small' }, detail) : null,
          ),
          healthCells(hx, `server-score-${address}`),
        ),
      );
    }
    if (addresses.length === 0) {
      rows.push(emptyRow(5, status ? 'No servers in the pool.' : 'Servers could not be loaded.'));
    }
    replaceChildren(this.serverBody, rows);
  }

  renderPlacement(status, ses) {
    const seInfo = new Map(((ses && ses.items) || []).map((s) => [s.name, s]));
    const rows = ((status && status.ses) || []).map((s) => {
      const info = seInfo.get(s.name) || {};
      const sync = s.apply_error ? 'failed' : s.in_sync ? 'in-sync' : 'syncing';
      return h(
        'tr',
        { 'data-testid': `placement-row-${s.name}` },
        h('th', { scope: 'row' }, s.name),
        h('td', {}, stateBadge(s.state, `placement-state-${s.name}`)),
        h('td', {}, scoreBadge(info.health, `placement-score-${s.name}`)),
        syncCell(sync, null, s, s.apply_error ? h('div', { class: 'error-text small' }, s.apply_error) : null),
      );
    });
    // Placed SEs without a row in ses (not expected, but shown).
    for (const name of (status && status.placement) || []) {
      if (!((status && status.ses) || []).some((s) => s.name === name)) {
        rows.push(h('tr', {}, h('th', { scope: 'row' }, name), h('td', { colspan: 3, class: 'muted' }, 'placed, no report yet')));
      }
    }
    fillBody(this.placementBody, rows, 4, status ? `Not placed on any service engine (group ${status.se_group || 'default'}).` : DASH);
  }

  relevant(ev) {
    const object = ev.object || '';
    const slash = object.indexOf('/');
    const name = slash >= 0 ? object.slice(slash + 1) : object;
    const d = ev.details && typeof ev.details === 'object' ? ev.details : {};
    if (name === this.name || d.virtual_service === this.name) return true;
    if (this.pool && (name === this.pool || name.startsWith(`${this.pool}/`) || d.pool === this.pool)) return true;
    return false;
  }

  renderEvents(events) {
    collectEvents(this.events, events, 2000, 1000);
    const mine = this.events.items.filter((ev) => this.relevant(ev)).slice(-15).reverse();
    fillBody(
      this.eventBody,
      mine.map((ev) => eventRow(ev, { 'data-testid': 'vs-event-row', 'data-type': ev.type, 'data-id': ev.id })),
      4,
      'No events for this virtual service yet.',
    );
  }

  destroy() {
    this.stopped = true;
    this.poller.stop();
    for (const c of Object.values(this.charts)) c.destroy();
  }
}

class EventsPage {
  constructor(main, params) {
    this.key = 'events';
    document.title = 'Events · Ballast';
    this.type = params.get('type') || '';
    this.object = params.get('object') || '';
    this.reset();
    this.typeSelect = h(
      'select',
      { id: 'filter-type', 'data-testid': 'filter-type', onchange: () => this.filtersChanged() },
      h('option', { value: '' }, 'all types'),
      EVENT_TYPES.map((t) => h('option', { value: t, selected: t === this.type }, t)),
    );
    this.objectInput = h('input', {
      id: 'filter-object',
      type: 'search',
      value: this.object,
      placeholder: 'web or virtual_services/web',
      'data-testid': 'filter-object',
      oninput: () => {
        clearTimeout(this.debounce);
        this.debounce = setTimeout(() => this.filtersChanged(), 300);
      },
    });
    this.liveBox = h('input', { id: 'filter-live', type: 'checkbox', checked: true, 'data-testid': 'filter-live', onchange: () => this.liveChanged() });
    this.count = h('span', { class: 'count muted small', 'aria-live': 'polite' });
    this.body = h('tbody', { 'data-testid': 'events-table-body' });
    main.append(
      ...pageHeader('Events'),
      h('p', { class: 'muted' }, 'What the controller saw happen, newest first.'),
      h(
        'section',
        { class: 'panel' },
        h(
          'form',
          { class: 'filters', role: 'search', onsubmit: (e) => e.preventDefault() },
          h('label', { for: 'filter-type' }, 'Type', this.typeSelect),
          h('label', { for: 'filter-object' }, 'Object', this.objectInput),
          h('label', { for: 'filter-live', class: 'inline' }, 'Live', this.liveBox),
          this.count,
        ),
        table('events-table', [...EVENT_COLUMNS, 'Details'], this.body),
      ),
    );
    this.poller = new Poller(() => this.refresh(), POLL_MS).start();
  }

  reset() {
    this.items = [];
    this.lastId = null;
    this.generation = (this.generation || 0) + 1;
  }

  update(params) {
    const type = params.get('type') || '';
    const object = params.get('object') || '';
    if (type === this.type && object === this.object) return;
    this.typeSelect.value = type;
    this.objectInput.value = object;
    this.filtersChanged();
  }

  // The filters as query parameters (of the page's address and of /events).
  filterQuery() {
    const q = new URLSearchParams();
    if (this.type) q.set('type', this.type);
    if (this.object) q.set('object', this.object);
    return q;
  }

  filtersChanged() {
    this.type = this.typeSelect.value;
    this.object = this.objectInput.value.trim();
    const q = this.filterQuery();
    history.replaceState(null, '', `#/events${q.toString() ? `?${q}` : ''}`);
    this.reset();
    this.render();
    this.poller.now();
  }

  liveChanged() {
    if (this.liveBox.checked) this.poller.now();
  }

  async refresh() {
    if (!this.liveBox.checked && this.lastId !== null) return;
    const q = this.filterQuery();
    if (this.lastId === null) q.set('limit', '200');
    else {
      q.set('since_id', String(this.lastId));
      q.set('limit', '1000');
    }
    const generation = this.generation;
    const { get, errors } = batch();
    const answer = await get(`/events?${q}`);
    if (this.stopped || generation !== this.generation) return;
    if (collectEvents(this, answer, 1000, 500)) this.render(); // this.items and this.lastId
    ui.report(errors);
  }

  render() {
    const shown = this.items.slice(-300).reverse();
    this.count.textContent = this.lastId === null ? 'loading…' : `${shown.length} event${shown.length === 1 ? '' : 's'}`;
    fillBody(
      this.body,
      shown.map((ev) =>
        eventRow(
          ev,
          { 'data-testid': 'event-row', 'data-type': ev.type, 'data-object': ev.object, 'data-id': ev.id },
          h('td', { class: 'details mono' }, eventDetails(ev.details)),
        ),
      ),
      5,
      this.lastId === null ? 'Loading…' : this.type || this.object ? 'No event matches these filters.' : 'No events yet.',
    );
  }

  destroy() {
    this.stopped = true;
    clearTimeout(this.debounce);
    this.poller.stop();
  }
}

class NotFoundPage {
  constructor(main, path) {
    this.key = `404:${path}`;
    document.title = 'Not found · Ballast';
    main.append(...pageHeader('Not found'), h('p', {}, `There is no page “${path}”. `, h('a', { href: '#/' }, 'Back to the overview.')));
  }

  destroy() {}
}

// ---- router ------------------------------------------------------------------------------------

let page = null;

function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/';
  const q = raw.indexOf('?');
  const path = q >= 0 ? raw.slice(0, q) : raw;
  const params = new URLSearchParams(q >= 0 ? raw.slice(q + 1) : '');
  const parts = path.split('/').filter(Boolean);
  if (parts.length === 0) return { key: 'overview', nav: 'overview', params };
  if (parts[0] === 'vs' && parts.length > 1) {
    const name = parts.slice(1).map(decodeURIComponent).join('/');
    return { key: `vs:${name}`, nav: 'overview', name, params };
  }
  if (parts[0] === 'events' && parts.length === 1) return { key: 'events', nav: 'events', params };
  return { key: `404:${path}`, nav: null, path, params };
}

function route(initial = false) {
  const r = parseHash();
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === r.nav) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (page && page.key === r.key) {
    if (page.update) page.update(r.params);
    return;
  }
  if (page) page.destroy();
  const main = document.getElementById('main');
  main.replaceChildren();
  if (r.key === 'overview') page = new OverviewPage(main);
  else if (r.key === 'events') page = new EventsPage(main, r.params);
  else if (r.name !== undefined) page = new VsPage(main, r.name, r.params);
  else page = new NotFoundPage(main, r.path);
  if (!initial) {
    window.scrollTo(0, 0);
    main.focus({ preventScroll: true });
  }
}

function startApp() {
  ui.banner = document.getElementById('banner');
  ui.live = document.getElementById('live');
  document.getElementById('logout').addEventListener('click', async () => {
    try {
      await api('/session', { method: 'DELETE' });
    } catch {
      // Gone already, or the controller is unreachable: the login page says what happens next.
    }
    leaving = true;
    location.replace('login.html');
  });
  window.addEventListener('hashchange', () => route());
  route(true);
}

// ---- login page --------------------------------------------------------------------------------

function startLogin() {
  // Logged in already (a bookmark of the login page): straight to the dashboard.
  fetch(`${API}/session`, { credentials: 'same-origin', cache: 'no-store' })
    .then((r) => {
      if (r.ok) location.replace(`./${location.hash}`);
    })
    .catch(() => {});
  const form = document.getElementById('login-form');
  const input = document.getElementById('token');
  const error = document.getElementById('login-error');
  const button = form.querySelector('button[type="submit"]');
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const token = input.value.trim();
    error.textContent = '';
    if (!token) {
      error.textContent = 'enter a token';
      input.focus();
      return;
    }
    button.disabled = true;
    try {
      const r = await fetch(`${API}/session`, {
        method: 'POST',
        credentials: 'same-origin',
        cache: 'no-store',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify({ token }),
      });
      if (r.ok) {
        input.value = '';
        location.replace(`./${location.hash}`);
        return;
      }
      if (r.status === 401) {
        error.textContent = 'invalid token';
      } else {
        let why = `HTTP ${r.status}`;
        try {
          const body = await r.json();
          if (body && typeof body.error === 'string') why = body.error;
        } catch {
          // not JSON: the status says enough
        }
        error.textContent = `login failed: ${why}`;
      }
      input.select();
    } catch {
      error.textContent = 'cannot reach the controller';
    } finally {
      button.disabled = false;
    }
  });
}

if (document.body.dataset.page === 'login') startLogin();
else startApp();
