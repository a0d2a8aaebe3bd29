// Custom sources: other systems that send events. The secret is shown once (on create or
// rotate) with a ready-to-run curl example signed the Standard Webhooks way.

import {
  h, clear, api, qs, fmt, timeEl, session, notify, reportError, confirmDialog, copyButton,
  errorState, field, skeletonLines,
} from '../lib.js';

function shellQuote(text) {
  return `'${String(text).replace(/'/g, `'\\''`)}'`;
}

/** A shell snippet that signs and sends one test event (bash, openssl, curl). */
export function curlExample(ingestUrl, secret) {
  return [
    '# Send a signed test event (Standard Webhooks: HMAC-SHA256 of "id.timestamp.body").',
    `SECRET=${shellQuote(secret)}`,
    `URL=${shellQuote(ingestUrl)}`,
    `BODY='{"type":"order.created","id":"ord_1001","total":42.5}'`,
    'MSG_ID="msg_$(date +%s%N)"',
    'TS="$(date +%s)"',
    '# The key is the base64 text after "whsec_", decoded.',
    'KEY_HEX="$(printf \'%s\' "${SECRET#whsec_}" | base64 -d | od -An -v -tx1 | tr -d \' \\n\')"',
    'SIG="$(printf \'%s\' "$MSG_ID.$TS.$BODY" | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$KEY_HEX" -binary | base64)"',
    'curl -sS -X POST "$URL" \\',
    '  -H "content-type: application/json" \\',
    '  -H "webhook-id: $MSG_ID" \\',
    '  -H "webhook-timestamp: $TS" \\',
    '  -H "webhook-signature: v1,$SIG" \\',
    '  --data "$BODY"',
  ].join('\n');
}

/** Text to copy with its Copy button beside it, never on top of it. */
function codeBlock(text, label) {
  return h('div', { class: 'code-block' },
    h('pre', { tabindex: '0', 'aria-label': label }, h('code', {}, text)),
    h('div', { class: 'row code-actions' }, copyButton(text, `Copy ${label.toLowerCase()}`, `${label} copied`)));
}

export function mount(root) {
  const controller = new AbortController();
  const listBox = h('div', { class: 'stack' }, skeletonLines(3, 'sk-row'));
  const secretBox = h('div', { 'aria-live': 'polite' });

  function showSecret(source, verb) {
    clear(secretBox, h('div', { class: 'secret-box stack', id: 'secret-once' },
      h('h2', {}, `Secret for “${source.name}” ${verb}`),
      h('p', {}, 'Copy it now: it is shown only this once. Store it in the sending system; Clockify Studio keeps only an encrypted copy.'),
      codeBlock(source.secret, 'Secret'),
      source.previousSecretValidUntil ? h('p', { class: 'small' }, 'The previous secret keeps working until ', timeEl(source.previousSecretValidUntil, { relative: false }), '.') : null,
      h('h3', {}, 'Try it: send a signed test event'),
      codeBlock(curlExample(source.ingestUrl, source.secret), 'curl example'),
      h('button', { type: 'button', onclick: () => clear(secretBox) }, 'I have copied it — hide')));
    secretBox.querySelector('#secret-once').scrollIntoView({ block: 'start' });
  }

  async function load() {
    try {
      const data = await api('/api/sources', { signal: controller.signal });
      const sources = data.sources || [];
      if (!sources.length) {
        clear(listBox, h('p', { class: 'muted' }, 'No custom sources yet.', session.isAdmin ? ' Create one to receive events from another system.' : ''));
        return;
      }
      clear(listBox, sources.map((source) => sourceCard(source)));
    } catch (error) {
      if (error.name !== 'AbortError') clear(listBox, errorState(error, 'Sources', load));
    }
  }

  function sourceCard(source) {
    const last = h('span', { class: 'muted' }, '…');
    api(`/api/webhooks${qs({ source: source.id, limit: 1 })}`, { signal: controller.signal })
      .then((page) => {
        const item = page.items && page.items[0];
        clear(last, item ? [timeEl(item.receivedAt), ` (${item.eventType})`] : 'nothing yet');
      })
      .catch(() => clear(last, '—'));
    const actions = session.isAdmin ? h('div', { class: 'row' },
      h('button', { type: 'button', onclick: async () => {
        const ok = await confirmDialog({ title: `Rotate the secret of “${source.name}”?`, message: 'A new secret is made. The current one keeps working for 24 hours so the sender can switch.', confirmLabel: 'Rotate' });
        if (!ok) return;
        try {
          const rotated = await api(`/api/sources/${encodeURIComponent(source.id)}/rotate`, { method: 'POST' });
          notify('success', 'Secret rotated');
          showSecret(rotated, 'rotated');
          load();
        } catch (error) {
          reportError(error, 'Rotating failed');
        }
      } }, 'Rotate secret'),
      h('button', { type: 'button', class: 'danger', onclick: async () => {
        const ok = await confirmDialog({ title: `Delete “${source.name}”?`, message: 'Its ingest URL stops accepting events. Events already received stay in the log.', confirmLabel: 'Delete', danger: true });
        if (!ok) return;
        try {
          await api(`/api/sources/${encodeURIComponent(source.id)}`, { method: 'DELETE' });
          notify('success', 'Source deleted');
          load();
        } catch (error) {
          reportError(error, 'Deleting failed');
        }
      } }, 'Delete')) : null;
    return h('section', { class: 'card', 'aria-label': source.name },
      h('h2', {}, source.name),
      h('dl', { class: 'kv' },
        h('dt', {}, 'Ingest URL'), h('dd', {}, h('code', {}, source.ingestUrl), ' ', copyButton(source.ingestUrl, 'Copy', 'Ingest URL copied')),
        h('dt', {}, 'Created'), h('dd', {}, timeEl(source.createdAt)),
        h('dt', {}, 'Secret rotated'), h('dd', {}, source.rotatedAt ? timeEl(source.rotatedAt) : 'never'),
        h('dt', {}, 'Last event'), h('dd', {}, last),
        h('dt', {}, 'Events'), h('dd', {}, h('a', { href: `#/events?source=${encodeURIComponent(source.id)}` }, 'Show its events'))),
      actions);
  }

  const nameInput = h('input', { type: 'text', name: 'name', maxLength: 100, placeholder: 'e.g. Shop orders', autocomplete: 'off' });
  const createForm = session.isAdmin ? h('form', { class: 'card row create-source', 'aria-label': 'New source', onsubmit: async (event) => {
    event.preventDefault();
    const name = nameInput.value.trim();
    if (!name) {
      nameInput.focus();
      return;
    }
    try {
      const source = await api('/api/sources', { method: 'POST', body: { name } });
      nameInput.value = '';
      notify('success', `Source “${source.name}” created`);
      showSecret(source, 'created');
      load();
    } catch (error) {
      reportError(error, 'Creating the source failed');
    }
  } }, field('New source name', nameInput, { required: true }), h('button', { type: 'submit', class: 'primary' }, 'Create source')) : null;

  clear(root, h('div', { class: 'stack' },
    h('div', { class: 'page-head' }, h('h1', {}, 'Sources')),
    h('p', { class: 'muted' }, 'Besides Clockify, other systems can send events here. Each source has its own URL and secret; requests are signed the Standard Webhooks way (or send the secret as a bearer token).'),
    createForm,
    secretBox,
    listBox));
  load();
  return () => controller.abort();
}
