// Request bodies as forms: per-field inputs generated from the JSON schema (required fields
// first, enums as selects, nested objects as groups, arrays with add and remove), with a
// raw-JSON view that stays in sync. Only fields the user fills in are sent.

import { h, clear, uid } from './lib.js';

const MAX_DEPTH = 5;

function typeOf(schema) {
  if (!schema) return 'any';
  if (Array.isArray(schema.enum) && schema.enum.length) return 'enum';
  const type = Array.isArray(schema.type) ? schema.type.find((t) => t !== 'null') : schema.type;
  if (type) return type;
  if (schema.properties) return 'object';
  if (schema.items) return 'array';
  return 'any';
}

/** Merges allOf and picks the first oneOf/anyOf variant: one schema to build a form from. */
function flatten(schema) {
  if (!schema) return schema;
  if (schema.allOf) {
    const parts = schema.allOf.map(flatten);
    return {
      ...schema,
      type: 'object',
      properties: Object.assign({}, ...parts.map((p) => (p && p.properties) || {})),
      required: parts.flatMap((p) => (p && p.required) || []),
    };
  }
  const variants = schema.oneOf || schema.anyOf;
  if (variants && variants.length) return flatten(variants[0]);
  return schema;
}

function isEmpty(value) {
  return value === undefined || (value && typeof value === 'object' && !Array.isArray(value) && !Object.keys(value).length);
}

/**
 * A control tree for `schema` holding `value`; returns `{element, read()}` where `read()`
 * gives the value to send (undefined when nothing was filled in).
 */
function node(schema, value, { name, label, required, depth }) {
  schema = flatten(schema) || {};
  const type = typeOf(schema);
  const hint = [type === 'enum' ? null : type, schema.format, schema.description ? schema.description.slice(0, 120) : null].filter(Boolean).join(' · ');
  const labelText = h('span', {}, label, required ? h('span', { class: 'req', 'aria-hidden': 'true' }, ' *') : null);
  if (type === 'object' && depth < MAX_DEPTH && schema.properties) {
    const requiredSet = new Set(schema.required || []);
    const keys = Object.keys(schema.properties).sort((a, b) => Number(requiredSet.has(b)) - Number(requiredSet.has(a)));
    const children = keys.map((key) => [key, node(schema.properties[key], value && typeof value === 'object' ? value[key] : undefined, {
      name: name ? `${name}.${key}` : key, label: key, required: requiredSet.has(key), depth: depth + 1,
    })]);
    const body = children.map(([, child]) => child.element);
    const element = depth === 0
      ? h('div', { class: 'body-fields' }, body)
      : h('fieldset', { class: 'body-group' }, h('legend', {}, labelText), hint ? h('div', { class: 'hint' }, hint) : null, body);
    return {
      element,
      read() {
        const out = {};
        for (const [key, child] of children) {
          const v = child.read();
          if (v !== undefined) out[key] = v;
        }
        return Object.keys(out).length || depth === 0 ? out : undefined;
      },
    };
  }
  if (type === 'array' && depth < MAX_DEPTH) {
    const list = h('div', { class: 'body-array' });
    const items = [];
    const add = (itemValue) => {
      const entry = node(schema.items || {}, itemValue, { name: `${name}[]`, label: `${label} item`, required: false, depth: depth + 1 });
      const wrap = h('div', { class: 'body-item' }, entry.element, h('button', { type: 'button', class: 'small', 'aria-label': `Remove this ${label} item`, onclick: () => {
        items.splice(items.indexOf(entry), 1);
        wrap.remove();
        list.dispatchEvent(new Event('input', { bubbles: true }));
      } }, 'Remove'));
      items.push(entry);
      list.append(wrap);
    };
    (Array.isArray(value) ? value : []).forEach(add);
    const element = h('fieldset', { class: 'body-group' }, h('legend', {}, labelText), hint ? h('div', { class: 'hint' }, hint) : null, list,
      h('button', { type: 'button', class: 'small', onclick: (e) => {
        add(undefined);
        e.currentTarget.dispatchEvent(new Event('input', { bubbles: true }));
      } }, `Add ${label} item`));
    return {
      element,
      read() {
        const values = items.map((i) => i.read()).filter((v) => v !== undefined);
        return values.length ? values : undefined;
      },
    };
  }
  const id = uid('body');
  let control;
  let parse;
  if (type === 'enum' || type === 'boolean') {
    const options = type === 'enum' ? schema.enum : [true, false];
    control = h('select', { id, name }, h('option', { value: '' }, '—'), options.map((o) => h('option', { value: JSON.stringify(o) }, String(o))));
    if (value !== undefined) control.value = JSON.stringify(value);
    parse = () => (control.value === '' ? undefined : JSON.parse(control.value));
  } else if (type === 'integer' || type === 'number') {
    control = h('input', { id, name, type: 'number', step: type === 'integer' ? '1' : 'any', value: value ?? '' });
    parse = () => (control.value.trim() === '' ? undefined : Number(control.value));
  } else if (type === 'string') {
    control = h('input', { id, name, type: 'text', autocomplete: 'off', value: value ?? '', placeholder: schema.example !== undefined && typeof schema.example !== 'object' ? `e.g. ${schema.example}` : '' });
    parse = () => (control.value === '' ? undefined : control.value);
  } else {
    // Anything the form cannot break down further: a small JSON box.
    control = h('textarea', { id, name, rows: 2, spellcheck: false }, value === undefined ? '' : JSON.stringify(value));
    parse = () => {
      if (!control.value.trim()) return undefined;
      try {
        return JSON.parse(control.value);
      } catch {
        return control.value;
      }
    };
  }
  if (required) control.setAttribute('aria-required', 'true');
  const element = h('div', { class: 'field' }, h('label', { for: id }, labelText), control, hint ? h('div', { class: 'hint' }, hint) : null);
  return { element, read: parse };
}

/**
 * A body editor for `schema`: a form (the default for object bodies) and a raw JSON text
 * (`textarea[name=body]`). Switching views carries the value across; `read()` returns
 * `{ok, value, error}` from the view in use.
 */
export function bodyEditor(schema, initial, { label = 'Body', required = false, onChange = () => {} } = {}) {
  const flat = flatten(schema);
  const formable = typeOf(flat) === 'object' && flat && flat.properties && Object.keys(flat.properties).length > 0;
  const raw = h('textarea', { name: 'body', spellcheck: false, rows: 12, 'aria-label': `${label} as JSON` });
  raw.value = initial === undefined ? '' : JSON.stringify(initial, null, 2);
  const formBox = h('div', { class: 'body-form' });
  let form = null;
  let mode = formable ? 'form' : 'raw';
  const problem = h('div', { class: 'problem', role: 'alert' });
  const toForm = h('button', { type: 'button', class: 'small', 'aria-pressed': 'false', onclick: () => show('form') }, 'Form');
  const toRaw = h('button', { type: 'button', class: 'small', 'aria-pressed': 'false', onclick: () => show('raw') }, 'Raw JSON');

  function build(value) {
    form = node(flat, value, { name: '', label, required, depth: 0 });
    clear(formBox, form.element);
  }

  function parseRaw() {
    if (!raw.value.trim()) return { ok: true, value: undefined };
    try {
      return { ok: true, value: JSON.parse(raw.value) };
    } catch (error) {
      return { ok: false, error: error.message };
    }
  }

  function show(next) {
    if (next === 'form') {
      const parsed = parseRaw();
      if (!parsed.ok) {
        problem.textContent = `The JSON is not valid, so it cannot be shown as a form: ${parsed.error}`;
        return;
      }
      build(parsed.value);
    } else if (form) {
      const value = form.read();
      raw.value = isEmpty(value) ? '' : JSON.stringify(value, null, 2);
    }
    problem.textContent = '';
    mode = next;
    formBox.hidden = mode !== 'form';
    raw.hidden = mode !== 'raw';
    toForm.setAttribute('aria-pressed', String(mode === 'form'));
    toRaw.setAttribute('aria-pressed', String(mode === 'raw'));
  }

  // The form writes through to the JSON view, so both always say the same.
  formBox.addEventListener('input', () => {
    const value = form.read();
    raw.value = isEmpty(value) ? '' : JSON.stringify(value, null, 2);
    onChange();
  });
  formBox.addEventListener('change', () => formBox.dispatchEvent(new Event('input')));
  raw.addEventListener('input', onChange);

  if (formable) build(initial);
  const element = h('div', { class: 'body-editor stack' },
    h('div', { class: 'row' }, h('span', { class: 'label-text' }, `${label}${required ? ' *' : ''}`), h('span', { class: 'spacer' }),
      formable ? h('div', { class: 'segmented', role: 'group', 'aria-label': 'Edit the body as' }, toForm, toRaw) : null),
    formBox, raw, problem);
  show(mode);
  return {
    element,
    raw,
    get mode() {
      return mode;
    },
    show,
    read() {
      if (mode === 'form') {
        const value = form.read();
        return { ok: true, value: isEmpty(value) && !required ? undefined : value };
      }
      const parsed = parseRaw();
      problem.textContent = parsed.ok ? '' : `The body is not valid JSON: ${parsed.error}`;
      if (parsed.ok) raw.removeAttribute('aria-invalid');
      else raw.setAttribute('aria-invalid', 'true');
      return parsed;
    },
  };
}
