// Settings: the add-on's workspace settings (retention, rate limit, bootstrap options),
// subscriptions per event type with sync, and the entity cache (bootstrap) with counts.
// Each section stands alone: one not built yet on the server says so calmly.

import {
  h, clear, api, fmt, timeEl, session, notify, reportError, errorState, field, skeletonLines,
  badgeFor, EVENT_TYPES, STUDIO_SOURCE, STUDIO_EVENT_TYPES,
} from '../lib.js';

/** Labels of the manifest's settings (manifest.json); unknown ids show as they are. */
const LABELS = {
  webhook_retention_days: ['Webhook log retention (days)', '0 keeps events forever.'],
  flow_run_retention_days: ['Flow run retention (days)', '0 keeps runs forever.'],
  max_rps: ['Max API requests per second', '1 to 50 requests per second to Clockify.'],
  bootstrap_on_install: ['Fetch workspace entities on install', 'Clients, projects, tasks, tags, users and groups.'],
  bootstrap_time_entries: ['Include time entries in the initial fetch', 'Can be many API calls on large workspaces.'],
  bootstrap_time_entry_days: ['Time entry history to fetch (days)', ''],
  bootstrap_heavy_endpoints: ['Include reports in the initial fetch', 'Slow; counts against the rate limit.'],
  bootstrap_max_pages: ['Most pages fetched per operation', 'An operation with more is marked truncated.'],
  entity_refresh_hours: ['Refresh the entity cache every (hours)', '0 never refreshes; entities not seen again are dropped.'],
  subscribed_events: ['Subscribed events', 'Event types Clockify Studio records and can run flows on.'],
};
/** Settings shown together, in this order; ids not listed go to "Other". */
const GROUPS = [
  ['Retention', ['webhook_retention_days', 'flow_run_retention_days']],
  ['Clockify API', ['max_rps']],
  ['Initial fetch of workspace entities', ['bootstrap_on_install', 'bootstrap_time_entries', 'bootstrap_time_entry_days', 'bootstrap_heavy_endpoints', 'bootstrap_max_pages', 'entity_refresh_hours']],
  ['Events', ['subscribed_events']],
];
const POLL_MS = 2000;

function section(title, ...children) {
  return h('section', { class: 'card stack', 'aria-label': title }, h('h2', {}, title), ...children);
}

/** Where the server's own notifications go: a destination on the studio source. */
function notificationsSection() {
  return section('Notifications',
    h('p', {}, 'When a flow is disabled after repeated failures, or this workspace\'s subscription sync keeps failing, Clockify Studio records an event of its own source, “Studio notifications” (',
      STUDIO_EVENT_TYPES.map((t, i) => [i ? ', ' : '', h('code', {}, t)]), '). It shows in Events; flows never run on it.'),
    h('p', {}, 'To be told, forward these events with a destination that chooses the Studio notifications source: each one is then POSTed to your endpoint, signed and retried like any forwarded event. Destinations for every source do not receive them.'),
    session.isAdmin
      ? h('p', {}, h('a', { class: 'button', href: `#/destinations/new?source=${STUDIO_SOURCE}` }, 'Create a destination for notifications'))
      : h('p', { class: 'small muted' }, 'Workspace owners and admins can create one on the Destinations page.'));
}

export function mount(root) {
  const controller = new AbortController();
  const { signal } = controller;
  let pollTimer = null;
  const settingsBox = section('Workspace settings', skeletonLines(6));
  const subsBox = section('Subscriptions', skeletonLines(6));
  const bootBox = section('Entity cache (bootstrap)', skeletonLines(4));
  clear(root, h('div', { class: 'page-head' }, h('h1', {}, 'Settings')), h('div', { class: 'stack' }, settingsBox, subsBox, bootBox, notificationsSection()));

  // ---------------------------------------------------------------- settings
  async function loadSettings() {
    try {
      const data = await api('/api/settings', { signal });
      clear(settingsBox, h('h2', {}, 'Workspace settings'), settingsForm(data.settings || {}, data.defaults || {}));
    } catch (error) {
      if (error.name !== 'AbortError') clear(settingsBox, h('h2', {}, 'Workspace settings'), errorState(error, 'Settings', loadSettings));
    }
  }

  function settingsForm(values, defaults) {
    const ids = [...new Set([...Object.keys(defaults), ...Object.keys(values)])];
    const readers = [];
    const initial = {};
    const controls = ids.map((id) => {
      const value = values[id] ?? defaults[id];
      initial[id] = JSON.stringify(value);
      const [label, hint] = LABELS[id] || [id, ''];
      const def = defaults[id] !== undefined ? `Default: ${Array.isArray(defaults[id]) ? `${defaults[id].length} selected` : defaults[id]}` : '';
      const fullHint = [hint, def].filter(Boolean).join(' ');
      if (typeof value === 'boolean') {
        const box = h('input', { type: 'checkbox', checked: value, disabled: !session.isAdmin });
        readers.push(() => [id, box.checked]);
        return h('div', { class: 'field check-field', dataset: { problemKey: id } }, h('label', { class: 'check-label' }, box, h('span', {}, label)), fullHint ? h('div', { class: 'hint' }, fullHint) : null);
      }
      if (Array.isArray(value)) {
        const chosen = new Set(value);
        const options = [...new Set([...(id === 'subscribed_events' ? EVENT_TYPES : []), ...value])].sort();
        const boxes = options.map((o) => {
          const box = h('input', { type: 'checkbox', value: o, checked: chosen.has(o), disabled: !session.isAdmin });
          return h('label', {}, box, o);
        });
        readers.push(() => [id, boxes.map((l) => l.firstChild).filter((b) => b.checked).map((b) => b.value)]);
        return h('div', { class: 'field', dataset: { problemKey: id } },
          h('details', { class: 'multi' }, h('summary', {}, `${label}: ${value.length} selected`), h('div', { class: 'panel' }, h('div', { class: 'options', role: 'group', 'aria-label': label }, boxes))),
          fullHint ? h('div', { class: 'hint' }, fullHint) : null);
      }
      const numeric = typeof value === 'number';
      const input = h('input', { type: numeric ? 'number' : 'text', value: value ?? '', min: numeric ? '0' : null, step: numeric ? '1' : null, readOnly: !session.isAdmin });
      readers.push(() => [id, numeric ? Number(input.value) : input.value]);
      return field(label, input, { hint: fullHint, problemKey: id });
    });
    if (!ids.length) return h('p', { class: 'muted' }, 'Clockify has not reported any settings for this workspace yet.');
    const byId = new Map(ids.map((id, i) => [id, controls[i]]));
    const grouped = GROUPS.map(([title, members]) => [title, members.filter((id) => byId.has(id))]).filter(([, members]) => members.length);
    const listed = new Set(grouped.flatMap(([, members]) => members));
    const other = ids.filter((id) => !listed.has(id));
    if (other.length) grouped.push(['Other', other]);
    const groups = grouped.map(([title, members]) => h('fieldset', { class: 'settings-group' }, h('legend', {}, title), h('div', { class: 'form-grid' }, members.map((id) => byId.get(id)))));
    const problems = h('div', { role: 'alert' });
    const form = h('form', { class: 'stack', noValidate: true, onsubmit: async (event) => {
      event.preventDefault();
      // Only what changed: Clockify gets fewer writes, and the subscriptions are resynced
      // only when the event list really changed.
      const patch = Object.fromEntries(readers.map((read) => read()).filter(([id, value]) => JSON.stringify(value) !== initial[id]));
      form.querySelectorAll('.problem.placed').forEach((p) => p.remove());
      clear(problems);
      if (!Object.keys(patch).length) {
        notify('info', 'Nothing changed');
        return;
      }
      try {
        const saved = await api('/api/settings', { method: 'PATCH', body: patch });
        for (const [id, value] of Object.entries(saved.settings || patch)) initial[id] = JSON.stringify(value);
        notify('success', 'Settings saved');
      } catch (error) {
        const general = [];
        for (const problem of error.problems) {
          // Problems start with the setting's id ("max_rps must be …"): show them beside it.
          const id = String(problem).split(/[\s:]/)[0];
          const target = form.querySelector(`[data-problem-key="${CSS.escape(id)}"]`);
          if (target) target.append(h('div', { class: 'problem placed', role: 'alert' }, problem));
          else general.push(problem);
        }
        if (general.length) clear(problems, h('div', { class: 'notice bad' }, h('ul', {}, general.map((p) => h('li', {}, p)))));
        if (!error.problems.length) reportError(error, 'Saving the settings failed');
      }
    } },
    groups,
    problems,
    session.isAdmin ? h('div', { class: 'row' }, h('button', { type: 'submit', class: 'primary' }, 'Save settings'), h('span', { class: 'small muted' }, 'Saved through Clockify, so the add-on settings page in Clockify shows the same values.')) : h('p', { class: 'muted small' }, 'Only workspace owners and admins can change settings.'));
    return form;
  }

  // ---------------------------------------------------------------- subscriptions
  /** "50 event types: 45 registered, 5 not subscribed". */
  function subscriptionSummary(events) {
    const counts = new Map();
    for (const e of events) counts.set(e.state, (counts.get(e.state) || 0) + 1);
    const parts = [...counts.entries()].sort((a, b) => b[1] - a[1]).map(([state, n]) => `${fmt.number(n)} ${state === 'not-subscribed' ? 'not subscribed' : state}`);
    return `${fmt.number(events.length)} event types: ${parts.join(', ') || 'none'}`;
  }

  function subscriptionsView(data) {
    const events = data.events || [];
    const usage = data.usage;
    const sync = session.isAdmin ? h('button', { type: 'button', onclick: async (e) => {
      // currentTarget is gone once the handler awaits.
      const button = e.currentTarget;
      button.disabled = true;
      try {
        const synced = await api('/api/subscriptions/sync', { method: 'POST' });
        notify('success', 'Subscriptions synchronised with Clockify');
        clear(subsBox, h('h2', {}, 'Subscriptions'), subscriptionsView(synced));
      } catch (error) {
        reportError(error, 'Synchronising failed');
        button.disabled = false;
      }
    } }, 'Sync with Clockify') : null;
    return h('div', { class: 'stack' },
      h('div', { class: 'row' },
        usage ? h('span', { class: 'small muted' }, `Webhooks in this workspace: ${fmt.number(usage.workspaceWebhooks)} of ${fmt.number(usage.cap)}`) : null,
        data.syncedAt ? h('span', { class: 'small muted' }, '· last synchronised ', timeEl(data.syncedAt)) : null,
        h('span', { class: 'spacer' }), sync),
      data.error ? h('p', { class: 'problem' }, `The last synchronisation failed: ${data.error}`) : null,
      // Fifty rows are for looking something up: folded, with the counts as the summary.
      h('details', { class: 'subscriptions' },
        h('summary', {}, subscriptionSummary(events)),
        h('div', { class: 'table-wrap' }, h('table', {},
          h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Event'), h('th', { scope: 'col' }, 'State'), h('th', { scope: 'col' }, 'Why'))),
          h('tbody', {}, events.map((e) => h('tr', {}, h('td', { class: 'mono' }, e.event), h('td', {}, badgeFor(e.state)), h('td', { class: 'small' }, e.reason || ''))))))));
  }

  async function loadSubscriptions() {
    try {
      const data = await api('/api/subscriptions', { signal });
      clear(subsBox, h('h2', {}, 'Subscriptions'), subscriptionsView(data));
    } catch (error) {
      if (error.name !== 'AbortError') clear(subsBox, h('h2', {}, 'Subscriptions'), errorState(error, 'Subscriptions', loadSubscriptions));
    }
  }

  // ---------------------------------------------------------------- bootstrap
  function bootstrapView(status, counts) {
    const percent = status.total ? Math.min(100, Math.round((100 * status.done) / status.total)) : 0;
    const bar = h('div', { class: 'progress', role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': '100', 'aria-valuenow': String(percent), 'aria-label': 'Bootstrap progress' }, h('div'));
    bar.firstChild.style.width = `${percent}%`;
    const run = session.isAdmin ? h('button', { type: 'button', disabled: status.status === 'running', onclick: async () => {
      try {
        await api('/api/bootstrap', { method: 'POST' });
        notify('success', 'Fetching workspace entities started');
        loadBootstrap();
      } catch (error) {
        reportError(error, 'Starting the fetch failed');
      }
    } }, status.status === 'running' ? 'Running…' : 'Fetch entities now') : null;
    return h('div', { class: 'stack' },
      h('div', { class: 'row' }, badgeFor(status.status), h('span', { class: 'small muted' }, `${fmt.number(status.done)} of ${fmt.number(status.total)} operations, ${fmt.number(status.items)} items`), h('span', { class: 'spacer' }), run),
      bar,
      (status.operations || []).length ? h('details', {}, h('summary', {}, 'Operations'), h('div', { class: 'table-wrap' }, h('table', {},
        h('thead', {}, h('tr', {}, ['Operation', 'State', 'Pages', 'Items', 'Error'].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, status.operations.map((o) => h('tr', {}, h('td', { class: 'mono' }, o.operationId), h('td', {}, badgeFor(o.truncated ? 'truncated' : o.status)), h('td', {}, fmt.number(o.pages)), h('td', {}, fmt.number(o.items)), h('td', { class: 'small' }, o.error || ''))))))) : null,
      counts ? h('dl', { class: 'kv' }, Object.entries(counts).flatMap(([type, n]) => [h('dt', {}, type), h('dd', {}, fmt.number(n))])) : null,
      status.truncated ? h('p', { class: 'problem' }, `${fmt.number(status.truncated)} operation${status.truncated === 1 ? '' : 's'} stopped at the page limit with more to fetch (truncated); raise “Most pages fetched per operation” to fetch everything.`) : null,
      status.finishedAt ? h('p', { class: 'small muted' }, 'Finished ', timeEl(status.finishedAt)) : null);
  }

  async function loadBootstrap() {
    clearTimeout(pollTimer);
    try {
      const status = await api('/api/bootstrap', { signal });
      // The entity cache is the admins' (docs/security.md); others see the counts per step.
      const entities = session.isAdmin ? await api('/api/entities?limit=1', { signal }).catch(() => null) : null;
      clear(bootBox, h('h2', {}, 'Entity cache (bootstrap)'), bootstrapView(status, entities && entities.counts));
      if (status.status === 'running') pollTimer = setTimeout(loadBootstrap, POLL_MS);
    } catch (error) {
      if (error.name !== 'AbortError') clear(bootBox, h('h2', {}, 'Entity cache (bootstrap)'), errorState(error, 'The entity cache', loadBootstrap));
    }
  }

  loadSettings();
  loadSubscriptions();
  loadBootstrap();
  return () => {
    controller.abort();
    clearTimeout(pollTimer);
  };
}
