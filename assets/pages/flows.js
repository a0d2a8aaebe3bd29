// Flows: "when event X arrives and conditions hold, call API operation Y". A list with
// enable switches and run counts, and a builder for non-programmers: trigger, condition
// rows with fields suggested from a sample event, actions picked by search with template
// insertion, validation problems beside their fields, dry run, and run history.

import {
  h, clear, api, qs, fmt, timeEl, session, notify, reportError, confirmDialog, errorState,
  field, skeletonLines, badgeFor, EVENT_TYPES, ASSET_BASE, handoff, uid,
} from '../lib.js';
import { jsonView, leafPaths } from '../json-view.js';
import { paramField, bodyTemplate, parseJsonText, methodBadge, schemaSkeleton } from '../op-form.js';

const OPS = [
  ['eq', 'equals'], ['ne', 'does not equal'], ['contains', 'contains'], ['not_contains', 'does not contain'],
  ['gt', 'is greater than'], ['gte', 'is at least'], ['lt', 'is less than'], ['lte', 'is at most'],
  ['in', 'is one of'], ['not_in', 'is none of'], ['matches', 'matches pattern'],
  ['exists', 'is present'], ['not_exists', 'is missing'], ['empty', 'is empty'], ['not_empty', 'is not empty'],
];
const NO_VALUE = new Set(['exists', 'not_exists', 'empty', 'not_empty']);

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
  api('/api/flows', { signal }).then((data) => {
    const flows = data.flows || [];
    if (!flows.length) {
      clear(box, h('p', { class: 'muted' }, 'No flows yet.', session.isAdmin ? ' Create one, or turn an API explorer call into a flow action.' : ''));
      return;
    }
    clear(box, flows.map((flow) => flowCard(flow)));
  }).catch((error) => {
    if (error.name !== 'AbortError') clear(box, errorState(error, 'Flows'));
  });

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
      h('p', { class: 'small muted' }, `When ${(flow.trigger?.events || []).join(', ') || 'any event'} arrives from ${flow.trigger?.source || 'clockify'}`),
      flow.disabledReason ? h('p', { class: 'problem' }, `Turned off automatically: ${flow.disabledReason}`) : null,
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

/** A condition path as the server wants it (RFC 9535 JSONPath on the event body); a dotted
 * path such as `project.name` or `tags.0.name` is accepted and converted. */
export function toJsonPath(path) {
  const text = String(path || '').trim();
  if (!text || text.startsWith('$')) return text;
  return `$${text.split('.').map((part) => (/^\d+$/.test(part) ? `[${part}]` : /^[A-Za-z_][A-Za-z0-9_]*$/.test(part) ? `.${part}` : `[${JSON.stringify(part)}]`)).join('')}`;
}

/** A template reference to a dotted path under `root` (`event`, `actions.x.body`). */
function templateRef(root, dotted) {
  const tail = dotted.split('.').map((part) => (/^\d+$/.test(part) ? `[${part}]` : /^[A-Za-z_][A-Za-z0-9_]*$/.test(part) ? `.${part}` : `[${JSON.stringify(part)}]`)).join('');
  return `${root}${tail}`;
}

/** Typed condition value: numbers/booleans when the sample says so, lists for in/not_in. */
function typedValue(op, raw, sample) {
  if (NO_VALUE.has(op)) return null;
  if (op === 'in' || op === 'not_in') return raw.split(',').map((s) => s.trim()).filter(Boolean);
  if (typeof sample === 'number' && raw.trim() !== '' && !Number.isNaN(Number(raw))) return Number(raw);
  if (typeof sample === 'boolean' && (raw === 'true' || raw === 'false')) return raw === 'true';
  return raw;
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
  const load = flowId ? api(`/api/flows/${encodeURIComponent(flowId)}`, { signal }) : api('/api/flows', { signal }).then(() => null);
  Promise.all([load, api('/api/sources', { signal }).catch(() => ({ sources: [] })), api('/api/operations', { signal }).catch((e) => (e.notAvailable ? { unavailable: true } : { operations: [] }))])
    .then(([loaded, sources, ops]) => {
      operations = ops.unavailable ? false : ops.operations || [];
      if (loaded) flow = { ...emptyFlow(), ...loaded };
      if (!flowId && handoff.action) {
        flow.actions.push(handoff.action);
        handoff.action = null;
      }
      render(sources.sources || []);
    })
    .catch((error) => {
      if (error.name !== 'AbortError') clear(body, errorState(error, 'Flows'));
    });

  function render(sources) {
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
      try {
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
    const modeSelect = h('select', { disabled: readOnly }, h('option', { value: 'all' }, 'all of these hold'), h('option', { value: 'any' }, 'any of these holds'));
    modeSelect.value = flow.conditions?.mode || 'all';
    const rulesBox = h('div');
    const rules = [];
    function addRule(rule = { path: '', op: 'eq', value: '' }) {
      const index = rules.length;
      const path = h('input', { type: 'text', list: fieldsList.id, value: rule.path || '', placeholder: 'field, e.g. $.project.name', 'aria-label': `Condition ${index + 1} field`, disabled: readOnly });
      const op = h('select', { 'aria-label': `Condition ${index + 1} operator`, disabled: readOnly }, OPS.map(([v, l]) => h('option', { value: v }, l)));
      op.value = rule.op || 'eq';
      const shown = Array.isArray(rule.value) ? rule.value.join(', ') : rule.value ?? '';
      const value = h('input', { type: 'text', value: String(shown), placeholder: 'value', 'aria-label': `Condition ${index + 1} value`, disabled: readOnly });
      const syncValue = () => {
        value.hidden = NO_VALUE.has(op.value);
        value.placeholder = op.value === 'in' || op.value === 'not_in' ? 'values, comma-separated' : op.value === 'matches' ? 'regular expression' : 'value';
      };
      op.addEventListener('change', syncValue);
      syncValue();
      const entry = { path, op, value };
      const remove = readOnly ? h('span') : h('button', { type: 'button', class: 'small', 'aria-label': `Remove condition ${index + 1}`, onclick: () => {
        rules.splice(rules.indexOf(entry), 1);
        line.remove();
      } }, 'Remove');
      const line = h('div', { class: 'rule', dataset: { problemKey: `conditions.rules[${index}]` } }, path, op, value, remove);
      rules.push(entry);
      rulesBox.append(line);
    }
    (flow.conditions?.rules || []).forEach(addRule);

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
      const entry = { op: null, fields: [], bodyArea: null, action };
      const index = () => actions.indexOf(entry);
      entry.nameInput = h('input', { type: 'text', value: action.name || '', placeholder: 'short name, e.g. getUser', pattern: '[A-Za-z_][A-Za-z0-9_]*', disabled: readOnly });
      const opSearch = h('input', { type: 'search', placeholder: operations === false ? 'operationId' : 'Search operations, e.g. tag', autocomplete: 'off', disabled: readOnly, value: action.operationId || '' });
      const results = h('ul', { class: 'list insert-menu', hidden: true, role: 'listbox' });
      const opBox = h('div');
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
        opSearch.value = operationId;
        if (!entry.nameInput.value.trim()) entry.nameInput.value = operationId;
        if (operations === false) {
          entry.op = { operationId, parameters: [] };
          renderOp(keepValues);
          return;
        }
        clear(opBox, skeletonLines(3));
        try {
          entry.op = await api(`/api/operations/${encodeURIComponent(operationId)}`, { signal });
          renderOp(keepValues);
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
        let bodyField = null;
        if (op.hasBody || op.requestBody || (keepValues && action.body !== undefined)) {
          const bodyId = uid('body');
          entry.bodyArea = h('textarea', { id: bodyId, rows: 10, spellcheck: false, disabled: readOnly });
          entry.bodyArea.value = keepValues && action.body !== undefined ? JSON.stringify(action.body, null, 2) : bodyTemplate(op);
          bodyField = h('div', { class: 'field', dataset: { problemKey: `actions[${index()}].body` } },
            h('label', { for: bodyId }, 'Body (JSON; templates go inside strings)'),
            withInsert(entry.bodyArea, index));
        }
        clear(opBox,
          op.method ? h('div', { class: 'row small' }, methodBadge(op.method), h('code', { class: 'ellipsis' }, op.path)) : null,
          entry.fields.length ? h('div', { class: 'form-grid' }, entry.fields.map((f) => f.element)) : h('p', { class: 'small muted' }, operations === false ? 'The API catalog is not available yet: parameters cannot be listed.' : 'No parameters.'),
          bodyField);
      }

      const remove = readOnly ? null : h('button', { type: 'button', class: 'small danger', onclick: () => {
        actions.splice(index(), 1);
        card.remove();
      } }, 'Remove');
      const up = readOnly ? null : h('button', { type: 'button', class: 'small', 'aria-label': 'Move action up', onclick: () => {
        const i = index();
        if (i <= 0) return;
        actions.splice(i - 1, 0, actions.splice(i, 1)[0]);
        card.previousElementSibling.before(card);
      } }, '↑');
      card.append(
        h('div', { class: 'row' }, h('h3', {}, 'Then call'), h('span', { class: 'spacer' }), up, remove),
        h('div', { class: 'form-grid' },
          field('Action name', entry.nameInput, { hint: 'Later actions refer to its result by this name', problemKey: `actions[${actions.length}].name` }),
          h('div', { class: 'field', dataset: { problemKey: `actions[${actions.length}].operationId` } }, field('Operation', opSearch, { required: true }), results)),
        opBox);
      actions.push(entry);
      actionsBox.append(card);
      if (action.operationId) chooseOperation(action.operationId, true);
    }
    (flow.actions || []).forEach((a) => addAction(a));

    // -------- retry
    const attempts = h('input', { type: 'number', min: '1', max: '10', step: '1', value: String(flow.retry?.maxAttempts ?? 3), disabled: readOnly });
    const backoff = h('input', { type: 'number', min: '0', step: '100', value: String(flow.retry?.backoffMs ?? 500), disabled: readOnly });

    // -------- collect and save
    function collect() {
      const problems = [];
      const out = {
        name: nameInput.value.trim(),
        enabled: flow.enabled ?? false,
        trigger: { source: sourceSelect.value, events: [...chosen] },
        conditions: {
          mode: modeSelect.value,
          rules: rules.map((r) => {
            const path = toJsonPath(r.path.value);
            const sample = sampleFields.find((f) => toJsonPath(f.path) === path)?.sample;
            return { path, op: r.op.value, value: typedValue(r.op.value, r.value.value, sample) };
          }),
        },
        actions: actions.map((a, i) => {
          const pathParams = {};
          const query = {};
          for (const f of a.fields) {
            const v = f.read();
            if (v !== undefined) (f.param.in === 'path' ? pathParams : query)[f.param.name] = v;
          }
          let body;
          if (a.bodyArea) {
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
      return { flow: out, problems };
    }

    function showProblems(problems) {
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
      clear(generalProblems, general.length ? h('div', { class: 'notice bad' }, h('h2', {}, 'Please fix these first'), h('ul', {}, general.map((p) => h('li', {}, p)))) : null);
      const first = form.querySelector('.problem.placed, .notice.bad');
      if (first) first.scrollIntoView({ block: 'center' });
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
    const form = h('form', { class: 'stack', 'aria-label': 'Flow', noValidate: true, onsubmit: (e) => { e.preventDefault(); save(); } },
      flow.disabledReason ? h('div', { class: 'notice warn' }, h('h2', {}, 'This flow was turned off automatically'), h('p', {}, flow.disabledReason)) : null,
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
      readOnly ? h('p', { class: 'muted' }, 'Only workspace owners and admins can change flows.') : h('div', { class: 'row' },
        h('button', { type: 'submit', class: 'primary' }, 'Save'),
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
    clear(body, fieldsList, form,
      flowId && !readOnly ? dryRun(flowId, () => [...chosen], save, () => history && history.reload()) : null,
      history);
    renderEvents();
    loadSample();
  }

  // ---------------------------------------------------------------- dry run
  function dryRun(id, eventTypes, save, onRun) {
    const select = h('select', {}, h('option', { value: '' }, 'Loading stored events…'));
    const execute = h('input', { type: 'checkbox' });
    const out = h('div', { 'aria-live': 'polite' });
    const refresh = async () => {
      try {
        const page = await api(`/api/webhooks${qs({ event: eventTypes(), limit: 20 })}`, { signal });
        clear(select, page.items.length ? page.items.map((e) => h('option', { value: e.id }, `${e.eventType} · ${fmt.dateTime(e.receivedAt)}`)) : h('option', { value: '' }, 'No stored event of these types yet'));
      } catch {
        clear(select, h('option', { value: '' }, 'Events could not be loaded'));
      }
    };
    refresh();
    return h('section', { class: 'card stack', 'aria-label': 'Dry run' },
      h('h2', {}, 'Dry run against a stored event'),
      h('p', { class: 'small muted' }, 'Shows which conditions pass and the requests the actions would send. Nothing is called unless you ask for a real run.'),
      h('div', { class: 'row' }, field('Event', select), h('button', { type: 'button', onclick: refresh }, 'Reload list'),
        h('label', { class: 'inline-label' }, execute, 'Run the actions for real (calls Clockify)'),
        h('button', { type: 'button', class: 'primary', onclick: async () => {
          if (!select.value) return;
          if (!(await save())) return;
          clear(out, skeletonLines(4));
          try {
            const body = execute.checked ? { webhookId: select.value, execute: true } : { webhookId: select.value };
            const result = await api(`/api/flows/${encodeURIComponent(id)}/test`, { method: 'POST', body });
            clear(out, testResult(result));
            if (result.run) onRun();
          } catch (error) {
            clear(out, errorState(error, 'The dry run'));
          }
        } }, 'Save and dry run')),
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
    const box = h('section', { class: 'card stack', 'aria-label': 'Run history' }, h('h2', {}, 'Run history'), skeletonLines(3));
    const detail = h('div', { 'aria-live': 'polite' });
    const showRun = async (runId) => {
      clear(detail, skeletonLines(4));
      try {
        clear(detail, renderRun(await api(`/api/runs/${encodeURIComponent(runId)}`, { signal })));
      } catch (error) {
        if (error.name !== 'AbortError') clear(detail, errorState(error, 'The run'));
      }
    };
    const load = () => api(`/api/flows/${encodeURIComponent(id)}/runs${qs({ limit: 25 })}`, { signal }).then((data) => {
      const items = data.items || [];
      const why = (r) => r.error || [r.eventType, r.replay ? 'replay' : r.test ? 'test run' : ''].filter(Boolean).join(' · ') || 'event';
      clear(box, h('h2', {}, 'Run history'), items.length ? h('ul', { class: 'list' }, items.map((r) => h('li', {}, h('button', { type: 'button', class: 'op-link', onclick: () => showRun(r.id) },
        badgeFor(r.status), h('span', { class: 'ellipsis' }, why(r)), h('span', { class: 'small muted' }, timeEl(r.createdAt)))))) : h('p', { class: 'muted' }, 'No runs yet.'), detail);
      const wanted = routeCtx.params.get('run');
      if (wanted) showRun(wanted);
    }).catch((error) => {
      if (error.name !== 'AbortError') clear(box, h('h2', {}, 'Run history'), errorState(error, 'Run history'));
    });
    load();
    box.reload = load;
    return box;
  }
}
