// Browser tests of /ui in headless Chromium (Debian's package, driven by playwright-core).
// Started by tests/it/browser.rs, which runs the real server, installs workspaces, stores
// events and passes tokens in the environment. Prints one line per check, a few measured
// figures ("metric: ..."), and "N passed, N failed"; exits 1 when a check failed.

import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set (run through tests/it/browser.rs)`);
  return value;
};
const BASE = env('BASE');
const WS = env('WORKSPACE_ID');
const T = {
  admin: env('ADMIN_TOKEN'),
  member: env('MEMBER_TOKEN'),
  dark: env('DARK_TOKEN'),
  expired: env('EXPIRED_TOKEN'),
  webhook: env('WEBHOOK_TOKEN'),
  perf: process.env.PERF_TOKEN,
};
const SCREENSHOT_DIR = env('SCREENSHOT_DIR');
const SIGNING_KEY = fs.readFileSync(env('SIGNING_KEY'), 'utf8');
const ADDON_ID = env('ADDON_ID');

/** A user token signed with the test key, for checks that depend on the time left. */
function userToken({ role = 'OWNER', theme = 'DEFAULT', ttl = 1800 } = {}) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const claims = {
    iss: 'clockify', type: 'addon', sub: 'clockify-studio', workspaceId: WS, addonId: ADDON_ID,
    user: 'user-1', workspaceRole: role, theme, language: 'EN', exp: Math.floor(Date.now() / 1000) + ttl,
  };
  const unsigned = `${part({ alg: 'RS256', typ: 'JWT' })}.${part(claims)}`;
  return `${unsigned}.${crypto.sign('RSA-SHA256', Buffer.from(unsigned), SIGNING_KEY).toString('base64url')}`;
}
const PAGES = ['overview', 'events', 'explorer', 'flows', 'runs', 'sources', 'destinations', 'settings', 'audit'];
/** The fake receiver tests/it/browser.rs runs for destinations: 500 to the first attempt of an
 * event whose body says "flaky", 200 with {"received": true} otherwise. */
const RECEIVER_URL = env('RECEIVER_URL');
// Stands in for Clockify's page. It is a loopback origin (Chromium blocks public pages
// from framing loopback ones) that the server lists via --ui-frame-ancestor.
const FAKE_CLOCKIFY = env('FRAME_ANCESTOR');

const results = { passed: 0, failed: 0 };
const metrics = [];

/** UI_TEST_ONLY=regex runs only the checks whose name matches (while iterating locally). */
const ONLY = process.env.UI_TEST_ONLY ? new RegExp(process.env.UI_TEST_ONLY) : null;

async function check(name, fn) {
  if (ONLY && !ONLY.test(name) && !name.startsWith('setup')) return;
  const started = Date.now();
  try {
    const note = await fn();
    results.passed += 1;
    console.log(`ok - ${name}${note ? ` (${note})` : ''} [${Date.now() - started} ms]`);
  } catch (error) {
    results.failed += 1;
    console.log(`FAIL - ${name}: ${error && error.stack ? error.stack : error}`);
  }
}

function assert(condition, message) {
  if (!condition) throw new Error(message);
}

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
});

/** Routes that answer 404 "no such route" (features not built yet): the browser logs these. */
const notYetRoutes = new Set();

/**
 * A page that records console errors, page errors and CSP violations; `errors()` lists
 * them except the browser's own log line for a not-yet-available API route.
 */
async function openPage({ width = 1280, height = 900, theme, allowStatus = [] } = {}) {
  const context = await browser.newContext({ viewport: { width, height }, colorScheme: theme });
  const page = await context.newPage();
  const problems = [];
  const expected = new Set();
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI}`);
    });
  });
  page.on('response', (response) => {
    const status = response.status();
    const url = response.url();
    if (allowStatus.includes(status)) {
      expected.add(url);
      return;
    }
    if ((status !== 404 && status !== 405) || !new URL(url).pathname.startsWith('/api/')) return;
    // Noted at once (the console line may come first), confirmed when the body is read.
    expected.add(url);
    response.json().then((body) => {
      if (body && body.error === 'no such route') notYetRoutes.add(new URL(url).pathname);
      else problems.push(`unexpected ${status} from ${url}: ${JSON.stringify(body)}`);
    }).catch(() => problems.push(`unexpected ${status} from ${url}`));
  });
  page.on('console', (message) => {
    if (message.type() !== 'error') return;
    const url = message.location() && message.location().url;
    const text = message.text();
    if (/Failed to load resource/.test(text) && url && expected.has(url)) return;
    problems.push(`console: ${text} ${url || ''}`);
  });
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  const requests = [];
  page.on('request', (request) => requests.push(request.url()));
  return { page, context, requests, errors: () => problems.slice(), close: () => context.close() };
}

async function waitForApp(page) {
  await page.waitForSelector('main#view[aria-busy="false"]', { timeout: 10_000 });
  await page.waitForLoadState('networkidle');
}

async function apiJson(path, { method = 'GET', body, token = T.admin } = {}) {
  const response = await fetch(`${BASE}${path}`, {
    method,
    headers: { 'X-Addon-Token': token, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  assert(response.ok, `${method} ${path} answered ${response.status}: ${text}`);
  return text ? JSON.parse(text) : null;
}

async function apiStatus(path) {
  const response = await fetch(`${BASE}${path}`, { headers: { 'X-Addon-Token': T.admin } });
  return response.status;
}

async function deliver(eventType, body) {
  const response = await fetch(`${BASE}/webhooks/clockify/${eventType}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'clockify-signature': T.webhook, 'clockify-webhook-event-type': eventType },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  assert(response.status === 200, `delivery answered ${response.status}: ${text}`);
  return JSON.parse(text);
}

function luminance(rgb) {
  const [r, g, b] = rgb.match(/\d+/g).map(Number).map((v) => v / 255);
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}

// ------------------------------------------------------------------------- no token
await check('/ui without a token explains how to install and links the manifest', async () => {
  const p = await openPage();
  const response = await p.page.goto(`${BASE}/ui`);
  assert(response.status() === 200, `status ${response.status()}`);
  const text = await p.page.locator('body').innerText();
  assert(/install/i.test(text), 'no install instructions');
  const href = await p.page.locator('a[href$="/manifest"]').getAttribute('href');
  assert(href === `${BASE}/manifest`, `manifest link is ${href}`);
  const csp = response.headers()['content-security-policy'];
  assert(csp && csp.includes('frame-ancestors https://*.clockify.me'), `CSP: ${csp}`);
  await p.page.screenshot({ path: path.join(SCREENSHOT_DIR, 'no-token-light-1280.png') });
  assert(p.errors().length === 0, p.errors().join('\n'));
  await p.close();
});

await check('an expired or forged token gets a clear page, not a stack trace', async () => {
  const p = await openPage({ width: 400, allowStatus: [401] });
  for (const token of [T.expired, 'not-a-jwt']) {
    const response = await p.page.goto(`${BASE}/ui?auth_token=${encodeURIComponent(token)}`);
    assert(response.status() === 401, `status ${response.status()}`);
    const text = await p.page.locator('body').innerText();
    assert(/not valid/i.test(text) && /open it again/i.test(text), text);
    assert(!/panic|stack|backtrace/i.test(text), text);
  }
  assert(p.errors().length === 0, p.errors().join('\n'));
  await p.close();
});

// ------------------------------------------------------------------------- headers
await check('CSP and security headers hold on the page and the assets; assets are cached by hash', async () => {
  const p = await openPage();
  const response = await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/overview`);
  await waitForApp(p.page);
  const headers = response.headers();
  const csp = headers['content-security-policy'];
  for (const part of ["default-src 'self'", "script-src 'self'", "connect-src 'self'", "img-src 'self' data:", "style-src 'self'", 'frame-ancestors https://*.clockify.me']) {
    assert(csp.includes(part), `CSP lacks ${part}: ${csp}`);
  }
  assert(!/unsafe-inline|unsafe-eval/.test(csp), `CSP allows inline/eval: ${csp}`);
  assert(headers['referrer-policy'] === 'no-referrer', 'Referrer-Policy');
  assert(headers['x-content-type-options'] === 'nosniff', 'nosniff');
  assert(headers['cache-control'] === 'no-store', `HTML cache-control ${headers['cache-control']}`);
  assert(!p.page.url().includes('auth_token'), `token still in the address bar: ${p.page.url()}`);
  const scriptUrl = await p.page.locator('script[type=module]').getAttribute('src');
  assert(/^\/assets\/[0-9a-f]{16}\/app\.js$/.test(scriptUrl), `script URL ${scriptUrl}`);
  const asset = await fetch(`${BASE}${scriptUrl}`);
  assert(asset.headers.get('cache-control') === 'public, max-age=31536000, immutable', `asset cache ${asset.headers.get('cache-control')}`);
  const etag = asset.headers.get('etag');
  assert(etag, 'no ETag');
  const again = await fetch(`${BASE}${scriptUrl}`, { headers: { 'If-None-Match': etag } });
  assert(again.status === 304, `If-None-Match answered ${again.status}`);
  const icon = await fetch(`${BASE}/assets/icon.svg`);
  assert(icon.headers.get('content-type') === 'image/svg+xml' && icon.headers.get('etag'), 'unversioned icon');
  assert(p.errors().length === 0, p.errors().join('\n'));
  await p.close();
});

// ------------------------------------------------------------------------- events
const marker = `studio-ui-${Date.now()}`;
let liveEventId = null;

await check('admin sees an event that was just delivered appear live', async () => {
  const p = await openPage();
  await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/events`);
  await waitForApp(p.page);
  await p.page.waitForSelector('#live-status:text("connected")', { timeout: 10_000 });
  await p.page.waitForSelector('.event-row');
  const delivered = await deliver('NEW_TAG', { id: marker, name: marker, workspaceId: WS, archived: false });
  liveEventId = delivered.webhookId;
  const row = p.page.locator(`.event-row[data-id="${liveEventId}"]`);
  await row.waitFor({ timeout: 10_000 });
  const first = await p.page.locator('.event-row').first().getAttribute('data-id');
  assert(first === liveEventId, 'the live event is not at the top');
  assert(p.errors().length === 0, p.errors().join('\n'));
  await p.close();
});

await check('filters go into the URL (never the token) and the event opens with body and redacted headers', async () => {
  const p = await openPage();
  await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/events`);
  await waitForApp(p.page);
  await p.page.click('details.multi > summary');
  await p.page.check('details.multi input[value="NEW_TAG"]');
  await p.page.fill('input[name=q]', `name=${marker}`);
  await p.page.waitForFunction((m) => location.hash.includes(encodeURIComponent(`name=${m}`)), marker);
  await p.page.waitForFunction((id) => {
    const rows = document.querySelectorAll('.event-row');
    return rows.length === 1 && rows[0].dataset.id === id;
  }, liveEventId, { timeout: 10_000 });
  assert(p.page.url().includes('event=NEW_TAG'), p.page.url());
  assert(!p.page.url().includes('auth_token'), 'token in URL');
  await p.page.click(`.event-row[data-id="${liveEventId}"]`);
  await p.page.waitForSelector('#detail-title');
  const detail = await p.page.locator('section.detail').innerText();
  assert(detail.includes(marker), 'body not shown');
  assert(/clockify-signature\s+\[redacted\]/.test(detail), 'signature header not shown redacted');
  assert(p.page.url().includes(`id=${liveEventId}`), 'selection not in the URL');
  // The shared view opens the same way.
  const shared = p.page.url().split('#')[1];
  await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#${shared}`);
  await waitForApp(p.page);
  await p.page.waitForSelector('#detail-title');
  assert(await p.page.inputValue('input[name=q]') === `name=${marker}`, 'filter not restored');
  // Keyboard: the rows are buttons; focus is visible.
  await p.page.focus('.event-row');
  const outline = await p.page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  assert(outline !== 'none', `focused row has no visible focus (${outline})`);
  assert(p.errors().length === 0, p.errors().join('\n'));
  await p.close();
});

await check('admin can erase an event after confirming', async () => {
  const victim = await deliver('TAG_DELETED', { id: `${marker}-gone`, name: `${marker}-gone`, workspaceId: WS });
  const p = await openPage();
  await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/events?id=${victim.webhookId}`);
  await waitForApp(p.page);
  await p.page.click('button:text("Erase")');
  await p.page.click('dialog button[value=ok]');
  await p.page.waitForSelector(`.event-row[data-id="${victim.webhookId}"]`, { state: 'detached' });
  assert(await apiStatus(`/api/webhooks/${victim.webhookId}`) === 404, 'still stored');
  assert(p.errors().length === 0, p.errors().join('\n'));
  await p.close();
});

// ------------------------------------------------------------------------- sources
await check('a new source shows its secret once with a curl example that really delivers', async () => {
  const p = await openPage();
  await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/sources`);
  await waitForApp(p.page);
  await p.page.fill('input[name=name]', 'Shop orders');
  await p.page.click('button:text("Create source")');
  await p.page.waitForSelector('#secret-once');
  const snippet = await p.page.locator('pre[aria-label="curl example"]').innerText();
  let note = 'snippet not run: bash, openssl or curl missing';
  try {
    execFileSync('sh', ['-c', 'command -v bash && command -v openssl && command -v curl'], { stdio: 'ignore' });
    const out = execFileSync('bash', ['-c', snippet], { encoding: 'utf8', timeout: 20_000 });
    assert(/"status":"received"/.test(out), `the snippet's request was refused: ${out}`);
    note = 'snippet delivered an event';
  } catch (error) {
    if (error.status !== undefined && !/command -v/.test(String(error.cmd || ''))) throw error;
  }
  await p.page.click('button:text("I have copied it")');
  assert(await p.page.locator('#secret-once').count() === 0, 'secret still shown');
  assert(p.errors().length === 0, p.errors().join('\n'));
  await p.close();
  return note;
});

// ------------------------------------------------------------------------- explorer / flows
await check('API explorer: a generated form runs a call, keeps it in the history, and offers it to flows', async () => {
  if (await apiStatus('/api/operations') === 404) return 'skipped: /api/operations answers 404, explorer steps not run';
  const p = await openPage();
  await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/explorer`);
  await waitForApp(p.page);
  await p.page.fill('input[type=search]', 'getTags');
  await p.page.locator('.op-link[title="GET /v1/workspaces/{workspaceId}/tags"]').click();
  await p.page.waitForSelector('form h2');
  assert(p.page.url().includes('op=getTags'), `operation not in the URL: ${p.page.url()}`);
  const locked = p.page.locator('input[name=workspaceId]');
  assert(await locked.inputValue() === WS, 'workspaceId not filled');
  assert(await locked.getAttribute('readonly') !== null, 'workspaceId not locked');
  // Enums become selects; the spec's defaults are placeholders, never values.
  assert(await p.page.locator('select[name=archived], input[name=archived]').count() === 1, 'no archived field');
  assert(await p.page.inputValue('input[name=page]') === '', 'page default filled in as a value');
  assert((await p.page.getAttribute('input[name=page]', 'placeholder')).includes('default: 1'), 'page default not shown as a placeholder');
  await p.page.click('button:text("Run")');
  await p.page.waitForSelector('text=Response');
  const response = await p.page.locator('form').innerText();
  await p.page.screenshot({ path: path.join(SCREENSHOT_DIR, 'explorer-run-light-1280.png'), fullPage: true });
  assert(response.includes('Billable') && /\b200\b/.test(response), `response not shown: ${response.slice(0, 400)}`);
  await p.page.waitForSelector('section[aria-label="Recent calls"] .op-link');
  assert((await p.page.locator('section[aria-label="Recent calls"]').innerText()).includes('getTags'), 'call not in the history');
  // A write operation with a JSON body: invalid JSON is caught before sending.
  await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/explorer?op=createNewTag`);
  await waitForApp(p.page);
  await p.page.waitForSelector('.body-editor');
  await p.page.click('.body-editor button:text("Raw JSON")');
  await p.page.fill('textarea[name=body]', '{"name": ');
  const before = (await p.page.locator('section[aria-label="Recent calls"] .op-link').count());
  await p.page.click('button:text("Run")');
  await p.page.waitForSelector('text=The body is not valid JSON');
  assert((await p.page.locator('section[aria-label="Recent calls"] .op-link').count()) === before, 'invalid JSON was sent');
  // A member may read but not run writes: the Run button is absent.
  const member = await openPage();
  await member.page.goto(`${BASE}/ui?auth_token=${T.member}#/explorer?op=createNewTag`);
  await waitForApp(member.page);
  await member.page.waitForSelector('form h2');
  assert(await member.page.locator('button:text("Run")').count() === 0, 'Run offered to a member for a write');
  assert(await member.page.locator('button:text("Turn into a flow action")').count() === 0, 'flow action offered to a member');
  await member.close();
  // "Turn this call into a flow action" opens the flow builder.
  await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/explorer?op=getTags`);
  await waitForApp(p.page);
  await p.page.click('button:text("Turn into a flow action")');
  await p.page.waitForFunction(() => location.hash.startsWith('#/flows/new'));
  await waitForApp(p.page);
  await p.page.waitForSelector('.action-card, main .notice');
  const flowsText = await p.page.locator('main').innerText();
  const flowsLanded = await apiStatus('/api/flows') !== 404;
  if (flowsLanded) assert(await p.page.locator('.action-card input[value="getTags"]').count() > 0, 'action not prefilled');
  else assert(/not available yet/.test(flowsText), flowsText);
  assert(p.errors().length === 0, p.errors().join('\n'));
  await p.close();
  return flowsLanded ? 'flow builder opened with the action' : 'flow builder says flows are not available yet';
});

await check('flows (when the server has them)', async () => {
  if (await apiStatus('/api/flows') === 404) return 'skipped: /api/flows answers 404, flow steps not run';
  const p = await openPage();
  await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/flows/new`);
  await waitForApp(p.page);
  await p.page.fill('input[placeholder^="e.g. Tag"]', 'UI test flow');
  await p.page.check('input[value="NEW_TAG"]');
  await p.page.click('button:text("Add condition")');
  await p.page.waitForSelector('.rule input');
  assert(await p.page.locator('datalist option').count() > 0, 'no field suggestions from the sample');
  assert(p.errors().length === 0, p.errors().join('\n'));
  await p.close();
  return 'builder opened with field suggestions';
});

await check('flow builder: problems beside fields, field suggestions, templates, dry run, real run, history, replay', async () => {
  // The first save is refused with 400 on purpose: the browser logs that request.
  const p = await openPage({ allowStatus: [400] });
  await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/flows/new`);
  await waitForApp(p.page);
  await p.page.waitForSelector('button:text("Add condition")');
  // Problems from a 400 appear beside the fields they name.
  await p.page.click('#save-flow');
  await p.page.waitForSelector('[data-problem-key="name"] .problem');
  await p.page.waitForSelector('[data-problem-key="trigger.events"] .problem');
  await p.page.fill('input[placeholder^="e.g. Tag"]', 'Tag new tags');
  await p.page.check('input[value="NEW_TAG"]');
  await p.page.waitForSelector('text=Field suggestions come from the newest stored NEW_TAG event');
  await p.page.click('button:text("Add condition")');
  await p.page.fill('.rule input[aria-label="Condition 1 field"]', 'name');
  await p.page.selectOption('.rule select', 'contains');
  await p.page.fill('.rule input[aria-label="Condition 1 value"]', 'studio');
  await p.page.click('button:text("Add action")');
  await p.page.fill('.action-card input[type=search]', 'getTags');
  await p.page.click('.action-card .op-link');
  await p.page.waitForSelector('.action-card input[name=name]');
  // A GET action has no body editor, and the workspace is the server's to fill in.
  assert(await p.page.locator('.action-card textarea').count() === 0, 'GET action shows a body editor');
  assert(await p.page.inputValue('.action-card input[name=workspaceId]') === '{{ workspaceId }}', 'workspaceId is not the server template');
  await p.page.locator('.action-card [data-problem-key="actions[0].query.name"] button[aria-label="Insert a field"]').click();
  await p.page.click('.insert-menu button:text-is("event.name")');
  assert(await p.page.inputValue('.action-card input[name=name]') === '{{ event.name }}', 'template not inserted');
  await p.page.click('#save-flow');
  await p.page.waitForFunction(() => /^#\/flows\/[^n]/.test(location.hash), null, { timeout: 10_000 });
  const flowId = decodeURIComponent(new URL(p.page.url()).hash.split('/')[2].split('?')[0]);
  const stored = await apiJson(`/api/flows/${flowId}`);
  assert(JSON.stringify(stored.actions[0].query) === JSON.stringify({ name: '{{ event.name }}' }), `defaults were saved: ${JSON.stringify(stored.actions[0])}`);
  assert(JSON.stringify(stored.actions[0].pathParams) === '{}', `workspaceId was saved: ${JSON.stringify(stored.actions[0])}`);
  await waitForApp(p.page);
  await p.page.waitForSelector('text=Dry run against a stored event');
  await p.page.waitForSelector('#dry-run .candidate input');
  await p.page.click('#run-dry-run');
  await p.page.waitForSelector('text=the flow would run');
  // A real run through the engine: the action calls the fake Clockify.
  await p.page.check('text=Run the actions for real');
  await p.page.click('#run-dry-run');
  await p.page.waitForSelector('text=The real run', { timeout: 30_000 });
  await p.page.waitForSelector('section[aria-label="Run history"] .op-link');
  await p.page.click('section[aria-label="Run history"] .op-link');
  await p.page.waitForSelector('section[aria-label="Run history"] >> text=attempt(s)');
  await p.page.screenshot({ path: path.join(SCREENSHOT_DIR, 'flow-builder-light-1280.png'), fullPage: true });
  await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/flows`);
  await waitForApp(p.page);
  await p.page.waitForSelector('text=Tag new tags');
  // Enabled, the flow runs on replay from the event's detail pane.
  await p.page.locator('section[aria-label="Tag new tags"] input[role=switch]').check();
  await p.page.waitForSelector('.toast.success:text("enabled")');
  await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/events?id=${liveEventId}`);
  await waitForApp(p.page);
  await p.page.click('button:text("Replay through flows")');
  await p.page.waitForSelector('text=Flow runs from the replay');
  await p.page.waitForSelector('a:text("Tag new tags")');
  assert(p.errors().length === 0, p.errors().join('\n'));
  await p.close();
});

await check('pages whose API is not built yet show a calm "not available yet" state', async () => {
  const missing = [];
  for (const [page, routes] of [['settings', ['/api/settings', '/api/subscriptions', '/api/bootstrap']], ['flows', ['/api/flows']]]) {
    const statuses = await Promise.all(routes.map(apiStatus));
    if (!statuses.includes(404)) continue;
    missing.push(page);
    const p = await openPage({ width: 400 });
    await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/${page}`);
    await waitForApp(p.page);
    await p.page.waitForSelector('text=not available yet');
    const text = await p.page.locator('main').innerText();
    assert(!/could not be loaded/.test(text), text);
    assert(p.errors().length === 0, p.errors().join('\n'));
    await p.close();
  }
  return missing.length ? `checked on ${missing.join(', ')}` : 'every API is there';
});

await check('settings are saved through the API; problems appear beside their field', async () => {
  if (await apiStatus('/api/settings') === 404) return 'skipped: /api/settings answers 404';
  const p = await openPage({ allowStatus: [400] });
  await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/settings`);
  await waitForApp(p.page);
  await p.page.waitForSelector('button:text("Save settings")');
  await p.page.fill('input#' + await p.page.locator('label:text("Webhook log retention (days)")').getAttribute('for'), '30');
  await p.page.click('button:text("Save settings")');
  await p.page.waitForSelector('.toast.success:text("Settings saved")');
  // A reload would lose the token (it lives in memory only): open the page afresh.
  await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/settings`);
  await waitForApp(p.page);
  await p.page.waitForSelector('button:text("Save settings")');
  const retention = await p.page.locator('label:text("Webhook log retention (days)")').getAttribute('for');
  assert(await p.page.inputValue(`#${retention}`) === '30', 'the saved value did not come back');
  const rps = await p.page.locator('label:text("Max API requests per second")').getAttribute('for');
  await p.page.fill(`#${rps}`, '99');
  await p.page.click('button:text("Save settings")');
  await p.page.waitForSelector('[data-problem-key="max_rps"] .problem');
  const member = await openPage();
  await member.page.goto(`${BASE}/ui?auth_token=${T.member}#/settings`);
  await waitForApp(member.page);
  await member.page.waitForSelector('text=Only workspace owners and admins can change settings');
  assert(await member.page.locator('button:text("Save settings"), button:text("Sync with Clockify"), button:text("Fetch entities now")').count() === 0, 'write controls shown to a member');
  assert(p.errors().length === 0 && member.errors().length === 0, [...p.errors(), ...member.errors()].join('\n'));
  await p.close();
  await member.close();
});

// ------------------------------------------------------------------------- roles and theme
await check('a non-admin sees read-only views: write controls are absent', async () => {
  const p = await openPage();
  await p.page.goto(`${BASE}/ui?auth_token=${T.member}#/events?id=${liveEventId}`);
  await waitForApp(p.page);
  await p.page.waitForSelector('#detail-title');
  assert(await p.page.locator('#who').innerText() === 'Read-only', 'role label');
  for (const label of ['Erase', 'Replay through flows']) {
    assert(await p.page.locator(`button:text("${label}")`).count() === 0, `${label} shown to a member`);
  }
  await p.page.goto(`${BASE}/ui?auth_token=${T.member}#/sources`);
  await waitForApp(p.page);
  for (const label of ['Create source', 'Rotate secret', 'Delete']) {
    assert(await p.page.locator(`button:text("${label}")`).count() === 0, `${label} shown to a member`);
  }
  assert(await p.page.locator('input[name=name]').count() === 0, 'create form shown');
  await p.page.goto(`${BASE}/ui?auth_token=${T.member}#/flows`);
  await waitForApp(p.page);
  assert(await p.page.locator('a:text("New flow")').count() === 0, 'New flow shown to a member');
  assert(p.errors().length === 0, p.errors().join('\n'));
  await p.close();
});

await check('the DARK theme claim picks the dark palette', async () => {
  const p = await openPage();
  await p.page.goto(`${BASE}/ui?auth_token=${T.dark}#/overview`);
  await waitForApp(p.page);
  assert(await p.page.getAttribute('html', 'data-theme') === 'dark', 'data-theme');
  const bg = await p.page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  assert(luminance(bg) < 0.2, `background ${bg} is not dark`);
  const light = await openPage();
  await light.page.goto(`${BASE}/ui?auth_token=${T.admin}#/overview`);
  await waitForApp(light.page);
  const lightBg = await light.page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  assert(luminance(lightBg) > 0.8, `light background ${lightBg}`);
  assert(p.errors().length === 0 && light.errors().length === 0, [...p.errors(), ...light.errors()].join('\n'));
  await p.close();
  await light.close();
});

// ------------------------------------------------------------------------- inside Clockify
await check('inside Clockify: refreshAddonToken is asked, the answer is used, toasts go to toastrPop', async () => {
  const p = await openPage();
  // Chromium asks before a page frames a loopback address; the test user says yes.
  await p.context.grantPermissions(['local-network-access']);
  // Inside the refresh window at once, so the page asks Clockify for a new token.
  const expiring = userToken({ ttl: 301 });
  const next = userToken({ ttl: 1800 });
  const iframeSrc = `${BASE}/ui?auth_token=${expiring}#/events?id=${liveEventId}`;
  // A stand-in for Clockify's page: it frames the sidebar and answers token requests.
  await p.page.route(`${FAKE_CLOCKIFY}/**`, (route) => route.fulfill({
    contentType: 'text/html',
    body: `<!doctype html><title>Clockify</title><iframe id="addon" width="400" height="800" src="${iframeSrc}"></iframe>
<script>
window.received = [];
window.addEventListener('message', (event) => {
  let data = event.data;
  try { data = JSON.parse(event.data); } catch (e) {}
  window.received.push(data);
  if (data && data.action === 'refreshAddonToken') {
    event.source.postMessage({ title: 'refreshAddonToken', body: ${JSON.stringify(next)} }, '*');
  }
});
</script>`,
  }));
  const usedNewToken = new Promise((resolve) => {
    p.page.on('request', (request) => {
      if (request.url().startsWith(`${BASE}/api/`) && request.headers()['x-addon-token'] === next) resolve(request.url());
    });
  });
  const response = await p.page.goto(`${BASE}/ui`);
  assert(response.headers()['content-security-policy'].includes(`frame-ancestors https://*.clockify.me ${FAKE_CLOCKIFY}`), 'configured frame ancestor missing from the CSP');
  await p.page.goto(`${FAKE_CLOCKIFY}/tracker`);
  const frame = p.page.frameLocator('#addon');
  await frame.locator('#detail-title').waitFor({ timeout: 10_000 });
  await p.page.waitForFunction(() => window.received.some((m) => m && m.action === 'refreshAddonToken'), null, { timeout: 10_000 });
  // The next API call carries the new token: open another page inside the frame.
  await frame.locator('a[data-tab="overview"]').click();
  const url = await Promise.race([usedNewToken, new Promise((_, reject) => setTimeout(() => reject(new Error('the new token was never used')), 10_000))]);
  await frame.locator('a[data-tab="events"]').click();
  await frame.locator(`.event-row[data-id="${liveEventId}"]`).click();
  await frame.locator('button:text("Copy id")').click();
  await p.page.waitForFunction(() => window.received.some((m) => m && m.action === 'toastrPop' && m.payload && m.payload.type), null, { timeout: 5_000 });
  const toast = await p.page.evaluate(() => window.received.find((m) => m.action === 'toastrPop').payload);
  assert(['success', 'error'].includes(toast.type) && toast.message, JSON.stringify(toast));
  assert(await frame.locator('.toast').count() === 0, 'in-page toast shown inside Clockify');
  assert(p.errors().length === 0, p.errors().join('\n'));
  await p.close();
  return `new token used for ${new URL(url).pathname}; toastrPop ${toast.type}: ${toast.message}`;
});

await check('without a new token the page says the session expired instead of failing calls', async () => {
  const p = await openPage({ width: 400 });
  await p.page.goto(`${BASE}/ui?auth_token=${userToken({ ttl: 4 })}#/events`);
  await p.page.waitForSelector('.event-row');
  await p.page.waitForSelector('#session-expired', { timeout: 15_000 });
  const text = await p.page.locator('#session-expired').innerText();
  assert(/expired/i.test(text) && /open it again/i.test(text), text);
  assert(p.errors().length === 0, p.errors().join('\n'));
  await p.close();
});

// ------------------------------------------------------------------------- issue 19: flows never change by themselves
/** A flow as stored, without what every save changes (time) or what is not the definition. */
function definitionOf(flow) {
  const { updatedAt, lastRun, counts, ...rest } = flow; // eslint-disable-line no-unused-vars
  return JSON.stringify(rest);
}

const timeEntryIds = [];
let customSourceId = null;
const HTTP_SECRET = 'hook-secret-4711';
await check('setup: time entries, a custom source, and flows made through the API', async () => {
  for (const [i, description] of ['Quarterly audit', 'Lunch with client', 'Code review'].entries()) {
    const delivered = await deliver('NEW_TIME_ENTRY', {
      id: `te-ui-${i}`, workspaceId: WS, description, userId: 'u-ana', user: { name: 'Ana' }, project: { name: 'Project X' },
      billable: i !== 1, timeInterval: { start: '2026-01-05T09:00:00Z', end: '2026-01-05T11:00:00Z', duration: 'PT2H' },
    });
    timeEntryIds.push(delivered.webhookId);
  }
  const source = await apiJson('/api/sources', { method: 'POST', body: { name: 'Webshop' } });
  customSourceId = source.id;
  const custom = await fetch(`${BASE}/webhooks/custom/${source.id}`, {
    method: 'POST', headers: { authorization: `Bearer ${source.secret}`, 'content-type': 'application/json' },
    body: JSON.stringify({ type: 'order.created', id: 'ord_77', total: 42.5 }),
  });
  assert(custom.ok, `custom delivery answered ${custom.status}`);
  // Stored values of every kind the editor shows as text: numbers, booleans, lists, null.
  await apiJson('/api/flows', { method: 'POST', body: {
    name: 'Audit entries', trigger: { source: 'clockify', events: ['NEW_TIME_ENTRY'] },
    conditions: { mode: 'any', rules: [
      { path: '$.timeInterval.duration', op: 'eq', value: 'PT2H' }, { path: '$.billable', op: 'eq', value: true },
      { path: '$.hourlyRate.amount', op: 'gt', value: 5 }, { path: '$.userId', op: 'in', value: ['u-ana', 'u-cy'] },
      { path: '$.project.name', op: 'exists', value: null },
    ] },
    actions: [
      { name: 'tags', operationId: 'getTags', pathParams: { workspaceId: '{{ workspaceId }}' }, query: { page: 2, archived: 'false', name: '{{ event.description }}' } },
      { name: 'newTag', operationId: 'createNewTag', body: { name: 'audit {{ event.id }}', archived: false } },
      { name: 'dropTag', operationId: 'deleteTag', pathParams: { id: '{{ actions.newTag.body.id }}' } },
    ],
    retry: { maxAttempts: 2, backoffMs: 250 },
  } });
  await apiJson('/api/flows', { method: 'POST', body: {
    name: 'Webshop orders', enabled: false, trigger: { source: source.id, events: ['order.created'] },
    actions: [{ name: 'tag', operationId: 'createNewTag', body: { name: 'order {{ event.id }}' } }],
  } });
  // An "HTTP request" action: its header value is a secret the page never receives.
  await apiJson('/api/flows', { method: 'POST', body: {
    name: 'Notify hook', enabled: false, trigger: { source: 'clockify', events: ['NEW_TIME_ENTRY'] },
    actions: [
      { name: 'notify', kind: 'http', method: 'POST', url: 'https://hooks.example.com/clockify/{{ event.id }}',
        headers: { Authorization: `Bearer ${HTTP_SECRET}`, 'X-Team': 'ops' }, body: { text: '{{ event.description }}', billable: '{{ event.billable }}' } },
      { name: 'tag', operationId: 'createNewTag', body: { name: 'hooked {{ actions.notify.status }}' } },
    ],
  } });
  // Clockify refuses these tags (browser.rs): every run of this flow fails.
  await apiJson('/api/flows', { method: 'POST', body: {
    name: 'Always fails', trigger: { source: 'clockify', events: ['NEW_TIME_ENTRY'] },
    actions: [{ name: 'tag', operationId: 'createNewTag', body: { name: 'fail {{ event.id }}' } }],
    retry: { maxAttempts: 1, backoffMs: 0 },
  } });
  const failing = await deliver('NEW_TIME_ENTRY', { id: 'te-ui-fail', workspaceId: WS, description: 'Fails on purpose', userId: 'u-bo' });
  timeEntryIds.push(failing.webhookId);
});

await check('1. opening a flow and saving without edits changes nothing; a save sends only what was set', async () => {
  const { flows } = await apiJson('/api/flows');
  assert(flows.length >= 4, `${flows.length} flows`);
  const p = await openPage();
  const writes = [];
  p.page.on('request', (r) => {
    if (/\/api\/flows\/[^/]+$/.test(new URL(r.url()).pathname) && r.method() === 'PUT') writes.push(r.postData());
  });
  for (const flow of flows) {
    const before = definitionOf(await apiJson(`/api/flows/${flow.id}`));
    await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/flows/${flow.id}`);
    await waitForApp(p.page);
    await p.page.waitForSelector('.save-bar >> text=No changes to save');
    assert(await p.page.locator('#save-flow').isDisabled(), `${flow.name}: Save enabled without an edit`);
    await p.page.locator('#save-flow').click({ force: true });
    // GET and DELETE actions have no body editor.
    for (const card of await p.page.locator('.action-card').all()) {
      const method = await card.locator('.badge.method').first().innerText().catch(() => '');
      if (['GET', 'DELETE'].includes(method)) assert(await card.locator('textarea').count() === 0, `${flow.name}: ${method} action has a body editor`);
    }
    // A real edit (the name) saves the rest exactly as it was stored.
    const name = p.page.locator('input[placeholder^="e.g. Tag"]');
    await name.fill(`${flow.name} (renamed)`);
    assert(!(await p.page.locator('#save-flow').isDisabled()), `${flow.name}: Save stays disabled after an edit`);
    await Promise.all([p.page.waitForResponse((r) => r.request().method() === 'PUT'), p.page.click('#save-flow')]);
    const renamed = await apiJson(`/api/flows/${flow.id}`);
    assert(definitionOf({ ...renamed, name: flow.name }) === before, `${flow.name}: saving changed more than the name:\n${before}\n${definitionOf({ ...renamed, name: flow.name })}`);
    await p.page.waitForSelector('.save-bar >> text=No changes to save');
    await name.fill(flow.name);
    await Promise.all([p.page.waitForResponse((r) => r.request().method() === 'PUT'), p.page.click('#save-flow')]);
    assert(definitionOf(await apiJson(`/api/flows/${flow.id}`)) === before, `${flow.name}: not restored`);
  }
  assert(writes.length === flows.length * 2, `${writes.length} PUTs for ${flows.length} flows (a Save without edits sent one)`);
  assert(p.errors().length === 0, p.errors().join('\n'));
  await p.close();
  return `${flows.length} flows opened, saved unchanged and renamed`;
});

await check('2. a dry run tries the unsaved edit; the stored flow does not change', async () => {
  const { flows } = await apiJson('/api/flows');
  const audit = flows.find((f) => f.name === 'Audit entries');
  const before = definitionOf(await apiJson(`/api/flows/${audit.id}`));
  const p = await openPage();
  const writes = [];
  p.page.on('request', (r) => {
    if (r.url().includes(`/api/flows/${audit.id}`) && r.method() !== 'GET' && !r.url().endsWith('/test')) writes.push(r.url());
  });
  await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/flows/${audit.id}`);
  await waitForApp(p.page);
  await p.page.waitForSelector('.save-bar >> text=No changes to save');
  await p.page.fill('.rule input[aria-label="Condition 1 value"]', 'PT9H');
  await p.page.selectOption('select:has(option[value="any"])', 'all');
  await p.page.waitForSelector('#dry-run .candidate input');
  await p.page.click('#run-dry-run');
  await p.page.waitForSelector('#dry-run >> text=the flow would not run');
  const table = await p.page.locator('#dry-run table').innerText();
  assert(table.includes('"PT9H"'), `the dry run did not use the edit: ${table}`);
  assert(writes.length === 0, `the dry run saved the flow: ${writes.join(', ')}`);
  assert(definitionOf(await apiJson(`/api/flows/${audit.id}`)) === before, 'the stored flow changed');
  assert(p.errors().length === 0, p.errors().join('\n'));
  await p.close();
});

await check('3. dry-run events say what they are and whether they match; an event id can be pasted; events lead to flows', async () => {
  const { flows } = await apiJson('/api/flows');
  const audit = flows.find((f) => f.name === 'Audit entries');
  const p = await openPage();
  await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/flows/${audit.id}`);
  await waitForApp(p.page);
  await p.page.waitForSelector('#dry-run .candidate [data-match-for]:text("would run")');
  const texts = await p.page.locator('#dry-run .candidate').allInnerTexts();
  assert(texts.some((t) => t.includes("Time entry 'Quarterly audit' by Ana, 2 h, Project X")), texts.join('\n'));
  assert(new Set(texts).size === texts.length, 'two candidates read the same');
  assert(texts.every((t) => /[0-9a-f-]{36}/.test(t)), 'candidates do not show their id');
  const badges = await p.page.locator('#dry-run [data-match-for]').allInnerTexts();
  assert(badges.some((b) => b === 'would run') && badges.some((b) => b !== 'would run'), `match badges: ${badges}`);
  // A pasted id of another event type.
  await p.page.fill('#dry-run input[aria-label="Event id"]', liveEventId);
  await p.page.click('#run-dry-run');
  await p.page.waitForSelector('#dry-run >> text=the flow would not run');
  // From an event's detail: test a flow with it, or start a new flow from it.
  await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/events?id=${timeEntryIds[0]}`);
  await waitForApp(p.page);
  await p.page.selectOption('#flow-links select', audit.id);
  await p.page.click('button:text("Test a flow with this event")');
  await p.page.waitForFunction((id) => location.hash.startsWith(`#/flows/${id}?event=`), audit.id);
  await p.page.waitForSelector(`#dry-run input[type=radio][value="${timeEntryIds[0]}"]:checked`);
  await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/events?id=${timeEntryIds[0]}`);
  await waitForApp(p.page);
  await p.page.click('a:text("New flow from this event")');
  await p.page.waitForFunction(() => location.hash.startsWith('#/flows/new?event='));
  await p.page.waitForSelector('text=Field suggestions come from the event this flow was started from');
  assert(await p.page.isChecked('input[value="NEW_TIME_ENTRY"]'), 'the trigger is not the event type');
  assert(p.errors().length === 0, p.errors().join('\n'));
  await p.close();
});

await check('4. runs view across flows: filters, event links, retry of a failed run; a flow page starts with its runs', async () => {
  const p = await openPage();
  await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/runs`);
  await waitForApp(p.page);
  await p.page.waitForSelector('table.runs tbody tr');
  const flowsSeen = new Set(await p.page.locator('table.runs tbody td:nth-child(2) a').allInnerTexts());
  assert(flowsSeen.size >= 2, `runs of ${[...flowsSeen]}`);
  assert(await p.page.locator('table.runs tbody a[href^="#/events?id="]').count() > 0, 'no event links');
  await p.page.selectOption('select[name=status]', 'failed');
  await p.page.waitForFunction(() => location.hash.includes('status=failed'));
  await p.page.waitForFunction(() => [...document.querySelectorAll('table.runs tbody tr')].length > 0
    && [...document.querySelectorAll('table.runs tbody tr td:first-child')].every((td) => td.textContent.startsWith('failed')));
  const before = await p.page.locator('table.runs tbody tr').count();
  await p.page.locator('table.runs tbody tr button:text("Retry")').first().click();
  await p.page.waitForSelector('.toast.success:text("Retry of")');
  await p.page.waitForFunction((n) => document.querySelectorAll('table.runs tbody tr').length === n + 1, before);
  assert((await p.page.locator('table.runs tbody tr').first().innerText()).includes('retry'), 'the new row is not a retry');
  const { items } = await apiJson('/api/runs?limit=200');
  assert(items.some((r) => r.retry), 'no retry run stored');
  // Filtered by flow from the URL.
  const { flows } = await apiJson('/api/flows');
  const failing = flows.find((f) => f.name === 'Always fails');
  await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/runs?flow=${failing.id}`);
  await waitForApp(p.page);
  await p.page.waitForSelector('table.runs tbody tr');
  assert((await p.page.locator('table.runs tbody td:nth-child(2) a').allInnerTexts()).every((t) => t === 'Always fails'), 'flow filter');
  // The flow page: its runs come before the definition.
  await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/flows/${failing.id}`);
  await waitForApp(p.page);
  await p.page.waitForSelector('section[aria-label="Run history"] .op-link');
  const runsTop = (await p.page.locator('section[aria-label="Run history"]').boundingBox()).y;
  const formTop = (await p.page.locator('form[aria-label="Flow"]').boundingBox()).y;
  assert(runsTop < formTop && runsTop < 300, `runs at ${runsTop}px, form at ${formTop}px`);
  assert(p.errors().length === 0, p.errors().join('\n'));
  await p.close();
});

await check('5. event rows: summaries, absolute time, flow outcome, custom types, Esc, honest errors, NDJSON export', async () => {
  const p = await openPage({ allowStatus: [500] });
  await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/events?live=0`);
  await waitForApp(p.page);
  await p.page.waitForSelector(`.event-row[data-id="${timeEntryIds[0]}"]`);
  const row = p.page.locator(`.event-row[data-id="${timeEntryIds[0]}"]`);
  const text = await row.innerText();
  assert(text.includes("Time entry 'Quarterly audit' by Ana, 2 h, Project X"), `row: ${text}`);
  assert(await row.locator('.abs').isVisible(), 'no absolute time column at full width');
  assert(await row.locator('time[title]').count() > 0, 'no absolute time on hover');
  assert(/flow failed/.test(await p.page.locator(`.event-row[data-id="${timeEntryIds[3]}"] .outcome`).innerText()), 'failed flow not shown');
  assert(/no flow/.test(await p.page.locator(`.event-row[data-id="${liveEventId}"] .outcome`).innerText()), 'an event no flow ran for has no "no flow" badge');
  const rowHeight = (await row.boundingBox()).height;
  const perScreen = Math.floor(900 / (rowHeight + 3));
  assert(rowHeight <= 40, `rows are ${rowHeight}px tall`);
  // The custom source's own type is in the type filter.
  await p.page.click('details.multi > summary');
  await p.page.waitForSelector('details.multi input[value="order.created"]');
  await p.page.click('details.multi > summary');
  // Esc closes the detail.
  await row.click();
  await p.page.waitForSelector('#detail-title');
  await p.page.keyboard.press('Escape');
  await p.page.waitForSelector('section.detail', { state: 'hidden' });
  // Export of the current filter.
  await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/events?live=0&event=NEW_TIME_ENTRY`);
  await waitForApp(p.page);
  await p.page.waitForSelector('.list-foot >> text=that is all');
  const shown = await p.page.locator('.event-row').count();
  const [download] = await Promise.all([
    Promise.race([p.page.waitForEvent('download', { timeout: 15_000 }), p.page.waitForSelector('.toast.error', { timeout: 15_000 }).then(async (t) => { throw new Error(`export failed: ${await t.innerText()}`); })]),
    p.page.click('#export-events'),
  ]);
  const lines = fs.readFileSync(await download.path(), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert(lines.length === shown && lines.every((l) => l.eventType === 'NEW_TIME_ENTRY' && l.body), `${lines.length} exported, ${shown} shown`);
  assert(download.suggestedFilename().endsWith('.ndjson'), download.suggestedFilename());
  // A failed load says so and offers a retry, never "No events yet".
  const listing = (url) => url.pathname === '/api/webhooks';
  await p.page.route(listing, (route) => route.fulfill({ status: 500, contentType: 'application/json', body: '{"error":"internal error","requestId":"r-1"}' }));
  await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/events?live=0`);
  await waitForApp(p.page);
  await p.page.waitForSelector('.error-state button.retry');
  const failedText = await p.page.locator('main').innerText();
  assert(!/No events yet/.test(failedText) && /could not be loaded/.test(failedText), failedText);
  await p.page.unroute(listing);
  await p.page.click('.error-state button.retry');
  await p.page.waitForSelector('.event-row');
  assert(p.errors().filter((e) => !/500/.test(e)).length === 0, p.errors().join('\n'));
  await p.close();
  return `${perScreen} rows per 900 px screen (rows ${rowHeight} px), ${lines.length} events exported`;
});

await check('6. failed loads offer Retry; offline is said as such, never "Failed to fetch"', async () => {
  const p = await openPage();
  await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/overview`);
  await waitForApp(p.page);
  await p.context.setOffline(true);
  await p.page.waitForSelector('#offline:visible');
  await p.page.click('a[data-tab="settings"]');
  await p.page.waitForSelector('.error-state button.retry');
  let text = await p.page.locator('main').innerText();
  assert(/offline/i.test(text) && !/Failed to fetch/i.test(text), text);
  await p.context.setOffline(false);
  await p.page.waitForSelector('#offline', { state: 'hidden' });
  await p.page.click('.error-state button.retry');
  await p.page.waitForSelector('button:text("Save settings")');
  // The server unreachable (not offline): a plain sentence and a Retry.
  await p.page.route(`${BASE}/api/overview`, (route) => route.abort('connectionrefused'));
  await p.page.click('a[data-tab="overview"]');
  await p.page.waitForSelector('.error-state button.retry');
  text = await p.page.locator('main').innerText();
  assert(/could not be reached/.test(text) && !/Failed to fetch/i.test(text), text);
  await p.page.unroute(`${BASE}/api/overview`);
  await p.page.click('.error-state button.retry');
  await p.page.waitForSelector('#events-24h');
  const unexpected = p.errors().filter((e) => !/ERR_INTERNET_DISCONNECTED|ERR_CONNECTION_REFUSED|ERR_FAILED|Failed to fetch/.test(e));
  assert(unexpected.length === 0, unexpected.join('\n'));
  await p.close();
});

await check('7. narrow sidebar (400 px): every tab reachable, forms open at the top, Copy never covers the secret', async () => {
  const p = await openPage({ width: 400, height: 800 });
  await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/explorer`);
  await waitForApp(p.page);
  for (const tab of await p.page.locator('.tabs a').all()) {
    const box = await tab.boundingBox();
    assert(box && box.x >= 0 && box.x + box.width <= 400 && box.y + box.height <= 800, `tab ${await tab.innerText()} at ${JSON.stringify(box)}`);
  }
  await p.page.fill('input[type=search]', 'createNewTag');
  await p.page.locator('.op-link[title="POST /v1/workspaces/{workspaceId}/tags"]').click();
  await p.page.waitForSelector('form.op-form h2');
  await p.page.waitForTimeout(100);
  const top = await p.page.evaluate(() => document.querySelector('section[aria-label="Operation"]').getBoundingClientRect().top);
  assert(top >= -1 && top < 80, `the form opened at ${top}px`);
  await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/sources`);
  await waitForApp(p.page);
  await p.page.fill('input[name=name]', 'Narrow source');
  await p.page.click('button:text("Create source")');
  await p.page.waitForSelector('#secret-once');
  for (const block of await p.page.locator('#secret-once .code-block').all()) {
    const pre = await block.locator('pre').boundingBox();
    const copy = await block.locator('button.copy').boundingBox();
    const overlaps = copy.x < pre.x + pre.width && copy.x + copy.width > pre.x && copy.y < pre.y + pre.height && copy.y + copy.height > pre.y;
    assert(!overlaps, 'a Copy button covers the text it copies');
  }
  const secretTop = await p.page.evaluate(() => document.querySelector('#secret-once').getBoundingClientRect().top);
  assert(secretTop >= -1 && secretTop < 120, `the secret opened at ${secretTop}px`);
  assert(p.errors().length === 0, p.errors().join('\n'));
  await p.close();
});

await check('8. settings: grouped, checkboxes beside their labels, subscriptions folded with a summary', async () => {
  const p = await openPage();
  await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/settings`);
  await waitForApp(p.page);
  await p.page.waitForSelector('button:text("Save settings")');
  const legends = await p.page.locator('.settings-group > legend').allInnerTexts();
  assert(legends.includes('Retention') && legends.length >= 3, `groups: ${legends}`);
  for (const label of await p.page.locator('.check-label').all()) {
    const box = await label.locator('input').boundingBox();
    const textBox = await label.locator('span').boundingBox();
    assert(Math.abs(box.y + box.height / 2 - (textBox.y + Math.min(textBox.height, 20) / 2)) < 12, `checkbox not beside "${await label.innerText()}"`);
    // Right beside it, on a line of its own width (not squeezed to a letter per line).
    assert(textBox.x - (box.x + box.width) < 24 && textBox.height < 70, `"${await label.innerText()}" is ${textBox.x - box.x - box.width}px from its checkbox, ${textBox.height}px tall`);
  }
  await p.page.waitForSelector('details.subscriptions');
  assert(!(await p.page.locator('details.subscriptions').getAttribute('open')), 'subscriptions table open by default');
  assert(/^\d+ event types: /.test(await p.page.locator('details.subscriptions > summary').innerText()), 'no summary');
  const folded = await p.page.locator('details.subscriptions').boundingBox();
  assert(folded.height < 80, `the folded subscriptions take ${folded.height}px`);
  assert(p.errors().length === 0, p.errors().join('\n'));
  await p.close();
});

await check('9. explorer: Run on screen at 1280x800, URL preview, copy as curl, history with parameters, catalog cached by ETag', async () => {
  const p = await openPage({ width: 1280, height: 800 });
  await p.context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: BASE });
  const catalog = [];
  p.page.on('response', (r) => {
    if (new URL(r.url()).pathname === '/api/operations') catalog.push(r);
  });
  for (const op of ['getTags', 'createNewTag', 'getTimeEntries']) {
    await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/explorer?op=${op}`);
    await waitForApp(p.page);
    await p.page.waitForSelector('form.op-form h2');
    const run = await p.page.locator('button[type=submit]:text("Run")').boundingBox();
    assert(run && run.y >= 0 && run.y + run.height <= 800, `${op}: Run at ${JSON.stringify(run)}`);
  }
  await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/explorer?op=getTags`);
  await waitForApp(p.page);
  await p.page.waitForSelector('#url-preview');
  await p.page.fill('input[name=name]', 'Billable');
  const preview = await p.page.locator('#url-preview').innerText();
  assert(preview.startsWith('GET ') && preview.includes(`/workspaces/${WS}/tags?name=Billable`), preview);
  await p.page.click('button:text("Copy as curl")');
  const curl = await p.page.evaluate(() => navigator.clipboard.readText());
  assert(curl.startsWith('curl -X GET') && curl.includes('name=Billable') && curl.includes('$CLOCKIFY_TOKEN'), curl);
  await p.page.click('button[type=submit]:text("Run")');
  await p.page.waitForSelector('text=Response');
  await p.page.waitForSelector('section[aria-label="Recent calls"] >> text=name=Billable');
  // The catalog: one full download, then revalidations answered from the browser's cache.
  const sizes = await p.page.evaluate(() => performance.getEntriesByType('resource').filter((r) => new URL(r.name).pathname === '/api/operations').map((r) => ({ transfer: r.transferSize, body: r.decodedBodySize })));
  assert(catalog.length >= 2 && catalog.every((r) => r.headers()['etag']), 'no ETag on the catalog');
  assert(sizes.length && sizes.every((s) => s.transfer < 2000 && s.body > 50_000), `catalog refetched: ${JSON.stringify(sizes)}`);
  assert(p.errors().length === 0, p.errors().join('\n'));
  await p.close();
  return `catalog revalidated, ${sizes.map((s) => s.transfer).join('/')} bytes over the wire`;
});

await check('12. wording: no "Live live", no doubled "automatically", custom sources by name', async () => {
  const p = await openPage();
  await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/events`);
  await waitForApp(p.page);
  await p.page.waitForSelector('#live-status:text("connected")');
  assert(!/live\s+live/i.test(await p.page.locator('.page-head').innerText()), await p.page.locator('.page-head').innerText());
  await p.page.route(`${BASE}/api/flows`, async (route) => {
    const response = await route.fetch();
    const body = await response.json();
    body.flows[0].disabledReason = 'disabled automatically: the last 5 runs failed (last error: boom)';
    await route.fulfill({ response, json: body });
  });
  await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/flows`);
  await waitForApp(p.page);
  await p.page.waitForSelector('text=Turned off automatically');
  const text = await p.page.locator('main').innerText();
  assert(!/automatically:\s*disabled automatically/i.test(text), text);
  assert(text.includes('from the source “Webshop”') && !text.includes(customSourceId), 'custom source shown by id');
  assert(p.errors().length === 0, p.errors().join('\n'));
  await p.close();
});

await check('13. explorer bodies as forms: required first, enums, groups, arrays with add/remove, raw JSON in sync', async () => {
  const p = await openPage();
  await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/explorer?op=createTimeEntry`);
  await waitForApp(p.page);
  await p.page.waitForSelector('.body-editor .body-fields');
  const labels = await p.page.locator('.body-fields > .field > label').allInnerTexts();
  const required = labels.filter((l) => l.endsWith('*'));
  assert(labels.slice(0, required.length).every((l) => l.endsWith('*')), `required fields are not first: ${labels}`);
  await p.page.fill('.body-fields input[name="description"]', 'From the form');
  await p.page.click('button:text("Add tagIds item")');
  await p.page.fill('.body-group input[name="tagIds[]"]', 'tag-1');
  await p.page.click('button:text("Add tagIds item")');
  await p.page.locator('.body-group input[name="tagIds[]"]').nth(1).fill('tag-2');
  await p.page.locator('.body-item button:text("Remove")').first().click();
  if (await p.page.locator('.body-fields select').count()) assert(await p.page.locator('.body-fields select option').count() > 1, 'an enum without options');
  await p.page.click('.body-editor button:text("Raw JSON")');
  const raw = JSON.parse(await p.page.inputValue('textarea[name=body]'));
  assert(raw.description === 'From the form' && JSON.stringify(raw.tagIds) === '["tag-2"]', JSON.stringify(raw));
  await p.page.fill('textarea[name=body]', JSON.stringify({ ...raw, billable: true, description: 'From the JSON' }));
  await p.page.click('.body-editor button:text("Form")');
  assert(await p.page.inputValue('.body-fields input[name="description"]') === 'From the JSON', 'the form did not take the JSON');
  assert(await p.page.inputValue('.body-fields select[name="billable"]') === 'true', 'billable not carried over');
  // Sent as the form says: the call's recorded request body.
  await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/explorer?op=createNewTag`);
  await waitForApp(p.page);
  await p.page.fill('.body-fields input[name="name"]', 'Made by the form');
  await p.page.click('button[type=submit]:text("Run")');
  await p.page.waitForSelector('text=Response');
  const { items } = await apiJson('/api/executions?limit=5');
  const sent = items.find((i) => i.operationId === 'createNewTag');
  assert(sent && JSON.stringify(sent.request.body) === JSON.stringify({ name: 'Made by the form' }), JSON.stringify(sent));
  assert(p.errors().length === 0, p.errors().join('\n'));
  await p.close();
});

// ------------------------------------------------------------------------- destinations
let destinationId = null;

/** Clicks the attempt log's Refresh until `selector` is there (deliveries are sent in the background). */
async function refreshUntil(page, selector, what) {
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    await page.click('#attempt-log button:text("Refresh")');
    await page.waitForSelector('#attempt-log .list-foot:not(:has(.sk))');
    if (await page.locator(selector).count()) return;
    await page.waitForTimeout(300);
  }
  throw new Error(`${what}: ${await page.locator('#attempt-log').innerText()}`);
}

await check('14. destinations: create with problems beside fields, secret once, test event, attempt log, retry, recover, delete; members see admins only', async () => {
  const p = await openPage({ allowStatus: [400] });
  await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/destinations`);
  await waitForApp(p.page);
  await p.page.waitForSelector('text=No destinations yet');
  await p.page.click('a:text("New destination")');
  await p.page.waitForSelector('form[aria-label="Destination settings"]');
  await p.page.fill('input[name=name]', 'Warehouse');
  await p.page.fill('input[name=url]', 'ftp://warehouse.example/in');
  await p.page.click('#save-destination');
  await p.page.waitForSelector('[data-problem-key="url"] .problem');
  assert(await p.page.locator('[data-problem-key="name"] .problem').count() === 0, 'a problem beside a valid field');
  await p.page.fill('input[name=url]', RECEIVER_URL);
  await p.page.click('summary:text("Event types")');
  await p.page.check('input[value="NEW_CLIENT"]');
  await p.page.click('button:text("Add header")');
  await p.page.fill('input[aria-label="Header 1 name"]', 'X-Api-Key');
  await p.page.fill('input[aria-label="Header 1 value"]', 'k-123');
  await p.page.click('#save-destination');

  // The secret: shown once, with a copy button and the note, gone when hidden or reopened.
  await p.page.waitForSelector('#secret-once');
  const secret = await p.page.locator('#secret-once pre[aria-label="Secret"]').innerText();
  assert(/^whsec_[A-Za-z0-9+/=]{20,}$/.test(secret.trim()), `secret: ${secret}`);
  assert(/Shown only now/.test(await p.page.locator('#secret-once').innerText()), 'no "shown only now" note');
  assert(await p.page.locator('#secret-once button:text("Copy secret")').count() === 1, 'no copy button');
  destinationId = decodeURIComponent(new URL(p.page.url()).hash.split('/')[2].split('?')[0]);
  const stored = await apiJson(`/api/destinations/${destinationId}`);
  assert(stored.secret === undefined && stored.headers['X-Api-Key'] === '********', JSON.stringify(stored));
  assert(JSON.stringify(stored.filter.events) === '["NEW_CLIENT"]', JSON.stringify(stored.filter));
  await p.page.click('button:text("I have copied it")');
  assert(await p.page.locator('#secret-once').count() === 0, 'secret still shown');
  await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/destinations/${destinationId}`);
  await waitForApp(p.page);
  await p.page.waitForSelector('form[aria-label="Destination settings"]');
  assert(await p.page.locator('#secret-once').count() === 0, 'the secret came back');
  assert(!(await p.page.locator('main').innerText()).includes(secret.trim()), 'the secret is on the page again');

  // Save stays off until something changed; a masked header value stays as stored.
  assert(await p.page.locator('#save-destination').isDisabled(), 'Save enabled without a change');
  assert(await p.page.inputValue('input[aria-label="Header 1 value"]') === '', 'a stored header value is shown');
  await p.page.fill('input[name=name]', 'Warehouse loader');
  assert(!(await p.page.locator('#save-destination').isDisabled()), 'Save still disabled after an edit');
  await p.page.click('#save-destination');
  await p.page.waitForSelector('.toast.success:text("saved")');
  await p.page.waitForSelector('#save-destination:disabled');
  const renamed = await apiJson(`/api/destinations/${destinationId}`);
  assert(renamed.name === 'Warehouse loader' && renamed.headers['X-Api-Key'] === '********', JSON.stringify(renamed));

  // The test event: the receiver's status, latency and answer.
  await p.page.click('button:text("Send test event")');
  await p.page.waitForSelector('#test-result .notice.ok');
  const answer = await p.page.locator('#test-result').innerText();
  assert(/200/.test(answer) && answer.includes('"received":true') && /\d+\s*ms/.test(answer), answer);

  // A delivered event and a failed one appear in the attempt log; retry sends it again.
  await deliver('NEW_CLIENT', { id: 'dest-c-1', name: 'Steady client', workspaceId: WS });
  await deliver('NEW_CLIENT', { id: 'dest-c-2', name: 'flaky client', workspaceId: WS });
  await refreshUntil(p.page, '#attempt-log .delivery[data-status="delivered"]', 'no delivered delivery');
  await refreshUntil(p.page, '#attempt-log .delivery[data-status="failed"]', 'no failed delivery');
  const failed = p.page.locator('#attempt-log .delivery[data-status="failed"]').first();
  await failed.locator('summary').click();
  const failedText = await failed.innerText();
  assert(/500/.test(failedText) && failedText.includes('receiver down') && failedText.includes('NEW_CLIENT'), failedText);
  await p.page.selectOption('select[name=status]', 'failed');
  await p.page.waitForSelector('#attempt-log .list-foot:not(:has(.sk))');
  assert(new URL(p.page.url()).hash.includes('status=failed'), `filter not in the URL: ${p.page.url()}`);
  assert(await p.page.locator('#attempt-log .delivery[data-status="delivered"]').count() === 0, 'the failed filter shows a delivered one');
  assert(await p.page.locator('#attempt-log .delivery[data-status="failed"]').count() === 1, 'the failed delivery is not listed');
  await p.page.locator('#attempt-log .delivery[data-status="failed"] button:text("Retry")').click();
  await p.page.waitForSelector('.toast.success:text("Sent again")');
  await p.page.selectOption('select[name=status]', '');
  await refreshUntil(p.page, '#attempt-log .delivery[data-status="delivered"]:has-text("2 attempt(s)")', 'the retried delivery was not delivered');
  const retried = p.page.locator('#attempt-log .delivery[data-status="delivered"]:has-text("2 attempt(s)")');
  await retried.locator('summary').click();
  const rows = await retried.locator('table.attempts tbody tr').allInnerTexts();
  assert(rows.length === 2 && /500/.test(rows[0]) && /200/.test(rows[1]), rows.join(' | '));

  // "Retry all failed since": one more failure, recovered from the form.
  await deliver('NEW_CLIENT', { id: 'dest-c-3', name: 'flaky again', workspaceId: WS });
  await refreshUntil(p.page, '#attempt-log .delivery[data-status="failed"]', 'the second failure is not listed');
  await p.page.click('button:text("Retry all failed")');
  await p.page.click('dialog button:text("Retry all")');
  await p.page.waitForSelector('.toast.success:text("1 failed deliveries sent again")');
  await refreshUntil(p.page, '#attempt-log:not(:has(.delivery[data-status="failed"])):has(.delivery[data-status="delivered"])', 'recover did not deliver');

  // The list shows its health (the queue figures are the engine's, counted about every second).
  let cardText = '';
  for (const deadline = Date.now() + 10_000; Date.now() < deadline;) {
    await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/destinations`);
    await waitForApp(p.page);
    cardText = await p.page.locator(`section[data-id="${destinationId}"]`).innerText();
    if (/Pending\s*0/.test(cardText)) break;
    await p.page.waitForTimeout(500);
  }
  assert(cardText.includes('Warehouse loader') && /enabled/.test(cardText) && /Last attempt\s*200/.test(cardText) && /Pending\s*0/.test(cardText), cardText);

  // Delete asks first.
  const doomed = await apiJson('/api/destinations', { method: 'POST', body: { name: 'Old endpoint', url: RECEIVER_URL, filter: { events: ['NOTHING_EVER'] } } });
  await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/destinations/${doomed.id}`);
  await waitForApp(p.page);
  await p.page.click('button:text("Delete")');
  await p.page.click('dialog button:text("Cancel")');
  assert(await apiStatus(`/api/destinations/${doomed.id}`) === 200, 'deleted without confirming');
  await p.page.click('button:text("Delete")');
  await p.page.click('dialog button:text("Delete")');
  await p.page.waitForSelector('.toast.success:text("Destination deleted")');
  assert(await apiStatus(`/api/destinations/${doomed.id}`) === 404, 'not deleted');

  const member = await openPage();
  await member.page.goto(`${BASE}/ui?auth_token=${T.member}#/destinations`);
  await waitForApp(member.page);
  await member.page.waitForSelector('text=Only workspace owners and admins can see and manage destinations');
  assert(await member.page.locator('a:text("New destination")').count() === 0, 'New destination shown to a member');
  assert(p.errors().length === 0 && member.errors().length === 0, [...p.errors(), ...member.errors()].join('\n'));
  await p.close();
  await member.close();
  return 'created, tested, delivered, retried, recovered, deleted';
});

await check('14b. notifications: Settings explains them and links to a new destination on the Studio notifications source', async () => {
  const p = await openPage();
  await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/settings`);
  await waitForApp(p.page);
  const section = p.page.locator('section[aria-label="Notifications"]');
  await section.waitFor();
  assert(/FLOW_AUTO_DISABLED/.test(await section.innerText()), await section.innerText());
  await section.locator('a:text("Create a destination for notifications")').click();
  await p.page.waitForSelector('form[aria-label="Destination settings"]');
  assert(await p.page.inputValue('select[name=source]') === 'studio', `source: ${await p.page.inputValue('select[name=source]')}`);
  const studioOption = await p.page.locator('select[name=source] option[value="studio"]').innerText();
  assert(studioOption.includes('Studio notifications'), studioOption);
  await p.page.click('summary:text("Event types")');
  assert(await p.page.locator('input[value="FLOW_AUTO_DISABLED"]').count() === 1, 'no studio event types offered');
  await p.page.fill('input[name=url]', RECEIVER_URL);
  await p.page.click('#save-destination');
  await p.page.waitForSelector('#secret-once');
  const id = decodeURIComponent(new URL(p.page.url()).hash.split('/')[2].split('?')[0]);
  const stored = await apiJson(`/api/destinations/${id}`);
  assert(stored.filter.source === 'studio' && stored.name === 'Studio notifications', JSON.stringify(stored));
  await apiJson(`/api/destinations/${id}`, { method: 'DELETE' });
  assert(p.errors().length === 0, p.errors().join('\n'));
  await p.close();
  return 'linked, pre-filled, created';
});

await check('15. audit log: a change made in the UI appears with who made it, filters in the URL, before/after in the viewer; admins only', async () => {
  const p = await openPage();
  await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/sources`);
  await waitForApp(p.page);
  await p.page.fill('input[name=name]', 'Audited source');
  await p.page.click('button:text("Create source")');
  await p.page.waitForSelector('#secret-once');
  await p.page.click('.tabs a[data-tab="audit"]');
  await waitForApp(p.page);
  const row = p.page.locator('tr[data-action="source.create"]').first();
  await row.waitFor();
  assert(await p.page.locator('tbody tr').first().getAttribute('data-action') === 'source.create', 'newest first');
  assert((await row.innerText()).includes('user-1'), await row.innerText());
  await row.locator('summary').click();
  const after = await row.locator('.json').last().innerText();
  assert(after.includes('Audited source'), after);
  assert(!/whsec_/.test(await p.page.locator('main').innerText()), 'a secret on the audit page');
  // Filters: in the URL, and they narrow the list.
  await p.page.selectOption('select[name=action]', 'config.');
  await p.page.waitForSelector('text=No changes match these filters.');
  assert(p.page.url().includes('action=config.'), p.page.url());
  await p.page.selectOption('select[name=action]', 'source.');
  await p.page.locator('tr[data-action="source.create"]').first().waitFor();
  assert(await p.page.locator('tbody tr:not([data-action^="source."])').count() === 0, 'the filter lets other changes through');
  await p.page.fill('input[name=user]', 'someone-else');
  await p.page.waitForSelector('text=No changes match these filters.');
  assert(p.page.url().includes('user=someone-else'), p.page.url());
  assert(p.errors().length === 0, p.errors().join('\n'));
  await p.close();
  // A member has no Audit tab, and the page says why.
  const m = await openPage({ allowStatus: [403] });
  await m.page.goto(`${BASE}/ui?auth_token=${T.member}#/audit`);
  await waitForApp(m.page);
  assert(!(await m.page.locator('.tabs a[data-tab="audit"]').isVisible()), 'the Audit tab shown to a member');
  await m.page.waitForSelector('text=for workspace owners and admins');
  assert(m.errors().length === 0, m.errors().join('\n'));
  await m.close();
});

await check('16. HTTP request action: kind, method, URL, masked headers, body; an edit keeps the stored header values', async () => {
  const { flows } = await apiJson('/api/flows');
  const hook = flows.find((f) => f.name === 'Notify hook');
  assert(hook, 'the HTTP flow exists');
  assert(!JSON.stringify(flows).includes(HTTP_SECRET), 'the header value is in the flow list');
  const p = await openPage();
  await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/flows/${hook.id}`);
  await waitForApp(p.page);
  await p.page.waitForSelector('.save-bar >> text=No changes to save');
  const card = p.page.locator('.action-card').first();
  assert(await card.locator('select').first().inputValue() === 'http', 'the first action is not shown as an HTTP request');
  assert(await card.locator('input[type=url]').inputValue() === 'https://hooks.example.com/clockify/{{ event.id }}', 'URL not shown');
  const values = await card.locator('input[type=password]').evaluateAll((els) => els.map((e) => e.value));
  assert(JSON.stringify(values) === JSON.stringify(['********', '********']), `header values: ${values}`);
  assert(!(await p.page.content()).includes(HTTP_SECRET), 'the header value reached the page');
  // An edit of the URL saves; the masked header values keep what was stored.
  await card.locator('input[type=url]').fill('https://hooks.example.com/v2/{{ event.id }}');
  await Promise.all([p.page.waitForResponse((r) => r.request().method() === 'PUT'), p.page.click('#save-flow')]);
  const saved = await apiJson(`/api/flows/${hook.id}`);
  assert(saved.actions[0].url === 'https://hooks.example.com/v2/{{ event.id }}', saved.actions[0].url);
  assert(JSON.stringify(saved.actions[0].headers) === JSON.stringify({ Authorization: '********', 'X-Team': '********' }), JSON.stringify(saved.actions[0].headers));
  // The dry run shows the rendered request; header values stay masked.
  const tried = await apiJson(`/api/flows/${hook.id}/test`, { method: 'POST', body: { event: { id: 'te-x', description: 'Hello', billable: true }, eventType: 'NEW_TIME_ENTRY' } });
  assert(tried.actions[0].request.url === 'https://hooks.example.com/v2/te-x', JSON.stringify(tried.actions[0]));
  assert(tried.actions[0].request.headers.Authorization === '********', JSON.stringify(tried.actions[0]));
  // A new action can be made an HTTP request: its editor appears in place of the operation search.
  await p.page.click('button:text("Add action")');
  const fresh = p.page.locator('.action-card').last();
  await fresh.locator('select').first().selectOption('http');
  assert(await fresh.locator('input[type=url]').isVisible(), 'no URL field for a new HTTP action');
  assert(!(await fresh.locator('input[type=search]').isVisible()), 'the operation search stays visible');
  assert(p.errors().length === 0, p.errors().join('\n'));
  await p.close();
  return 'HTTP action shown, edited and saved with its header values kept';
});

await check('10 and 11. every page: cold load at most 60 KB transferred, and axe-core finds nothing in light or dark', async () => {
  const axeSource = fs.readFileSync(path.join(path.dirname(new URL(import.meta.url).pathname), 'node_modules/axe-core/axe.min.js'), 'utf8');
  const { flows } = await apiJson('/api/flows');
  const hookFlow = flows.find((f) => f.name === 'Notify hook');
  const extra = [['event detail', `events?id=${timeEntryIds[0]}`], ['flow editor', `flows/${flows[0].id}`], ['flow editor with an HTTP request', `flows/${hookFlow.id}`], ['new flow', 'flows/new'], ['explorer operation', 'explorer?op=createTimeEntry'], ['new destination', 'destinations/new'], ['new notifications destination', 'destinations/new?source=studio']];
  if (destinationId) extra.push(['destination', `destinations/${destinationId}`]);
  const violations = [];
  const audit = async (page, label) => {
    await page.evaluate(axeSource);
    const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
    for (const v of result.violations) violations.push(`${label}: ${v.id} (${v.impact}) ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(' | ')} ${v.nodes[0]?.failureSummary?.split('\n')[1] || ''}`);
  };
  // Light: each page cold, in a fresh browser context, measured on the wire (CDP), then audited.
  for (const name of PAGES) {
    const p = await openPage();
    const cdp = await p.context.newCDPSession(p.page);
    await cdp.send('Network.enable');
    let bytes = 0;
    let requests = 0;
    cdp.on('Network.loadingFinished', (e) => {
      bytes += e.encodedDataLength;
      requests += 1;
    });
    const started = Date.now();
    await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/${name}`);
    await waitForApp(p.page);
    metrics.push(`cold load ${name}: ${(bytes / 1024).toFixed(1)} KiB transferred in ${requests} requests, settled in ${Date.now() - started} ms`);
    assert(bytes <= 60 * 1024, `${name}: ${bytes} bytes transferred`);
    await audit(p.page, `light ${name}`);
    assert(p.errors().length === 0, `${name}: ${p.errors().join('\n')}`);
    await p.close();
  }
  // Dark, and the views within pages (light and dark): one tab each, moving by URL.
  for (const [theme, token, views] of [['light', T.admin, extra], ['dark', T.dark, [...PAGES.map((n) => [n, n]), ...extra]]]) {
    const p = await openPage();
    for (const [name, hash] of views) {
      await p.page.goto(`${BASE}/ui?auth_token=${token}#/${hash}`);
      await waitForApp(p.page);
      await audit(p.page, `${theme} ${name}`);
    }
    assert(p.errors().length === 0, `${theme}: ${p.errors().join('\n')}`);
    await p.close();
  }
  assert(violations.length === 0, violations.join('\n'));
  return `${PAGES.length * 2 + extra.length * 2} views audited`;
});

// ------------------------------------------------------------------------- every page: screenshots, width, size
await check('every page renders light and dark at 1280 and 400 px without console errors or overflow', async () => {
  const sizes = [];
  for (const [theme, token] of [['light', T.admin], ['dark', T.dark]]) {
    for (const width of [1280, 400]) {
      for (const name of PAGES) {
        const p = await openPage({ width });
        // The events page is shown with an event open, as people mostly see it.
        const hash = name === 'events' && liveEventId ? `events?id=${liveEventId}` : name;
        await p.page.goto(`${BASE}/ui?auth_token=${token}#/${hash}`);
        await waitForApp(p.page);
        await p.page.waitForTimeout(150);
        const overflow = await p.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
        const widest = overflow > 0 ? await p.page.evaluate(() => [...document.querySelectorAll('main *')].filter((e) => e.getBoundingClientRect().right > window.innerWidth).slice(-3).map((e) => `${e.tagName}.${e.className}`).join(', ')) : '';
        assert(overflow <= 0, `${name} ${theme} ${width}px overflows by ${overflow}px (${widest})`);
        await p.page.screenshot({ path: path.join(SCREENSHOT_DIR, `${name}-${theme}-${width}.png`) });
        if (theme === 'light' && width === 1280) {
          const bytes = await p.page.evaluate(() => {
            const nav = performance.getEntriesByType('navigation')[0];
            return performance.getEntriesByType('resource').reduce((sum, r) => sum + r.transferSize, nav.transferSize);
          });
          sizes.push({ name, bytes, requests: p.requests.length, api: p.requests.filter((u) => u.includes('/api/')).length });
        }
        assert(p.errors().length === 0, `${name} ${theme} ${width}: ${p.errors().join('\n')}`);
        await p.close();
      }
    }
  }
  // Clockify's sidebar can be as narrow as 360 px: nothing may overflow there either.
  for (const name of PAGES) {
    const p = await openPage({ width: 360 });
    await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/${name}`);
    await waitForApp(p.page);
    const overflow = await p.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert(overflow <= 0, `${name} at 360px overflows by ${overflow}px`);
    await p.close();
  }
  for (const s of sizes) metrics.push(`page ${s.name}: ${(s.bytes / 1024).toFixed(1)} KiB transferred, ${s.requests} requests (${s.api} API)`);
  const largest = sizes.reduce((a, b) => (b.bytes > a.bytes ? b : a));
  metrics.push(`largest page: ${largest.name}, ${(largest.bytes / 1024).toFixed(1)} KiB with its assets (resource timing transferSize, cold cache)`);
  return `${PAGES.length * 4} screenshots in ${SCREENSHOT_DIR}`;
});

await check('a warm reload fetches no asset again', async () => {
  const p = await openPage();
  await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/events`);
  await waitForApp(p.page);
  p.requests.length = 0;
  await p.page.goto(`${BASE}/ui?auth_token=${T.admin}#/events`);
  await waitForApp(p.page);
  const fromNetwork = await p.page.evaluate(() => performance.getEntriesByType('resource').filter((r) => r.name.includes('/assets/') && r.transferSize > 0).length);
  metrics.push(`warm reload of events: ${p.requests.length} requests, ${fromNetwork} assets from the network`);
  assert(fromNetwork === 0, `${fromNetwork} assets refetched`);
  await p.close();
});

// ------------------------------------------------------------------------- performance
if (T.perf) {
  await check('events page with 10,000 stored events: time to first render', async () => {
    const p = await openPage();
    await p.page.addInitScript(() => {
      window.__cls = 0;
      new PerformanceObserver((list) => {
        for (const entry of list.getEntries()) if (!entry.hadRecentInput) window.__cls += entry.value;
      }).observe({ type: 'layout-shift', buffered: true });
    });
    await p.page.goto(`${BASE}/ui?auth_token=${T.perf}#/events?live=0`);
    await p.page.waitForFunction(() => performance.getEntriesByName('events-rendered').length > 0, null, { timeout: 15_000 });
    await p.page.waitForLoadState('networkidle');
    const timing = await p.page.evaluate(() => ({
      rendered: performance.getEntriesByName('events-rendered')[0].startTime,
      fcp: (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime,
      rows: document.querySelectorAll('.event-row').length,
      cls: window.__cls,
    }));
    metrics.push(`events page, 10,000 stored: first contentful paint ${timing.fcp?.toFixed(0)} ms, first 50 rows rendered ${timing.rendered.toFixed(0)} ms after navigation start, layout shift ${timing.cls.toFixed(4)}`);
    assert(timing.rows >= 50, `${timing.rows} rows`);
    assert(timing.cls < 0.1, `layout shift ${timing.cls}`);
    // Scrolling to the end of the first page loads the next one through the cursor.
    await p.page.locator('.list-foot').scrollIntoViewIfNeeded();
    await p.page.waitForFunction(() => document.querySelectorAll('.event-row').length >= 100, null, { timeout: 10_000 });
    assert(p.errors().length === 0, p.errors().join('\n'));
    await p.close();
  });
}

await browser.close();
if (notYetRoutes.size) console.log(`note: not yet on this server: ${[...notYetRoutes].sort().join(', ')}`);
for (const line of metrics) console.log(`metric: ${line}`);
console.log(`${results.passed} passed, ${results.failed} failed`);
process.exit(results.failed ? 1 : 0);
