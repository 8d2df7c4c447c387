import test from 'ava';
import { renderRows, renderTimelines } from '../../agent/status/page.js';
import type { InstanceView } from '../../agent/status/instance-view.js';

function view(overrides: Partial<InstanceView>): InstanceView {
  return {
    id: 'web', state: 'sleeping', sleeps: 1, wakes: 0, lastWakeMs: null, lastFirstResponseMs: null, idleForMs: 0, checksAnswered: 0,
    address: '10.0.0.5:8080', interface: 'veth1', runtime: 'freezer', mode: null, idlePolicy: 'requests', idleTimeoutMs: 500,
    heldBy: null, heldReason: null, failure: null, lastError: null, stateSince: '2026-11-28T00:00:00.000Z', queuedSince: null, memory: 0, freesMemory: false, managedSince: '2026-11-28T00:00:00.000Z', memoryUsage: null, held: 0,
    wake: 'retry', origin: null, source: 'static', busyGuard: { source: 'cpu-cgroup', file: '/sys/fs/cgroup/cpuacct/web/cpuacct.usage' },
    dryRun: false, wouldSleeps: 0, wouldWakes: 0, wouldAsleepMs: 0, wouldSleepSince: null, wouldFreeByteSeconds: 0, wouldRoom: null, whyAwake: null, whyAwakeText: null, savings: null, slowWakes: false,
    ...overrides,
  };
}

test('a row says where the instance is counted: on its interface, or on a host port', (t) => {
  t.regex(renderRows([view({})]), /10\.0\.0\.5:8080 on veth1/);
  t.regex(renderRows([view({ interface: null })]), /10\.0\.0\.5:8080 host port/);
  t.regex(renderRows([view({ interface: '<i>' })]), /on &#60;i&#62;/, 'escaped');
});

test('a row shows memory awake → asleep and in swap, or why reclaim is off (the browser test checks renderRows stays self-contained)', (t) => {
  const reclaim = { enabled: true, reason: null, afterMs: 10_000, reclaimed: true, last: null };
  const html = renderRows([view({ memoryUsage: { residentBytes: 2.5 * 2 ** 20, swappedBytes: 223 * 2 ** 20, compressedBytes: 89 * 2 ** 20, nodeBytes: 91.5 * 2 ** 20, awakeBytes: 227 * 2 ** 20, reclaim } })]);
  t.regex(html, /227 MiB awake<br>2\.5 MiB asleep<br><span class="muted">223 MiB in swap, 89 MiB compressed/);
  const off = renderRows([view({ memoryUsage: { residentBytes: 227 * 2 ** 20, swappedBytes: 0, compressedBytes: 0, nodeBytes: 227 * 2 ** 20, awakeBytes: null, reclaim: { ...reclaim, enabled: false, reason: 'no swap on this node', reclaimed: false } } })]);
  t.regex(off, /reclaim off: no swap on this node/);
});

test('a row says what the busy guard reads, and says it when it reads nothing', (t) => {
  t.regex(renderRows([view({})]), /busy guard: cpu-cgroup/);
  t.regex(renderRows([view({ busyGuard: { source: 'procfs', processes: 3 } })]), /busy guard: procfs/);
  const none = renderRows([view({ busyGuard: { source: 'unavailable', reason: 'no-processes', message: 'its cgroup holds no process yet' } })]);
  t.regex(none, /class="warn">busy guard: no CPU reading \(its cgroup holds no process yet\)/);
  t.notRegex(renderRows([view({ busyGuard: { source: 'unavailable', reason: 'guard-off', message: 'off' } })]), /busy guard/, 'busyCpu 0 is a choice, not a warning');
});

test('a timeline tiles the window with the spans of a known sequence of sleeps and wakes', (t) => {
  const now = Date.parse('2026-12-01T10:00:00.000Z');
  const at = (secondsAgo: number) => new Date(now - secondsAgo * 1000).toISOString();
  const r = (seq: number, secondsAgo: number, from: string, to: string) => ({ seq, at: at(secondsAgo), instance: 'web', from, to, reason: 'test' }) as never;
  const records = [
    r(1, 150, 'running', 'pausing'), // before the window: sets nothing but its successor's "from"
    r(2, 80, 'pausing', 'sleeping'),
    r(3, 50, 'sleeping', 'waking'),
    r(4, 49, 'waking', 'running'),
    r(5, 20, 'running', 'failed'),
  ];
  const html = renderTimelines([view({ state: 'failed', managedSince: at(500) })], records, now, 100_000);
  const spans = [...html.matchAll(/class="span (\w+)" data-state="\w+" data-from="(\d+)" data-to="(\d+)" style="left:([\d.]+)%;width:([\d.]+)%"/g)].map((m) => [m[1], Number(m[4]), Number(m[5])]);
  t.deepEqual(spans, [
    ['pausing', 0, 20],
    ['sleeping', 20, 30],
    ['waking', 50, 1],
    ['running', 51, 29],
    ['failed', 80, 20],
  ]);
  t.regex(html, /1 wake</);
  // An instance managed for less than the window starts where it was added.
  const young = renderTimelines([view({ state: 'running', managedSince: at(10) })], [], now, 100_000);
  t.regex(young, /class="span running" [^>]*style="left:90\.000%;width:10\.000%"/);
});

test('the timeline draws a dry run\'s would-sleep span apart from a real sleep, and the row says what it would have saved', (t) => {
  const at = (s: number) => new Date(Date.parse('2026-11-28T00:00:00.000Z') + s * 1000).toISOString();
  const records = [
    { seq: 1, at: at(10), instance: 'web', from: 'running' as const, to: 'sleeping' as const, reason: 'dry run: no traffic for 1000 ms', rehearsed: true as const },
    { seq: 2, at: at(40), instance: 'web', from: 'sleeping' as const, to: 'running' as const, reason: 'dry run: traffic', rehearsed: true as const },
  ];
  const list = [view({ state: 'running', dryRun: true, wouldSleeps: 1, wouldWakes: 1, wouldAsleepMs: 30_000 })];
  const html = renderTimelines(list, records, Date.parse(at(60)), 60_000);
  t.regex(html, /<span class="span would-sleep" data-state="would-sleep" data-from="\d+" data-to="\d+"/);
  t.notRegex(html, /data-state="sleeping"/, 'never drawn as a real sleep');
  t.regex(html, /dry run, 1 would-be/);
  t.regex(renderRows(list), /dry run: 1× 30\.0 s/);
});

test('a dry run with a budget says what the budget would have done at its would-be wakes', (t) => {
  const html = renderRows([view({ state: 'running', dryRun: true, wouldSleeps: 3, wouldWakes: 3, wouldRoom: { fits: 1, evicts: 2, waits: 0, last: { outcome: 'evicts', victims: ['api', 'cron'] } } })]);
  t.regex(html, /budget: 1 fit, 2 evict, 0 wait; last would have put api, cron to sleep/);
  t.notRegex(renderRows([view({ state: 'running', dryRun: true })]), /would-room/, 'nothing weighed yet: no line');
});
