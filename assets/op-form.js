// Forms generated from the OpenAPI catalog (explorer and flow actions): one typed control
// per parameter, and a body skeleton built from the request schema.

import { h, field, session } from './lib.js';

/** An example value for `schema`: its example/default, else a skeleton by type. */
export function schemaSkeleton(schema, depth = 0) {
  if (!schema || depth > 6) return null;
  if (schema.example !== undefined) return schema.example;
  if (schema.default !== undefined) return schema.default;
  if (Array.isArray(schema.enum) && schema.enum.length) return schema.enum[0];
  const variants = schema.oneOf || schema.anyOf;
  if (variants && variants.length) return schemaSkeleton(variants[0], depth + 1);
  if (schema.allOf) {
    return Object.assign({}, ...schema.allOf.map((s) => schemaSkeleton(s, depth + 1)).filter((v) => v && typeof v === 'object'));
  }
  const type = Array.isArray(schema.type) ? schema.type[0] : schema.type;
  if (type === 'object' || schema.properties) {
    const out = {};
    const required = new Set(schema.required || []);
    const props = Object.entries(schema.properties || {});
    // Large objects: required properties only, so the skeleton stays readable.
    const chosen = props.length > 12 && required.size ? props.filter(([k]) => required.has(k)) : props;
    for (const [key, prop] of chosen) out[key] = schemaSkeleton(prop, depth + 1);
    return out;
  }
  if (type === 'array') {
    const item = schemaSkeleton(schema.items, depth + 1);
    return item === null ? [] : [item];
  }
  if (type === 'integer' || type === 'number') return 0;
  if (type === 'boolean') return false;
  if (type === 'string') {
    if (schema.format === 'date-time') return new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    return '';
  }
  return null;
}

/** The JSON text a body editor starts with. */
export function bodyTemplate(operation) {
  const schema = operation.requestBody && operation.requestBody.schema;
  if (!schema) return '';
  const value = schema.example !== undefined ? schema.example : schemaSkeleton(schema);
  return JSON.stringify(value ?? {}, null, 2);
}

function typeOf(param) {
  return param.type || (param.schema && param.schema.type) || 'string';
}

/**
 * A labelled control for one parameter. `workspaceId` is filled and locked. Returns
 * `{element, control, read()}`; `read()` gives the value to send or undefined when empty.
 */
export function paramField(param, { value, templates = false } = {}) {
  const type = typeOf(param);
  const locked = param.in === 'path' && param.name === 'workspaceId';
  const initial = locked ? session.workspaceId : value !== undefined ? value : param.default;
  let control;
  if (Array.isArray(param.enum) && param.enum.length && !templates) {
    control = h('select', { name: param.name },
      param.required ? null : h('option', { value: '' }, '—'),
      param.enum.map((v) => h('option', { value: String(v) }, String(v))));
    if (initial !== undefined && initial !== null) control.value = String(initial);
  } else if (type === 'boolean' && !templates) {
    control = h('select', { name: param.name }, h('option', { value: '' }, '—'), h('option', { value: 'true' }, 'true'), h('option', { value: 'false' }, 'false'));
    if (initial !== undefined && initial !== null) control.value = String(initial);
  } else {
    const numeric = (type === 'integer' || type === 'number') && !templates;
    control = h('input', {
      name: param.name,
      type: numeric ? 'number' : 'text',
      step: type === 'integer' ? '1' : 'any',
      autocomplete: 'off',
      placeholder: templates && Array.isArray(param.enum) ? param.enum.join(' | ') : type === 'array' ? 'comma-separated' : '',
    });
    if (initial !== undefined && initial !== null) control.value = Array.isArray(initial) ? initial.join(',') : String(initial);
  }
  if (locked) {
    control.readOnly = true;
    control.setAttribute('aria-readonly', 'true');
  }
  const label = `${param.name}${param.in === 'query' ? '' : ''}`;
  const hint = [param.in, type, locked ? 'your workspace' : '', param.description ? param.description.slice(0, 140) : ''].filter(Boolean).join(' · ');
  const element = field(label, control, { hint, required: param.required, problemKey: `${param.in === 'path' ? 'pathParams' : 'query'}.${param.name}` });
  return {
    param,
    element,
    control,
    read() {
      const raw = control.value.trim();
      if (raw === '') return undefined;
      if (templates) return raw;
      if (type === 'integer' || type === 'number') return Number(raw);
      if (type === 'boolean') return raw === 'true';
      if (type === 'array') return raw.split(',').map((s) => s.trim()).filter(Boolean);
      return raw;
    },
  };
}

/** Checks a JSON text; returns `{ok, value, error}` (empty text is no body). */
export function parseJsonText(text) {
  if (!text.trim()) return { ok: true, value: undefined };
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch (error) {
    return { ok: false, error: error.message };
  }
}

/** Method badge. */
export function methodBadge(method) {
  const m = String(method || '').toUpperCase();
  return h('span', { class: `badge method ${m}` }, m);
}
