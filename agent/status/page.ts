import type { StatusReport } from './status-report.js';
import type { InstanceView } from './instance-view.js';
import type { LatencyDistribution } from './latency.js';
import type { TransitionRecord } from './transition-log.js';
import type { WakeRecord } from './wake-log.js';

/*
 * The status page. Server-rendered with the current state, then kept live by
 * polling the JSON API every 500 ms (no reload, no front-end build). The row
 * and timeline renderers are plain functions used on both sides: the server
 * calls them, and their source is shipped to the browser as is, so they may
 * reference nothing outside themselves.
 */

/** A dry run's budget rehearsal: how its would-be wakes would have found room. */
function wouldRoom(i: InstanceView): string {
  const r = i.wouldRoom;
  if (!r) return '';
  const esc = (s: unknown) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  const last = r.last?.outcome === 'evicts' ? `; last would have put ${r.last.victims.join(', ')} to sleep` : r.last?.outcome === 'waits' ? '; last would have waited for room' : '';
  return `<br><span class="muted would-room" title="what the node budget would have done at its would-be wakes">budget: ${r.fits} fit, ${r.evicts} evict, ${r.waits} wait${esc(last)}</span>`;
}

export function renderRows(list: InstanceView[]): string {
  // Self-contained (shipped to the browser with toString()): its helpers live inside it.
  const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(bytes < 10 * 2 ** 20 ? 1 : 0)} MiB`;
  // Memory awake vs. now (and in swap), and why reclaim is off when it is configured but cannot run.
  const memoryLine = (i: InstanceView, esc: (s: unknown) => string): string => {
    const m = i.memoryUsage;
    if (!m) return '';
    const now = i.state === 'running' ? `${mib(m.residentBytes)} awake` : `${m.awakeBytes === null ? '' : `${mib(m.awakeBytes)} awake<br>`}${mib(m.residentBytes)} asleep`;
    // What the node pays for its swapped pages: zram keeps them compressed in RAM, a disk costs none.
    const swapped = m.swappedBytes > 0 ? `<br><span class="muted">${mib(m.swappedBytes)} in swap${m.compressedBytes > 0 ? `, ${mib(m.compressedBytes)} compressed` : ''}</span>` : '';
    const off = m.reclaim && !m.reclaim.enabled && m.reclaim.reason ? `<br><span class="warn">reclaim off: ${esc(m.reclaim.reason)}</span>` : '';
    return `${now}${swapped}${off}`;
  };
  const esc = (s: unknown) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  const secs = (ms: number) => (ms < 1000 ? `${Math.round(ms)} ms` : ms < 120_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms / 60_000)} min`);
  const clock = (iso: string) => esc(iso.slice(11, 19));
  const ms = (v: number | null) => (v === null ? '–' : `${v.toFixed(v < 10 ? 2 : 1)} ms`);
  // Why it is awake or asleep: the idle countdown, or what holds it awake (busy), or what it waits for.
  const why = (i: InstanceView): [string, string] => {
    if (i.failure) return ['failed', esc(i.failure)];
    if (i.held > 0) return ['waking', `${i.held} connection(s) held while it wakes`];
    if (i.queuedSince) return ['waking', `waiting for room in the node budget since ${clock(i.queuedSince)}`];
    if (i.state === 'running' && i.wouldSleepSince) return ['would-sleep', `dry run: would be asleep since ${clock(i.wouldSleepSince)}`];
    // Why it is awake, with its evidence (client, age, CPU figure), under the countdown.
    const because = i.whyAwakeText && i.whyAwakeText.length > 0 ? `<br><span class="muted awake-why">${i.whyAwakeText.map(esc).join('<br>')}</span>` : '';
    if (i.state === 'running' && i.heldBy) return ['busy', `busy: ${esc(i.heldBy)}${because}`];
    if (i.state === 'running') return ['idle', `idle ${secs(i.idleForMs)} of ${secs(i.idleTimeoutMs)}${because}`];
    if (i.state === 'sleeping') return ['asleep', `asleep since ${clock(i.stateSince)}`];
    return ['transition', `${esc(i.state)} since ${clock(i.stateSince)}`];
  };
  // Memory awake and asleep: measured from its memory cgroup when it has one (memoryLine), else
  // config `memory` (a frozen or paused process keeps it, a snapshot or scale gives it back).
  const memory = (i: InstanceView) =>
    i.memoryUsage
      ? memoryLine(i, esc)
      : i.memory === 0 ? '<span class="muted">–</span>' : `${i.memory} MiB awake<br><span class="muted">${i.freesMemory ? '0 MiB' : `${i.memory} MiB`} asleep</span>`;
  // What the busy guard reads; said in the row when it reads nothing (the instance then sleeps on traffic alone).
  const guard = (i: InstanceView) => {
    const g = i.busyGuard;
    if (g.source === 'unavailable') return g.reason === 'guard-off' ? '' : `<br><span class="warn">busy guard: no CPU reading (${esc(g.message)})</span>`;
    return `<br><span class="muted" title="${g.source === 'cpu-cgroup' ? esc(g.file) : `${g.processes} process(es) summed from /proc`}">busy guard: ${g.source}</span>`;
  };
  if (list.length === 0) return '<tr><td colspan="10" class="muted">no instances yet</td></tr>';
  return list
    .map((i) => {
      const [whyKind, whyText] = why(i);
      const origin = i.origin ? `${esc(i.origin.jobId)}/${esc(i.origin.group)}<br><span class="muted">${esc(i.origin.allocId.slice(0, 8))}</span>` : `<span class="muted">${esc(i.source)}</span>`;
      const lastError = i.lastError ? `${esc(i.lastError.message)}<br><span class="muted">${clock(i.lastError.at)}</span>` : '<span class="muted">–</span>';
      return (
        `<tr data-id="${esc(i.id)}" data-state="${esc(i.state)}">` +
        `<td><b>${esc(i.id)}</b><br><span class="muted">${esc(i.address)} ${i.interface === null ? 'host port' : `on ${esc(i.interface)}`}</span></td>` +
        `<td><span class="state ${esc(i.state)}">${esc(i.state)}</span></td>` +
        `<td class="why ${whyKind}" data-why="${whyKind}">${whyText}</td>` +
        `<td>${esc(i.runtime)}${i.mode ? ` ${esc(i.mode)}` : ''}<br><span class="muted">${esc(i.idlePolicy)}, wake ${esc(i.wake)}</span>${guard(i)}</td>` +
        `<td>${origin}</td>` +
        `<td>${ms(i.lastWakeMs)}<br><span class="muted" title="first packet → first response byte">${i.lastFirstResponseMs === null ? '' : `answered ${ms(i.lastFirstResponseMs)}`}</span>` +
        (i.slowWakes && i.savings ? `<br><span class="bad slow-wakes" title="first-response p99 today is over coldStartThreshold">slow wakes: p99 ${ms(i.savings.wakes.firstResponseP99Ms)}</span>` : '') +
        '</td>' +
        `<td>${i.sleeps} / ${i.wakes}<br><span class="muted">${i.checksAnswered} checks</span>` +
        (i.savings ? `<br><span class="muted savings" title="share of the last hour / day asleep; first response p99 today">asleep ${Math.round(i.savings.lastHour.asleepShare * 100)}% / ${Math.round(i.savings.lastDay.asleepShare * 100)}%${i.savings.wakes.firstResponseP99Ms === null ? '' : `, p99 ${ms(i.savings.wakes.firstResponseP99Ms)}`}</span>` : '') +
        (i.dryRun ? `<br><span class="dry-run" title="dry run, never frozen: would have slept ${i.wouldSleeps} time(s) for ${secs(i.wouldAsleepMs)}, freeing ${mib(i.wouldFreeByteSeconds / 3600)}·h">dry run: ${i.wouldSleeps}× ${secs(i.wouldAsleepMs)}</span>${wouldRoom(i)}` : '') +
        '</td>' +
        `<td class="memory">${memory(i)}</td>` +
        `<td class="last-error ${i.lastError ? 'bad' : ''}">${lastError}</td>` +
        `<td class="actions"><button data-action="sleep" data-id="${esc(i.id)}" ${i.state === 'running' ? '' : 'disabled'}>sleep</button>` +
        `<button data-action="wake" data-id="${esc(i.id)}" ${i.state === 'sleeping' || i.state === 'failed' ? '' : 'disabled'}>wake</button></td>` +
        '</tr>'
      );
    })
    .join('');
}

/**
 * One bar per instance over the last `windowMs`: its states as coloured spans (awake, asleep,
 * waking or pausing, failed), built from the transition log.
 */
export function renderTimelines(list: InstanceView[], records: TransitionRecord[], nowMs: number, windowMs: number): string {
  const esc = (s: unknown) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  const from = nowMs - windowMs;
  const pct = (ms: number) => (Math.max(0, Math.min(windowMs, ms - from)) / windowMs) * 100;
  const clock = (ms: number) => new Date(ms).toISOString().slice(11, 19);
  const label: Record<string, string> = { 'would-sleep': 'would be asleep (dry run)', running: 'awake', sleeping: 'asleep', waking: 'waking', pausing: 'pausing', failed: 'failed' };
  if (list.length === 0) return '<div class="muted">no instances yet</div>';
  const ago = (ms: number) => (ms === 0 ? 'now' : ms >= 60_000 ? `−${Math.round(ms / 60_000)} min` : `−${Math.round(ms / 1000)} s`);
  const axis = [1, 0.75, 0.5, 0.25, 0].map((f) => `<span style="left:${(1 - f) * 100}%">${ago(f * windowMs)}</span>`).join('');
  // One pass over the log (a node may have many instances and thousands of transitions).
  const byInstance = new Map<string, TransitionRecord[]>();
  for (const r of records) {
    if (Date.parse(r.at) < from) continue;
    const mine = byInstance.get(r.instance);
    if (mine) mine.push(r);
    else byInstance.set(r.instance, [r]);
  }
  const bars = list.map((i) => {
    const mine = byInstance.get(i.id) ?? [];
    let state: string = mine.length > 0 ? (mine[0]!.rehearsed && mine[0]!.from === 'sleeping' ? 'would-sleep' : mine[0]!.from) : i.wouldSleepSince ? 'would-sleep' : i.state;
    let at = Math.max(from, Date.parse(i.managedSince));
    const spans: Array<{ state: string; from: number; to: number }> = [];
    for (const r of mine) {
      const t = Math.max(at, Date.parse(r.at));
      if (t > at) spans.push({ state, from: at, to: t });
      // A dry run's would-sleep span: the instance stayed awake, drawn apart from a real sleep.
      state = r.rehearsed && r.to === 'sleeping' ? 'would-sleep' : r.to;
      at = t;
    }
    spans.push({ state, from: at, to: nowMs });
    const wakes = mine.filter((r) => r.to === 'waking').length;
    const wouldWakes = mine.filter((r) => r.rehearsed && r.to === 'running').length;
    const html = spans
      .map((sp) => `<span class="span ${esc(sp.state)}" data-state="${esc(sp.state)}" data-from="${sp.from}" data-to="${sp.to}" style="left:${pct(sp.from).toFixed(3)}%;width:${(pct(sp.to) - pct(sp.from)).toFixed(3)}%" title="${esc(label[sp.state] ?? sp.state)} ${clock(sp.from)}–${clock(sp.to)}"></span>`)
      .join('');
    return `<div class="timeline-row" data-id="${esc(i.id)}"><div class="timeline-label"><b>${esc(i.id)}</b> <span class="muted">${wakes} wake${wakes === 1 ? '' : 's'}${i.dryRun ? ` · dry run, ${wouldWakes} would-be` : ''}</span></div><div class="bar">${html}</div></div>`;
  });
  return `${bars.join('')}<div class="timeline-row"><div class="timeline-label"></div><div class="axis">${axis}</div></div>`;
}

/** A histogram's buckets as horizontal bars (the agent's doze_wake_seconds / doze_first_response_seconds). */
export function renderLatency(title: string, dist: LatencyDistribution): string {
  const esc = (s: unknown) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  const max = Math.max(1, ...dist.buckets.map((b) => b.count));
  let previous: number | null = null;
  const rows = dist.buckets.map((b) => {
    const range = b.leMs === null ? `> ${previous} ms` : `≤ ${b.leMs} ms`;
    previous = b.leMs;
    return `<div class="hist-row" data-le="${b.leMs ?? '+Inf'}" data-count="${b.count}"><span class="hist-label">${range}</span><span class="hist-bar"><span style="width:${((b.count / max) * 100).toFixed(1)}%"></span></span><span class="hist-count">${b.count || ''}</span></div>`;
  });
  return `<h3>${esc(title)} <span class="muted">${dist.count} wake${dist.count === 1 ? '' : 's'}</span></h3>${rows.join('')}`;
}

/**
 * The latest wakes, newest first: what woke it (the packet: source, protocol, TCP flags, payload),
 * how long the runtime took and when the instance first answered. Self-contained: the page ships
 * it to the browser as text (renderWakes.toString()), so it imports nothing.
 */
export function renderWakes(wakes: WakeRecord[]): string {
  const esc = (s: unknown) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  const ms = (v: number | null) => (v === null ? '–' : `${v.toFixed(v < 10 ? 2 : 1)} ms`);
  const packet = (p: WakeRecord['packet']) => {
    if (!p) return '';
    const host = p.sourceAddr.includes(':') ? `[${p.sourceAddr}]` : p.sourceAddr;
    const from = p.sourcePort === undefined ? host : `${host}:${p.sourcePort}`;
    const flags = p.tcpFlags && p.tcpFlags.length > 0 ? ` ${p.tcpFlags.join(',')}` : '';
    return `<br><span class="muted wake-packet" title="the packet that woke it">${esc(`${p.protocol} from ${from}${flags}${p.hasPayload ? ' with payload' : ''}`)}</span>`;
  };
  if (wakes.length === 0) return '<tr><td colspan="4" class="muted">no wakes yet</td></tr>';
  return wakes
    .slice(-20)
    .reverse()
    .map((w) => `<tr data-instance="${esc(w.instance)}"><td><time>${esc(w.at.slice(11, 23))}</time></td><td><b>${esc(w.instance)}</b><br><span class="muted">${esc(w.reason)}</span>${packet(w.packet)}</td>` +
      `<td>${w.failed ? `<span class="bad">${esc(w.failed)}</span>` : ms(w.wakeMs)}${w.thawedBy === 'event-reader' ? '<br><span class="muted thawed-at-event" title="thawed by the wake-event reader the moment the packet was seen">at the event</span>' : ''}</td><td class="first-response">${ms(w.firstResponseMs)}</td></tr>`)
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

/** The node at a glance: awake of the budget, instances, awake memory of the budget, memory freed by sleepers, upstreams. */
export function renderSummary(report: StatusReport): string {
  const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(bytes < 10 * 2 ** 20 ? 1 : 0)} MiB`;
  const esc = (s: unknown) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  const b = report.budget;
  const card = (key: string, value: string, caption: string, warn = false) =>
    `<div class="card${warn ? ' warn' : ''}" data-card="${key}"><div class="value">${value}</div><div class="caption">${caption}</div></div>`;
  const chips = Object.entries(report.instances.byState)
    .map(([state, n]) => `<span class="state ${esc(state)}">${n} ${esc(state)}</span>`)
    .join(' ');
  const versions = report.versions ?? {};
  const versionOf = (name: string) => {
    const v = name === 'Nomad' ? versions.nomad : versions.consul;
    return v?.version ? ` ${esc(v.version)}` : '';
  };
  const link = (name: string, c: { connected: boolean; address: string; error?: string } | undefined) =>
    c === undefined ? `<span class="muted">${name}: not configured</span>` : `<span class="${c.connected ? 'ok' : 'bad'}" data-version="${versionOf(name).trim()}" title="${esc(c.error ?? c.address)}">${name}${versionOf(name)}: ${c.connected ? 'connected' : 'unreachable'}</span>`;
  const mem = report.memory;
  const memory = !mem
    ? ''
    : mem.swap.available
      ? card('swap', `${mib(mem.swap.usedBytes)} <small>/ ${mib(mem.swap.totalBytes)}</small>`, `swap in use (freezer reclaim)${mem.compressedBytes > 0 ? `, sleepers' share ${mib(mem.compressedBytes)} of RAM in zram` : ''}`)
      : card('swap', 'none', mem.swap.reason ? esc(mem.swap.reason) : 'no swap on this node: reclaim off', true);
  const fallback = report.connections.nomad?.detail?.['fallback'];
  const why = typeof fallback === 'string' ? `<div class="bad">Nomad: blocking queries instead of the event stream: ${esc(fallback)}</div>` : '';
  const w = report.wakeEvents;
  const events =
    w.gaps === 0 && w.missed === 0
      ? ''
      : card('wake-events', `${w.gaps}`, `wake-event rescan(s)${w.lastGap ? ` · last ${esc(w.lastGap.at.slice(11, 19))}: ${esc(w.lastGap.reason)}` : ''}${w.missed > 0 ? ` · ${w.missed} wake(s) made by the watchdog` : ''}`, true);
  return (
    card('awake', `${b.active}${b.maxActive === null ? '' : ` <small>/ ${b.maxActive}</small>`}`, b.maxActive === null ? 'awake (no budget)' : 'awake of the budget', b.maxActive !== null && b.active > b.maxActive) +
    card('instances', `${report.instances.total}`, chips || 'instances') +
    card('memory', `${b.activeMemory}${b.maxActiveMemory === null ? '' : ` <small>/ ${b.maxActiveMemory}</small>`} <small>MiB</small>`, b.maxActiveMemory === null ? 'awake memory (no budget)' : 'awake memory of the budget', b.maxActiveMemory !== null && b.activeMemory > b.maxActiveMemory) +
    card('freed', `${b.freedMemory} <small>MiB</small>`, 'freed by sleeping instances') +
    savingsCard(report, card) +
    (b.queued > 0 || b.overruns > 0 ? card('budget', `${b.queued}`, `wake(s) queued · ${b.overruns} over budget`, true) : '') +
    events +
    memory +
    (report.hostPorts.interfaces.length > 0 ? card('host-ports', `${report.hostPorts.interfaces.length}`, `interfaces watched for host ports: ${report.hostPorts.interfaces.map(esc).join(', ')}`) : '') +
    `<div class="links">${link('Nomad', report.connections.nomad)}<br>${link('Consul', report.connections.consul)}</div>` +
    why
  );
}

/** The node card's savings row: asleep share today and this hour, memory freed (measured), wakes and their first response. */
function savingsCard(report: StatusReport, card: (key: string, value: string, caption: string) => string): string {
  const s = report.savings;
  if (!s) return '';
  const pct = (share: number) => `${Math.round(share * 100)}%`;
  const ms = (v: number | null) => (v === null ? '–' : `${v.toFixed(v < 10 ? 1 : 0)} ms`);
  const gibHours = s.memoryFreedByteSeconds / 2 ** 30 / 3600;
  return card(
    'savings',
    `${pct(s.lastDay.asleepShare)} <small>asleep today</small>`,
    `${pct(s.lastHour.asleepShare)} this hour · ${gibHours.toFixed(gibHours < 10 ? 2 : 0)} GiB·h freed (measured) · ${s.wakes.count} wake(s) today, first response p50 ${ms(s.wakes.firstResponseP50Ms)}, p99 ${ms(s.wakes.firstResponseP99Ms)}`,
  );
}

export interface PageData {
  instances: InstanceView[];
  status: StatusReport;
  transitions: TransitionRecord[];
  wakes: WakeRecord[];
  latency: { wake: LatencyDistribution; firstResponse: LatencyDistribution };
  nowMs: number;
  windowMs: number;
}

export function renderStatusPage(initial: PageData): string {
  const lastSeq = initial.transitions.at(-1)?.seq ?? 0;
  const json = (value: unknown) => JSON.stringify(value).replace(/</g, '\\u003c');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>doze</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  :root { --fg: #1d2330; --muted: #7a8294; --line: #e8ebf0; --awake: #3fb463; --asleep: #5b78d6; --waking: #f0b429; --failed: #d64545; }
  body { font: 14px/1.45 system-ui, -apple-system, sans-serif; margin: 0; color: var(--fg); background: #fafbfc; }
  header { display: flex; align-items: center; gap: 1.5rem; padding: 1rem 2rem; background: #fff; border-bottom: 1px solid var(--line); flex-wrap: wrap; }
  header h1 { font-size: 1.3rem; margin: 0; letter-spacing: .02em; }
  #summary { display: flex; gap: .75rem; flex-wrap: wrap; align-items: stretch; }
  .card { border: 1px solid var(--line); border-radius: 6px; padding: .4rem .8rem; min-width: 7.5rem; background: #fff; }
  .card .value { font-size: 1.35rem; font-weight: 650; font-variant-numeric: tabular-nums; }
  .card .value small { font-size: .8rem; color: var(--muted); font-weight: 500; }
  .card .caption { font-size: .78rem; color: var(--muted); }
  .card.warn { border-color: var(--waking); }
  .links { font-size: .85rem; align-self: center; }
  main { padding: 1rem 2rem; display: grid; grid-template-columns: minmax(0, 3fr) minmax(18rem, 1fr); gap: 1.5rem; }
  main > .wide { grid-column: 1 / -1; }
  /* A narrow window stacks the side column under the tables; a table wider than its column scrolls inside it. */
  @media (max-width: 1300px) { main { grid-template-columns: minmax(0, 1fr); } }
  .scroll { overflow-x: auto; }
  #latency-wake, #latency-first { max-width: 40rem; }
  table { border-collapse: collapse; width: 100%; background: #fff; border: 1px solid var(--line); border-radius: 6px; }
  th, td { text-align: left; padding: .45rem .6rem; border-bottom: 1px solid var(--line); vertical-align: top; }
  th { font-weight: 600; color: var(--muted); font-size: .8rem; text-transform: uppercase; letter-spacing: .04em; }
  .muted { color: var(--muted); font-size: .85rem; }
  .state { font-weight: 600; padding: .05rem .5rem; border-radius: .7rem; font-size: .85rem; white-space: nowrap; }
  .state.running { background: #e3f6e8; color: #17692f; } .state.sleeping { background: #e7ecfb; color: #2842a5; }
  .state.pausing, .state.waking { background: #fff4d6; color: #8a5a00; } .state.failed { background: #fde4e4; color: #a11; }
  td.why { min-width: 9rem; } td.memory { white-space: nowrap; }
  .why.busy { color: #8a5a00; font-weight: 600; } .why.failed { color: #a11; }
  .ok { color: #17692f; } .bad { color: #a11; } .warn { color: #8a5a00; font-weight: 600; }
  .actions button { margin-right: .3rem; }
  h2 select { margin-left: .5rem; font-size: .8rem; text-transform: none; }
  h2 { font-size: .9rem; text-transform: uppercase; color: var(--muted); letter-spacing: .04em; }
  h3 { font-size: .85rem; margin: .6rem 0 .3rem; }
  #timelines { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: .6rem .8rem; }
  .timeline-row { display: flex; align-items: center; gap: .8rem; margin: .25rem 0; }
  .timeline-label { width: 11rem; flex: none; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  .bar, .axis { position: relative; flex: 1; height: 1.1rem; }
  .bar { background: #f1f3f6; border-radius: 3px; overflow: hidden; }
  .bar .span { position: absolute; top: 0; bottom: 0; min-width: 2px; }
  .span.running { background: var(--awake); } .span.sleeping { background: var(--asleep); }
  .span.waking, .span.pausing { background: var(--waking); } .span.failed { background: var(--failed); }
  .span.would-sleep { background: repeating-linear-gradient(135deg, var(--asleep) 0 4px, transparent 4px 8px); }
  .axis { height: 1rem; font-size: .75rem; color: var(--muted); }
  .axis span { position: absolute; transform: translateX(-50%); white-space: nowrap; }
  .axis span:first-child { transform: none; } .axis span:last-child { transform: translateX(-100%); }
  .legend { font-size: .8rem; color: var(--muted); display: flex; gap: 1rem; margin-top: .4rem; }
  .legend i { display: inline-block; width: .8rem; height: .8rem; border-radius: 2px; vertical-align: -1px; margin-right: .3rem; }
  .hist-row { display: flex; gap: .5rem; align-items: center; font-size: .8rem; font-variant-numeric: tabular-nums; }
  .hist-label { width: 5.5rem; text-align: right; color: var(--muted); }
  .hist-bar { flex: 1; height: .75rem; background: #f1f3f6; border-radius: 2px; }
  .hist-bar span { display: block; height: 100%; background: var(--asleep); border-radius: 2px; }
  #latency-first .hist-bar span { background: var(--awake); }
  .hist-count { width: 2.5rem; }
  #timeline { list-style: none; padding: 0; margin: 0; font-size: .85rem; }
  #timeline li { padding: .25rem 0; border-bottom: 1px dashed var(--line); }
  time { color: var(--muted); font-variant-numeric: tabular-nums; }
  #token-row { margin: .75rem 0; display: flex; gap: .5rem; align-items: center; }
  #message { min-height: 1.2em; }
</style></head>
<body>
<header><h1>doze</h1><div id="summary">${renderSummary(initial.status)}</div><span id="updated" class="muted"></span></header>
<main>
<section class="wide">
<h2>Timeline <select id="window" aria-label="timeline window"><option value="3600000">last hour</option><option value="600000">last 10 min</option><option value="60000">last minute</option></select></h2>
<div id="timelines">${renderTimelines(initial.instances, initial.transitions, initial.nowMs, initial.windowMs)}</div>
<div class="legend"><span><i style="background:#f1f3f6;border:1px solid var(--line)"></i>not managed</span><span><i style="background:var(--awake)"></i>awake</span><span><i style="background:var(--asleep)"></i>asleep</span><span><i style="background:var(--waking)"></i>waking / pausing</span><span><i style="background:var(--failed)"></i>failed</span><span><i style="background:repeating-linear-gradient(135deg,var(--asleep) 0 3px,transparent 3px 6px)"></i>would be asleep (dry run)</span></div>
</section>
<section>
<h2>Instances</h2>
<div class="scroll"><table><thead><tr><th>instance</th><th>state</th><th>idle or busy</th><th>runtime</th><th>allocation</th><th>last wake</th><th>sleeps / wakes</th><th>memory</th><th>last error</th><th></th></tr></thead>
<tbody id="rows">${renderRows(initial.instances)}</tbody></table></div>
<div id="token-row"><label for="token">Token for actions</label><input id="token" type="password" autocomplete="off" placeholder="bearer token"><span id="message" class="muted"></span></div>
<h2>Recent wakes</h2>
<table><thead><tr><th>at</th><th>instance</th><th>wake (runtime resumed)</th><th>first response</th></tr></thead>
<tbody id="wakes">${renderWakes(initial.wakes)}</tbody></table>
</section>
<aside>
<h2>Wake latency</h2>
<div id="latency-wake">${renderLatency('first packet → resumed', initial.latency.wake)}</div>
<div id="latency-first">${renderLatency('first packet → first response byte', initial.latency.firstResponse)}</div>
<h2>Recent transitions</h2><ul id="timeline">${renderTimeline(initial.transitions)}</ul>
</aside>
</main>
<script>
// esbuild-based runners (tsx) wrap inner functions in __name(); the browser needs no names.
const __name = (fn) => fn;
const renderRows = ${renderRows.toString()};
const renderTimeline = ${renderTimeline.toString()};
const renderTimelines = ${renderTimelines.toString()};
const savingsCard = ${savingsCard.toString()};
const renderSummary = ${renderSummary.toString()};
const renderLatency = ${renderLatency.toString()};
const renderWakes = ${renderWakes.toString()};
// Transitions are kept for the agent's whole window; the view may show less of it.
const windowMs = ${initial.windowMs};
let viewMs = windowMs;
// The agent's clock, not the browser's: spans are placed against the times the agent wrote.
const skewMs = ${initial.nowMs} - Date.now();
let transitions = ${json(initial.transitions)};
let lastSeq = ${lastSeq};
const token = document.getElementById('token');
token.value = sessionStorage.getItem('doze-token') || '';
token.addEventListener('input', () => sessionStorage.setItem('doze-token', token.value));
let lastList = ${json(initial.instances)};
function drawTimelines(now) {
  document.getElementById('timelines').innerHTML = renderTimelines(lastList, transitions, now, viewMs);
}
document.getElementById('window').addEventListener('change', (event) => {
  viewMs = Number(event.target.value);
  drawTimelines(Date.now() + skewMs);
});
async function refresh() {
  try {
    const [list, status, fresh, wakes, latency] = await Promise.all([
      fetch('api/instances').then((r) => r.json()),
      fetch('api/status').then((r) => r.json()),
      fetch('api/transitions?after=' + lastSeq).then((r) => r.json()),
      fetch('api/wakes').then((r) => r.json()),
      fetch('api/wake-latency').then((r) => r.json()),
    ]);
    const now = Date.now() + skewMs;
    // Refreshes overlap (the timer and an action's own): keep only what is newer than what we have.
    const newer = fresh.filter((r) => r.seq > lastSeq);
    if (newer.length) {
      transitions = transitions.concat(newer);
      lastSeq = newer[newer.length - 1].seq;
      document.getElementById('timeline').innerHTML = renderTimeline(transitions);
    }
    transitions = transitions.filter((r) => Date.parse(r.at) >= now - windowMs);
    document.getElementById('rows').innerHTML = renderRows(list);
    document.getElementById('summary').innerHTML = renderSummary(status);
    lastList = list;
    drawTimelines(now);
    document.getElementById('wakes').innerHTML = renderWakes(wakes);
    document.getElementById('latency-wake').innerHTML = renderLatency('first packet → resumed', latency.wake);
    document.getElementById('latency-first').innerHTML = renderLatency('first packet → first response byte', latency.firstResponse);
    document.getElementById('updated').textContent = 'live · ' + new Date(now).toLocaleTimeString();
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
