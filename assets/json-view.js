// A hand-written JSON viewer: syntax coloured, collapsible, copyable. Built from DOM nodes
// (textContent only), so event bodies can never inject markup.

import { h, copyButton } from './lib.js';

/** Objects/arrays deeper than this, or larger than BIG, start collapsed. */
const OPEN_DEPTH = 3;
const BIG = 40;

function scalar(value) {
  if (typeof value === 'string') return h('span', { class: 's' }, JSON.stringify(value));
  if (typeof value === 'number') return h('span', { class: 'n' }, String(value));
  return h('span', { class: 'l' }, String(value));
}

function node(key, value, depth, last) {
  const li = h('li');
  const comma = last ? null : h('span', { class: 'p' }, ',');
  const label = key === null ? null : [h('span', { class: 'k' }, JSON.stringify(key)), h('span', { class: 'p' }, ': ')];
  if (value === null || typeof value !== 'object') {
    li.append(...[label, scalar(value), comma].flat().filter(Boolean));
    return li;
  }
  const isArray = Array.isArray(value);
  const entries = isArray ? value.map((v, i) => [null, v, i]) : Object.entries(value).map(([k, v], i) => [k, v, i]);
  const [open, close] = isArray ? ['[', ']'] : ['{', '}'];
  if (entries.length === 0) {
    li.append(...[label, h('span', { class: 'p' }, open + close), comma].flat().filter(Boolean));
    return li;
  }
  const collapsed = depth >= OPEN_DEPTH || entries.length > BIG;
  if (collapsed) li.classList.add('collapsed');
  const toggle = h('button', {
    type: 'button',
    class: 'toggle',
    'aria-expanded': String(!collapsed),
    'aria-label': `${collapsed ? 'Expand' : 'Collapse'} ${key ?? (isArray ? 'array' : 'object')}`,
    onclick: () => {
      const nowCollapsed = li.classList.toggle('collapsed');
      toggle.setAttribute('aria-expanded', String(!nowCollapsed));
      toggle.textContent = nowCollapsed ? '▸' : '▾';
      toggle.setAttribute('aria-label', `${nowCollapsed ? 'Expand' : 'Collapse'} ${key ?? (isArray ? 'array' : 'object')}`);
    },
  }, collapsed ? '▸' : '▾');
  const summary = h('span', { class: 'summary' }, ` ${entries.length} ${isArray ? 'items' : 'keys'} `);
  const children = h('ul', {}, entries.map(([k, v, i]) => node(k, v, depth + 1, i === entries.length - 1)));
  li.append(...[toggle, label, h('span', { class: 'p' }, open), summary, children, h('span', { class: 'p' }, close), comma].flat().filter(Boolean));
  return li;
}

/** A viewer for `value`; `label` names it for screen readers. */
export function jsonView(value, { label = 'JSON', copy = true } = {}) {
  const root = h('div', { class: 'json', role: 'group', 'aria-label': label, tabindex: '0' }, h('ul', { class: 'json-root' }, node(null, value, 0, true)));
  if (!copy) return root;
  const expandAll = h('button', { type: 'button', class: 'small', onclick: () => {
    root.querySelectorAll('li.collapsed').forEach((li) => li.querySelector(':scope > .toggle').click());
  } }, 'Expand all');
  return h('div', { class: 'stack' },
    h('div', { class: 'row' }, copyButton(() => JSON.stringify(value, null, 2), 'Copy JSON', 'JSON copied to the clipboard'), expandAll),
    root);
}

/** Dotted paths of every leaf in a sample (arrays by index 0), for field suggestions. */
export function leafPaths(value, prefix = '', out = []) {
  if (value === null || typeof value !== 'object') {
    if (prefix) out.push({ path: prefix, sample: value });
    return out;
  }
  if (Array.isArray(value)) {
    if (value.length) leafPaths(value[0], prefix ? `${prefix}.0` : '0', out);
    return out;
  }
  for (const [key, child] of Object.entries(value)) leafPaths(child, prefix ? `${prefix}.${key}` : key, out);
  return out;
}
