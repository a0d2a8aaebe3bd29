// Audit: every change an admin made in the workspace, newest first — who, when, what, from
// which request, with before/after summaries in the JSON viewer. Filters by kind of change,
// user and time (in the URL); older entries page in with "Load more". Admins only (the API
// answers 403 to everyone else).

import {
  h, clear, api, qs, fmt, timeEl, session, errorState, field, skeletonLines, debounce,
} from '../lib.js';
import { jsonView } from '../json-view.js';

const PAGE_SIZE = 50;
// Action prefixes (`flow.` matches flow.create, flow.update …); see GET /api/audit.
const ACTIONS = [
  ['', 'Any change'], ['flow.', 'Flows'], ['flows.', 'Pause and resume'], ['source.', 'Sources'],
  ['destination.', 'Destinations'], ['delivery.', 'Deliveries'], ['settings.', 'Settings'],
  ['subscriptions.', 'Subscriptions'], ['bootstrap.', 'Bootstrap'], ['event.', 'Events'],
  ['run.', 'Runs'], ['explorer.', 'API explorer'], ['config.', 'Export and import'],
];
const RANGES = [['', 'Any time'], ['1h', 'Last hour'], ['24h', 'Last 24 hours'], ['7d', 'Last 7 days'], ['30d', 'Last 30 days']];
const RANGE_MS = { '1h': 3600e3, '24h': 86400e3, '7d': 7 * 86400e3, '30d': 30 * 86400e3 };

/** The before/after summaries of an entry, folded (they can be long). */
function changes(entry) {
  if (entry.before == null && entry.after == null) return h('span', { class: 'muted' }, '—');
  const side = (label, value) => h('div', { class: 'stack audit-side' }, h('h3', { class: 'small' }, label),
    value == null ? h('p', { class: 'muted small' }, label === 'Before' ? 'Nothing: it was created.' : 'Nothing: it was removed.') : jsonView(value, { label: `${label}: ${entry.action}`, copy: false }));
  return h('details', { class: 'audit-changes' }, h('summary', {}, 'Before and after'),
    h('div', { class: 'audit-diff' }, side('Before', entry.before), side('After', entry.after)));
}

export function mount(root, ctx) {
  if (!session.isAdmin) {
    clear(root, h('div', { class: 'page-head' }, h('h1', {}, 'Audit log')),
      h('div', { class: 'notice', role: 'status' }, h('p', {}, 'The audit log is for workspace owners and admins.')));
    return null;
  }
  const controller = new AbortController();
  const { signal } = controller;
  const filters = { action: ctx.params.get('action') || '', user: ctx.params.get('user') || '', range: ctx.params.get('range') || '' };
  let cursor = null;
  let generation = 0;
  let shown = 0;

  const actionSelect = h('select', { name: 'action' }, ACTIONS.map(([v, l]) => h('option', { value: v }, l)));
  const userInput = h('input', { type: 'search', name: 'user', placeholder: 'Clockify user id', autocomplete: 'off', value: filters.user });
  const rangeSelect = h('select', { name: 'range' }, RANGES.map(([v, l]) => h('option', { value: v }, l)));
  actionSelect.value = filters.action;
  rangeSelect.value = filters.range;
  const body = h('tbody');
  const table = h('div', { class: 'table-wrap' }, h('table', { class: 'audit' },
    h('caption', { class: 'offscreen' }, 'Changes, newest first'),
    h('thead', {}, h('tr', {}, ['Time', 'Change', 'Who', 'What changed'].map((t) => h('th', { scope: 'col' }, t)))),
    body));
  const foot = h('div', { class: 'list-foot', 'aria-live': 'polite' });

  clear(root,
    h('div', { class: 'page-head' }, h('h1', {}, 'Audit log')),
    h('p', { class: 'muted' }, 'Every change made by an admin in this workspace, with who made it and from which request. Entries are kept as long as flow runs.'),
    h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter the audit log', onsubmit: (e) => e.preventDefault() },
      field('Change', actionSelect), field('User', userInput), field('Time', rangeSelect)),
    table, foot);

  function saveParams() {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(filters)) if (v) params.set(k, v);
    ctx.setParams(params);
  }

  function who(entry) {
    const name = entry.userName || entry.userId || 'unknown';
    const filterBy = entry.userId ? h('button', { type: 'button', class: 'small link', title: `Only changes by ${name}`, onclick: () => {
      userInput.value = entry.userId;
      filters.user = entry.userId;
      reload();
    } }, name) : h('span', {}, name);
    return h('td', {}, filterBy, entry.userId && entry.userName ? h('div', { class: 'small muted' }, entry.userId) : null);
  }

  function row(entry) {
    return h('tr', { dataset: { id: entry.id, action: entry.action } },
      h('td', { class: 'nowrap' }, timeEl(entry.at, { relative: false })),
      h('td', {}, h('code', {}, entry.action),
        entry.target ? h('div', { class: 'small muted mono' }, entry.target) : null,
        h('div', { class: 'small muted' }, `request ${entry.requestId}`)),
      who(entry),
      h('td', {}, changes(entry)));
  }

  async function load() {
    const mine = generation;
    clear(foot, skeletonLines(2));
    const from = RANGE_MS[filters.range] ? new Date(Date.now() - RANGE_MS[filters.range]).toISOString() : '';
    try {
      const page = await api(`/api/audit${qs({ action: filters.action, user: filters.user.trim(), from, cursor, limit: PAGE_SIZE })}`, { signal });
      if (mine !== generation) return;
      const items = page.items || [];
      body.append(...items.map(row));
      shown += items.length;
      cursor = page.nextCursor;
      if (cursor) clear(foot, h('button', { type: 'button', onclick: load }, 'Load more'));
      else clear(foot, shown ? `${fmt.number(shown)} changes — that is all.` : (filters.action || filters.user || filters.range ? 'No changes match these filters.' : 'No changes yet. Changes appear here when an admin edits flows, sources, destinations or settings.'));
    } catch (error) {
      if (error.name === 'AbortError' || mine !== generation) return;
      clear(foot, errorState(error, 'The audit log', load));
    }
  }

  function reload() {
    generation += 1;
    cursor = null;
    shown = 0;
    clear(body);
    saveParams();
    load();
  }

  actionSelect.addEventListener('change', () => {
    filters.action = actionSelect.value;
    reload();
  });
  rangeSelect.addEventListener('change', () => {
    filters.range = rangeSelect.value;
    reload();
  });
  userInput.addEventListener('input', debounce(() => {
    filters.user = userInput.value.trim();
    reload();
  }, 300));
  load();
  return () => controller.abort();
}
