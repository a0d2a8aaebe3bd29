// Flows: "when event X arrives and conditions hold, call API operation Y". A list with
// enable switches and run counts, and a builder for non-programmers: trigger, condition
// rows with fields suggested from a sample event, actions picked by search with template
// insertion, validation problems beside their fields, dry run, and run history.

import {
  h, clear, api, qs, fmt, timeEl, session, notify, reportError, confirmDialog, errorState,
  field, skeletonLines, badgeFor, EVENT_TYPES, ASSET_BASE, handoff, uid, disabledReasonText, bringToTop,
} from '../lib.js';
import { jsonView, leafPaths } from '../json-view.js';
import { paramField, bodyTemplate, parseJsonText, methodBadge, schemaSkeleton, takesBody } from '../op-form.js';
import { conditionEditor, toJsonPath } from '../conditions.js';
import { placeProblems } from '../lib.js';

export function mount(root, ctx) {
  const controller = new AbortController();
  if (ctx.sub) {
    builder(root, ctx, ctx.sub === 'new' ? null : decodeURIComponent(ctx.sub), controller.signal);
  } else {
    flowList(root, ctx, controller.signal);
  }
  return () => controller.abort();
}

// ------------------------------------------------------------------ list

function flowList(root, ctx, signal) {
  const box = h('div', { class: 'stack' }, skeletonLines(3, 'sk-row'));
  clear(root,
    h('div', { class: 'page-head' }, h('h1', {}, 'Flows'), h('span', { class: 'spacer' }),
      session.isAdmin ? h('a', { class: 'button primary', href: '#/flows/new' }, 'New flow') : null),
    h('p', { class: 'muted' }, 'A flow watches for an event, checks conditions, and then calls the Clockify API for you.'),
    box);
  let sourceNames = new Map();
  const load = () => Promise.all([api('/api/flows', { signal }), api('/api/sources', { signal }).catch(() => ({ sources: [] }))]).then(([data, sources]) => {
    sourceNames = new Map((sources.sources || []).map((s) => [s.id, s.name]));
    const flows = data.flows || [];
    if (!flows.length) {
      clear(box, h('p', { class: 'muted' }, 'No flows yet.', session.isAdmin ? ' Create one, or turn an API explorer call into a flow action.' : ''));
      return;
    }
    clear(box, h('p', { class: 'small' }, h('a', { href: '#/runs' }, 'All runs of every flow')), flows.map((flow) => flowCard(flow)));
  }).catch((error) => {
    if (error.name !== 'AbortError') clear(box, errorState(error, 'Flows', load));
  });
  load();

  /** A trigger's source by name: Clockify, or the custom source's name (not its id). */
  function sourceLabel(id) {
    if (!id || id === 'clockify') return 'Clockify';
    return sourceNames.has(id) ? `the source “${sourceNames.get(id)}”` : 'a deleted custom source';
  }

  function flowCard(flow) {
    const toggle = h('input', { type: 'checkbox', role: 'switch', checked: flow.enabled, disabled: !session.isAdmin, 'aria-label': `Enable ${flow.name}` });
    toggle.addEventListener('change', async () => {
      toggle.disabled = true;
      try {
        await api(`/api/flows/${encodeURIComponent(flow.id)}/${toggle.checked ? 'enable' : 'disable'}`, { method: 'POST' });
        notify('success', `${flow.name} ${toggle.checked ? 'enabled' : 'disabled'}`);
      } catch (error) {
        toggle.checked = !toggle.checked;
        reportError(error, 'Switching the flow failed');
      } finally {
        toggle.disabled = false;
      }
    });
    const last = flow.lastRun;
    return h('section', { class: 'card', 'aria-label': flow.name },
      h('div', { class: 'row' },
        h('h2', { class: 'ellipsis' }, h('a', { href: `#/flows/${encodeURIComponent(flow.id)}` }, flow.name)),
        h('span', { class: 'spacer' }),
        session.isAdmin ? h('label', { class: 'switch' }, toggle, 'Enabled') : h('span', { class: `badge ${flow.enabled ? 'ok' : ''}` }, flow.enabled ? 'enabled' : 'disabled')),
      h('p', { class: 'small muted' }, `When ${(flow.trigger?.events || []).join(', ') || 'any event'} arrives from ${sourceLabel(flow.trigger?.source)}`),
      flow.disabledReason ? h('p', { class: 'problem' }, `Turned off automatically: ${disabledReasonText(flow.disabledReason)}`) : null,
      h('div', { class: 'row small' },
        'Last run: ', last ? [badgeFor(last.status), timeEl(last.createdAt)] : h('span', { class: 'muted' }, 'never'),
        h('span', { class: 'spacer' }),
        h('span', { class: 'status-ok' }, `${fmt.number(flow.counts?.succeeded ?? 0)} succeeded`),
        h('span', { class: 'status-bad' }, `${fmt.number(flow.counts?.failed ?? 0)} failed`),
        flow.counts?.skipped ? h('span', { class: 'muted' }, `${fmt.number(flow.counts.skipped)} skipped`) : null));
  }
}

// ------------------------------------------------------------------ builder

function emptyFlow() {
  return {
    name: '',
    enabled: false,
    trigger: { source: 'clockify', events: [] },
    conditions: { mode: 'all', rules: [] },
    actions: [],
    retry: { maxAttempts: 3, backoffMs: 500 },
  };
}

/** A template reference to a dotted path under `root` (`event`, `actions.x.body`). */
function templateRef(root, dotted) {
  const tail = dotted.split('.').map((part) => (/^\d+$/.test(part) ? `[${part}]` : /^[A-Za-z_][A-Za-z0-9_]*$/.test(part) ? `.${part}` : `[${JSON.stringify(part)}]`)).join('');
  return `${root}${tail}`;
}

function builder(root, ctx, flowId, signal) {
  const readOnly = !session.isAdmin;
  let flow = emptyFlow();
  let sampleFields = [];
  let operations = null; // null: not loaded; false: catalog not available
  const fieldsList = h('datalist', { id: uid('fields') });
  const generalProblems = h('div', { role: 'alert' });
  const body = h('div', { class: 'stack' }, skeletonLines(10));
  clear(root,
    h('div', { class: 'page-head' }, h('a', { href: '#/flows' }, '← Flows'), h('h1', {}, flowId ? 'Flow' : 'New flow')),
    body);

  // A new flow still needs the flows API to exist: probe it so a missing one says so.
  // An event this page was opened with (from the event's detail): tested, or a new flow's model.
  const eventId = ctx.params.get('event') || '';
  let fromEvent = null;
  const start = () => {
    const load = flowId ? api(`/api/flows/${encodeURIComponent(flowId)}`, { signal }) : api('/api/flows', { signal }).then(() => null);
    const event = eventId ? api(`/api/webhooks/${encodeURIComponent(eventId)}`, { signal }).catch(() => null) : null;
    Promise.all([load, api('/api/sources', { signal }).catch(() => ({ sources: [] })), api('/api/operations', { signal, cache: 'no-cache' }).catch((e) => (e.notAvailable ? { unavailable: true } : { operations: [] })), event])
      .then(([loaded, sources, ops, stored]) => {
        operations = ops.unavailable ? false : ops.operations || [];
        if (loaded) flow = { ...emptyFlow(), ...loaded };
        fromEvent = stored;
        if (!flowId && fromEvent) {
          flow.trigger = { source: fromEvent.sourceId || 'clockify', events: [fromEvent.eventType] };
        }
        if (!flowId && handoff.action) {
          flow.actions.push(handoff.action);
          handoff.action = null;
        }
        render(sources.sources || []);
      })
      .catch((error) => {
        if (error.name !== 'AbortError') clear(body, errorState(error, 'Flows', start));
      });
  };
  start();

  function render(sources) {
    // Save stays off until the definition differs from the stored one (see `changed`).
    let baseline = null;
    const saveButton = h('button', { type: 'submit', class: 'primary', id: 'save-flow', disabled: Boolean(flowId) }, 'Save');
    const saveNote = h('span', { class: 'small muted', 'aria-live': 'polite' });
    const draftText = () => JSON.stringify(collect().flow);
    function changed() {
      if (!flowId || baseline === null) return;
      const dirty = draftText() !== baseline;
      saveButton.disabled = !dirty;
      saveNote.textContent = dirty ? 'Unsaved changes' : 'No changes to save';
    }
    const nameInput = h('input', { type: 'text', value: flow.name || '', maxLength: 120, placeholder: 'e.g. Tag new time entries', disabled: readOnly });
    const sourceSelect = h('select', { disabled: readOnly },
      h('option', { value: 'clockify' }, 'Clockify'),
      sources.map((s) => h('option', { value: s.id }, s.name)));
    sourceSelect.value = flow.trigger?.source || 'clockify';
    const chosen = new Set(flow.trigger?.events || []);
    const eventSearch = h('input', { type: 'search', placeholder: 'Filter event types', 'aria-label': 'Filter event types', disabled: readOnly });
    const customEvent = h('input', { type: 'text', placeholder: 'Custom event type', 'aria-label': 'Custom event type', disabled: readOnly });
    const eventBoxes = h('div', { class: 'options', role: 'group', 'aria-label': 'Event types that start the flow' });
    const sampleNote = h('p', { class: 'small muted', 'aria-live': 'polite' });
    const eventsWrap = h('div', { class: 'field', dataset: { problemKey: 'trigger.events' } },
      h('span', { class: 'hint' }, 'Starts when one of these events arrives'),
      h('div', { class: 'row' }, eventSearch, customEvent, h('button', { type: 'button', class: 'small', disabled: readOnly, onclick: () => {
        const t = customEvent.value.trim();
        if (t) {
          chosen.add(t);
          customEvent.value = '';
          renderEvents();
          loadSample();
        }
      } }, 'Add')),
      h('details', { class: 'multi inline', open: !chosen.size }, h('summary', {}, 'Event types', h('span', { id: 'chosen-count' })), h('div', { class: 'panel' }, eventBoxes)),
      sampleNote);

    function renderEvents() {
      const needle = eventSearch.value.trim().toUpperCase();
      const all = [...new Set([...EVENT_TYPES, ...chosen])].sort();
      clear(eventBoxes, all.filter((t) => !needle || t.includes(needle)).map((t) => {
        const box = h('input', { type: 'checkbox', value: t, checked: chosen.has(t), disabled: readOnly });
        box.addEventListener('change', () => {
          if (box.checked) chosen.add(t);
          else chosen.delete(t);
          eventsWrap.querySelector('#chosen-count').textContent = chosen.size ? `: ${[...chosen].join(', ')}` : ': none chosen';
          loadSample();
        });
        return h('label', {}, box, t);
      }));
      eventsWrap.querySelector('#chosen-count').textContent = chosen.size ? `: ${[...chosen].join(', ')}` : ': none chosen';
    }
    eventSearch.addEventListener('input', renderEvents);

    // -------- sample event → field suggestions
    async function loadSample() {
      const type = [...chosen][0];
      if (!type) {
        sampleFields = [];
        sampleNote.textContent = 'Choose an event type to get field suggestions.';
        updateFieldList();
        return;
      }
      let sample = null;
      let from = '';
      if (fromEvent && fromEvent.eventType === type && fromEvent.body && typeof fromEvent.body === 'object') {
        sample = fromEvent.body;
        from = 'the event this flow was started from';
      }
      if (sample === null) try {
        const page = await api(`/api/webhooks${qs({ event: type, limit: 1 })}`, { signal });
        if (page.items && page.items[0]) {
          sample = (await api(`/api/webhooks/${encodeURIComponent(page.items[0].id)}`, { signal })).body;
          from = `the newest stored ${type} event`;
        }
      } catch {
        // Fall back to the bundled sample below.
      }
      if (sample === null && EVENT_TYPES.includes(type)) {
        try {
          const response = await fetch(`${ASSET_BASE}/samples/${type}.json`, { signal });
          if (response.ok) {
            sample = await response.json();
            from = `Clockify's sample ${type} event`;
          }
        } catch {
          // No sample: fields are typed by hand.
        }
      }
      sampleFields = sample && typeof sample === 'object' ? leafPaths(sample) : [];
      sampleNote.textContent = sampleFields.length ? `Field suggestions come from ${from}.` : 'No sample of this event type: type field paths by hand (e.g. project.name or $.project.name).';
      updateFieldList();
    }

    function updateFieldList() {
      clear(fieldsList, sampleFields.map((f) => h('option', { value: toJsonPath(f.path) }, typeof f.sample === 'object' ? '' : String(f.sample).slice(0, 40))));
      for (const refresh of insertMenus) refresh();
    }

    // -------- conditions
    const conditions = conditionEditor({ conditions: flow.conditions, readOnly, fieldsList, sampleFields: () => sampleFields });
    const { modeSelect, rulesBox, addRule } = conditions;

    // -------- actions
    const actionsBox = h('div');
    const actions = [];
    const insertMenus = [];

    /** Template references offered for insertion in action `index`. */
    function references(index) {
      const out = sampleFields.map((f) => ({ text: `{{ ${templateRef('event', f.path)} }}`, label: templateRef('event', f.path) }));
      actions.slice(0, index).forEach((a) => {
        const name = a.nameInput.value.trim();
        if (!name) return;
        out.push({ text: `{{ actions.${name}.status }}`, label: `actions.${name}.status` });
        const schema = a.op?.responses?.['200']?.schema;
        const paths = schema ? leafPaths(schemaSkeleton(schema)) : [];
        if (paths.length) paths.slice(0, 60).forEach((p) => out.push({ text: `{{ ${templateRef(`actions.${name}.body`, p.path)} }}`, label: templateRef(`actions.${name}.body`, p.path) }));
        else out.push({ text: `{{ actions.${name}.body }}`, label: `actions.${name}.body` });
      });
      return out;
    }

    /** Wraps a text control with an "Insert field" menu that inserts at the cursor. */
    function withInsert(control, index) {
      if (readOnly) return control;
      const menu = h('div', { class: 'insert-menu', hidden: true, role: 'menu' });
      const refresh = () => {
        const refs = references(index());
        clear(menu, refs.length ? refs.map((r) => h('button', { type: 'button', role: 'menuitem', onclick: () => {
          const start = control.selectionStart ?? control.value.length;
          const end = control.selectionEnd ?? control.value.length;
          control.setRangeText(r.text, start, end, 'end');
          control.dispatchEvent(new Event('input'));
          menu.hidden = true;
          control.focus();
        } }, r.label)) : h('p', { class: 'small muted' }, 'Choose an event type first.'));
      };
      insertMenus.push(refresh);
      const button = h('button', { type: 'button', class: 'small', 'aria-haspopup': 'menu', 'aria-label': 'Insert a field', onclick: () => {
        refresh();
        menu.hidden = !menu.hidden;
        if (!menu.hidden) menu.querySelector('button')?.focus();
      } }, '{ }');
      menu.addEventListener('keydown', (e) => {
        if (e.key === 'Escape') {
          menu.hidden = true;
          button.focus();
        }
      });
      return h('div', {}, h('div', { class: 'template-input' }, control, button), menu);
    }

    function addAction(action = { name: '', operationId: '', pathParams: {}, query: {}, body: undefined }) {
      const entry = { op: null, fields: [], bodyArea: null, action, kind: action.kind === 'http' ? 'http' : 'clockify', http: null };
      const index = () => actions.indexOf(entry);
      entry.nameInput = h('input', { type: 'text', value: action.name || '', placeholder: 'short name, e.g. getUser', pattern: '[A-Za-z_][A-Za-z0-9_]*', disabled: readOnly });
      const opSearch = h('input', { type: 'search', placeholder: operations === false ? 'operationId' : 'Search operations, e.g. tag', autocomplete: 'off', disabled: readOnly, value: action.operationId || '' });
      const results = h('ul', { class: 'list insert-menu', hidden: true, role: 'listbox' });
      const opBox = h('div');
      const opField = h('div', { class: 'field', dataset: { problemKey: `actions[${actions.length}].operationId` } }, field('Operation', opSearch, { required: true }), results);
      const card = h('section', { class: 'action-card', 'aria-label': 'Action', dataset: { problemKey: `actions[${actions.length}]` } });

      function showResults() {
        if (!operations) return;
        const needle = opSearch.value.trim().toLowerCase();
        const found = operations.filter((o) => !needle || [o.operationId, o.summary, o.path, o.tag].some((t) => String(t || '').toLowerCase().includes(needle))).slice(0, 12);
        clear(results, found.map((o) => h('li', {}, h('button', { type: 'button', role: 'option', class: 'op-link', onclick: () => {
          results.hidden = true;
          chooseOperation(o.operationId);
        } }, methodBadge(o.method), h('span', { class: 'ellipsis' }, o.summary || o.operationId)))));
        results.hidden = !found.length;
      }
      opSearch.addEventListener('input', showResults);
      opSearch.addEventListener('focus', showResults);
      opSearch.addEventListener('keydown', (e) => {
        if (e.key === 'ArrowDown' && !results.hidden) {
          e.preventDefault();
          results.querySelector('button')?.focus();
        } else if (e.key === 'Escape') {
          results.hidden = true;
        }
      });
      results.addEventListener('keydown', (e) => {
        const items = [...results.querySelectorAll('button')];
        const i = items.indexOf(document.activeElement);
        if (e.key === 'ArrowDown' && items[i + 1]) { e.preventDefault(); items[i + 1].focus(); }
        if (e.key === 'ArrowUp') { e.preventDefault(); (items[i - 1] || opSearch).focus(); }
        if (e.key === 'Escape') { results.hidden = true; opSearch.focus(); }
      });

      async function chooseOperation(operationId, keepValues = false) {
        if (!operationId) return;
        if (!keepValues) entry.action = { ...entry.action, pathParams: {}, query: {}, body: undefined };
        opSearch.value = operationId;
        if (!entry.nameInput.value.trim()) entry.nameInput.value = operationId;
        if (operations === false) {
          entry.op = { operationId, parameters: [] };
          renderOp(keepValues);
          return;
        }
        clear(opBox, skeletonLines(3));
        try {
          entry.op = await api(`/api/operations/${encodeURIComponent(operationId)}`, { signal, cache: 'no-cache' });
          renderOp(keepValues);
          changed();
        } catch (error) {
          if (error.name !== 'AbortError') clear(opBox, errorState(error, 'The operation'));
        }
      }

      function renderOp(keepValues) {
        const op = entry.op;
        const params = (op.parameters || []).filter((p) => p.in === 'path' || p.in === 'query');
        entry.fields = params.map((p) => {
          const source = p.in === 'path' ? action.pathParams : action.query;
          const f = paramField(p, { templates: true, value: keepValues ? source?.[p.name] : undefined });
          f.control.disabled = readOnly || f.control.readOnly;
          f.element.dataset.problemKey = `actions[${index()}].${p.in === 'path' ? 'pathParams' : 'query'}.${p.name}`;
          if (!readOnly && !f.control.readOnly) {
            // withInsert moves the control into its wrapper; put the wrapper where it was.
            const next = f.control.nextSibling;
            f.element.insertBefore(withInsert(f.control, index), next);
          }
          return f;
        });
        entry.bodyArea = null;
        entry.bodyShown = undefined;
        let bodyField = null;
        // GET and DELETE send no body: no editor for one.
        if (op.method ? takesBody(op) : keepValues && action.body !== undefined) {
          const bodyId = uid('body');
          entry.bodyArea = h('textarea', { id: bodyId, rows: 10, spellcheck: false, disabled: readOnly });
          entry.bodyArea.value = keepValues && action.body !== undefined ? JSON.stringify(action.body, null, 2) : bodyTemplate(op);
          entry.bodyShown = entry.bodyArea.value;
          bodyField = h('div', { class: 'field', dataset: { problemKey: `actions[${index()}].body` } },
            h('label', { for: bodyId }, 'Body (JSON; templates go inside strings)'),
            withInsert(entry.bodyArea, index));
        }
        clear(opBox,
          op.method ? h('div', { class: 'row small' }, methodBadge(op.method), h('code', { class: 'ellipsis' }, op.path)) : null,
          entry.fields.length ? h('div', { class: 'form-grid' }, entry.fields.map((f) => f.element)) : h('p', { class: 'small muted' }, operations === false ? 'The API catalog is not available yet: parameters cannot be listed.' : 'No parameters.'),
          bodyField);
      }

      // -------- "HTTP request": method, URL, headers (values masked), body template
      const kindSelect = h('select', { disabled: readOnly },
        h('option', { value: 'clockify' }, 'Clockify operation'),
        h('option', { value: 'http' }, 'HTTP request'));
      kindSelect.value = entry.kind;
      const httpBox = h('div', { class: 'stack', hidden: true });
      function renderHttp() {
        const stored = entry.kind === action.kind ? action : {};
        const method = h('select', { disabled: readOnly }, ['POST', 'PUT', 'PATCH', 'GET', 'DELETE'].map((m) => h('option', { value: m }, m)));
        method.value = stored.method || 'POST';
        const url = h('input', { type: 'url', value: stored.url || '', placeholder: 'https://hooks.example.com/clockify', spellcheck: false, disabled: readOnly });
        const headerRows = h('div', { class: 'stack', role: 'group', 'aria-label': 'Headers' });
        const headers = [];
        function addHeader(name = '', value = '') {
          const row = { name: h('input', { type: 'text', value: name, placeholder: 'Header name', 'aria-label': 'Header name', disabled: readOnly }),
            value: h('input', { type: 'password', value, placeholder: 'Value (stored encrypted)', 'aria-label': `Value of header ${name || 'new'}`, autocomplete: 'off', disabled: readOnly }) };
          row.element = h('div', { class: 'row' }, row.name, row.value, readOnly ? null : h('button', { type: 'button', class: 'small', 'aria-label': 'Remove header', onclick: () => {
            headers.splice(headers.indexOf(row), 1);
            row.element.remove();
            changed();
          } }, '×'));
          headers.push(row);
          headerRows.append(row.element);
        }
        // Stored values come masked; left as they are, the server keeps them.
        Object.entries(stored.headers || {}).forEach(([k, v]) => addHeader(k, v));
        const bodyId = uid('body');
        const bodyArea = h('textarea', { id: bodyId, rows: 8, spellcheck: false, disabled: readOnly });
        bodyArea.value = stored.body !== undefined && stored.body !== null ? JSON.stringify(stored.body, null, 2) : '';
        entry.http = { method, url, headers, bodyArea, bodyShown: bodyArea.value };
        clear(httpBox,
          h('div', { class: 'form-grid' },
            field('Method', method, { problemKey: `actions[${index()}].method` }),
            h('div', { class: 'field', dataset: { problemKey: `actions[${index()}].url` } }, field('URL', withInsert(url, index), { required: true }))),
          h('p', { class: 'small muted' }, 'https only; the scheme and host are fixed text, templates may follow in the path. Internal addresses and plain http need the operator\'s --allow-destination-host. Redirects are not followed.'),
          h('div', { class: 'field', dataset: { problemKey: `actions[${index()}].headers` } },
            h('span', { class: 'hint' }, 'Headers (values are secrets: stored encrypted, never shown again)'), headerRows,
            readOnly ? null : h('button', { type: 'button', class: 'small', onclick: () => { addHeader(); changed(); } }, 'Add header')),
          h('div', { class: 'field', dataset: { problemKey: `actions[${index()}].body` } },
            h('label', { for: bodyId }, 'Body (JSON sent as JSON; a JSON string is sent as text; templates go inside strings)'),
            withInsert(bodyArea, index)));
      }
      function showKind() {
        const http = entry.kind === 'http';
        opField.hidden = http;
        opBox.hidden = http;
        httpBox.hidden = !http;
        if (http && !entry.http) renderHttp();
      }
      kindSelect.addEventListener('change', () => {
        entry.kind = kindSelect.value;
        showKind();
        changed();
      });

      const remove = readOnly ? null : h('button', { type: 'button', class: 'small danger', onclick: () => {
        actions.splice(index(), 1);
        card.remove();
        relabel();
      } }, 'Remove');
      const up = readOnly ? null : h('button', { type: 'button', class: 'small', 'aria-label': 'Move action up', onclick: () => {
        const i = index();
        if (i <= 0) return;
        actions.splice(i - 1, 0, actions.splice(i, 1)[0]);
        card.previousElementSibling.before(card);
        relabel();
      } }, '↑');
      card.append(
        h('div', { class: 'row' }, h('h3', {}, 'Then call'), h('span', { class: 'spacer' }), up, remove),
        h('div', { class: 'form-grid' },
          field('Action name', entry.nameInput, { hint: 'Later actions refer to its result by this name', problemKey: `actions[${actions.length}].name` }),
          field('Kind', kindSelect, { problemKey: `actions[${actions.length}].kind` }),
          opField),
        opBox, httpBox);
      entry.card = card;
      actions.push(entry);
      actionsBox.append(card);
      relabel();
      showKind();
      if (action.operationId && entry.kind === 'clockify') loading.push(chooseOperation(action.operationId, true));
      changed();
    }
    /** Each action card is a landmark of its own: numbered, so screen readers tell them apart. */
    function relabel() {
      actions.forEach((a, i) => a.card.setAttribute('aria-label', `Action ${i + 1}`));
    }
    const loading = [];
    (flow.actions || []).forEach((a) => addAction(a));

    // -------- retry
    const attempts = h('input', { type: 'number', min: '1', max: '10', step: '1', value: String(flow.retry?.maxAttempts ?? 3), disabled: readOnly });
    const backoff = h('input', { type: 'number', min: '0', step: '100', value: String(flow.retry?.backoffMs ?? 500), disabled: readOnly });

    // -------- collect and save
    /** An "HTTP request" action as the server wants it; untouched parts stay as stored. */
    function httpAction(a, i, problems) {
      const x = a.http;
      const headers = {};
      for (const row of x.headers) {
        const name = row.name.value.trim();
        if (name) headers[name] = row.value.value;
      }
      const action = { name: a.nameInput.value.trim(), kind: 'http', method: x.method.value, url: x.url.value.trim(), headers };
      let body = a.action.kind === 'http' ? a.action.body : undefined;
      if (x.bodyArea.value !== x.bodyShown) {
        if (!x.bodyArea.value.trim()) body = undefined;
        else {
          const parsed = parseJsonText(x.bodyArea.value);
          if (!parsed.ok) problems.push(`actions[${i}].body: not valid JSON (${parsed.error})`);
          else body = parsed.value;
        }
      }
      if (body !== undefined && body !== null) action.body = body;
      return action;
    }

    function collect() {
      const problems = [];
      const out = {
        name: nameInput.value.trim(),
        trigger: { source: sourceSelect.value, events: [...chosen] },
        conditions: conditions.collect(),
        actions: actions.map((a, i) => {
          if (a.kind === 'http') return httpAction(a, i, problems);
          const sameOp = (a.op?.operationId || a.action.operationId) === a.action.operationId;
          // Parameters this form has no field for (not in the spec) stay as they were.
          // Stored order first (a save must not reorder what it did not change), then new ones.
          const gather = (stored, where) => {
            const fields = new Map(a.fields.filter((f) => (f.param.in === 'path') === (where === 'path')).map((f) => [f.param.name, f]));
            const out = {};
            for (const [k, v] of Object.entries(sameOp ? stored || {} : {})) {
              const value = fields.has(k) ? fields.get(k).read() : v;
              if (value !== undefined) out[k] = value;
            }
            for (const [k, f] of fields) {
              if (k in out) continue;
              const value = f.read();
              if (value !== undefined) out[k] = value;
            }
            return out;
          };
          const pathParams = gather(a.action.pathParams, 'path');
          const query = gather(a.action.query, 'query');
          let body = sameOp ? a.action.body : undefined;
          if (a.bodyArea && a.bodyArea.value !== a.bodyShown) {
            const parsed = parseJsonText(a.bodyArea.value);
            if (!parsed.ok) problems.push(`actions[${i}].body: not valid JSON (${parsed.error})`);
            else body = parsed.value;
          }
          const action = { name: a.nameInput.value.trim(), operationId: a.op?.operationId || a.action.operationId || '', pathParams, query };
          if (body !== undefined) action.body = body;
          return action;
        }),
        retry: { maxAttempts: Number(attempts.value) || 1, backoffMs: Number(backoff.value) || 0 },
      };
      // A new flow starts disabled; an update leaves the enable switch to its own button.
      if (!flowId) out.enabled = false;
      return { flow: out, problems };
    }

    function showProblems(problems) {
      placeProblems(form, problems, generalProblems);
    }

    async function save() {
      const { flow: draft, problems } = collect();
      if (problems.length) {
        showProblems(problems);
        return null;
      }
      try {
        const saved = flowId
          ? await api(`/api/flows/${encodeURIComponent(flowId)}`, { method: 'PUT', body: draft })
          : await api('/api/flows', { method: 'POST', body: draft });
        showProblems([]);
        notify('success', `Flow “${saved.name || draft.name}” saved`);
        flow = { ...flow, ...saved };
        baseline = JSON.stringify(draft);
        changed();
        if (!flowId && saved.id) {
          ctx.navigate(`#/flows/${encodeURIComponent(saved.id)}`);
        }
        return saved;
      } catch (error) {
        if (error.problems.length) showProblems(error.problems);
        else reportError(error, 'Saving failed');
        return null;
      }
    }

    const enabledToggle = h('input', { type: 'checkbox', role: 'switch', checked: Boolean(flow.enabled), disabled: readOnly || !flowId });
    enabledToggle.addEventListener('change', async () => {
      try {
        await api(`/api/flows/${encodeURIComponent(flowId)}/${enabledToggle.checked ? 'enable' : 'disable'}`, { method: 'POST' });
        flow.enabled = enabledToggle.checked;
        notify('success', enabledToggle.checked ? 'Flow enabled' : 'Flow disabled');
      } catch (error) {
        enabledToggle.checked = !enabledToggle.checked;
        reportError(error, 'Switching the flow failed');
      }
    });

    // The server's validation is the authority; its problems are shown beside the fields.
    const form = h('form', { class: 'stack', 'aria-label': 'Flow', noValidate: true, onsubmit: (e) => { e.preventDefault(); if (!saveButton.disabled) save(); } },
      flow.disabledReason ? h('div', { class: 'notice warn' }, h('h2', {}, 'This flow was turned off automatically'), h('p', {}, disabledReasonText(flow.disabledReason))) : null,
      generalProblems,
      h('section', { class: 'card' },
        h('div', { class: 'form-grid' }, field('Name', nameInput, { required: true, problemKey: 'name' })),
        h('div', { class: 'row' }, h('label', { class: 'switch' }, enabledToggle, 'Enabled'), !flowId ? h('span', { class: 'small muted' }, 'Save the flow first, then enable it.') : null)),
      h('section', { class: 'card' }, h('h2', {}, '1. When'),
        h('div', { class: 'form-grid' }, field('Source', sourceSelect, { problemKey: 'trigger.source' })),
        eventsWrap),
      h('section', { class: 'card' }, h('h2', {}, '2. Only if'),
        h('div', { class: 'row' }, field('Run when', modeSelect, { problemKey: 'conditions.mode' })),
        rulesBox,
        readOnly ? null : h('button', { type: 'button', onclick: () => addRule() }, 'Add condition'),
        h('p', { class: 'small muted' }, 'With no conditions, every matching event runs the flow.')),
      h('section', { class: 'card' }, h('h2', {}, '3. Then'),
        actionsBox,
        readOnly ? null : h('button', { type: 'button', onclick: () => addAction() }, 'Add action'),
        h('div', { class: 'form-grid' }, field('Attempts per action', attempts, { problemKey: 'retry.maxAttempts' }), field('Wait between attempts (ms)', backoff, { problemKey: 'retry.backoffMs' }))),
      readOnly ? h('p', { class: 'muted' }, 'Only workspace owners and admins can change flows.') : h('div', { class: 'row save-bar' },
        saveButton, saveNote,
        flowId ? h('button', { type: 'button', class: 'danger', onclick: async () => {
          const ok = await confirmDialog({ title: 'Delete this flow?', message: 'Its run history goes with it.', confirmLabel: 'Delete', danger: true });
          if (!ok) return;
          try {
            await api(`/api/flows/${encodeURIComponent(flowId)}`, { method: 'DELETE' });
            notify('success', 'Flow deleted');
            ctx.navigate('#/flows');
          } catch (error) {
            reportError(error, 'Deleting failed');
          }
        } }, 'Delete') : null));

    const history = flowId ? runHistory(flowId, ctx) : null;
    const tester = readOnly ? null : dryRun(flowId, () => [...chosen], () => collect(), showProblems, () => history && history.reload());
    // The flow's runs first: what people open a flow page for.
    clear(body, history, fieldsList, form, tester);
    form.addEventListener('input', changed);
    form.addEventListener('change', changed);
    form.addEventListener('click', () => setTimeout(changed));
    renderEvents();
    loadSample();
    Promise.all(loading).then(() => {
      baseline = draftText();
      changed();
    });
    if (eventId && tester) bringToTop(tester);
  }

  // ---------------------------------------------------------------- dry run
  /**
   * Tries the editor's current definition (saved or not, never stored by trying) against a
   * stored event: recent events of the trigger's types, each said in one line with whether
   * it would run the flow, or any event id pasted in.
   */
  function dryRun(id, eventTypes, draft, showProblems, onRun) {
    const testPath = id ? `/api/flows/${encodeURIComponent(id)}/test` : '/api/flows/test';
    const listBox = h('div', { class: 'candidates', role: 'radiogroup', 'aria-label': 'Stored events to try' }, h('p', { class: 'small muted' }, 'Loading stored events…'));
    const pasted = h('input', { type: 'text', placeholder: 'or paste an event id', 'aria-label': 'Event id', autocomplete: 'off', class: 'mono', value: ctx.params.get('event') || '' });
    const execute = h('input', { type: 'checkbox' });
    const out = h('div', { 'aria-live': 'polite' });
    const name = uid('candidate');
    let candidates = [];

    function chosen() {
      const typed = pasted.value.trim();
      if (typed) return typed;
      return listBox.querySelector('input[type=radio]:checked')?.value || '';
    }

    function definition() {
      const { flow: current, problems } = draft();
      if (problems.length) {
        showProblems(problems);
        return null;
      }
      return current;
    }

    async function markMatches({ quiet = false } = {}) {
      // Unasked, a draft that cannot be valid yet (no name or no action) is not sent.
      if (quiet) {
        const { flow: sketch, problems } = draft();
        if (problems.length || !sketch.name || !sketch.actions.length) return;
      }
      const current = definition();
      if (!current || !candidates.length) return;
      try {
        const result = await api('/api/flows/candidates', { method: 'POST', body: { flow: current, webhookIds: candidates.map((c) => c.id) }, signal });
        for (const c of result.candidates || []) {
          const badge = listBox.querySelector(`[data-match-for="${CSS.escape(c.webhookId)}"]`);
          if (!badge) continue;
          badge.className = `badge ${c.matched ? 'ok' : 'warn'}`;
          badge.textContent = c.matched ? 'would run' : !c.triggerMatched ? 'other event type' : 'conditions fail';
        }
      } catch (error) {
        // The definition has problems: the dry run button shows them.
        for (const badge of listBox.querySelectorAll('[data-match-for]')) badge.textContent = '';
      }
    }

    const refresh = async () => {
      const types = eventTypes();
      if (!types.length) {
        clear(listBox, h('p', { class: 'small muted' }, 'Choose an event type above to list stored events.'));
        candidates = [];
        return;
      }
      try {
        const page = await api(`/api/webhooks${qs({ event: types, limit: 20 })}`, { signal });
        candidates = page.items || [];
        const wanted = ctx.params.get('event');
        clear(listBox, candidates.length ? candidates.map((e, i) => h('label', { class: 'candidate' },
          h('input', { type: 'radio', name, value: e.id, checked: wanted ? e.id === wanted : i === 0 }),
          h('span', { class: 'candidate-text' },
            h('span', { class: 'ellipsis' }, e.summary || e.preview || e.eventType),
            h('span', { class: 'small muted ellipsis' }, `${e.eventType} · ${fmt.dateTime(e.receivedAt)} · ${e.id}`)),
          h('span', { class: 'badge', dataset: { matchFor: e.id } }, '…'))) : h('p', { class: 'small muted' }, 'No stored event of these types yet: paste an event id, or wait for one to arrive.'));
        markMatches({ quiet: true });
      } catch (error) {
        if (error.name !== 'AbortError') clear(listBox, errorState(error, 'Stored events', refresh));
      }
    };
    refresh();

    return h('section', { class: 'card stack', 'aria-label': 'Dry run', id: 'dry-run' },
      h('h2', {}, 'Dry run against a stored event'),
      h('p', { class: 'small muted' }, 'Tries the flow as it is in the editor now, saved or not: which conditions pass and the requests the actions would send. Nothing is saved, and nothing is called unless you ask for a real run.'),
      h('div', { class: 'row' }, h('button', { type: 'button', class: 'small', onclick: refresh }, 'Reload events'), h('button', { type: 'button', class: 'small', onclick: () => markMatches() }, 'Check which would run')),
      listBox,
      pasted,
      h('div', { class: 'row' },
        id ? h('label', { class: 'inline-label' }, execute, 'Run the actions for real (calls Clockify)') : null,
        h('button', { type: 'button', class: 'primary', id: 'run-dry-run', onclick: async () => {
          const webhookId = chosen();
          if (!webhookId) {
            pasted.focus();
            return;
          }
          const current = definition();
          if (!current) return;
          clear(out, skeletonLines(4));
          try {
            const body = { flow: current, webhookId };
            if (id && execute.checked) body.execute = true;
            const result = await api(testPath, { method: 'POST', body });
            showProblems([]);
            clear(out, testResult(result));
            if (result.run) onRun();
          } catch (error) {
            if (error.problems && error.problems.length) {
              showProblems(error.problems);
              clear(out);
            } else {
              clear(out, errorState(error, 'The dry run'));
            }
          }
        } }, 'Dry run')),
      out);
  }

  function testResult(result) {
    return h('div', { class: 'stack' },
      h('p', {}, result.matched ? h('span', { class: 'badge ok' }, 'the flow would run') : h('span', { class: 'badge warn' }, 'the flow would not run')),
      (result.conditions || []).length ? h('div', { class: 'table-wrap' }, h('table', {},
        h('thead', {}, h('tr', {}, ['Field', 'Check', 'Expected', 'Actual', ''].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, result.conditions.map((c) => h('tr', {},
          h('td', { class: 'mono' }, c.path), h('td', {}, c.op), h('td', { class: 'mono' }, JSON.stringify(c.value)), h('td', { class: 'mono' }, JSON.stringify(c.actual)),
          h('td', {}, c.passed ? h('span', { class: 'badge ok' }, 'passes') : h('span', { class: 'badge bad' }, 'fails'))))))) : null,
      (result.actions || []).map((a) => h('div', { class: 'action-card' },
        h('h3', {}, a.name),
        a.error ? h('p', { class: 'problem' }, a.error) : null,
        a.request ? [h('code', {}, `${a.request.method} ${a.request.url}`), a.request.body !== undefined && a.request.body !== null ? jsonView(a.request.body, { label: `${a.name} request body` }) : null] : null)),
      result.run ? h('div', { class: 'stack' }, h('h3', {}, 'The real run'), renderRun(result.run)) : null);
  }

  /** One run with its steps: request and response of every action. */
  function renderRun(run) {
    return h('div', { class: 'stack' },
      h('h3', {}, 'Run ', badgeFor(run.status), ' ', timeEl(run.createdAt)),
      run.error ? h('p', { class: 'problem' }, run.error) : null,
      run.webhookId ? h('p', { class: 'small' }, h('a', { href: `#/events?id=${encodeURIComponent(run.webhookId)}` }, 'The event that started it')) : null,
      (run.actions || []).map((step) => h('div', { class: 'action-card stack' },
        h('div', { class: 'row' }, h('strong', {}, step.name), badgeFor(step.status), h('span', { class: 'small muted' }, `${fmt.duration(step.durationMs)} · ${step.attempts ?? 1} attempt(s)`)),
        step.error ? h('p', { class: 'problem' }, step.error) : null,
        step.request ? h('details', {}, h('summary', {}, `Request: ${step.request.method} ${step.request.url}`), jsonView(step.request, { label: 'Request' })) : null,
        step.response ? h('details', {}, h('summary', {}, `Response: ${step.response.status}${step.response.truncated ? ' (truncated)' : ''}`), jsonView(step.response.body, { label: 'Response body' })) : null)));
  }

  // ---------------------------------------------------------------- run history
  function runHistory(id, routeCtx) {
    const box = h('section', { class: 'card stack', 'aria-label': 'Run history' }, h('h2', {}, 'Recent runs'), skeletonLines(3));
    const detail = h('div', { 'aria-live': 'polite' });
    const showRun = async (runId) => {
      clear(detail, skeletonLines(4));
      try {
        clear(detail, renderRun(await api(`/api/runs/${encodeURIComponent(runId)}`, { signal })));
      } catch (error) {
        if (error.name !== 'AbortError') clear(detail, errorState(error, 'The run'));
      }
    };
    const load = () => api(`/api/flows/${encodeURIComponent(id)}/runs${qs({ limit: 5 })}`, { signal }).then((data) => {
      const items = data.items || [];
      const why = (r) => r.error || [r.eventType, r.replay ? 'replay' : r.test ? 'test run' : r.retry ? 'retry' : ''].filter(Boolean).join(' · ') || 'event';
      clear(box, h('div', { class: 'row' }, h('h2', {}, 'Recent runs'), h('span', { class: 'spacer' }), h('a', { href: `#/runs?flow=${encodeURIComponent(id)}` }, 'All runs of this flow')),
        items.length ? h('ul', { class: 'list' }, items.map((r) => h('li', {}, h('button', { type: 'button', class: 'op-link', onclick: () => showRun(r.id) },
          badgeFor(r.status), h('span', { class: 'ellipsis' }, why(r)), h('span', { class: 'small muted' }, timeEl(r.createdAt)))))) : h('p', { class: 'muted' }, 'No runs yet.'), detail);
      const wanted = routeCtx.params.get('run');
      if (wanted) showRun(wanted);
    }).catch((error) => {
      if (error.name !== 'AbortError') clear(box, h('h2', {}, 'Recent runs'), errorState(error, 'Run history', load));
    });
    load();
    box.reload = load;
    return box;
  }
}
