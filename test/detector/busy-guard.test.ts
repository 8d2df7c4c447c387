import test from 'ava';
import { busyWindowMs, guardIdle, judgeBusy, keepSamples, type BusyState, type UsageSample } from '../../agent/detector/busy-guard.js';
import { describeHold, describeIdle, type BusyDetail } from '../../agent/detector/reasons.js';
import { parseBlkio, parseCpuStat, parseIoStat, parseProcIo, parseProcStat } from '../../agent/cgroups/cpu-usage.js';

const MS = 1_000_000n;
const at = (ms: number, cpuMs: number, ioBytes?: number, identity = 'cg'): UsageSample => ({ atNs: BigInt(ms) * MS, identity, cpuUs: cpuMs * 1000, ioBytes });
const idle = { kind: 'idle' as const, reason: { kind: 'quiet' as const, quietMs: 300, nothingInFlight: true } };
const cpu300: BusyDetail = { resource: 'cpu', cpuMs: 300, spanMs: 300 };
/** The text the status page and the log show for a busy state. */
const said = (state: BusyState) => (state.kind === 'busy' ? describeHold({ kind: 'busy', detail: state.detail }) : state.kind);

test('a job computing since the answer is busy, with the figures in the reason', (t) => {
  const state = judgeBusy([at(1000, 50), at(1300, 190)], 300, 0.1);
  t.deepEqual(state, { kind: 'busy', detail: { resource: 'cpu', cpuMs: 140, spanMs: 300 } });
  t.is(said(state), 'busy: 140 ms CPU in the last 300 ms');
});

test('idle background (timers, GC: the figures measured here) is quiet', (t) => {
  t.is(judgeBusy([at(1000, 50), at(1300, 55.3)], 300, 0.1).kind, 'quiet');
});

test('block I/O above 1 MiB/s is busy even with little CPU', (t) => {
  const state = judgeBusy([at(1000, 0, 0), at(1300, 1, 4 * 1024 * 1024)], 300, 0.1);
  t.is(state.kind, 'busy');
  t.regex(said(state), /4\.0 MiB of block I\/O in the last 300 ms/);
});

test('the baseline is the newest reading at least a window old', (t) => {
  // 0..1000: heavy (old job); 1000..1350 quiet. Against the 1000 reading, quiet.
  t.is(judgeBusy([at(0, 0), at(1000, 900), at(1200, 901), at(1350, 902)], 300, 0.1).kind, 'quiet');
});

test('no reading old enough to compare: measure for one window instead of guessing', (t) => {
  t.deepEqual(judgeBusy([at(1000, 0)], 300, 0.1), { kind: 'measuring', recheckAtNs: 1300n * MS });
  t.deepEqual(judgeBusy([at(1000, 0), at(1100, 1)], 300, 0.1), { kind: 'measuring', recheckAtNs: 1300n * MS });
  // A baseline three windows old would average a fresh burst away.
  t.deepEqual(judgeBusy([at(0, 0), at(5000, 1000)], 300, 0.1), { kind: 'measuring', recheckAtNs: 5300n * MS });
});

test('readings of another process (a new QEMU after a snapshot wake) are not compared', (t) => {
  t.is(judgeBusy([at(1000, 5000, undefined, 'pid 1'), at(1300, 10, undefined, 'pid 2')], 300, 0.1).kind, 'measuring');
  t.deepEqual(keepSamples([at(1000, 1, undefined, 'pid 1')], at(1300, 2, undefined, 'pid 2'), 300), [at(1300, 2, undefined, 'pid 2')]);
});

test('keepSamples keeps the newest reading a window old and the younger ones, nothing older', (t) => {
  const kept = keepSamples([at(0, 0), at(200, 0), at(700, 0), at(900, 0)], at(1100, 0), 300);
  t.deepEqual(kept.map((s) => Number(s.atNs / MS)), [700, 900, 1100]);
});

test('busy holds an idle verdict and rechecks soon; quiet lets it through', (t) => {
  const inputs = { nowNs: 2000n * MS, lastActivityNs: 1700n * MS, maxAwakeMs: undefined, recheckMs: 60 };
  t.deepEqual(guardIdle(idle, { ...inputs, state: { kind: 'busy', detail: cpu300 } }), {
    kind: 'held', reason: { kind: 'busy', detail: cpu300 }, recheckAtNs: 2060n * MS,
  });
  t.is(describeHold({ kind: 'busy', detail: cpu300 }), 'busy: 300 ms CPU in the last 300 ms');
  t.deepEqual(guardIdle(idle, { ...inputs, state: { kind: 'quiet' } }), idle);
  t.deepEqual(guardIdle({ kind: 'active', recheckAtNs: 1n }, { ...inputs, state: { kind: 'busy', detail: cpu300 } }), { kind: 'active', recheckAtNs: 1n });
});

test('max_awake still bounds a workload busy forever, and says why', (t) => {
  const verdict = guardIdle(idle, { nowNs: 6000n * MS, lastActivityNs: 1000n * MS, maxAwakeMs: 5000, recheckMs: 60, state: { kind: 'busy', detail: cpu300 } });
  t.deepEqual(verdict, { kind: 'idle', reason: { kind: 'max-awake', quietMs: 5000, despite: { kind: 'busy', detail: cpu300 } } });
  t.is(verdict.kind === 'idle' ? describeIdle(verdict.reason) : '', 'max_awake: no packet for 5000 ms despite busy: 300 ms CPU in the last 300 ms');
});

test('the window is the idle timeout, within 50 ms .. 1 s', (t) => {
  t.is(busyWindowMs(300), 300);
  t.is(busyWindowMs(10), 50);
  t.is(busyWindowMs(300_000), 1000);
});

test('kernel counter formats', (t) => {
  t.is(parseBlkio('8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Async 12288\n8:0 Discard 0\n8:0 Total 12288\nTotal 12288\n'), 12288);
  t.is(parseIoStat('8:0 rbytes=1000 wbytes=24 rios=1 wios=1 dbytes=0 dios=0\n253:0 rbytes=6 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n'), 1030);
  t.is(parseCpuStat('usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\n'), 123456);
  // The command may hold spaces and parentheses: fields are counted after the last ')'.
  const stat = '4242 (qemu (x) y) S 1 4242 4242 0 -1 4194560 1 0 0 0 250 50 0 0 20 0 3 0 12345 0 0';
  t.is(parseProcStat(stat), 3_000_000);
  t.is(parseProcIo('rchar: 5\nwchar: 6\nsyscr: 1\nsyscw: 1\nread_bytes: 4096\nwrite_bytes: 8192\ncancelled_write_bytes: 0\n'), 12288);
});
