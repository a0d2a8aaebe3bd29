// Overview: installation, event volume (inline SVG charts), subscriptions, flow runs,
// bootstrap, data file and version, from GET /api/overview.

import { h, clear, api, fmt, timeEl, badgeFor, errorState, skeletonLines } from '../lib.js';

const SVG = 'http://www.w3.org/2000/svg';

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) if (c) el.append(c);
  return el;
}

/** A small bar chart; each bar has a tooltip, the whole has a text summary. */
export function barChart(points, { label, tick }) {
  const width = 240;
  const height = 64;
  const max = Math.max(1, ...points.map((p) => p.count));
  const gap = 2;
  const barWidth = (width - gap * (points.length - 1)) / points.length;
  const bars = points.map((p, i) => {
    const barHeight = p.count === 0 ? 2 : Math.max(3, (p.count / max) * (height - 4));
    return svg('rect', {
      class: p.count === 0 ? 'bar zero' : 'bar',
      x: (i * (barWidth + gap)).toFixed(2),
      y: (height - barHeight).toFixed(2),
      width: barWidth.toFixed(2),
      height: barHeight.toFixed(2),
      rx: 1,
    }, svg('title', {}, document.createTextNode(`${tick(p)}: ${fmt.number(p.count)}`)));
  });
  const total = points.reduce((a, p) => a + p.count, 0);
  const chart = svg('svg', { class: 'chart', viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: 'none', role: 'img', 'aria-label': `${label}: ${fmt.number(total)} in total, at most ${fmt.number(max === 1 && total === 0 ? 0 : max)} per bar` }, ...bars);
  return h('div', {}, chart, h('div', { class: 'chart-legend', 'aria-hidden': 'true' },
    h('span', {}, points.length ? tick(points[0]) : ''), h('span', {}, points.length ? tick(points[points.length - 1]) : '')));
}

function card(title, ...body) {
  return h('section', { class: 'card stat-card', 'aria-label': title }, h('h2', {}, title), ...body);
}

function pending(text = 'Not available yet') {
  return h('p', { class: 'muted' }, text, h('br'), h('span', { class: 'small' }, 'Arrives with a later version of this server.'));
}

function skeleton() {
  const sk = () => card('\u00a0', h('div', { class: 'sk sk-big' }), skeletonLines(2), h('div', { class: 'sk sk-chart' }));
  return [h('div', { class: 'page-head' }, h('h1', {}, 'Overview')), h('div', { class: 'grid', 'aria-hidden': 'true' }, sk(), sk(), sk(), sk(), sk(), sk())];
}

function render(data) {
  const ev = data.events || {};
  const installation = data.installation || {};
  const subs = data.subscriptions;
  const runs = data.flowRuns;
  const boot = data.bootstrap;
  const hourTick = (p) => fmt.time(p.hour);
  const dayTick = (p) => fmt.day(new Date(new Date(p.day).getTime() + 24 * 3600 * 1000 - 1));
  const percent = boot && boot.total ? Math.min(100, Math.round((100 * boot.done) / boot.total)) : 0;
  const bar = h('div', { class: 'progress', role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': '100', 'aria-valuenow': String(percent), 'aria-label': 'Bootstrap progress' }, h('div'));
  bar.firstChild.style.width = `${percent}%`;
  return [
    h('div', { class: 'page-head' }, h('h1', {}, 'Overview')),
    h('div', { class: 'grid' },
      card('Installation',
        h('p', { class: 'big' }, badgeFor(installation.status)),
        h('dl', { class: 'kv' },
          h('dt', {}, 'Installed'), h('dd', {}, timeEl(installation.installedAt)),
          h('dt', {}, 'Installs'), h('dd', {}, fmt.number(installation.generation)),
          h('dt', {}, 'Workspace'), h('dd', { class: 'mono small' }, data.workspaceId))),
      card('Events, last 24 h',
        h('div', { class: 'stat-pair' },
          h('div', {}, h('div', { class: 'big', id: 'events-24h' }, fmt.number(ev.last24h)), h('div', { class: 'muted small' }, 'last 24 hours')),
          h('div', {}, h('div', { class: 'big' }, fmt.number(ev.last7d)), h('div', { class: 'muted small' }, 'last 7 days'))),
        barChart(ev.hourly || [], { label: 'Events per hour, last 24 hours', tick: hourTick }),
        h('p', { class: 'small muted' }, 'Last event: ', timeEl(ev.lastEventAt)),
        ev.truncated ? h('p', { class: 'small muted' }, 'Counted up to a limit; the real numbers are higher.') : null),
      card('Events, last 7 days',
        barChart(ev.daily || [], { label: 'Events per day, last 7 days', tick: dayTick }),
        h('p', { class: 'small muted' }, 'Each bar is 24 hours, ending at the next full hour.')),
      card('Subscriptions',
        subs ? h('dl', { class: 'kv' },
          ['registered', 'manifest', 'pending', 'failed', 'notSubscribed'].flatMap((k) => [h('dt', {}, k === 'notSubscribed' ? 'not subscribed' : k), h('dd', {}, fmt.number(subs[k]))]))
          : pending()),
      card('Flow runs, last 24 h',
        runs ? h('div', { class: 'stat-pair' },
          h('div', {}, h('div', { class: 'big status-ok' }, fmt.number(runs.succeeded24h)), h('div', { class: 'muted small' }, 'succeeded')),
          h('div', {}, h('div', { class: 'big status-bad' }, fmt.number(runs.failed24h)), h('div', { class: 'muted small' }, 'failed')),
          runs.pending ? h('div', {}, h('div', { class: 'big' }, fmt.number(runs.pending)), h('div', { class: 'muted small' }, 'waiting')) : null)
          : pending()),
      card('Entity cache (bootstrap)',
        boot ? h('div', {}, badgeFor(boot.status), bar, h('p', { class: 'small muted' }, `${fmt.number(boot.done)} / ${fmt.number(boot.total)}`)) : pending()),
      card('Server',
        h('dl', { class: 'kv' },
          h('dt', {}, 'Data file'), h('dd', {}, fmt.bytes(data.dataFileBytes)),
          h('dt', {}, 'Version'), h('dd', {}, data.version || '—'),
          h('dt', {}, 'Time zone'), h('dd', {}, fmt.zone())))),
  ];
}

export function mount(root) {
  const controller = new AbortController();
  const load = () => {
    clear(root, skeleton());
    api('/api/overview', { signal: controller.signal })
      .then((data) => clear(root, render(data)))
      .catch((error) => {
        if (error.name === 'AbortError') return;
        clear(root, h('div', { class: 'page-head' }, h('h1', {}, 'Overview')), errorState(error, 'The overview', load));
      })
      .finally(() => performance.mark('overview-rendered'));
  };
  load();
  return () => controller.abort();
}
