// Runs: every flow run of the workspace, newest first, with its flow, the event that
// started it, status, duration and time; filters by flow, status and time (in the URL);
// failed runs can be retried (a new run of the same flow and event, marked as a retry).

import {
  h, clear, api, qs, fmt, timeEl, session, notify, reportError, errorState, field,
  skeletonLines, badgeFor,
} from '../lib.js';

const PAGE_SIZE = 50;
const STATUSES = [['', 'Any status'], ['failed', 'Failed'], ['succeeded', 'Succeeded'], ['running', 'Running'], ['queued', 'Queued'], ['skipped', 'Skipped']];
const RANGES = [['', 'Any time'], ['1h', 'Last hour'], ['24h', 'Last 24 hours'], ['7d', 'Last 7 days'], ['30d', 'Last 30 days']];
const RANGE_MS = { '1h': 3600e3, '24h': 86400e3, '7d': 7 * 86400e3, '30d': 30 * 86400e3 };

export function mount(root, ctx) {
  const controller = new AbortController();
  const { signal } = controller;
  const filters = { flow: ctx.params.get('flow') || '', status: ctx.params.get('status') || '', range: ctx.params.get('range') || '' };
  let cursor = null;
  let generation = 0;

  const flowSelect = h('select', { name: 'flow' }, h('option', { value: '' }, 'All flows'));
  const statusSelect = h('select', { name: 'status' }, STATUSES.map(([v, l]) => h('option', { value: v }, l)));
  const rangeSelect = h('select', { name: 'range' }, RANGES.map(([v, l]) => h('option', { value: v }, l)));
  statusSelect.value = filters.status;
  rangeSelect.value = filters.range;
  const body = h('tbody');
  const table = h('div', { class: 'table-wrap' }, h('table', { class: 'runs' },
    h('caption', { class: 'offscreen' }, 'Flow runs, newest first'),
    h('thead', {}, h('tr', {}, ['Status', 'Flow', 'Event', 'Duration', 'Time'].map((t) => h('th', { scope: 'col' }, t)), h('th', { scope: 'col' }, h('span', { class: 'offscreen' }, 'Actions')))),
    body));
  const foot = h('div', { class: 'list-foot', 'aria-live': 'polite' });

  clear(root,
    h('div', { class: 'page-head' }, h('h1', {}, 'Runs')),
    h('p', { class: 'muted' }, 'Every run of every flow. A failed run can be retried: the flow runs again on the same event.'),
    h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter runs', onsubmit: (e) => e.preventDefault() },
      field('Flow', flowSelect), field('Status', statusSelect), field('Time', rangeSelect)),
    table, foot);

  function saveParams() {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(filters)) if (v) params.set(k, v);
    ctx.setParams(params);
  }

  function row(run) {
    const retry = session.isAdmin && run.status === 'failed' && !run.test ? h('button', { type: 'button', class: 'small', onclick: async (e) => {
      const button = e.currentTarget;
      button.disabled = true;
      try {
        const started = await api(`/api/runs/${encodeURIComponent(run.id)}/retry`, { method: 'POST' });
        notify('success', `Retry of “${run.flowName}” queued`);
        body.prepend(row(started));
      } catch (error) {
        reportError(error, 'Retrying failed');
        button.disabled = false;
      }
    } }, 'Retry') : null;
    const kind = run.retry ? 'retry' : run.replay ? 'replay' : run.test ? 'test' : '';
    return h('tr', { dataset: { id: run.id } },
      h('td', {}, badgeFor(run.status), kind ? [' ', h('span', { class: 'small muted' }, kind)] : null),
      h('td', {}, h('a', { href: `#/flows/${encodeURIComponent(run.flowId)}?run=${encodeURIComponent(run.id)}` }, run.flowName || run.flowId),
        run.error ? h('div', { class: 'small problem' }, run.error) : null),
      h('td', {}, run.webhookId ? h('a', { href: `#/events?id=${encodeURIComponent(run.webhookId)}` }, run.eventType || 'event') : h('span', { class: 'muted' }, run.eventType || '—')),
      h('td', { class: 'nowrap' }, run.durationMs === null || run.durationMs === undefined ? '—' : fmt.duration(run.durationMs)),
      h('td', { class: 'nowrap' }, timeEl(run.createdAt, { relative: false })),
      h('td', {}, retry));
  }

  async function load() {
    const mine = generation;
    clear(foot, skeletonLines(2));
    const from = RANGE_MS[filters.range] ? new Date(Date.now() - RANGE_MS[filters.range]).toISOString() : '';
    try {
      const page = await api(`/api/runs${qs({ flow: filters.flow, status: filters.status, from, cursor, limit: PAGE_SIZE })}`, { signal });
      if (mine !== generation) return;
      body.append(...(page.items || []).map(row));
      cursor = page.nextCursor;
      if (cursor) clear(foot, h('button', { type: 'button', onclick: load }, 'Load more'));
      else clear(foot, body.children.length ? `${fmt.number(body.children.length)} runs — that is all.` : (filters.flow || filters.status || filters.range ? 'No runs match these filters.' : 'No runs yet. Runs appear when an event triggers an enabled flow.'));
    } catch (error) {
      if (error.name === 'AbortError' || mine !== generation) return;
      clear(foot, errorState(error, 'Runs', load));
    }
  }

  function reload() {
    generation += 1;
    cursor = null;
    clear(body);
    saveParams();
    load();
  }

  for (const [select, key] of [[flowSelect, 'flow'], [statusSelect, 'status'], [rangeSelect, 'range']]) {
    select.addEventListener('change', () => {
      filters[key] = select.value;
      reload();
    });
  }
  api('/api/flows', { signal }).then((data) => {
    flowSelect.append(...(data.flows || []).map((f) => h('option', { value: f.id }, f.name)));
    flowSelect.value = filters.flow;
  }).catch(() => {});
  load();
  return () => controller.abort();
}
