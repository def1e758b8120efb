// The controller's dashboard in a real browser: headless Chromium (Debian's /usr/bin/chromium)
// driven by playwright-core (ui/node_modules, installed by scripts/deps).
//
// Run by tests/integration/test_dashboard.py, which starts a controller, a managed service engine,
// three backends and load through the virtual service, then runs
//
//   node tests/browser/dashboard.mjs
//
// with, in the environment:
//   DASHBOARD_URL     the controller, e.g. http://127.0.0.1:7000 (the dashboard is at /ui/)
//   DASHBOARD_TOKEN   an API token that logs in
//   VS_NAME           the virtual service to look at (default web)
//   VICTIM_PID        pid of the backend process this script kills (SIGKILL)
//   VICTIM_ADDRESS    that backend's address as the pool lists it (127.0.0.1:PORT)
//   SCREENSHOT_DIR    where the screenshots go (created if missing)
//   CHROMIUM          the browser (default /usr/bin/chromium)
//   CHANGE_TIMEOUT_S  how long to wait for the kill to show (default 30)
//
// Steps: a wrong token shows "invalid token"; the right one opens the overview, which lists the
// virtual service with its score; its page shows the servers; the victim is killed and the page,
// never reloaded, shows the server down with another score and band; the events page lists the
// server_down / health_changed events, also through its type filter; logging out leaves the
// dashboard. A screenshot of each page is saved. Exit status 0 when every step passed.

import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const require = createRequire(new URL('../../ui/package.json', import.meta.url));
const { chromium } = require('playwright-core');

function env(name, fallback) {
  const v = process.env[name];
  if (v === undefined || v === '') {
    if (fallback !== undefined) return fallback;
    console.error(`dashboard.mjs: ${name} is not set (see the top of this file)`);
    process.exit(2);
  }
  return v;
}

const base = env('DASHBOARD_URL').replace(/\/+$/, '');
const token = env('DASHBOARD_TOKEN');
const vs = env('VS_NAME', 'web');
const victimPid = Number(env('VICTIM_PID'));
const victim = env('VICTIM_ADDRESS');
const shots = env('SCREENSHOT_DIR');
const executablePath = env('CHROMIUM', '/usr/bin/chromium');
const changeTimeout = Number(env('CHANGE_TIMEOUT_S', '30')) * 1000;

const started = Date.now();
function log(msg) {
  console.log(`[${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s] ${msg}`);
}

function check(cond, msg) {
  if (!cond) throw new Error(msg);
}

mkdirSync(shots, { recursive: true });
const profile = mkdtempSync(join(tmpdir(), 'ballast-chromium-'));
const pageErrors = [];
let context;
let page;

async function screenshot(name) {
  const path = join(shots, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  log(`screenshot ${path}`);
}

// The attributes of the element with this data-testid, read in the page (null if absent).
async function attrs(testid) {
  return page.evaluate((id) => {
    const el = document.querySelector(`[data-testid="${CSS.escape(id)}"]`);
    if (!el) return null;
    return { band: el.dataset.band ?? null, score: el.dataset.score ?? null, state: el.dataset.state ?? null, text: el.textContent.trim() };
  }, testid);
}

// Polls fn (in node) until it returns a truthy value; throws `what` after `ms`.
async function until(fn, what, ms = 15000, every = 250) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms / 1000} s waiting for ${what}`);
    await new Promise((r) => setTimeout(r, every));
  }
}

async function main() {
  context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
    viewport: { width: 1400, height: 900 },
  });
  context.setDefaultTimeout(15000);
  page = context.pages()[0] || (await context.newPage());
  page.on('pageerror', (e) => {
    pageErrors.push(String(e));
    log(`page error: ${e}`);
  });
  page.on('console', (m) => {
    // 401s are expected: the wrong token, and the login page asking whether a session exists.
    if (m.type() === 'error' && !m.text().includes('status of 401')) log(`console error: ${m.text()}`);
  });
  // Nothing but the controller: the dashboard must not need the network.
  const foreign = [];
  page.on('request', (r) => {
    if (!r.url().startsWith(base) && !r.url().startsWith('data:')) foreign.push(r.url());
  });

  // ---- login -------------------------------------------------------------------------------------
  await page.goto(`${base}/ui/`);
  check(new URL(page.url()).pathname === '/ui/login.html', `/ui/ without a session should lead to /ui/login.html, not ${page.url()}`);
  log('no session: /ui/ redirected to the login page');
  await page.fill('[data-testid="login-token"]', `${token}-wrong`);
  await page.click('[data-testid="login-submit"]');
  await page.waitForFunction(() => document.querySelector('[data-testid="login-error"]').textContent.includes('invalid token'));
  log('wrong token: "invalid token" shown');
  await screenshot('1-login-invalid-token');
  await page.fill('[data-testid="login-token"]', token);
  await page.click('[data-testid="login-submit"]');
  await page.waitForURL((u) => u.pathname === '/ui/' || u.pathname === '/ui/index.html');
  log(`logged in: ${page.url()}`);

  // ---- overview -----------------------------------------------------------------------------------
  await page.waitForSelector(`[data-testid="vs-row-${vs}"]`);
  const overviewScore = await until(async () => {
    const a = await attrs(`vs-score-${vs}`);
    return a && a.band ? a : null;
  }, `a score for ${vs} on the overview`, 30000);
  log(`overview: ${vs} has score ${overviewScore.score} (${overviewScore.band})`);
  await until(async () => (await page.locator(`[data-testid="vs-rps-${vs}"] svg`).count()) > 0, `a requests/s sparkline for ${vs}`, 30000);
  log('overview: requests/s sparkline drawn');
  await page.waitForSelector('[data-testid^="se-row-"]');
  await screenshot('2-overview');

  // ---- virtual service page ---------------------------------------------------------------------
  await page.click(`[data-testid="vs-link-${vs}"]`);
  await page.waitForSelector('[data-testid="vs-page-score"]');
  const before = await until(async () => {
    const score = await attrs('vs-page-score');
    const state = await attrs(`server-state-${victim}`);
    const server = await attrs(`server-score-${victim}`);
    return score && score.band && state && state.state === 'up' && server && server.band ? { score, state, server } : null;
  }, `the VS score and ${victim} up with a score`, 30000);
  log(`vs page: score ${before.score.score} (${before.score.band}); ${victim} ${before.state.state}, score ${before.server.score} (${before.server.band})`);
  // Charts drawn with data (the traffic chart's "no traffic yet" hidden).
  await until(
    () => page.evaluate(() => {
      const chart = document.querySelector('[data-testid="chart-traffic"]');
      const empty = chart && chart.querySelector('.chart-empty');
      return Boolean(chart && chart.querySelector('canvas') && empty && !empty.checkVisibility());
    }),
    'the traffic chart with data',
    30000,
  );
  log('vs page: traffic chart has data');
  await screenshot('3-virtual-service');

  // The page is never reloaded from here on: a mark in its window must survive.
  await page.evaluate(() => {
    window.__ballastNoReload = 'still here';
  });
  const navigations = [];
  page.on('framenavigated', (f) => {
    if (f === page.mainFrame()) navigations.push(f.url());
  });

  // ---- kill a backend -----------------------------------------------------------------------------
  process.kill(victimPid, 'SIGKILL');
  const killed = Date.now();
  log(`killed the backend ${victim} (pid ${victimPid})`);
  const after = await until(async () => {
    const state = await attrs(`server-state-${victim}`);
    const server = await attrs(`server-score-${victim}`);
    if (!state || state.state === 'up' || !server || !server.band) return null;
    if (server.band === before.server.band || server.score === before.server.score) return null;
    return { state, server };
  }, `${victim}'s state, score and band to change`, changeTimeout);
  log(`after ${((Date.now() - killed) / 1000).toFixed(1)} s: ${victim} ${after.state.state}, score ${after.server.score} (${after.server.band})`);
  // The virtual service's own score follows (its pool lost a server).
  const vsAfter = await until(async () => {
    const score = await attrs('vs-page-score');
    return score && score.score !== before.score.score ? score : null;
  }, `the score of ${vs} to change`, changeTimeout);
  log(`vs page: score ${before.score.score} (${before.score.band}) -> ${vsAfter.score} (${vsAfter.band})`);
  const mark = await page.evaluate(() => window.__ballastNoReload);
  check(mark === 'still here' && navigations.length === 0, `the page was reloaded or navigated: ${navigations.join(', ')}`);
  log('no reload: the page updated in place');
  await page.waitForSelector(`[data-testid="vs-event-row"][data-type="server_down"], [data-testid="vs-event-row"][data-type="health_changed"]`, { timeout: changeTimeout });
  await screenshot('4-virtual-service-after-kill');

  // ---- events ---------------------------------------------------------------------------------------
  await page.click('a[data-nav="events"]');
  await page.waitForSelector('[data-testid="events-table"]');
  const row = await page.waitForSelector('[data-testid="event-row"][data-type="server_down"], [data-testid="event-row"][data-type="health_changed"]', { timeout: changeTimeout });
  log(`events: ${await row.getAttribute('data-type')} ${await row.getAttribute('data-object')}`);
  await screenshot('5-events');
  await page.selectOption('[data-testid="filter-type"]', 'server_down');
  await until(
    () => page.evaluate(() => {
      const rows = [...document.querySelectorAll('[data-testid="event-row"]')];
      return rows.length > 0 && rows.every((r) => r.dataset.type === 'server_down');
    }),
    'only server_down events after filtering',
    changeTimeout,
  );
  check(page.url().includes('type=server_down'), `the filter is not in the address: ${page.url()}`);
  log('events: type filter shows only server_down');
  await screenshot('6-events-server-down');

  // ---- log out ------------------------------------------------------------------------------------
  await page.click('#logout');
  await page.waitForURL((u) => u.pathname === '/ui/login.html');
  await page.goto(`${base}/ui/`);
  check(new URL(page.url()).pathname === '/ui/login.html', `after logging out /ui/ should lead to the login page, not ${page.url()}`);
  log('logged out: /ui/ leads to the login page again');

  check(pageErrors.length === 0, `JavaScript errors in the page: ${pageErrors.join('; ')}`);
  check(foreign.length === 0, `requests outside the controller: ${foreign.join(', ')}`);
}

let status = 0;
try {
  await main();
  log('PASS');
} catch (e) {
  status = 1;
  console.error(`FAIL: ${e.message}`);
  if (page) {
    try {
      await screenshot('failure');
      const text = await page.evaluate(() => document.body.innerText);
      console.error(`page ${page.url()}:\n${text.slice(0, 3000)}`);
    } catch (e2) {
      console.error(`(no failure screenshot: ${e2.message})`);
    }
  }
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
process.exit(status);
