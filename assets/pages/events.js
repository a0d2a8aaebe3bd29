// Events: the stored webhook log, newest first. Filters live in the URL; pages load on
// scroll through the cursor API; live mode prepends events from the SSE stream; a detail
// pane shows the body, redacted headers and actions (replay through flows, erase).

import {
  h, clear, api, apiFetch, qs, fmt, timeEl, session, notify, reportError, confirmDialog, copyButton,
  errorState, field, debounce, badgeFor, EVENT_TYPES, saveBlob, bringToTop, STUDIO_SOURCE,
  STUDIO_SOURCE_LABEL,
} from '../lib.js';
import { jsonView } from '../json-view.js';

const PAGE_SIZE = 50;
const RANGES = [
  ['', 'Any time'],
  ['1h', 'Last hour'],
  ['24h', 'Last 24 hours'],
  ['7d', 'Last 7 days'],
  ['30d', 'Last 30 days'],
  ['custom', 'Custom…'],
];
const RANGE_MS = { '1h': 3600e3, '24h': 86400e3, '7d': 7 * 86400e3, '30d': 30 * 86400e3 };

/** Whether the flows feature (and with it replay) exists on this server; probed once. */
let flowsAvailable = null;
async function probeFlows() {
  if (flowsAvailable !== null) return flowsAvailable;
  try {
    await api('/api/flows');
    flowsAvailable = true;
  } catch (error) {
    flowsAvailable = !error.notAvailable;
  }
  return flowsAvailable;
}

/**
 * Opens the live stream of new events. EventSource cannot send headers, and a token in a URL
 * ends up in proxy logs: the token (sent in a header) buys a single-use ticket, valid 60 s,
 * that opens the stream, and every (re)connection asks for a new one (a spent ticket closes
 * the browser's own retry). Resolves to null when no ticket could be had.
 */
async function openEventStream(lastEventId) {
  let ticket;
  try {
    ({ ticket } = await api('/api/webhooks/stream-ticket', { method: 'POST' }));
  } catch {
    return null;
  }
  const params = { ticket };
  if (lastEventId) params.lastEventId = lastEventId;
  return new EventSource(`/api/webhooks/stream${qs(params)}`);
}

/** What the flows an event started came to, as a badge (none when no flow ran). */
function outcomeBadge(flows) {
  if (!flows) return h('span', { class: 'badge outcome none', title: 'No flow ran for this event' }, 'no flow');
  const label = { succeeded: 'flows ok', failed: 'flow failed', running: 'flows running', skipped: 'flows skipped' }[flows.outcome] || flows.outcome;
  const cls = { succeeded: 'ok', failed: 'bad', running: 'info', skipped: '' }[flows.outcome] ?? '';
  const counts = Object.entries(flows.counts || {}).map(([status, n]) => `${n} ${status}`).join(', ');
  return h('span', { class: `badge outcome ${cls}`, title: `Flow runs this event started: ${counts}` }, label);
}

/** The id of what an event is about (a time entry, project, user, expense …), if its body says. */
function ownEntityId(event) {
  const body = event.body && typeof event.body === 'object' ? event.body : {};
  const id = ['id', 'assignmentId', 'expenseId'].map((k) => body[k]).find((v) => typeof v === 'string' && v);
  return id || null;
}

/**
 * "This entity's history": the events whose body names the same time entry, project, user …
 * (GET /api/webhooks?entity=, from the server's entity index). None when the body names no id.
 */
export function entityHistoryLink(event) {
  const id = ownEntityId(event);
  if (!id) return null;
  return h('p', {}, h('a', { href: `#/events${qs({ entity: id })}` }, 'This entity\u2019s history'),
    h('span', { class: 'small muted' }, ` (every event naming ${id})`));
}

function readFilters(params) {
  return {
    event: params.getAll('event').filter(Boolean),
    source: params.get('source') || '',
    range: params.get('range') || '',
    from: params.get('from') || '',
    to: params.get('to') || '',
    q: params.get('q') || '',
    id: params.get('id') || '',
    entity: params.get('entity') || '',
    live: params.get('live') !== '0',
  };
}

function toLocalInput(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

export function mount(root, ctx) {
  const state = {
    filters: readFilters(ctx.params),
    items: [],
    ids: new Set(),
    cursor: null,
    done: false,
    loading: false,
    generation: 0,
    sources: [],
    storedTypes: [],
    pendingNew: 0,
    failed: false,
  };
  const controller = new AbortController();
  let stream = null;
  let connecting = null;
  let reconnectTimer = null;
  let lastEventId = null;

  // ------------------------------------------------------------ URL state
  function saveParams() {
    const f = state.filters;
    const params = new URLSearchParams();
    f.event.forEach((e) => params.append('event', e));
    if (f.source) params.set('source', f.source);
    if (f.range) params.set('range', f.range);
    if (f.range === 'custom') {
      if (f.from) params.set('from', f.from);
      if (f.to) params.set('to', f.to);
    }
    if (f.q) params.set('q', f.q);
    if (!f.live) params.set('live', '0');
    if (f.id) params.set('id', f.id);
    if (f.entity) params.set('entity', f.entity);
    ctx.setParams(params);
  }

  function apiQuery(cursor) {
    const f = state.filters;
    // An entity's history is a lookup in the entity index; the other filters do not apply.
    if (f.entity) return qs({ limit: PAGE_SIZE, cursor, entity: f.entity });
    let from = '';
    let to = '';
    if (RANGE_MS[f.range]) from = new Date(Date.now() - RANGE_MS[f.range]).toISOString();
    if (f.range === 'custom') {
      from = f.from;
      to = f.to;
    }
    return qs({ limit: PAGE_SIZE, cursor, event: f.event, source: f.source, from, to, q: f.q });
  }

  // ------------------------------------------------------------ layout
  const typeCount = h('span');
  const typeSearch = h('input', { type: 'search', placeholder: 'Filter types', 'aria-label': 'Filter the event type list', class: 'wide' });
  const typeOptions = h('div', { class: 'options', role: 'group', 'aria-label': 'Event types' });
  const typeDetails = h('details', { class: 'multi' },
    h('summary', {}, 'Event types', typeCount),
    h('div', { class: 'panel' }, typeSearch, typeOptions,
      h('div', { class: 'row' }, h('button', { type: 'button', class: 'small', onclick: () => setTypes([]) }, 'Clear'))));
  const sourceSelect = h('select', { name: 'source' });
  const rangeSelect = h('select', { name: 'range' }, RANGES.map(([v, l]) => h('option', { value: v }, l)));
  const fromInput = h('input', { type: 'datetime-local', name: 'from' });
  const toInput = h('input', { type: 'datetime-local', name: 'to' });
  const customRange = h('div', { class: 'row' }, field('From', fromInput), field('To', toInput));
  const searchInput = h('input', { type: 'search', name: 'q', placeholder: 'text, field=value or field:value', autocomplete: 'off' });
  const liveToggle = h('input', { type: 'checkbox', role: 'switch', checked: state.filters.live });
  const liveDot = h('span', { class: 'live-dot', 'aria-hidden': 'true' });
  const liveStatus = h('span', { class: 'small muted', id: 'live-status' }, 'offline');
  const newBanner = h('button', { type: 'button', class: 'small', hidden: true, onclick: () => reload() });
  const list = h('ul', { class: 'list', id: 'event-list', 'aria-label': 'Events, newest first' });
  const foot = h('div', { class: 'list-foot', 'aria-live': 'polite' });
  const entityBanner = h('p', { class: 'row', role: 'status', hidden: !state.filters.entity },
    h('span', {}, 'History of ', h('span', { class: 'mono' }, state.filters.entity), ', newest first'),
    h('button', { type: 'button', onclick: () => { state.filters.entity = ''; entityBanner.hidden = true; applyFilters(); } }, 'Show all events'));
  const listCol = h('section', { class: 'list-col', 'aria-label': 'Event list' }, entityBanner, newBanner, list, foot);
  const detail = h('section', { class: 'detail card', 'aria-label': 'Event detail', hidden: true, tabindex: '-1' });
  const split = h('div', { class: 'split' }, listCol, detail);

  clear(root,
    h('div', { class: 'page-head' },
      h('h1', {}, 'Events'),
      h('span', { class: 'spacer' }),
      liveDot,
      h('label', { class: 'switch' }, liveToggle, 'Live updates'),
      liveStatus),
    h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter events', onsubmit: (e) => e.preventDefault() },
      h('div', { class: 'field' }, h('span', { class: 'hint' }, 'Type'), typeDetails),
      field('Source', sourceSelect),
      field('Time', rangeSelect),
      customRange,
      h('div', { class: 'grow' }, field('Search', searchInput, {})),
      h('button', { type: 'button', onclick: () => resetFilters() }, 'Clear filters'),
      h('button', { type: 'button', id: 'export-events', title: 'Every event matching these filters, one JSON object per line', onclick: (e) => exportEvents(e.currentTarget) }, 'Export NDJSON')),
    split);

  /** Downloads the events of the current filter as NDJSON (newest first). */
  async function exportEvents(button) {
    button.disabled = true;
    try {
      const query = apiQuery(null).replace(/([?&])limit=\d+&?/, '$1').replace(/[?&]$/, '');
      const response = await apiFetch(`/api/webhooks/export${query}`, { accept: 'application/x-ndjson' });
      if (!response.ok) {
        let message = `the server answered ${response.status}`;
        try {
          message = (await response.json()).error || message;
        } catch {
          // Not JSON: keep the status.
        }
        throw new Error(message);
      }
      const blob = await response.blob();
      const name = (response.headers.get('content-disposition') || '').match(/filename="([^"]+)"/)?.[1] || 'events.ndjson';
      saveBlob(blob, name);
      notify('success', 'Export downloaded');
    } catch (error) {
      reportError(error, 'Exporting failed');
    } finally {
      button.disabled = false;
    }
  }

  // ------------------------------------------------------------ filter controls
  function renderTypeOptions() {
    const needle = typeSearch.value.trim().toUpperCase();
    const known = [...new Set([...EVENT_TYPES, ...state.storedTypes, ...state.filters.event])].sort();
    clear(typeOptions, known.filter((t) => !needle || t.includes(needle)).map((t) => {
      const box = h('input', { type: 'checkbox', value: t, checked: state.filters.event.includes(t) });
      box.addEventListener('change', () => {
        const chosen = new Set(state.filters.event);
        if (box.checked) chosen.add(t);
        else chosen.delete(t);
        setTypes([...chosen]);
      });
      return h('label', {}, box, t);
    }));
    typeCount.textContent = state.filters.event.length ? ` (${state.filters.event.length})` : ': all';
  }

  function setTypes(types) {
    state.filters.event = types;
    renderTypeOptions();
    applyFilters();
  }

  function renderSources() {
    const current = state.filters.source;
    clear(sourceSelect,
      h('option', { value: '' }, 'All sources'),
      h('option', { value: 'clockify' }, 'Clockify'),
      state.sources.map((s) => h('option', { value: s.id }, s.name)),
      h('option', { value: STUDIO_SOURCE }, STUDIO_SOURCE_LABEL));
    if (current && ![...sourceSelect.options].some((o) => o.value === current)) {
      sourceSelect.append(h('option', { value: current }, current));
    }
    sourceSelect.value = current;
  }

  function syncControls() {
    const f = state.filters;
    renderTypeOptions();
    renderSources();
    rangeSelect.value = f.range;
    customRange.hidden = f.range !== 'custom';
    fromInput.value = toLocalInput(f.from);
    toInput.value = toLocalInput(f.to);
    searchInput.value = f.q;
    liveToggle.checked = f.live;
  }

  function applyFilters() {
    saveParams();
    reload();
  }

  function resetFilters() {
    Object.assign(state.filters, { event: [], source: '', range: '', from: '', to: '', q: '', entity: '' });
    entityBanner.hidden = true;
    syncControls();
    applyFilters();
  }

  typeSearch.addEventListener('input', renderTypeOptions);
  sourceSelect.addEventListener('change', () => { state.filters.source = sourceSelect.value; applyFilters(); });
  rangeSelect.addEventListener('change', () => {
    state.filters.range = rangeSelect.value;
    customRange.hidden = state.filters.range !== 'custom';
    applyFilters();
  });
  const onCustom = () => {
    state.filters.from = fromInput.value ? new Date(fromInput.value).toISOString() : '';
    state.filters.to = toInput.value ? new Date(toInput.value).toISOString() : '';
    applyFilters();
  };
  fromInput.addEventListener('change', onCustom);
  toInput.addEventListener('change', onCustom);
  searchInput.addEventListener('input', debounce(() => {
    state.filters.q = searchInput.value.trim();
    applyFilters();
  }, 300));
  liveToggle.addEventListener('change', () => {
    state.filters.live = liveToggle.checked;
    saveParams();
    if (state.filters.live) connect();
    else disconnect();
  });

  // ------------------------------------------------------------ list
  function row(item, isNew = false) {
    const button = h('button', {
      type: 'button',
      class: `event-row${isNew ? ' new' : ''}`,
      dataset: { id: item.id },
      'aria-current': item.id === state.filters.id ? 'true' : 'false',
      onclick: () => select(item.id),
    },
    h('span', { class: 'type ellipsis' }, item.eventType,
      item.source && item.source !== 'clockify' ? h('span', { class: 'badge info' }, item.source) : null,
      item.duplicates ? h('span', { class: 'badge warn', title: 'Deliveries of the same event recognised as duplicates' }, `×${item.duplicates + 1}`) : null),
    h('span', { class: item.summary ? 'summary ellipsis' : 'summary raw ellipsis' }, item.summary || item.preview),
    h('span', { class: 'outcome-cell' }, outcomeBadge(item.flows)),
    h('span', { class: 'when' }, timeEl(item.receivedAt)),
    h('time', { class: 'abs', datetime: item.receivedAt }, fmt.dateTime(item.receivedAt)));
    return h('li', {}, button);
  }

  function skeletonRows(n) {
    return Array.from({ length: n }, () => h('li', { 'aria-hidden': 'true' }, h('div', { class: 'sk sk-row' })));
  }

  function updateFoot() {
    if (state.failed) {
      clear(foot);
    } else if (state.loading) {
      clear(foot, h('span', {}, 'Loading…'));
    } else if (!state.items.length) {
      const filtered = state.filters.event.length || state.filters.source || state.filters.range || state.filters.q;
      clear(foot, h('p', {}, filtered ? 'No events match these filters.' : 'No events yet. They appear here the moment Clockify (or a custom source) sends one.'));
    } else if (state.done) {
      clear(foot, h('span', {}, `${fmt.number(state.items.length)} events — that is all.`));
    } else {
      clear(foot, h('button', { type: 'button', onclick: () => loadMore() }, 'Load more'));
    }
  }

  async function loadMore() {
    if (state.loading || state.done || state.failed) return;
    state.loading = true;
    const generation = state.generation;
    const first = state.items.length === 0;
    // The first skeleton fills the screen, so the rows that replace it push nothing visible.
    const skeletons = skeletonRows(first ? Math.ceil(window.innerHeight / 44) + 1 : 2);
    list.append(...skeletons);
    updateFoot();
    try {
      const page = await api(`/api/webhooks${apiQuery(state.cursor)}`, { signal: controller.signal });
      if (generation !== state.generation) return;
      skeletons.forEach((s) => s.remove());
      const fresh = page.items.filter((item) => !state.ids.has(item.id));
      fresh.forEach((item) => state.ids.add(item.id));
      state.items.push(...fresh);
      list.append(...fresh.map((item) => row(item)));
      state.cursor = page.nextCursor;
      state.done = !page.nextCursor;
      if (first) performance.mark('events-rendered');
    } catch (error) {
      if (error.name === 'AbortError' || generation !== state.generation) return;
      skeletons.forEach((s) => s.remove());
      // Not "no events": say what failed and offer to try again from where it stopped.
      state.failed = true;
      list.append(h('li', { class: 'load-error' }, errorState(error, 'Events', () => {
        list.querySelector('.load-error')?.remove();
        state.failed = false;
        loadMore();
      })));
    } finally {
      if (generation === state.generation) {
        state.loading = false;
        updateFoot();
        // A scan-limited page can be short: keep filling while the foot is visible.
        if (!state.done && footVisible) loadMore();
      }
    }
  }

  function reload() {
    state.generation += 1;
    state.items = [];
    state.ids = new Set();
    state.cursor = null;
    state.done = false;
    state.loading = false;
    state.failed = false;
    state.pendingNew = 0;
    newBanner.hidden = true;
    clear(list);
    loadMore();
  }

  let footVisible = false;
  const observer = new IntersectionObserver((entries) => {
    footVisible = entries.some((e) => e.isIntersecting);
    if (footVisible) loadMore();
  }, { rootMargin: '200px' });
  observer.observe(foot);

  // Esc closes the detail, wherever the focus is on the page.
  const onKey = (event) => {
    if (event.key !== 'Escape' || detail.hidden || document.querySelector('dialog[open]')) return;
    if (event.target.closest && event.target.closest('details[open].multi')) return;
    closeDetail();
  };
  document.addEventListener('keydown', onKey);

  // Arrow keys move between rows.
  list.addEventListener('keydown', (event) => {
    if (event.key !== 'ArrowDown' && event.key !== 'ArrowUp') return;
    const rows = [...list.querySelectorAll('.event-row')];
    const index = rows.indexOf(document.activeElement);
    if (index < 0) return;
    const next = rows[index + (event.key === 'ArrowDown' ? 1 : -1)];
    if (next) {
      event.preventDefault();
      next.focus();
    }
  });

  // ------------------------------------------------------------ live stream
  function matchesFilters(item) {
    const f = state.filters;
    if (f.entity) return 'maybe';
    if (f.event.length && !f.event.includes(item.eventType)) return 'no';
    if (f.source && item.source !== f.source && item.sourceId !== f.source) return 'no';
    // Text and upper time bounds are judged by the server: offer a refresh instead.
    if (f.q || f.range === 'custom') return 'maybe';
    return 'yes';
  }

  function onLive(item) {
    lastEventId = item.id;
    if (state.ids.has(item.id)) return;
    const verdict = matchesFilters(item);
    if (verdict === 'no') return;
    if (verdict === 'maybe') {
      state.pendingNew += 1;
      newBanner.textContent = `${fmt.number(state.pendingNew)} new event${state.pendingNew === 1 ? '' : 's'} — refresh the list`;
      newBanner.hidden = false;
      return;
    }
    state.ids.add(item.id);
    state.items.unshift(item);
    list.prepend(row(item, true));
    updateFoot();
  }

  function setLive(status, on) {
    liveStatus.textContent = status;
    liveDot.classList.toggle('on', on);
  }

  async function connect() {
    disconnect();
    if (!state.filters.live || session.expired) return;
    setLive('connecting…', false);
    const attempt = {};
    connecting = attempt;
    const opened = await openEventStream(lastEventId);
    if (connecting !== attempt) {
      // Disconnected or reconnected meanwhile.
      if (opened) opened.close();
      return;
    }
    if (!opened) {
      setLive('offline', false);
      clearTimeout(reconnectTimer);
      reconnectTimer = setTimeout(connect, 3000);
      return;
    }
    stream = opened;
    stream.addEventListener('open', () => setLive('connected', true));
    stream.addEventListener('webhook', (message) => {
      try {
        onLive(JSON.parse(message.data));
      } catch {
        // A malformed message is skipped; the next one carries on.
      }
    });
    stream.addEventListener('error', () => {
      if (!stream || stream.readyState !== EventSource.CLOSED) {
        setLive('reconnecting…', false);
        return;
      }
      // Closed for good (a spent ticket, an expired token): reopen with a new ticket.
      setLive('offline', false);
      clearTimeout(reconnectTimer);
      reconnectTimer = setTimeout(connect, 3000);
    });
  }

  function disconnect() {
    connecting = null;
    clearTimeout(reconnectTimer);
    if (stream) stream.close();
    stream = null;
    setLive('off', false);
  }

  const offToken = session.onToken(() => {
    if (stream) connect();
  });

  // ------------------------------------------------------------ detail
  let detailController = null;

  function markSelected() {
    for (const button of list.querySelectorAll('.event-row')) {
      button.setAttribute('aria-current', button.dataset.id === state.filters.id ? 'true' : 'false');
    }
  }

  function closeDetail() {
    const previous = state.filters.id;
    state.filters.id = '';
    saveParams();
    detail.hidden = true;
    split.classList.remove('has-detail');
    markSelected();
    const back = list.querySelector(`.event-row[data-id="${CSS.escape(previous)}"]`);
    if (back) back.focus();
  }

  async function select(id) {
    state.filters.id = id;
    saveParams();
    markSelected();
    split.classList.add('has-detail');
    detail.hidden = false;
    if (detailController) detailController.abort();
    detailController = new AbortController();
    clear(detail, h('div', { class: 'sk sk-title' }), h('div', { 'aria-hidden': 'true' }, Array.from({ length: 10 }, () => h('div', { class: 'sk sk-line' }))));
    try {
      const event = await api(`/api/webhooks/${encodeURIComponent(id)}`, { signal: detailController.signal });
      // Flows never run on the server's own notifications: no replay, no flow links.
      const hasFlows = event.sourceId !== STUDIO_SOURCE && await probeFlows();
      clear(detail, renderDetail(event, hasFlows && session.isAdmin));
      if (hasFlows) loadTriggeredRuns(event);
      if (hasFlows && session.isAdmin) loadFlowLinks(event);
      detail.focus({ preventScroll: true });
      bringToTop(detail);
    } catch (error) {
      if (error.name === 'AbortError') return;
      clear(detail, h('div', { class: 'detail-head' }, h('h2', {}, 'Event'), h('button', { type: 'button', onclick: closeDetail }, 'Close')),
        errorState(error.status === 404 ? new Error('This event no longer exists (erased or past retention).') : error, 'The event', error.status === 404 ? null : () => select(id)));
    }
  }

  /** Runs this event's arrival started (the latest retry of each). */
  async function loadTriggeredRuns(event) {
    const box = detail.querySelector('#triggered-runs');
    if (!box) return;
    try {
      const { runs = [] } = await api(`/api/webhooks/${encodeURIComponent(event.id)}/runs`, { signal: detailController.signal });
      clear(box, h('h3', {}, 'Flow runs it started'), runs.length
        ? h('ul', {}, runs.map((r) => h('li', {}, h('a', { href: `#/flows/${encodeURIComponent(r.flowId)}?run=${encodeURIComponent(r.id)}` }, r.flowName), ' ', badgeFor(r.status), r.retry ? h('span', { class: 'small muted' }, ' retry') : null, ' ', timeEl(r.createdAt))))
        : h('p', { class: 'small muted' }, 'No flow ran when it arrived.'));
    } catch (error) {
      if (error.name !== 'AbortError') clear(box);
    }
  }

  /** "Test a flow with this event" (flows of this type) and "New flow from this event". */
  async function loadFlowLinks(event) {
    const box = detail.querySelector('#flow-links');
    if (!box) return;
    try {
      const { flows = [] } = await api('/api/flows', { signal: detailController.signal });
      const source = event.sourceId || 'clockify';
      const fitting = flows.filter((f) => (f.trigger?.source || 'clockify') === source && (f.trigger?.events || []).includes(event.eventType));
      const others = flows.filter((f) => !fitting.includes(f));
      const picker = h('select', { 'aria-label': 'Flow to test with this event' },
        fitting.length ? h('optgroup', { label: `Triggered by ${event.eventType}` }, fitting.map((f) => h('option', { value: f.id }, f.name))) : null,
        others.length ? h('optgroup', { label: 'Other flows' }, others.map((f) => h('option', { value: f.id }, f.name))) : null);
      const eventParam = `event=${encodeURIComponent(event.id)}`;
      clear(box,
        flows.length ? h('div', { class: 'row' }, picker, h('button', { type: 'button', onclick: () => ctx.navigate(`#/flows/${encodeURIComponent(picker.value)}?${eventParam}`) }, 'Test a flow with this event')) : null,
        h('a', { class: 'button', href: `#/flows/new?${eventParam}` }, 'New flow from this event'));
    } catch (error) {
      if (error.name !== 'AbortError') clear(box);
    }
  }

  function renderDetail(event, canReplay) {
    const runsBox = h('div');
    const actions = [];
    if (canReplay) {
      actions.push(h('button', { type: 'button', onclick: async (e) => {
        // currentTarget is gone once the handler awaits.
        const button = e.currentTarget;
        button.disabled = true;
        try {
          const result = await api(`/api/webhooks/${encodeURIComponent(event.id)}/replay`, { method: 'POST' });
          const runs = result.runs || [];
          notify('success', runs.length ? `Replayed through ${runs.length} flow${runs.length === 1 ? '' : 's'}` : 'Replayed: no enabled flow matches this event');
          clear(runsBox, h('h3', {}, 'Flow runs from the replay'), runs.length ? h('ul', {}, runs.map((r) => h('li', {}, h('a', { href: `#/flows/${encodeURIComponent(r.flowId)}?run=${encodeURIComponent(r.id)}` }, r.flowName || r.flowId), ' ', badgeFor(r.status)))) : h('p', { class: 'muted' }, 'No flow matched.'));
        } catch (error) {
          reportError(error, 'Replay failed');
        } finally {
          button.disabled = false;
        }
      } }, 'Replay through flows'));
    }
    if (session.isAdmin) {
      actions.push(h('button', { type: 'button', class: 'danger', onclick: async () => {
        const ok = await confirmDialog({ title: 'Erase this event?', message: `The ${event.eventType} event received ${fmt.dateTime(event.receivedAt)} is deleted for good. Flows will not see it again.`, confirmLabel: 'Erase', danger: true });
        if (!ok) return;
        try {
          await api(`/api/webhooks/${encodeURIComponent(event.id)}`, { method: 'DELETE' });
          notify('success', 'Event erased');
          const li = list.querySelector(`.event-row[data-id="${CSS.escape(event.id)}"]`);
          if (li) li.parentElement.remove();
          state.items = state.items.filter((i) => i.id !== event.id);
          closeDetail();
        } catch (error) {
          reportError(error, 'Erasing failed');
        }
      } }, 'Erase'));
    }
    const headers = event.headers || [];
    return [
      h('div', { class: 'detail-head' },
        h('h2', { id: 'detail-title' }, event.eventType),
        h('button', { type: 'button', onclick: closeDetail, 'aria-label': 'Close the event detail' }, 'Close')),
      h('dl', { class: 'kv' },
        h('dt', {}, 'Id'), h('dd', { class: 'mono' }, event.id, ' ', copyButton(event.id, 'Copy id', 'Event id copied')),
        h('dt', {}, 'Source'), h('dd', {}, event.source, event.sourceId ? h('span', { class: 'muted small' }, ` (${event.sourceId})`) : null),
        h('dt', {}, 'Received'), h('dd', {}, fmt.dateTime(event.receivedAt), ' ', h('span', { class: 'muted' }, `(${fmt.relative(event.receivedAt)})`)),
        h('dt', {}, 'Size'), h('dd', {}, fmt.bytes(event.size)),
        h('dt', {}, 'Duplicates'), h('dd', {}, event.duplicates ? `${fmt.number(event.duplicates)} later deliver${event.duplicates === 1 ? 'y was' : 'ies were'} recognised as this event` : 'none')),
      event.summary ? h('p', { class: 'event-summary' }, event.summary) : null,
      actions.length ? h('div', { class: 'row', role: 'group', 'aria-label': 'Event actions' }, actions) : null,
      canReplay ? h('div', { id: 'flow-links', class: 'row' }) : null,
      entityHistoryLink(event),
      runsBox,
      h('div', { id: 'triggered-runs' }),
      h('h3', {}, 'Body'),
      jsonView(event.body, { label: 'Event body' }),
      h('h3', {}, 'Headers'),
      h('p', { class: 'small muted' }, 'Signatures and tokens were redacted before the event was stored.'),
      h('div', { class: 'table-wrap' }, h('table', {},
        h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Name'), h('th', { scope: 'col' }, 'Value'))),
        h('tbody', {}, headers.map(([name, value]) => h('tr', {}, h('td', { class: 'mono' }, name), h('td', { class: `mono${value === '[redacted]' ? ' muted' : ''}` }, value)))))),
    ];
  }

  // ------------------------------------------------------------ start
  syncControls();
  api('/api/webhooks/types', { signal: controller.signal })
    .then((data) => {
      state.storedTypes = data.types || [];
      renderTypeOptions();
    })
    .catch(() => {});
  api('/api/sources', { signal: controller.signal })
    .then((data) => {
      state.sources = data.sources || [];
      renderSources();
    })
    .catch(() => {});
  loadMore();
  if (state.filters.live) connect();
  if (state.filters.id) select(state.filters.id);

  return () => {
    controller.abort();
    if (detailController) detailController.abort();
    observer.disconnect();
    document.removeEventListener('keydown', onKey);
    offToken();
    disconnect();
  };
}
