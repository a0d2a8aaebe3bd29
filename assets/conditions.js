// The condition editor shared by the flow builder and the destinations page: "all / any of
// these hold" and rows of field (JSONPath on the event body, suggested from a sample), operator
// and value. Both send conditions in the same shape ({mode, rules}) to the same engine.

import { h } from './lib.js';

export const OPS = [
  ['eq', 'equals'], ['ne', 'does not equal'], ['contains', 'contains'], ['not_contains', 'does not contain'],
  ['gt', 'is greater than'], ['gte', 'is at least'], ['lt', 'is less than'], ['lte', 'is at most'],
  ['in', 'is one of'], ['not_in', 'is none of'], ['matches', 'matches pattern'],
  ['exists', 'is present'], ['not_exists', 'is missing'], ['empty', 'is empty'], ['not_empty', 'is not empty'],
];
export const NO_VALUE = new Set(['exists', 'not_exists', 'empty', 'not_empty']);

/** A condition path as the server wants it (RFC 9535 JSONPath on the event body); a dotted
 * path such as `project.name` or `tags.0.name` is accepted and converted. */
export function toJsonPath(path) {
  const text = String(path || '').trim();
  if (!text || text.startsWith('$')) return text;
  return `$${text.split('.').map((part) => (/^\d+$/.test(part) ? `[${part}]` : /^[A-Za-z_][A-Za-z0-9_]*$/.test(part) ? `.${part}` : `[${JSON.stringify(part)}]`)).join('')}`;
}

/** Typed condition value: numbers/booleans when the sample says so, lists for in/not_in. */
function typedValue(op, raw, sample) {
  if (NO_VALUE.has(op)) return null;
  if (op === 'in' || op === 'not_in') return raw.split(',').map((s) => s.trim()).filter(Boolean);
  if (typeof sample === 'number' && raw.trim() !== '' && !Number.isNaN(Number(raw))) return Number(raw);
  if (typeof sample === 'boolean' && (raw === 'true' || raw === 'false')) return raw === 'true';
  return raw;
}

/**
 * The editor for `conditions` ({mode, rules}). `fieldsList`: a datalist of suggested paths;
 * `sampleFields()`: the sample's leaf paths (to type values as the sample does);
 * `problemKey`: where the server's problems for these conditions are keyed
 * (`conditions`, `filter.conditions`). Returns the mode select, the rules box, `addRule`
 * and `collect()` (the conditions as the server wants them).
 */
export function conditionEditor({ conditions, readOnly = false, fieldsList, sampleFields = () => [], problemKey = 'conditions' }) {
  const modeSelect = h('select', { disabled: readOnly }, h('option', { value: 'all' }, 'all of these hold'), h('option', { value: 'any' }, 'any of these holds'));
  modeSelect.value = conditions?.mode || 'all';
  const rulesBox = h('div');
  const rules = [];
  function addRule(rule = { path: '', op: 'eq', value: '' }) {
    const index = rules.length;
    const path = h('input', { type: 'text', list: fieldsList ? fieldsList.id : null, value: rule.path || '', placeholder: 'field, e.g. $.project.name', 'aria-label': `Condition ${index + 1} field`, disabled: readOnly });
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
    // The stored value comes back as it was (its type too) while its text is untouched.
    const entry = { path, op, value, original: rule, shown: String(shown) };
    const remove = readOnly ? h('span') : h('button', { type: 'button', class: 'small', 'aria-label': `Remove condition ${index + 1}`, onclick: () => {
      rules.splice(rules.indexOf(entry), 1);
      line.remove();
      rulesBox.dispatchEvent(new Event('change', { bubbles: true }));
    } }, 'Remove');
    const line = h('div', { class: 'rule', dataset: { problemKey: `${problemKey}.rules[${index}]` } }, path, op, value, remove);
    rules.push(entry);
    rulesBox.append(line);
  }
  (conditions?.rules || []).forEach((rule) => addRule(rule));

  function collect() {
    return {
      mode: modeSelect.value,
      rules: rules.map((r) => {
        const path = toJsonPath(r.path.value);
        const sample = sampleFields().find((f) => toJsonPath(f.path) === path)?.sample;
        const untouched = r.original.op === r.op.value && r.value.value === r.shown && 'value' in r.original && r.original.path;
        return { path, op: r.op.value, value: untouched ? r.original.value : typedValue(r.op.value, r.value.value, sample) };
      }),
    };
  }

  return { modeSelect, rulesBox, addRule, collect };
}
