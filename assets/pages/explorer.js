// API explorer: every Clockify operation from the bundled spec, grouped by tag and
// searchable; a form generated from the spec; run as the add-on or as the user; the
// response; recent calls; and "turn this call into a flow action".

import {
  h, clear, api, qs, fmt, timeEl, session, reportError, errorState, field,
  skeletonLines, debounce, handoff, copyButton, bringToTop,
} from '../lib.js';
import { jsonView } from '../json-view.js';
import { paramField, methodBadge, takesBody } from '../op-form.js';
import { bodyEditor } from '../body-form.js';

function shellQuote(text) {
  return `'${String(text).replace(/'/g, `'\\''`)}'`;
}

/** The URL a call goes to: the workspace's API base (from the token) and the filled path. */
export function requestUrl(op, pathParams, query) {
  const claims = session.claims || {};
  const base = (op.server === 'reports' ? claims.reportsUrl : claims.backendUrl) || (op.server === 'reports' ? 'https://reports.api.clockify.me' : 'https://api.clockify.me/api');
  const path = String(op.path || '').replace(/\{([^}]+)\}/g, (whole, name) => (pathParams[name] !== undefined && pathParams[name] !== '' ? encodeURIComponent(pathParams[name]) : whole));
  const search = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) (Array.isArray(v) ? v : [v]).forEach((item) => search.append(k, String(item)));
  const text = search.toString();
  return `${base.replace(/\/$/, '')}${path}${text ? `?${text}` : ''}`;
}

/** The call as a curl command (the add-on token is left as a variable: it never leaves the server). */
export function curlCommand(op, call) {
  const lines = [`curl -X ${String(op.method).toUpperCase()} ${shellQuote(requestUrl(op, call.pathParams, call.query))}`, `  -H "X-Addon-Token: $CLOCKIFY_TOKEN"`];
  if (call.body !== undefined) lines.push(`  -H 'Content-Type: application/json'`, `  --data ${shellQuote(JSON.stringify(call.body))}`);
  return lines.join(' \\\n');
}

/** "name=x · page=2" for a history row. */
function paramSummary(request) {
  const pairs = [...Object.entries(request.pathParams || {}).filter(([k]) => k !== 'workspaceId'), ...Object.entries(request.query || {})];
  const text = pairs.map(([k, v]) => `${k}=${Array.isArray(v) ? v.join(',') : v}`).join(' · ');
  return request.body !== undefined && request.body !== null ? `${text}${text ? ' · ' : ''}body` : text;
}

export function mount(root, ctx) {
  const controller = new AbortController();
  let operations = [];
  let selected = ctx.params.get('op') || '';
  const search = h('input', { type: 'search', placeholder: 'Search operations', autocomplete: 'off', value: ctx.params.get('q') || '' });
  const sideList = h('div', { class: 'side-list', role: 'navigation', 'aria-label': 'Operations' }, skeletonLines(12));
  const formBox = h('section', { class: 'card', 'aria-label': 'Operation' },
    h('p', { class: 'muted' }, 'Pick an operation on the left to call the Clockify API.'));
  const historyBox = h('section', { class: 'card', 'aria-label': 'Recent calls' }, h('h2', {}, 'Recent calls'), skeletonLines(4));

  const split = h('div', { class: 'split has-detail explorer-split' });
  clear(root,
    h('div', { class: 'page-head' }, h('h1', {}, 'API explorer')),
    clear(split,
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
    // Narrow: the chosen operation's form comes before the long list.
    split.classList.add('op-chosen');
    saveParams();
    renderList();
    clear(formBox, h('div', { class: 'sk sk-title' }), skeletonLines(8));
    try {
      const op = await api(`/api/operations/${encodeURIComponent(operationId)}`, { signal: controller.signal, cache: 'no-cache' });
      clear(formBox, operationForm(op));
      bringToTop(formBox);
    } catch (error) {
      if (error.name !== 'AbortError') clear(formBox, errorState(error, 'The operation', () => open(operationId)));
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
    const preview = h('code', { class: 'url-preview', id: 'url-preview' });
    const body = takesBody(op) || prefill.body !== undefined
      ? bodyEditor(op.requestBody?.schema, prefill.body, { label: `Body (${op.requestBody?.contentType || 'application/json'})`, required: Boolean(op.requestBody?.required), onChange: () => updatePreview() })
      : null;
    // The add-on's token is for owners and admins; everyone else calls as themselves.
    const asAddon = h('input', { type: 'radio', name: 'as', value: 'addon', checked: session.isAdmin, disabled: !session.isAdmin });
    const asUser = h('input', { type: 'radio', name: 'as', value: 'user', checked: !session.isAdmin });
    const result = h('div', { 'aria-live': 'polite' });
    const problems = h('div', { class: 'problem', role: 'alert' });

    function params_() {
      const pathParams = {};
      const query = {};
      for (const f of fields) {
        const value = f.read();
        if (value === undefined) continue;
        (f.param.in === 'path' ? pathParams : query)[f.param.name] = value;
      }
      return { pathParams, query };
    }

    function collect() {
      const { pathParams, query } = params_();
      let value;
      if (body) {
        const parsed = body.read();
        if (!parsed.ok) return null;
        value = parsed.value;
      }
      return { operationId: op.operationId, pathParams, query, body: value };
    }

    function updatePreview() {
      const { pathParams, query } = params_();
      preview.textContent = `${String(op.method).toUpperCase()} ${requestUrl(op, pathParams, query)}`;
    }

    const form = h('form', { class: 'stack op-form', onsubmit: async (event) => {
      event.preventDefault();
      if (!form.reportValidity()) return;
      const call = collect();
      if (!call) {
        body.raw.focus();
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
    op.description ? (op.description.length > 200
      ? h('details', { class: 'small muted' }, h('summary', {}, op.description.slice(0, 160), '…'), h('p', {}, op.description.slice(0, 1200)))
      : h('p', { class: 'muted small' }, op.description)) : null,
    // Run first, so it is on screen without scrolling; the form follows.
    h('div', { class: 'run-bar stack' },
      h('div', { class: 'row' },
        canRun ? h('button', { type: 'submit', class: 'primary' }, 'Run') : h('p', { class: 'muted small' }, blocked || 'This operation changes data: only workspace owners and admins can run it.'),
        canRun ? h('fieldset', { class: 'row' }, h('legend', { class: 'small muted' }, 'Run as'),
          h('label', { class: 'inline-label' }, asAddon, 'the add-on'),
          h('label', { class: 'inline-label' }, asUser, 'me')) : null,
        h('span', { class: 'spacer' }),
        copyButton(() => {
          const call = collect();
          return call ? curlCommand(op, call) : '';
        }, 'Copy as curl', 'curl command copied (set CLOCKIFY_TOKEN first)'),
        session.isAdmin ? h('button', { type: 'button', class: 'small', onclick: () => {
          const call = collect();
          if (!call) return;
          handoff.action = { name: op.operationId, operationId: op.operationId, pathParams: call.pathParams, query: call.query, body: call.body };
          ctx.navigate('#/flows/new');
        } }, 'Turn into a flow action') : null),
      preview),
    problems,
    fields.length ? h('div', { class: 'form-grid' }, fields.map((f) => f.element)) : h('p', { class: 'muted' }, 'No parameters.'),
    body ? body.element : null,
    result);
    form.addEventListener('input', updatePreview);
    form.addEventListener('change', updatePreview);
    updatePreview();
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
            const op = await api(`/api/operations/${encodeURIComponent(item.operationId)}`, { cache: 'no-cache' });
            clear(formBox, operationForm(op, item.request || {}));
            bringToTop(formBox);
          } catch (error) {
            reportError(error, 'Opening the call failed');
          }
        },
      }, methodBadge(item.method), h('span', { class: 'history-text' }, h('span', { class: 'ellipsis' }, item.operationId), item.request && paramSummary(item.request) ? h('span', { class: 'small muted ellipsis' }, paramSummary(item.request)) : null),
      h('span', { class: `badge ${item.status && item.status < 300 ? 'ok' : 'bad'}`, title: item.error || '' }, item.status ? String(item.status) : 'error'),
      h('span', { class: 'small muted' }, timeEl(item.at), item.userName || item.userId ? h('span', { class: 'history-who', title: item.userId || '' }, ` · ${item.userName || item.userId}`) : null))))) : h('p', { class: 'muted' }, 'No calls yet.'));
    } catch (error) {
      if (error.name !== 'AbortError') clear(historyBox, h('h2', {}, 'Recent calls'), errorState(error, 'Recent calls', loadHistory));
    }
  }

  search.addEventListener('input', debounce(() => {
    saveParams();
    renderList();
  }, 150));

  const start = () => api('/api/operations', { signal: controller.signal, cache: 'no-cache' })
    .then((data) => {
      operations = data.operations || [];
      renderList();
      if (selected) open(selected);
      loadHistory();
    })
    .catch((error) => {
      if (error.name === 'AbortError') return;
      clear(sideList, errorState(error, 'The operation list', () => {
        clear(sideList, skeletonLines(12));
        start();
      }));
    });
  start();
  return () => controller.abort();
}
