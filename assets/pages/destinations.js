// Destinations: the workspace's own endpoints that receive its events, signed like Standard
// Webhooks and retried. A list with each one's health; a page per destination with its
// settings (filter, conditions, template, masked headers), a test send that shows the
// receiver's answer, the secret (shown once, rotatable) and the attempt log with retries.
// Admins only: a URL or a header may carry a credential.

import {
  h, clear, api, qs, fmt, timeEl, session, notify, reportError, confirmDialog, copyButton,
  errorState, field, skeletonLines, badgeFor, EVENT_TYPES, disabledReasonText, placeProblems,
  STUDIO_SOURCE, STUDIO_SOURCE_LABEL, STUDIO_EVENT_TYPES,
} from '../lib.js';
import { conditionEditor } from '../conditions.js';

/** What the API shows instead of a stored header value; sent back, it keeps the value. */
const MASK = '********';
const PAGE_SIZE = 25;
const STATUSES = [['', 'Any status'], ['failed', 'Failed'], ['pending', 'Pending'], ['delivered', 'Delivered']];
/** A secret from a create or a rotation, kept in memory until it has been shown once. */
let freshSecret = null;

export function mount(root, ctx) {
  const controller = new AbortController();
  if (!session.isAdmin) {
    clear(root,
      h('div', { class: 'page-head' }, h('h1', {}, 'Destinations')),
      h('div', { class: 'notice', role: 'status' },
        h('h2', {}, 'Admins only'),
        h('p', {}, 'Only workspace owners and admins can see and manage destinations: their URLs and headers may carry credentials.')));
    return () => controller.abort();
  }
  if (ctx.sub) detail(root, ctx, ctx.sub === 'new' ? null : decodeURIComponent(ctx.sub), controller.signal);
  else list(root, controller.signal);
  return () => controller.abort();
}

/** A status code as a badge: 2xx good, anything else (or no answer) bad. */
function statusBadge(status) {
  if (status === null || status === undefined) return h('span', { class: 'badge bad' }, 'no answer');
  return h('span', { class: `badge ${status >= 200 && status < 300 ? 'ok' : 'bad'}` }, String(status));
}

function responseText(text) {
  return h('pre', { class: 'small answer', tabindex: '0', 'aria-label': 'The receiver\'s answer' }, h('code', {}, text || '(empty)'));
}

// ------------------------------------------------------------------ list

function list(root, signal) {
  const box = h('div', { class: 'stack' }, skeletonLines(3, 'sk-row'));
  clear(root,
    h('div', { class: 'page-head' }, h('h1', {}, 'Destinations'), h('span', { class: 'spacer' }),
      h('a', { class: 'button primary', href: '#/destinations/new' }, 'New destination')),
    h('p', { class: 'muted' }, 'Your own endpoints that receive this workspace\'s events as they arrive, signed like Standard Webhooks and retried for about a day until they answer 2xx.'),
    box);
  const load = () => api('/api/destinations', { signal }).then((data) => {
    const all = data.destinations || [];
    clear(box, all.length ? all.map(card) : h('p', { class: 'muted' }, 'No destinations yet. Create one to forward events to your service, a chat relay or a data warehouse.'));
  }).catch((error) => {
    if (error.name !== 'AbortError') clear(box, errorState(error, 'Destinations', load));
  });
  load();
}

function card(d) {
  return h('section', { class: 'card stack', 'aria-label': d.name, dataset: { id: d.id } },
    h('div', { class: 'row' },
      h('h2', { class: 'ellipsis' }, h('a', { href: `#/destinations/${encodeURIComponent(d.id)}` }, d.name)),
      h('span', { class: 'spacer' }),
      h('span', { class: `badge ${d.enabled ? 'ok' : 'warn'}` }, d.enabled ? 'enabled' : 'disabled')),
    h('div', { class: 'small ellipsis mono' }, d.url),
    healthList(d));
}

/** Enabled state, queue, last attempt and failing streak, as a definition list. */
function healthList(d) {
  const health = d.health || {};
  const last = health.lastAttempt;
  return h('dl', { class: 'kv health' },
    !d.enabled && d.disabledReason ? [h('dt', {}, 'Disabled because'), h('dd', { class: 'problem' }, disabledReasonText(d.disabledReason))] : null,
    h('dt', {}, 'Pending'), h('dd', { class: 'pending' }, fmt.number(health.pending ?? 0),
      health.oldestPendingAt ? [' · oldest queued ', timeEl(health.oldestPendingAt)] : null),
    h('dt', {}, 'Last attempt'), h('dd', { class: 'last-attempt' }, last ? [statusBadge(last.status), ' ', timeEl(last.at), ` · ${fmt.duration(last.latencyMs)}`] : h('span', { class: 'muted' }, 'none yet')),
    d.failingSince ? [h('dt', {}, 'Failing since'), h('dd', { class: 'status-bad' }, timeEl(d.failingSince, { relative: false }))] : null);
}

// ------------------------------------------------------------------ one destination

/** A new destination; `?source=studio` (the Settings page's link) starts on that source. */
function emptyDestination(params) {
  const studio = params?.get('source') === STUDIO_SOURCE;
  return { name: studio ? 'Studio notifications' : '', url: 'https://', enabled: true, filter: { source: studio ? STUDIO_SOURCE : null, events: [], conditions: { mode: 'all', rules: [] } }, template: null, headers: {} };
}

function detail(root, ctx, id, signal) {
  const body = h('div', { class: 'stack' }, skeletonLines(8));
  const title = h('h1', {}, id ? 'Destination' : 'New destination');
  clear(root, h('div', { class: 'page-head' }, h('a', { href: '#/destinations' }, '← Destinations'), title), body);
  const start = () => Promise.all([
    id ? api(`/api/destinations/${encodeURIComponent(id)}`, { signal }) : Promise.resolve(null),
    api('/api/sources', { signal }).catch(() => ({ sources: [] })),
  ]).then(([loaded, sources]) => {
    const d = loaded || emptyDestination(ctx.params);
    if (loaded) title.textContent = loaded.name;
    const secretBox = h('div', { 'aria-live': 'polite' });
    if (freshSecret && freshSecret.id === id) {
      showSecret(secretBox, freshSecret);
      freshSecret = null;
    }
    clear(body,
      secretBox,
      loaded ? overview(loaded, secretBox, signal, ctx) : null,
      editor(d, sources.sources || [], ctx),
      loaded ? attemptLog(loaded, ctx, signal) : null);
  }).catch((error) => {
    if (error.name !== 'AbortError') clear(body, errorState(error, 'The destination', start));
  });
  start();
}

function showSecret(box, { secret, verb, previousSecretValidUntil }) {
  clear(box, h('div', { class: 'secret-box stack', id: 'secret-once' },
    h('h2', {}, `Signing secret ${verb}`),
    h('p', {}, h('strong', {}, 'Shown only now: '), 'copy it into your receiver to verify the webhook-signature header. Clockify Studio keeps only an encrypted copy and cannot show it again.'),
    h('div', { class: 'code-block' },
      h('pre', { tabindex: '0', 'aria-label': 'Secret' }, h('code', {}, secret)),
      h('div', { class: 'row code-actions' }, copyButton(secret, 'Copy secret', 'Secret copied'))),
    previousSecretValidUntil ? h('p', { class: 'small' }, 'Attempts are also signed with the previous secret until ', timeEl(previousSecretValidUntil, { relative: false }), '.') : null,
    h('button', { type: 'button', onclick: () => clear(box) }, 'I have copied it — hide')));
  box.querySelector('#secret-once').scrollIntoView({ block: 'start' });
}

/** Health, test send, secret rotation and delete. */
function overview(d, secretBox, signal, ctx) {
  const testOut = h('div', { 'aria-live': 'polite', id: 'test-result' });
  const test = h('button', { type: 'button', class: 'primary', onclick: async () => {
    test.disabled = true;
    clear(testOut, skeletonLines(2));
    try {
      const r = await api(`/api/destinations/${encodeURIComponent(d.id)}/test`, { method: 'POST', signal });
      clear(testOut, h('div', { class: `notice ${r.ok ? 'ok' : 'bad'} stack` },
        h('h3', {}, r.ok ? 'The receiver accepted the test event' : 'The receiver did not accept the test event'),
        h('p', {}, 'Status ', statusBadge(r.status), ` · ${fmt.duration(r.latencyMs)}`),
        h('p', { class: 'small muted' }, 'The first KB of its answer:'),
        responseText(r.response)));
    } catch (error) {
      if (error.name !== 'AbortError') clear(testOut, errorState(error, 'The test send'));
    } finally {
      test.disabled = false;
    }
  } }, 'Send test event');
  const rotate = h('button', { type: 'button', onclick: async () => {
    const ok = await confirmDialog({ title: `Rotate the secret of “${d.name}”?`, message: 'A new secret is made. For 24 hours every attempt is signed with both, so your receiver can switch when it likes.', confirmLabel: 'Rotate' });
    if (!ok) return;
    try {
      const r = await api(`/api/destinations/${encodeURIComponent(d.id)}/rotate-secret`, { method: 'POST' });
      notify('success', 'Secret rotated');
      showSecret(secretBox, { ...r, verb: 'rotated' });
    } catch (error) {
      reportError(error, 'Rotating failed');
    }
  } }, 'Rotate secret');
  const remove = h('button', { type: 'button', class: 'danger', onclick: async () => {
    const ok = await confirmDialog({ title: `Delete “${d.name}”?`, message: 'It stops receiving events. Its attempt log goes with it, and pending deliveries are not sent.', confirmLabel: 'Delete', danger: true });
    if (!ok) return;
    try {
      await api(`/api/destinations/${encodeURIComponent(d.id)}`, { method: 'DELETE' });
      notify('success', 'Destination deleted');
      ctx.navigate('#/destinations');
    } catch (error) {
      reportError(error, 'Deleting failed');
    }
  } }, 'Delete');
  return h('section', { class: 'card stack', 'aria-label': 'Health' },
    h('div', { class: 'row' }, h('h2', {}, 'Health'), h('span', { class: 'spacer' }), h('span', { class: `badge ${d.enabled ? 'ok' : 'warn'}` }, d.enabled ? 'enabled' : 'disabled')),
    healthList(d),
    d.rotatedAt ? h('p', { class: 'small muted' }, 'Secret rotated ', timeEl(d.rotatedAt), '.') : null,
    h('div', { class: 'row' }, test, rotate, h('span', { class: 'spacer' }), remove),
    h('p', { class: 'small muted' }, 'The test event is signed like every delivery but not stored and not retried.'),
    testOut);
}

// ------------------------------------------------------------------ editor

function editor(d, sources, ctx) {
  const isNew = !d.id;
  const nameInput = h('input', { type: 'text', name: 'name', value: d.name, maxLength: 100, placeholder: 'e.g. Warehouse loader', autocomplete: 'off' });
  const urlInput = h('input', { type: 'url', name: 'url', value: d.url, maxLength: 2048, placeholder: 'https://example.com/clockify', autocomplete: 'off', class: 'mono' });
  const enabled = h('input', { type: 'checkbox', role: 'switch', checked: Boolean(d.enabled) });
  const sourceSelect = h('select', { name: 'source' },
    h('option', { value: '' }, 'Every source'),
    h('option', { value: 'clockify' }, 'Clockify'),
    sources.map((s) => h('option', { value: s.id }, s.name)),
    h('option', { value: STUDIO_SOURCE }, STUDIO_SOURCE_LABEL));
  sourceSelect.value = d.filter?.source || '';
  // A source that was deleted still shows what is stored.
  if (d.filter?.source && sourceSelect.value !== d.filter.source) {
    sourceSelect.append(h('option', { value: d.filter.source }, `a deleted source (${d.filter.source})`));
    sourceSelect.value = d.filter.source;
  }

  const chosen = new Set(d.filter?.events || []);
  const count = h('span');
  const eventBoxes = h('div', { class: 'options', role: 'group', 'aria-label': 'Event types to forward' });
  const customEvent = h('input', { type: 'text', placeholder: 'Custom event type', 'aria-label': 'Custom event type' });
  function renderEvents() {
    const known = sourceSelect.value === STUDIO_SOURCE ? STUDIO_EVENT_TYPES : EVENT_TYPES;
    const all = [...new Set([...known, ...chosen])].sort();
    clear(eventBoxes, all.map((t) => {
      const box = h('input', { type: 'checkbox', value: t, checked: chosen.has(t) });
      box.addEventListener('change', () => {
        if (box.checked) chosen.add(t);
        else chosen.delete(t);
        renderCount();
      });
      return h('label', {}, box, t);
    }));
    renderCount();
  }
  const renderCount = () => {
    count.textContent = chosen.size ? `: ${[...chosen].join(', ')}` : ': all';
  };
  const eventsField = h('div', { class: 'field', dataset: { problemKey: 'filter.events' } },
    h('span', { class: 'hint' }, 'None chosen: every event type is forwarded'),
    h('details', { class: 'multi inline' }, h('summary', {}, 'Event types', count), h('div', { class: 'panel' }, eventBoxes)),
    h('div', { class: 'row' }, customEvent, h('button', { type: 'button', class: 'small', onclick: () => {
      const t = customEvent.value.trim();
      if (!t) return;
      chosen.add(t);
      customEvent.value = '';
      renderEvents();
      form.dispatchEvent(new Event('change'));
    } }, 'Add')));
  renderEvents();
  sourceSelect.addEventListener('change', renderEvents);

  const conditions = conditionEditor({ conditions: d.filter?.conditions, problemKey: 'filter.conditions' });
  const template = h('textarea', { name: 'template', rows: 5, spellcheck: false, class: 'mono', placeholder: '{"text": "New entry: {{ event.description }}"}' });
  template.value = d.template ?? '';

  // Stored header values are never shown: an empty value field keeps the stored one.
  const headersBox = h('div', { class: 'stack' });
  const headerRows = [];
  function addHeader(name = '', stored = false) {
    const n = headerRows.length + 1;
    const nameField = h('input', { type: 'text', value: name, placeholder: 'Header name, e.g. Authorization', 'aria-label': `Header ${n} name`, autocomplete: 'off' });
    const valueField = h('input', { type: 'password', value: '', placeholder: stored ? 'unchanged (stored, hidden)' : 'value', 'aria-label': `Header ${n} value`, autocomplete: 'new-password' });
    const row = { nameField, valueField, stored, original: name };
    const line = h('div', { class: 'rule header-row', dataset: { problemKey: `headers.${name}` } }, nameField, valueField,
      h('button', { type: 'button', class: 'small', 'aria-label': `Remove header ${n}`, onclick: () => {
        headerRows.splice(headerRows.indexOf(row), 1);
        line.remove();
        form.dispatchEvent(new Event('change'));
      } }, 'Remove'));
    nameField.addEventListener('input', () => {
      line.dataset.problemKey = `headers.${nameField.value.trim()}`;
    });
    headerRows.push(row);
    headersBox.append(line);
  }
  Object.keys(d.headers || {}).forEach((name) => addHeader(name, true));

  function collect() {
    const headers = {};
    for (const r of headerRows) {
      const name = r.nameField.value.trim();
      if (!name) continue;
      // A stored value under the same name stays unless a new one is typed.
      headers[name] = r.valueField.value === '' && r.stored && name.toLowerCase() === r.original.toLowerCase() ? MASK : r.valueField.value;
    }
    const text = template.value.trim();
    return {
      name: nameInput.value.trim(),
      url: urlInput.value.trim(),
      enabled: enabled.checked,
      filter: { source: sourceSelect.value || null, events: [...chosen], conditions: conditions.collect() },
      template: text ? template.value : null,
      headers,
    };
  }

  const save = h('button', { type: 'submit', class: 'primary', id: 'save-destination', disabled: !isNew }, isNew ? 'Create destination' : 'Save');
  const saveNote = h('span', { class: 'small muted', 'aria-live': 'polite' });
  const general = h('div', { role: 'alert' });
  let baseline = null;
  function changed() {
    if (isNew || baseline === null) return;
    const dirty = JSON.stringify(collect()) !== baseline;
    save.disabled = !dirty;
    saveNote.textContent = dirty ? 'Unsaved changes' : 'No changes to save';
  }

  function showProblems(problems) {
    placeProblems(form, problems, general);
  }

  const form = h('form', { class: 'card stack', 'aria-label': 'Destination settings', noValidate: true, onsubmit: async (event) => {
    event.preventDefault();
    if (save.disabled) return;
    const draft = collect();
    save.disabled = true;
    try {
      const saved = isNew
        ? await api('/api/destinations', { method: 'POST', body: draft })
        : await api(`/api/destinations/${encodeURIComponent(d.id)}`, { method: 'PUT', body: draft });
      showProblems([]);
      notify('success', `Destination “${saved.name}” ${isNew ? 'created' : 'saved'}`);
      if (isNew) {
        freshSecret = { id: saved.id, secret: saved.secret, verb: 'created' };
        ctx.navigate(`#/destinations/${encodeURIComponent(saved.id)}`);
        return;
      }
      // Typed header values are now stored: show them as such.
      for (const r of headerRows) {
        r.stored = true;
        r.original = r.nameField.value.trim();
        r.valueField.value = '';
        r.valueField.placeholder = 'unchanged (stored, hidden)';
      }
      baseline = JSON.stringify(collect());
      changed();
    } catch (error) {
      save.disabled = false;
      if (error.problems && error.problems.length) showProblems(error.problems);
      else reportError(error, 'Saving failed');
    }
  } },
    h('h2', {}, 'Settings'),
    general,
    h('div', { class: 'form-grid' },
      field('Name', nameInput, { required: true, problemKey: 'name' }),
      field('URL', urlInput, { required: true, problemKey: 'url', hint: 'https only; plain http and internal hosts need --allow-destination-host' })),
    h('label', { class: 'switch' }, enabled, 'Enabled'),
    d.disabledReason && !d.enabled ? h('p', { class: 'small' }, 'Enabling it again clears the reason it was disabled; then use “Retry all failed since” below for what it missed.') : null,
    h('h3', {}, 'Which events'),
    h('div', { class: 'form-grid' }, field('Source', sourceSelect, { problemKey: 'filter.source', hint: 'Every source means every event received from Clockify and custom sources; Studio notifications go only to destinations that choose them.' })),
    eventsField,
    h('div', { class: 'row' }, field('Forward when', conditions.modeSelect, { problemKey: 'filter.conditions.mode' })),
    h('div', { dataset: { problemKey: 'filter.conditions' } }, conditions.rulesBox),
    h('button', { type: 'button', onclick: () => {
      conditions.addRule();
      changed();
    } }, 'Add condition'),
    h('p', { class: 'small muted' }, 'Conditions are JSONPath checks on the event body, as in flows. With none, every event of the chosen types is forwarded.'),
    h('h3', {}, 'Body'),
    field('Template', template, { problemKey: 'template', hint: 'A flow template (event, eventType, workspaceId); empty sends the event body unchanged.' }),
    h('h3', {}, 'Headers'),
    h('div', { dataset: { problemKey: 'headers' } }, headersBox),
    h('button', { type: 'button', onclick: () => {
      addHeader();
      changed();
    } }, 'Add header'),
    h('p', { class: 'small muted' }, 'Sent with every attempt. Values are stored encrypted and never shown again; leave a value empty to keep it.'),
    h('div', { class: 'row save-bar' }, save, saveNote));
  form.addEventListener('input', changed);
  form.addEventListener('change', changed);
  form.addEventListener('click', () => setTimeout(changed));
  baseline = JSON.stringify(collect());
  return form;
}

// ------------------------------------------------------------------ attempt log

function attemptLog(d, ctx, signal) {
  let status = ctx.params.get('status') || '';
  let cursor = null;
  let generation = 0;
  const statusSelect = h('select', { name: 'status' }, STATUSES.map(([v, l]) => h('option', { value: v }, l)));
  statusSelect.value = status;
  const items = h('div', { class: 'stack deliveries' });
  const foot = h('div', { class: 'list-foot', 'aria-live': 'polite' });
  const since = h('input', { type: 'datetime-local', name: 'since', value: localInput(Date.now() - 24 * 3600e3) });

  function deliveryItem(delivery) {
    // A pending delivery waiting for its next attempt can be sent now.
    const retry = h('button', { type: 'button', class: 'small', onclick: async () => {
      retry.disabled = true;
      try {
        const again = await api(`/api/deliveries/${encodeURIComponent(delivery.id)}/retry`, { method: 'POST' });
        notify('success', 'Sent again');
        item.replaceWith(deliveryItem(again));
        setTimeout(reload, 1500);
      } catch (error) {
        retry.disabled = false;
        reportError(error, 'Retrying failed');
      }
    } }, delivery.status === 'pending' ? 'Send now' : 'Retry');
    const attempts = delivery.attempts || [];
    const item = h('div', { class: 'card delivery stack', dataset: { id: delivery.id, status: delivery.status } },
      h('div', { class: 'row' },
        badgeFor(delivery.status),
        h('span', { class: 'ellipsis' }, delivery.eventType),
        h('span', { class: 'small muted' }, `${attempts.length} attempt(s) · `, timeEl(delivery.createdAt)),
        h('span', { class: 'spacer' }), retry),
      delivery.error ? h('p', { class: 'problem small' }, delivery.error) : null,
      delivery.nextAttemptAt ? h('p', { class: 'small' }, 'Next attempt ', timeEl(delivery.nextAttemptAt), '.') : null,
      h('details', {},
        h('summary', {}, 'Attempts and answers'),
        h('div', { class: 'stack' },
          h('div', { class: 'row small' },
            h('a', { href: `#/events?id=${encodeURIComponent(delivery.webhookId)}` }, 'The event'),
            h('span', { class: 'muted mono' }, `webhook-id ${delivery.id}`)),
          attempts.length ? h('div', { class: 'table-wrap' }, h('table', { class: 'attempts' },
            h('caption', { class: 'offscreen' }, 'Attempts, oldest first'),
            h('thead', {}, h('tr', {}, ['Time', 'Status', 'Latency', 'Response'].map((t) => h('th', { scope: 'col' }, t)))),
            h('tbody', {}, attempts.map((a) => h('tr', {},
              h('td', { class: 'nowrap' }, timeEl(a.at, { relative: false })),
              h('td', {}, statusBadge(a.status)),
              h('td', { class: 'nowrap' }, fmt.duration(a.latencyMs)),
              h('td', {}, h('code', { class: 'small response' }, a.response || '(empty)'))))))) : h('p', { class: 'small muted' }, 'No attempt yet.'))));
    return item;
  }

  async function load() {
    const mine = generation;
    clear(foot, skeletonLines(2));
    try {
      const page = await api(`/api/destinations/${encodeURIComponent(d.id)}/deliveries${qs({ status, cursor, limit: PAGE_SIZE })}`, { signal });
      if (mine !== generation) return;
      items.append(...(page.items || []).map(deliveryItem));
      cursor = page.nextCursor;
      if (cursor) clear(foot, h('button', { type: 'button', onclick: load }, 'Load more'));
      else clear(foot, items.children.length ? `${fmt.number(items.children.length)} deliveries — that is all.` : status ? `No ${status} deliveries.` : 'No deliveries yet. Matching events appear here as they are forwarded.');
    } catch (error) {
      if (error.name === 'AbortError' || mine !== generation) return;
      clear(foot, errorState(error, 'The attempt log', load));
    }
  }

  function reload() {
    generation += 1;
    cursor = null;
    clear(items);
    load();
  }

  statusSelect.addEventListener('change', () => {
    status = statusSelect.value;
    const params = new URLSearchParams(ctx.params);
    if (status) params.set('status', status);
    else params.delete('status');
    ctx.setParams(params);
    reload();
  });

  const recover = h('form', { class: 'row recover', 'aria-label': 'Retry failed deliveries', onsubmit: async (event) => {
    event.preventDefault();
    const when = new Date(since.value);
    if (Number.isNaN(when.getTime())) {
      since.focus();
      return;
    }
    const ok = await confirmDialog({ title: 'Retry every failed delivery?', message: `Every failed delivery of “${d.name}” created since ${fmt.dateTime(when)} is sent once more.`, confirmLabel: 'Retry all' });
    if (!ok) return;
    try {
      const r = await api(`/api/destinations/${encodeURIComponent(d.id)}/recover`, { method: 'POST', body: { since: when.toISOString() } });
      notify('success', r.requeued ? `${fmt.number(r.requeued)} failed deliveries sent again` : 'No failed deliveries since then');
      setTimeout(reload, 1000);
    } catch (error) {
      reportError(error, 'Retrying failed');
    }
  } }, field('Retry all failed since', since), h('button', { type: 'submit' }, 'Retry all failed'));

  load();
  return h('section', { class: 'card stack', 'aria-label': 'Attempt log', id: 'attempt-log' },
    h('div', { class: 'row' }, h('h2', {}, 'Attempt log'), h('span', { class: 'spacer' }), h('button', { type: 'button', class: 'small', onclick: reload }, 'Refresh')),
    h('p', { class: 'small muted' }, 'Every delivery with each attempt: time, the receiver\'s status, latency and the first KB of its answer. Newest first.'),
    h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter deliveries', onsubmit: (e) => e.preventDefault() }, field('Status', statusSelect)),
    recover,
    items,
    foot);
}

/** A time as a datetime-local input wants it, in the browser's zone. */
function localInput(ms) {
  const date = new Date(ms);
  const pad = (n) => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}
