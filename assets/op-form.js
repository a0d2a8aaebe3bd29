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

/** How a stored parameter value shows in a text control. */
function shown(value) {
  if (value === undefined || value === null) return '';
  return Array.isArray(value) ? value.join(',') : String(value);
}

/**
 * A labelled control for one parameter. Returns `{element, control, read()}`; `read()` gives
 * the value to send, or undefined when nothing is to be sent.
 *
 * Only what the user set is sent: the spec's default is a placeholder, never a value, and
 * a stored `value` comes back exactly as it was (same type) while its text is untouched.
 * The `workspaceId` path parameter is locked: the explorer shows the user's workspace, a
 * flow shows `{{ workspaceId }}` (the server fills it in and nothing needs sending).
 */
export function paramField(param, { value, templates = false } = {}) {
  const type = typeOf(param);
  const locked = param.in === 'path' && param.name === 'workspaceId';
  const lockedText = templates ? '{{ workspaceId }}' : session.workspaceId;
  const hasDefault = param.default !== undefined && param.default !== null;
  const defaultNote = hasDefault ? `default: ${shown(param.default)}` : '';
  let control;
  if (Array.isArray(param.enum) && param.enum.length && !templates && !locked) {
    control = h('select', { name: param.name },
      h('option', { value: '' }, hasDefault ? `— (${defaultNote})` : '—'),
      param.enum.map((v) => h('option', { value: String(v) }, String(v))));
  } else if (type === 'boolean' && !templates && !locked) {
    control = h('select', { name: param.name },
      h('option', { value: '' }, hasDefault ? `— (${defaultNote})` : '—'),
      h('option', { value: 'true' }, 'true'), h('option', { value: 'false' }, 'false'));
  } else {
    const numeric = (type === 'integer' || type === 'number') && !templates;
    const choices = templates && Array.isArray(param.enum) ? param.enum.join(' | ') : type === 'array' ? 'comma-separated' : '';
    control = h('input', {
      name: param.name,
      type: numeric ? 'number' : 'text',
      step: type === 'integer' ? '1' : 'any',
      autocomplete: 'off',
      placeholder: [defaultNote, choices].filter(Boolean).join(' · '),
    });
  }
  const initialText = locked && value === undefined ? lockedText : shown(value);
  control.value = initialText;
  if (locked) {
    control.readOnly = true;
    control.setAttribute('aria-readonly', 'true');
  }
  const hint = [param.in, type, locked ? (templates ? 'filled in by the server' : 'your workspace') : '', param.description ? param.description.slice(0, 140) : ''].filter(Boolean).join(' · ');
  const element = field(param.name, control, { hint, required: param.required && !locked, problemKey: `${param.in === 'path' ? 'pathParams' : 'query'}.${param.name}` });
  return {
    param,
    element,
    control,
    read() {
      // Untouched: exactly what was stored (nothing when nothing was).
      if (control.value === initialText) return locked && value === undefined && templates ? undefined : value ?? (locked ? session.workspaceId : undefined);
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

/** Whether an operation's method carries a request body (GET and DELETE do not). */
export function takesBody(op) {
  const method = String(op.method || '').toUpperCase();
  return !['GET', 'DELETE', 'HEAD'].includes(method) && Boolean(op.hasBody || op.requestBody);
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
