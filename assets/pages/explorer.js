// API explorer: every Clockify operation from the bundled spec, grouped by tag and
// searchable; a form generated from the spec; run as the add-on or as the user; the
// response; recent calls; and "turn this call into a flow action".

import {
  h, clear, api, qs, fmt, timeEl, session, reportError, errorState, field,
  skeletonLines, debounce, handoff,
} from '../lib.js';
import { jsonView } from '../json-view.js';
import { paramField, bodyTemplate, parseJsonText, methodBadge } from '../op-form.js';

export function mount(root, ctx) {
  const controller = new AbortController();
  let operations = [];
  let selected = ctx.params.get('op') || '';
  const search = h('input', { type: 'search', placeholder: 'Search operations', autocomplete: 'off', value: ctx.params.get('q') || '' });
  const sideList = h('div', { class: 'side-list', role: 'navigation', 'aria-label': 'Operations' }, skeletonLines(12));
  const formBox = h('section', { class: 'card', 'aria-label': 'Operation' },
    h('p', { class: 'muted' }, 'Pick an operation on the left to call the Clockify API.'));
  const historyBox = h('section', { class: 'card', 'aria-label': 'Recent calls' }, h('h2', {}, 'Recent calls'), skeletonLines(4));

  clear(root,
    h('div', { class: 'page-head' }, h('h1', {}, 'API explorer')),
    h('div', { class: 'split has-detail' },
      h('section', { class: 'card stack', 'aria-label': 'Operation list' }, field('Search', search, { hint: 'name, path or tag' }), sideList),
      h('div', { class: 'stack' }, formBox, historyBox)));

  function saveParams() {
    const params = new URLSearchParams();
    if (search.value.trim()) params.set('q', search.value.trim());
    if (selected) params.set('op', selected);
    ctx.setParams(params);
  }

  function renderList() {
    const needle = search.value.trim().toLowerCase();
    const matches = operations.filter((op) => !needle || [op.operationId, op.path, op.summary, op.tag, op.method].some((t) => String(t || '').toLowerCase().includes(needle)));
    const byTag = new Map();
    for (const op of matches) {
      const tag = op.tag || 'Other';
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push(op);
    }
    if (!matches.length) {
      clear(sideList, h('p', { class: 'muted' }, 'No operation matches.'));
      return;
    }
    clear(sideList, [...byTag.entries()].map(([tag, ops]) => h('details', { open: Boolean(needle) || ops.some((o) => o.operationId === selected) },
      h('summary', {}, `${tag} `, h('span', { class: 'muted small' }, `(${ops.length})`)),
      h('ul', { class: 'list' }, ops.map((op) => h('li', {}, h('button', {
        type: 'button',
        class: 'op-link',
        'aria-current': op.operationId === selected ? 'true' : 'false',
        title: `${op.method} ${op.path}`,
        onclick: () => open(op.operationId),
      }, methodBadge(op.method), h('span', { class: 'ellipsis' }, op.summary || op.operationId), op.deprecated ? h('span', { class: 'badge warn' }, 'deprecated') : null)))))));
  }

  async function open(operationId) {
    selected = operationId;
    saveParams();
    renderList();
    clear(formBox, h('div', { class: 'sk sk-title' }), skeletonLines(8));
    try {
      const op = await api(`/api/operations/${encodeURIComponent(operationId)}`, { signal: controller.signal });
      clear(formBox, operationForm(op));
    } catch (error) {
      if (error.name !== 'AbortError') clear(formBox, errorState(error, 'The operation'));
    }
  }

  function operationForm(op, prefill = {}) {
    const isWrite = !(op.readOnly ?? op.method === 'GET');
    // Some operations refuse add-on tokens or upload files: say so instead of offering Run.
    const blocked = op.addonToken === false ? 'Clockify does not accept add-on tokens for this operation, so it cannot be called from here.'
      : op.multipart ? 'This operation uploads files, which the explorer cannot send.' : '';
    const canRun = !blocked && (session.isAdmin || !isWrite);
    const params = (op.parameters || []).filter((p) => p.in === 'path' || p.in === 'query');
    const fields = params.map((p) => paramField(p, { value: (p.in === 'path' ? prefill.pathParams : prefill.query)?.[p.name] }));
    const bodyArea = op.hasBody || op.requestBody ? h('textarea', { name: 'body', spellcheck: false, rows: 12 }) : null;
    if (bodyArea) bodyArea.value = prefill.body !== undefined ? JSON.stringify(prefill.body, null, 2) : bodyTemplate(op);
    const bodyProblem = h('div', { class: 'problem', role: 'alert' });
    const asAddon = h('input', { type: 'radio', name: 'as', value: 'addon', checked: true });
    const asUser = h('input', { type: 'radio', name: 'as', value: 'user' });
    const result = h('div', { 'aria-live': 'polite' });
    const problems = h('div', { class: 'problem', role: 'alert' });

    function collect() {
      const pathParams = {};
      const query = {};
      for (const f of fields) {
        const value = f.read();
        if (value === undefined) continue;
        (f.param.in === 'path' ? pathParams : query)[f.param.name] = value;
      }
      let body;
      if (bodyArea) {
        const parsed = parseJsonText(bodyArea.value);
        if (!parsed.ok) {
          bodyProblem.textContent = `The body is not valid JSON: ${parsed.error}`;
          bodyArea.setAttribute('aria-invalid', 'true');
          return null;
        }
        bodyProblem.textContent = '';
        bodyArea.removeAttribute('aria-invalid');
        body = parsed.value;
      }
      return { operationId: op.operationId, pathParams, query, body };
    }

    const form = h('form', { class: 'stack', onsubmit: async (event) => {
      event.preventDefault();
      if (!form.reportValidity()) return;
      const call = collect();
      if (!call) {
        bodyArea.focus();
        return;
      }
      problems.textContent = '';
      const runButton = form.querySelector('button[type=submit]');
      runButton.disabled = true;
      clear(result, skeletonLines(4));
      try {
        const response = await api('/api/execute', { method: 'POST', body: { ...call, as: asUser.checked ? 'user' : 'addon' } });
        clear(result, responseView(response));
        loadHistory();
      } catch (error) {
        clear(result);
        if (error.problems.length) {
          problems.textContent = error.problems.join(' · ');
        } else {
          reportError(error, 'The call failed');
          clear(result, errorState(error, 'The response'));
        }
      } finally {
        runButton.disabled = false;
      }
    } },
    h('div', { class: 'row' }, methodBadge(op.method), h('code', { class: 'ellipsis' }, op.path)),
    h('h2', {}, op.summary || op.operationId),
    op.description ? h('p', { class: 'muted small' }, op.description.slice(0, 600)) : null,
    fields.length ? h('div', { class: 'form-grid' }, fields.map((f) => f.element)) : h('p', { class: 'muted' }, 'No parameters.'),
    bodyArea ? h('div', {}, field(`Body (${op.requestBody?.contentType || 'application/json'})`, bodyArea, { required: op.requestBody?.required, hint: 'JSON; checked before sending' }), bodyProblem) : null,
    canRun ? h('fieldset', { class: 'row' }, h('legend', { class: 'small muted' }, 'Run as'),
      h('label', { class: 'inline-label' }, asAddon, 'the add-on'),
      h('label', { class: 'inline-label' }, asUser, 'me')) : null,
    problems,
    h('div', { class: 'row' },
      canRun ? h('button', { type: 'submit', class: 'primary' }, 'Run') : h('p', { class: 'muted small' }, blocked || 'This operation changes data: only workspace owners and admins can run it.'),
      session.isAdmin ? h('button', { type: 'button', onclick: () => {
        const call = collect();
        if (!call) return;
        handoff.action = { name: op.operationId, operationId: op.operationId, pathParams: call.pathParams, query: call.query, body: call.body };
        ctx.navigate('#/flows/new');
      } }, 'Turn into a flow action') : null),
    result);
    return form;
  }

  function responseView(response) {
    const ok = response.status >= 200 && response.status < 300;
    return h('div', { class: 'stack' },
      h('h3', {}, 'Response'),
      h('div', { class: 'row' },
        h('span', { class: `badge ${ok ? 'ok' : 'bad'}` }, String(response.status)),
        h('span', { class: 'muted' }, fmt.duration(response.durationMs)),
        response.request ? h('code', { class: 'ellipsis small' }, `${response.request.method} ${response.request.url}`) : null),
      jsonView(response.body, { label: 'Response body' }),
      response.headers ? h('details', {}, h('summary', {}, 'Response headers'), jsonView(response.headers, { label: 'Response headers', copy: false })) : null);
  }

  async function loadHistory() {
    try {
      const data = await api(`/api/executions${qs({ limit: 20 })}`, { signal: controller.signal });
      const items = data.items || [];
      clear(historyBox, h('h2', {}, 'Recent calls'), items.length ? h('ul', { class: 'list' }, items.map((item) => h('li', {}, h('button', {
        type: 'button',
        class: 'op-link',
        onclick: async () => {
          selected = item.operationId;
          saveParams();
          renderList();
          try {
            const op = await api(`/api/operations/${encodeURIComponent(item.operationId)}`);
            clear(formBox, operationForm(op, item.request || {}));
          } catch (error) {
            reportError(error, 'Opening the call failed');
          }
        },
      }, methodBadge(item.method), h('span', { class: 'ellipsis' }, item.operationId),
      h('span', { class: `badge ${item.status && item.status < 300 ? 'ok' : 'bad'}`, title: item.error || '' }, item.status ? String(item.status) : 'error'),
      h('span', { class: 'small muted' }, timeEl(item.at)))))) : h('p', { class: 'muted' }, 'No calls yet.'));
    } catch (error) {
      if (error.name !== 'AbortError') clear(historyBox, h('h2', {}, 'Recent calls'), errorState(error, 'Recent calls'));
    }
  }

  search.addEventListener('input', debounce(() => {
    saveParams();
    renderList();
  }, 150));

  api('/api/operations', { signal: controller.signal })
    .then((data) => {
      operations = data.operations || [];
      renderList();
      if (selected) open(selected);
      loadHistory();
    })
    .catch((error) => {
      if (error.name === 'AbortError') return;
      clear(root, h('div', { class: 'page-head' }, h('h1', {}, 'API explorer')), errorState(error, 'The API explorer'));
    });
  return () => controller.abort();
}
