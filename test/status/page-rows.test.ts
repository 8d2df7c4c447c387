import test from 'ava';
import { renderRows } from '../../agent/status/page.js';
import type { InstanceView } from '../../agent/status/instance-view.js';

function view(overrides: Partial<InstanceView>): InstanceView {
  return {
    id: 'web', state: 'sleeping', sleeps: 1, wakes: 0, lastWakeMs: null, lastFirstResponseMs: null, idleForMs: 0, checksAnswered: 0,
    address: '10.0.0.5:8080', interface: 'veth1', runtime: 'freezer', mode: null, idlePolicy: 'requests', idleTimeoutMs: 500,
    heldBy: null, failure: null, lastError: null, stateSince: '2026-11-28T00:00:00.000Z', queuedSince: null, memory: 0, freesMemory: false, managedSince: '2026-11-28T00:00:00.000Z', memoryUsage: null, held: 0,
    wake: 'retry', origin: null, source: 'static',
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
  const html = renderRows([view({ memoryUsage: { residentBytes: 2.5 * 2 ** 20, swappedBytes: 223 * 2 ** 20, awakeBytes: 227 * 2 ** 20, reclaim } })]);
  t.regex(html, /memory 227 MiB awake → 2\.5 MiB asleep, 223 MiB in swap/);
  const off = renderRows([view({ memoryUsage: { residentBytes: 227 * 2 ** 20, swappedBytes: 0, awakeBytes: null, reclaim: { ...reclaim, enabled: false, reason: 'no swap on this node', reclaimed: false } } })]);
  t.regex(off, /reclaim off: no swap on this node/);
});
