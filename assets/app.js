// Entry point: takes the token from the URL (then removes it), starts the session and
// routes between the pages (client-side tabs; `#/page?filters` keeps a view shareable).

import { h, clear, session, notify, errorState } from './lib.js';

const PAGES = ['overview', 'events', 'explorer', 'flows', 'runs', 'sources', 'destinations', 'settings', 'audit'];
const DEFAULT_PAGE = 'overview';

const view = document.getElementById('view');
let current = { name: null, cleanup: null, query: '' };

function parseHash() {
  const raw = window.location.hash.replace(/^#\/?/, '');
  const [path, query = ''] = raw.split('?');
  const [name, ...rest] = path.split('/');
  return { name: PAGES.includes(name) ? name : DEFAULT_PAGE, sub: rest.join('/'), query };
}

/** Context handed to pages: the URL state and ways to change it. */
function contextFor(route) {
  return {
    sub: route.sub,
    params: new URLSearchParams(route.query),
    /** Replaces the page's URL state without remounting (filters, selection). */
    setParams(params, sub = route.sub) {
      const text = params.toString();
      const hash = `#/${route.name}${sub ? `/${sub}` : ''}${text ? `?${text}` : ''}`;
      route.sub = sub;
      route.query = text;
      current.query = `${sub}?${text}`;
      history.replaceState(null, '', `${window.location.pathname}${hash}`);
    },
    navigate(hash) {
      window.location.hash = hash;
    },
  };
}

async function show() {
  if (session.expired) return;
  const route = parseHash();
  const key = `${route.sub}?${route.query}`;
  if (route.name === current.name && key === current.query) return;
  if (current.cleanup) current.cleanup();
  current = { name: route.name, cleanup: null, query: key };
  for (const tab of document.querySelectorAll('.tabs a')) {
    if (tab.dataset.tab === route.name) tab.setAttribute('aria-current', 'page');
    else tab.removeAttribute('aria-current');
  }
  document.title = `${document.querySelector(`.tabs a[data-tab="${route.name}"]`).textContent} · Clockify Studio`;
  view.setAttribute('aria-busy', 'true');
  try {
    const module = await import(`./pages/${route.name}.js`);
    if (current.name !== route.name || session.expired) return;
    clear(view);
    current.cleanup = module.mount(view, contextFor(route)) || null;
  } catch (error) {
    // A module that did not arrive (offline, server restarting) is not a bug: offer a retry.
    const unreachable = error instanceof TypeError && /import|fetch/i.test(String(error.message));
    const shown = unreachable
      ? { offline: true, message: navigator.onLine === false ? 'You are offline. Check your connection, then retry.' : 'The page could not be loaded from the Clockify Studio server. Retry in a moment.' }
      : error;
    clear(view, errorState(shown, 'This page', () => {
      current = { name: null, cleanup: null, query: '' };
      show();
    }));
  } finally {
    view.setAttribute('aria-busy', 'false');
  }
}

function showExpired(reason) {
  if (current.cleanup) current.cleanup();
  current = { name: 'expired', cleanup: null, query: '' };
  document.body.classList.add('expired');
  for (const tab of document.querySelectorAll('.tabs a')) tab.removeAttribute('aria-current');
  clear(view, h('div', { class: 'state notice warn', role: 'alert', id: 'session-expired' },
    h('h1', {}, 'Your session has expired'),
    h('p', {}, 'For your security Clockify signs you in to add-ons for 30 minutes at a time, and no new sign-in arrived. Close Clockify Studio and open it again from Clockify\'s sidebar to continue.'),
    h('p', { class: 'muted small' }, `Reason: ${reason}.`)));
  view.setAttribute('aria-busy', 'false');
  view.focus();
}

function boot() {
  const url = new URL(window.location.href);
  const token = url.searchParams.get('auth_token');
  if (!token) {
    showExpired('this page was opened without a sign-in token');
    return;
  }
  // The token must not stay in the address bar, history or a copied link.
  url.searchParams.delete('auth_token');
  history.replaceState(null, '', `${url.pathname}${url.search}${url.hash}`);
  session.expiredListeners.add(showExpired);
  session.init(token);
  const who = document.getElementById('who');
  who.textContent = session.isAdmin ? 'Admin' : 'Read-only';
  who.title = session.isAdmin ? 'You can change settings, flows and sources' : 'Only workspace owners and admins can change things here';
  document.documentElement.dataset.role = session.isAdmin ? 'admin' : 'member';
  window.addEventListener('hashchange', show);
  const offline = document.getElementById('offline');
  const onlineState = () => {
    offline.hidden = navigator.onLine !== false;
  };
  window.addEventListener('online', onlineState);
  window.addEventListener('offline', onlineState);
  onlineState();
  window.addEventListener('unhandledrejection', (event) => {
    if (event.reason && event.reason.status === 401) return;
    if (event.reason && event.reason.name === 'AbortError') return;
    notify('error', `Something went wrong: ${event.reason && event.reason.message ? event.reason.message : event.reason}`);
  });
  show();
}

boot();
