// Shared pieces of the UI: DOM helpers, the session (token kept in memory only), the API
// client, Intl formatting, feedback (Clockify toasts or in-page ones) and small widgets.

// ---------------------------------------------------------------- DOM

/** Creates an element. `attrs`: properties/attributes, `on*` functions become listeners. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  // Children first, so a select's `value` can pick among its options.
  append(el, children);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === 'class') {
      el.className = value;
    } else if (key === 'dataset') {
      Object.assign(el.dataset, value);
    } else if (key in el && typeof value !== 'string' && key !== 'list') {
      el[key] = value;
    } else if (key === 'value' || key === 'checked' || key === 'selected' || key === 'disabled' || key === 'open') {
      el[key] = value;
      if (value === true) el.setAttribute(key, '');
      else if (key === 'value') el.setAttribute('value', value);
    } else {
      el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let idCounter = 0;
export function uid(prefix = 'f') {
  idCounter += 1;
  return `${prefix}-${idCounter}`;
}

/** A labelled form field; `control` gets an id and is tied to its label and hint. */
export function field(labelText, control, { hint, required, problemKey } = {}) {
  const id = control.id || uid();
  control.id = id;
  const wrap = h('div', { class: 'field' });
  if (problemKey) wrap.dataset.problemKey = problemKey;
  const label = h('label', { for: id }, labelText, required ? h('span', { class: 'req', 'aria-hidden': 'true' }, ' *') : null);
  if (required) control.required = true;
  wrap.append(label, control);
  if (hint) {
    const hintEl = h('div', { class: 'hint', id: `${id}-hint` }, hint);
    control.setAttribute('aria-describedby', hintEl.id);
    wrap.append(hintEl);
  }
  return wrap;
}

/**
 * Shows validation problems (`path: message`) beside the field of `form` whose
 * `data-problem-key` is the longest prefix of the path (marking its control invalid), and
 * the rest as a list in `generalBox`; earlier ones are cleared first.
 */
export function placeProblems(form, problems, generalBox) {
  form.querySelectorAll('.problem.placed').forEach((p) => p.remove());
  form.querySelectorAll('[aria-invalid]').forEach((el) => el.removeAttribute('aria-invalid'));
  const general = [];
  for (const problem of problems) {
    const key = String(problem).split(/[:\s]/)[0].replace(/\.(\d+)(?=\.|$)/g, '[$1]');
    let target = null;
    for (let k = key; k && !target; k = k.replace(/(\.[^.[\]]+|\[\d+\])$/, '') === k ? '' : k.replace(/(\.[^.[\]]+|\[\d+\])$/, '')) {
      target = form.querySelector(`[data-problem-key="${CSS.escape(k)}"]`);
    }
    if (target) {
      target.append(h('div', { class: 'problem placed', role: 'alert' }, problem));
      const control = target.querySelector('input, select, textarea');
      if (control) control.setAttribute('aria-invalid', 'true');
    } else {
      general.push(problem);
    }
  }
  clear(generalBox, general.length ? h('div', { class: 'notice bad' }, h('h2', {}, 'Please fix these first'), h('ul', {}, general.map((p) => h('li', {}, p)))) : null);
  const first = form.querySelector('.problem.placed, .notice.bad');
  if (first) first.scrollIntoView({ block: 'center' });
}

export function debounce(fn, ms) {
  let timer;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

// ---------------------------------------------------------------- session

function decodeClaims(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const padded = part + '='.repeat((4 - (part.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return null;
  }
}

/** Ask for a new token this long before the current one expires. */
const REFRESH_BEFORE_MS = 5 * 60 * 1000;
const REFRESH_RETRY_MS = 60 * 1000;

/**
 * The user token lives only here (never in storage, never in URLs except the SSE stream's).
 * Clockify user tokens last 30 minutes; before that we ask the parent window for a new one.
 */
export const session = {
  token: null,
  claims: {},
  expired: false,
  listeners: new Set(),
  expiredListeners: new Set(),
  refreshTimer: null,
  expiryTimer: null,

  init(token) {
    this.setToken(token);
    window.addEventListener('message', (event) => this.onMessage(event));
  },

  setToken(token) {
    this.token = token;
    this.claims = decodeClaims(token) || {};
    this.schedule();
    for (const fn of this.listeners) fn(token);
  },

  get isAdmin() {
    return ['OWNER', 'WORKSPACE_ADMIN'].includes(this.claims.workspaceRole);
  },
  get workspaceId() {
    return this.claims.workspaceId || '';
  },
  get locale() {
    const lang = (this.claims.language || document.documentElement.lang || 'en').toLowerCase().replace('_', '-');
    try {
      return Intl.getCanonicalLocales(lang)[0];
    } catch {
      return 'en';
    }
  },
  get expiresAt() {
    return this.claims.exp ? this.claims.exp * 1000 : Date.now() + 30 * 60 * 1000;
  },
  get framed() {
    return window.top !== window;
  },

  onToken(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  },

  schedule() {
    clearTimeout(this.refreshTimer);
    clearTimeout(this.expiryTimer);
    const now = Date.now();
    const left = this.expiresAt - now;
    this.refreshTimer = setTimeout(() => this.requestRefresh(), Math.max(1000, left - REFRESH_BEFORE_MS));
    this.expiryTimer = setTimeout(() => this.expire('the session has expired'), Math.max(0, left));
  },

  requestRefresh() {
    if (this.expired) return;
    if (this.framed) {
      postToClockify('refreshAddonToken');
    }
    // Ask again until an answer comes or the token runs out (then expiryTimer takes over).
    clearTimeout(this.refreshTimer);
    if (this.expiresAt - Date.now() > REFRESH_RETRY_MS / 2) {
      this.refreshTimer = setTimeout(() => this.requestRefresh(), REFRESH_RETRY_MS);
    }
  },

  onMessage(event) {
    // Only the frames that embed us (allowed by CSP frame-ancestors) may hand us a token.
    if (event.source !== window.parent && event.source !== window.top) return;
    const token = tokenFromMessage(event.data);
    if (!token || token === this.token) return;
    const claims = decodeClaims(token);
    if (!claims || claims.workspaceId !== this.claims.workspaceId || !claims.exp || claims.exp * 1000 <= Date.now()) return;
    if (this.expired) return;
    this.setToken(token);
  },

  expire(reason) {
    if (this.expired) return;
    this.expired = true;
    clearTimeout(this.refreshTimer);
    clearTimeout(this.expiryTimer);
    for (const fn of this.expiredListeners) fn(reason);
  },
};

function looksLikeJwt(value) {
  return typeof value === 'string' && /^[\w-]+\.[\w-]+\.[\w-]+$/.test(value.trim());
}

/** Clockify's answer to refreshAddonToken is not documented: accept the usual shapes. */
function tokenFromMessage(data) {
  let message = data;
  if (typeof message === 'string') {
    if (looksLikeJwt(message)) return message.trim();
    try {
      message = JSON.parse(message);
    } catch {
      return null;
    }
  }
  if (!message || typeof message !== 'object') return null;
  const name = message.title || message.action || message.type || message.name;
  if (name && !/token/i.test(String(name))) return null;
  for (const value of [message.body, message.payload, message.token, message.authToken, message.auth_token, message.data]) {
    if (looksLikeJwt(value)) return value.trim();
    if (value && typeof value === 'object') {
      for (const inner of [value.token, value.authToken, value.auth_token]) {
        if (looksLikeJwt(inner)) return inner.trim();
      }
    }
  }
  return null;
}

/** Origin of the Clockify page embedding us, when the browser tells (Chromium does). */
function clockifyOrigin() {
  const origins = window.location.ancestorOrigins;
  if (origins && origins.length) return origins[origins.length - 1];
  return '*';
}

/** Window messages to Clockify: a JSON string `{action, payload}` posted to window.top. */
export function postToClockify(action, payload) {
  const message = payload === undefined ? { action } : { action, payload };
  try {
    window.top.postMessage(JSON.stringify(message), clockifyOrigin());
  } catch {
    // The parent navigated away or is not what ancestorOrigins said; nothing to tell.
  }
}

// ---------------------------------------------------------------- API

/** A validation problem as one line: `path: message` (the message alone when it names its path). */
function problemText(problem) {
  if (typeof problem === 'string') return problem;
  const { path = '', message = '' } = problem || {};
  return path && !message.startsWith(path) ? `${path}: ${message}` : message;
}

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `request failed with status ${status}`);
    this.status = status;
    // Validation problems come as {path, message}; pages show them as one line each.
    this.problems = ((body && body.problems) || []).map(problemText);
    this.requestId = body && body.requestId;
    // The route does not exist yet (a feature still being built) rather than a missing record.
    this.notAvailable = status === 405 || (status === 404 && body && body.code === 'no_such_route');
    /** No answer at all: the browser is offline or the server cannot be reached. */
    this.offline = status === 0;
  }
}

/** The error for a request that got no answer, said the way a person can act on it. */
function unreachable() {
  const offline = typeof navigator !== 'undefined' && navigator.onLine === false;
  return new ApiError(0, {
    error: offline
      ? 'You are offline. Check your connection, then retry.'
      : 'The Clockify Studio server could not be reached (it may be restarting, or the network dropped). Retry in a moment.',
  });
}

/**
 * Authenticated fetch with the user token: the raw Response, for downloads. Network failures
 * become an ApiError with `offline` set instead of a bare "Failed to fetch".
 */
export async function apiFetch(path, { method = 'GET', body, signal, cache = 'no-store', accept = 'application/json' } = {}) {
  if (session.expired) throw new ApiError(401, { error: 'the session has expired' });
  const headers = { 'X-Addon-Token': session.token, Accept: accept };
  const init = { method, headers, signal, cache };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
  }
  try {
    return await fetch(path, init);
  } catch (error) {
    if (error && error.name === 'AbortError') throw error;
    throw unreachable();
  }
}

/**
 * JSON API call with the user token. 401 ends the session instead of failing each call.
 * `cache: 'no-cache'` lets the browser keep a response and revalidate it by ETag.
 */
export async function api(path, { method = 'GET', body, signal, cache = 'no-store' } = {}) {
  const response = await apiFetch(path, { method, body, signal, cache });
  let text;
  try {
    text = await response.text();
  } catch (error) {
    if (error && error.name === 'AbortError') throw error;
    throw unreachable();
  }
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = { error: text.slice(0, 200) };
  }
  if (!response.ok) {
    const error = new ApiError(response.status, json);
    if (response.status === 401) session.expire(error.message);
    throw error;
  }
  return json;
}

/** Query string from an object; arrays repeat the key, empty values are left out. */
export function qs(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (Array.isArray(value)) value.forEach((v) => search.append(key, v));
    else if (value !== undefined && value !== null && value !== '') search.set(key, value);
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}

// ---------------------------------------------------------------- formatting

const formatters = new Map();
function cached(key, make) {
  if (!formatters.has(key)) formatters.set(key, make());
  return formatters.get(key);
}

export const fmt = {
  dateTime(value) {
    if (!value) return '—';
    const date = new Date(value);
    if (Number.isNaN(date.getTime())) return String(value);
    return cached('dt', () => new Intl.DateTimeFormat(session.locale, { dateStyle: 'medium', timeStyle: 'medium' })).format(date);
  },
  time(value) {
    return cached('t', () => new Intl.DateTimeFormat(session.locale, { timeStyle: 'short' })).format(new Date(value));
  },
  day(value) {
    return cached('d', () => new Intl.DateTimeFormat(session.locale, { weekday: 'short', day: 'numeric' })).format(new Date(value));
  },
  relative(value) {
    if (!value) return '—';
    const seconds = Math.round((new Date(value).getTime() - Date.now()) / 1000);
    const rtf = cached('rel', () => new Intl.RelativeTimeFormat(session.locale, { numeric: 'auto' }));
    const abs = Math.abs(seconds);
    if (abs < 45) return rtf.format(seconds, 'second');
    if (abs < 45 * 60) return rtf.format(Math.round(seconds / 60), 'minute');
    if (abs < 22 * 3600) return rtf.format(Math.round(seconds / 3600), 'hour');
    return rtf.format(Math.round(seconds / 86400), 'day');
  },
  number(value) {
    if (value === null || value === undefined) return '—';
    return cached('n', () => new Intl.NumberFormat(session.locale)).format(value);
  },
  bytes(value) {
    if (value === null || value === undefined) return '—';
    const units = ['byte', 'kilobyte', 'megabyte', 'gigabyte', 'terabyte'];
    let n = value;
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i += 1;
    }
    return new Intl.NumberFormat(session.locale, { style: 'unit', unit: units[i], unitDisplay: 'short', maximumFractionDigits: i ? 1 : 0 }).format(n);
  },
  duration(ms) {
    if (ms === null || ms === undefined) return '—';
    if (ms < 1000) return new Intl.NumberFormat(session.locale, { style: 'unit', unit: 'millisecond', unitDisplay: 'short', maximumFractionDigits: 0 }).format(ms);
    return new Intl.NumberFormat(session.locale, { style: 'unit', unit: 'second', unitDisplay: 'short', maximumFractionDigits: 1 }).format(ms / 1000);
  },
  /** ISO time for `<time datetime>` and title tooltips in the user's zone. */
  zone() {
    return Intl.DateTimeFormat().resolvedOptions().timeZone;
  },
};

/** A `<time>` element showing a relative time with the full local time as tooltip. */
export function timeEl(value, { relative = true } = {}) {
  if (!value) return h('span', { class: 'muted' }, '—');
  return h('time', { datetime: value, title: `${fmt.dateTime(value)} (${fmt.zone()})` }, relative ? fmt.relative(value) : fmt.dateTime(value));
}

// ---------------------------------------------------------------- feedback

/** Success/error feedback: Clockify's own toast when embedded, an in-page toast otherwise. */
export function notify(type, message) {
  if (session.framed) {
    postToClockify('toastrPop', { type, message });
    return;
  }
  const box = document.getElementById('toasts');
  if (!box) return;
  const toast = h('div', { class: `toast ${type}`, role: type === 'error' ? 'alert' : 'status' }, message);
  box.append(toast);
  setTimeout(() => toast.remove(), type === 'error' ? 8000 : 4000);
}

export function reportError(error, what = 'That did not work') {
  if (error && error.status === 401) return; // the session-expired page says it all
  const message = error && error.message ? `${what}: ${error.message}` : what;
  notify('error', message);
}

/** Copies text; reports the outcome through `notify`. */
export async function copyText(text, label = 'Copied') {
  try {
    // Inside Clockify's iframe the Clipboard API may be withheld (permissions policy);
    // asking anyway logs an error, so check first and use the older copy command instead.
    const policy = document.permissionsPolicy || document.featurePolicy;
    if (!navigator.clipboard || (policy && !policy.allowsFeature('clipboard-write'))) throw new Error('no clipboard API');
    await navigator.clipboard.writeText(text);
    notify('success', label);
  } catch {
    // Clipboard access can be denied inside iframes; fall back to a selection copy.
    const area = h('textarea', { class: 'offscreen', readOnly: true }, text);
    document.body.append(area);
    area.select();
    const ok = document.execCommand && document.execCommand('copy');
    area.remove();
    notify(ok ? 'success' : 'error', ok ? label : 'Copying is blocked here; select the text and copy it by hand');
  }
}

export function copyButton(getText, label = 'Copy', done = 'Copied to the clipboard') {
  return h('button', { type: 'button', class: 'small copy', onclick: () => copyText(typeof getText === 'function' ? getText() : getText, done) }, label);
}

/** A modal confirmation; resolves true when confirmed. */
export function confirmDialog({ title, message, confirmLabel = 'Confirm', danger = false }) {
  return new Promise((resolve) => {
    const dialog = h('dialog', { 'aria-labelledby': 'confirm-title' },
      h('h2', { id: 'confirm-title' }, title),
      h('p', {}, message),
      h('form', { method: 'dialog', class: 'row' },
        h('span', { class: 'spacer' }),
        h('button', { value: 'cancel', type: 'submit' }, 'Cancel'),
        h('button', { value: 'ok', type: 'submit', class: danger ? 'danger solid' : 'primary' }, confirmLabel)));
    dialog.addEventListener('close', () => {
      resolve(dialog.returnValue === 'ok');
      dialog.remove();
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

// ---------------------------------------------------------------- states

export function skeletonLines(count, cls = 'sk-line') {
  return h('div', { 'aria-hidden': 'true' }, Array.from({ length: count }, () => h('div', { class: `sk ${cls}` })));
}

/** The calm state for a feature whose API is not on this server yet. */
export function notAvailable(what) {
  return h('div', { class: 'notice', role: 'status' },
    h('h2', {}, `${what} is not available yet`),
    h('p', { class: 'muted' }, 'This server does not offer it yet. It arrives with a later version of Clockify Studio; nothing is wrong with your installation.'));
}

/** A failed load: what failed, why in plain words, and (given `retry`) a Retry button. */
export function errorState(error, what, retry) {
  if (error && error.notAvailable) return notAvailable(what);
  const offline = error && error.offline;
  return h('div', { class: `notice ${offline ? 'warn' : 'bad'} error-state`, role: 'alert' },
    h('h2', {}, offline ? `${what} could not be loaded: no connection` : `${what} could not be loaded`),
    h('p', {}, error && error.message ? error.message : String(error)),
    error && error.requestId ? h('p', { class: 'muted small' }, `Request id: ${error.requestId}`) : null,
    retry ? h('button', { type: 'button', class: 'retry', onclick: (event) => {
      event.currentTarget.disabled = true;
      retry();
    } }, 'Retry') : null);
}

export function badgeFor(status) {
  const map = { retry: 'info', replay: 'info', test: '', succeeded: 'ok', ACTIVE: 'ok', done: 'ok', 'done-with-errors': 'warn', 'not-subscribed': '', registered: 'ok', manifest: 'ok', failed: 'bad', DELETED: 'bad', running: 'info', queued: 'info', pending: 'warn', INACTIVE: 'warn', skipped: '', idle: '' };
  return h('span', { class: `badge ${map[status] ?? ''}` }, status ?? '—');
}

/**
 * The server's own notifications (a flow disabled, syncs failing) are events of this built-in
 * source. Only destinations that name it forward them, and flows never run on them.
 */
export const STUDIO_SOURCE = 'studio';
export const STUDIO_SOURCE_LABEL = 'Studio notifications (flow disabled, sync failing)';
export const STUDIO_EVENT_TYPES = ['FLOW_AUTO_DISABLED', 'SUBSCRIPTION_SYNC_FAILING'];

/** The 50 Clockify webhook event types (PLATFORM.md §7). */
export const EVENT_TYPES = [
  'APPROVAL_REQUEST_STATUS_UPDATED', 'ASSIGNMENT_CREATED', 'ASSIGNMENT_DELETED', 'ASSIGNMENT_PUBLISHED',
  'ASSIGNMENT_UPDATED', 'BALANCE_UPDATED', 'BILLABLE_RATE_UPDATED', 'CLIENT_DELETED', 'CLIENT_UPDATED',
  'COST_RATE_UPDATED', 'EXPENSE_CREATED', 'EXPENSE_DELETED', 'EXPENSE_RESTORED', 'EXPENSE_UPDATED',
  'INVOICE_UPDATED', 'LIMITED_USERS_ADDED_TO_WORKSPACE', 'NEW_APPROVAL_REQUEST', 'NEW_CLIENT', 'NEW_INVOICE',
  'NEW_PROJECT', 'NEW_TAG', 'NEW_TASK', 'NEW_TIMER_STARTED', 'NEW_TIME_ENTRY', 'PROJECT_DELETED',
  'PROJECT_UPDATED', 'TAG_DELETED', 'TAG_UPDATED', 'TASK_DELETED', 'TASK_UPDATED', 'TIMER_STOPPED',
  'TIME_ENTRY_DELETED', 'TIME_ENTRY_RESTORED', 'TIME_ENTRY_SPLIT', 'TIME_ENTRY_UPDATED', 'TIME_OFF_REQUESTED',
  'TIME_OFF_REQUEST_APPROVED', 'TIME_OFF_REQUEST_REJECTED', 'TIME_OFF_REQUEST_WITHDRAWN',
  'USERS_INVITED_TO_WORKSPACE', 'USER_ACTIVATED_ON_WORKSPACE', 'USER_DEACTIVATED_ON_WORKSPACE',
  'USER_DELETED_FROM_WORKSPACE', 'USER_EMAIL_CHANGED', 'USER_GROUP_CREATED', 'USER_GROUP_DELETED',
  'USER_GROUP_UPDATED', 'USER_JOINED_WORKSPACE', 'USER_UPDATED', 'TIME_OFF_REQUEST_UPDATED',
];

/** Where the bundled assets live (same versioned folder as this module). */
export const ASSET_BASE = new URL('.', import.meta.url).pathname.replace(/\/$/, '');

/** Carries a prepared flow action from the explorer to the flow builder (memory only). */
export const handoff = { action: null };

/** Downloads a Blob under `name` (an object URL on a temporary link; nothing inline). */
export function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const link = h('a', { href: url, download: name, class: 'offscreen' }, name);
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** Whether the sidebar is narrow (Clockify's sidebar is 360 to 420 px wide). */
export function isNarrow() {
  return window.matchMedia('(max-width: 899px)').matches;
}

/** Brings a form or panel that just opened to the top of the viewport on narrow screens. */
export function bringToTop(el) {
  if (el && isNarrow()) el.scrollIntoView({ block: 'start' });
}

/** The reason a flow was turned off, without repeating "disabled automatically". */
export function disabledReasonText(reason) {
  return String(reason || '').replace(/^(disabled|turned off) automatically:\s*/i, '');
}
