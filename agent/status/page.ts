import type { StatusReport } from './connections.js';
import type { InstanceView } from './instance-view.js';
import type { TransitionRecord } from './transition-log.js';

/*
 * The status page. Server-rendered with the current state, then kept live by
 * polling the JSON API every 500 ms (no reload, no front-end build). The row
 * and timeline renderers are plain functions used on both sides: the server
 * calls them, and their source is shipped to the browser as is, so they may
 * reference nothing outside themselves.
 */

export function renderRows(list: InstanceView[]): string {
  const esc = (s: unknown) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  const secs = (ms: number) => (ms < 1000 ? `${Math.round(ms)} ms` : ms < 120_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms / 60_000)} min`);
  if (list.length === 0) return '<tr><td colspan="10" class="muted">no instances yet</td></tr>';
  return list
    .map((i) => {
      const note =
        i.failure ??
        (i.held > 0 ? `${i.held} connection(s) held while it wakes` : i.queuedSince ? `waiting for room in the node budget since ${i.queuedSince.slice(11, 19)}` : i.heldBy) ??
        (i.lastError ? `last error: ${i.lastError.message}` : '');
      const origin = i.origin ? `${esc(i.origin.jobId)}/${esc(i.origin.group)}<br><span class="muted">${esc(i.origin.allocId.slice(0, 8))}</span>` : `<span class="muted">${esc(i.source)}</span>`;
      return (
        `<tr data-id="${esc(i.id)}" data-state="${esc(i.state)}">` +
        `<td><b>${esc(i.id)}</b><br><span class="muted">${esc(i.address)} ${i.interface === null ? 'host port' : `on ${esc(i.interface)}`}</span></td>` +
        `<td><span class="state ${esc(i.state)}">${esc(i.state)}</span></td>` +
        `<td>${esc(i.runtime)}${i.mode ? ` ${esc(i.mode)}` : ''}<br><span class="muted">${esc(i.idlePolicy)}, idle ${secs(i.idleTimeoutMs)}, wake ${esc(i.wake)}</span></td>` +
        `<td>${origin}</td>` +
        `<td>${i.state === 'running' ? secs(i.idleForMs) : '–'}</td>` +
        `<td>${i.lastWakeMs === null ? '–' : `${i.lastWakeMs.toFixed(2)} ms`}</td>` +
        `<td>${i.sleeps} / ${i.wakes}</td>` +
        `<td>${i.checksAnswered}</td>` +
        `<td class="${i.failure ? 'bad' : 'muted'}">${esc(note)}</td>` +
        `<td class="actions"><button data-action="sleep" data-id="${esc(i.id)}" ${i.state === 'running' ? '' : 'disabled'}>sleep</button>` +
        `<button data-action="wake" data-id="${esc(i.id)}" ${i.state === 'sleeping' || i.state === 'failed' ? '' : 'disabled'}>wake</button></td>` +
        '</tr>'
      );
    })
    .join('');
}

export function renderTimeline(records: TransitionRecord[]): string {
  const esc = (s: unknown) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  if (records.length === 0) return '<li class="muted">nothing has happened yet</li>';
  return records
    .slice(-30)
    .reverse()
    .map((r) => `<li><time>${esc(r.at.slice(11, 23))}</time> <b>${esc(r.instance)}</b> ${esc(r.from)} → <span class="state ${esc(r.to)}">${esc(r.to)}</span> <span class="muted">${esc(r.reason)}</span></li>`)
    .join('');
}

export function renderSummary(report: StatusReport): string {
  const esc = (s: unknown) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  const b = report.budget;
  const chips = Object.entries(report.instances.byState)
    .map(([state, n]) => `<span class="state ${esc(state)}">${n} ${esc(state)}</span>`)
    .join(' ');
  const budget =
    `<span>active ${b.active}${b.maxActive === null ? '' : ` / ${b.maxActive}`} of ${report.instances.total}</span>` +
    (b.maxActiveMemory === null ? '' : ` <span>memory ${b.activeMemory} / ${b.maxActiveMemory} MiB</span>`) +
    (b.queued > 0 ? ` <span class="warn">${b.queued} wake(s) queued</span>` : '') +
    (b.overruns > 0 ? ` <span class="warn">${b.overruns} over budget</span>` : '');
  const link = (name: string, c: { connected: boolean; address: string; error?: string } | undefined) =>
    c === undefined ? `<span class="muted">${name}: not configured</span>` : `<span class="${c.connected ? 'ok' : 'bad'}" title="${esc(c.error ?? c.address)}">${name}: ${c.connected ? 'connected' : 'unreachable'}</span>`;
  const fallback = report.connections.nomad?.detail?.['fallback'];
  const why = typeof fallback === 'string' ? `<div class="bad">Nomad: blocking queries instead of the event stream: ${esc(fallback)}</div>` : '';
  return `<div>${chips || '<span class="muted">no instances</span>'}</div><div>${budget}</div><div>${link('Nomad', report.connections.nomad)} ${link('Consul', report.connections.consul)}</div>${why}`;
}

export function renderStatusPage(initial: { instances: InstanceView[]; status: StatusReport; transitions: TransitionRecord[] }): string {
  const lastSeq = initial.transitions.at(-1)?.seq ?? 0;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>doze</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  :root { --fg: #1d2330; --muted: #7a8294; --line: #e8ebf0; }
  body { font: 14px/1.45 system-ui, -apple-system, sans-serif; margin: 0; color: var(--fg); background: #fafbfc; }
  header { display: flex; align-items: baseline; gap: 1.5rem; padding: 1rem 2rem; background: #fff; border-bottom: 1px solid var(--line); flex-wrap: wrap; }
  header h1 { font-size: 1.3rem; margin: 0; letter-spacing: .02em; }
  #summary { display: flex; gap: 1.5rem; flex-wrap: wrap; }
  main { padding: 1rem 2rem; display: grid; grid-template-columns: minmax(0, 3fr) minmax(16rem, 1fr); gap: 1.5rem; }
  table { border-collapse: collapse; width: 100%; background: #fff; border: 1px solid var(--line); border-radius: 6px; }
  th, td { text-align: left; padding: .45rem .6rem; border-bottom: 1px solid var(--line); vertical-align: top; }
  th { font-weight: 600; color: var(--muted); font-size: .8rem; text-transform: uppercase; letter-spacing: .04em; }
  .muted { color: var(--muted); font-size: .85rem; }
  .state { font-weight: 600; padding: .05rem .5rem; border-radius: .7rem; font-size: .85rem; white-space: nowrap; }
  .running { background: #e3f6e8; color: #17692f; } .sleeping { background: #e7ecfb; color: #2842a5; }
  .pausing, .waking { background: #fff4d6; color: #8a5a00; } .failed { background: #fde4e4; color: #a11; }
  .ok { color: #17692f; } .bad { color: #a11; } .warn { color: #8a5a00; font-weight: 600; }
  .actions button { margin-right: .3rem; }
  aside h2, section h2 { font-size: .9rem; text-transform: uppercase; color: var(--muted); letter-spacing: .04em; }
  #timeline { list-style: none; padding: 0; margin: 0; font-size: .85rem; }
  #timeline li { padding: .25rem 0; border-bottom: 1px dashed var(--line); }
  #timeline time { color: var(--muted); font-variant-numeric: tabular-nums; }
  #token-row { margin: .75rem 0; display: flex; gap: .5rem; align-items: center; }
  #message { min-height: 1.2em; }
</style></head>
<body>
<header><h1>doze</h1><div id="summary">${renderSummary(initial.status)}</div><span id="updated" class="muted"></span></header>
<main>
<section>
<h2>Instances</h2>
<table><thead><tr><th>instance</th><th>state</th><th>runtime</th><th>allocation</th><th>idle for</th><th>last wake</th><th>sleeps / wakes</th><th>checks answered</th><th>note</th><th></th></tr></thead>
<tbody id="rows">${renderRows(initial.instances)}</tbody></table>
<div id="token-row"><label for="token">Token for actions</label><input id="token" type="password" autocomplete="off" placeholder="bearer token"><span id="message" class="muted"></span></div>
</section>
<aside><h2>Recent transitions</h2><ul id="timeline">${renderTimeline(initial.transitions)}</ul></aside>
</main>
<script>
// esbuild-based runners (tsx) wrap inner functions in __name(); the browser needs no names.
const __name = (fn) => fn;
const renderRows = ${renderRows.toString()};
const renderTimeline = ${renderTimeline.toString()};
const renderSummary = ${renderSummary.toString()};
let transitions = ${JSON.stringify(initial.transitions).replace(/</g, '\\u003c')};
let lastSeq = ${lastSeq};
const token = document.getElementById('token');
token.value = sessionStorage.getItem('doze-token') || '';
token.addEventListener('input', () => sessionStorage.setItem('doze-token', token.value));
async function refresh() {
  try {
    const [list, status, fresh] = await Promise.all([
      fetch('api/instances').then((r) => r.json()),
      fetch('api/status').then((r) => r.json()),
      fetch('api/transitions?after=' + lastSeq).then((r) => r.json()),
    ]);
    document.getElementById('rows').innerHTML = renderRows(list);
    document.getElementById('summary').innerHTML = renderSummary(status);
    if (fresh.length) {
      transitions = transitions.concat(fresh).slice(-200);
      lastSeq = fresh[fresh.length - 1].seq;
      document.getElementById('timeline').innerHTML = renderTimeline(transitions);
    }
    document.getElementById('updated').textContent = 'live · ' + new Date().toLocaleTimeString();
  } catch (e) {
    document.getElementById('updated').textContent = 'agent unreachable';
  }
}
document.getElementById('rows').addEventListener('click', async (event) => {
  const button = event.target.closest('button[data-action]');
  if (!button) return;
  const message = document.getElementById('message');
  const res = await fetch('api/instances/' + encodeURIComponent(button.dataset.id) + '/' + button.dataset.action, {
    method: 'POST', headers: token.value ? { authorization: 'Bearer ' + token.value } : {},
  });
  message.className = res.ok ? 'ok' : 'bad';
  message.textContent = res.status === 401 ? 'refused: a valid token is required' : res.ok ? button.dataset.action + ': done' : 'failed: HTTP ' + res.status;
  refresh();
});
setInterval(refresh, 500);
refresh();
</script>
</body></html>`;
}
