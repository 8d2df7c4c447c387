import test from 'ava';
import { EventEmitter } from 'node:events';
import type { Detector } from '../../agent/detector/detector.js';
import { TransitionLog } from '../../agent/status/transition-log.js';

const record = (instance: string, atMs: number) => ({ at: new Date(atMs).toISOString(), instance, from: 'running' as const, to: 'pausing' as const, reason: 'idle' });

test('the transition log keeps the last hour, bounded per instance and in all', (t) => {
  let now = Date.parse('2026-12-01T10:00:00Z');
  const log = new TransitionLog(new EventEmitter() as unknown as Detector, { windowMs: 60_000, perInstance: 5, total: 8 }, () => now);
  for (let n = 0; n < 20; n++) log.add(record('flappy', now - 1000 + n));
  log.add(record('calm', now));
  let kept = log.after(0);
  t.is(kept.filter((r) => r.instance === 'flappy').length, 5, 'a flapping instance keeps only its latest');
  t.is(kept.filter((r) => r.instance === 'calm').length, 1, 'and cannot crowd out the others');
  t.deepEqual(kept.filter((r) => r.instance === 'flappy').map((r) => r.seq), [16, 17, 18, 19, 20]);
  for (let n = 0; n < 10; n++) log.add(record(`i${n}`, now));
  t.is(log.after(0).length, 8, 'the total bound holds');
  now += 61_000;
  log.add(record('late', now));
  kept = log.after(0);
  t.deepEqual(kept.map((r) => r.instance), ['late'], 'older than the window: gone');
  t.deepEqual(log.after(kept[0]!.seq), []);
});
