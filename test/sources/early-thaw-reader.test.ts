import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { createLogger } from '../../agent/shared/log.js';
import { BpfInstanceState, type WakeEvent } from '../../agent/sources/bpf-records.js';
import { monotonicNs } from '../../agent/shared/clock.js';
import { EbpfSource } from '../../agent/sources/ebpf-source.js';
import type { TrafficKey } from '../../agent/sources/traffic-source.js';
import { createBpffs } from '../helpers/bpffs.js';
import { craftSegment, packetRunner } from '../helpers/crafted-packet.js';
import { createNetns } from '../helpers/netns.js';
import { rootTest } from '../helpers/root.js';
import { tempDir } from '../helpers/temp-dir.js';

/*
 * The wake-event reader's early thaw (doze-maps events, agent/sources/wake-events.ts) against the
 * real tc program: a packet run in the kernel (BPF_PROG_TEST_RUN) for a sleeper raises the wake
 * record, and the reader writes the armed value to the armed file before it hands the line on.
 * The file is a plain one here, so each rule (since, room, disarm, a failed write) is seen alone;
 * the real freezer cgroup: test/agent/thaw-at-event.test.ts.
 */

async function world(t: ExecutionContext) {
  const bpffs = await createBpffs(t);
  const ns = await createNetns(t);
  const source = new EbpfSource({ bpffs, checkMark: 1, log: createLogger('silent') });
  await source.start();
  t.teardown(() => source.close({ removePins: true }));
  await source.attach(ns.hostIf);
  const key = ns.instanceIp as TrafficKey;
  await source.track(key);
  const events: WakeEvent[] = [];
  const waiters: Array<(e: WakeEvent) => void> = [];
  source.onWake((e) => {
    if (e.answersWakeNs !== undefined) return;
    events.push(e);
    waiters.shift()?.(e);
  });
  const runPacket = await packetRunner(t, ns.hostIf, craftSegment(ns.hostIp, ns.instanceIp, 40_000, 8080));
  const dir = await tempDir(t, 'dz-thaw-');
  const file = join(dir, 'freezer.state');
  await writeFile(file, 'FROZEN');
  /** Puts it to sleep in the map, runs one packet, and resolves with the wake event it raised. */
  const wakeOnce = async (): Promise<WakeEvent> => {
    await source.setState(key, BpfInstanceState.sleeping);
    const event = new Promise<WakeEvent>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no wake event within 3 s')), 3000);
      waiters.push((e) => {
        clearTimeout(timer);
        resolve(e);
      });
    });
    await runPacket();
    return event;
  };
  return { source, key, file, dir, wakeOnce, control: source.earlyThaw };
}

rootTest.serial('reader: an armed sleeper is thawed at its event, before the line, and only once', async (t) => {
  const w = await world(t);
  w.control.setRoom(-1);
  w.control.arm(w.key, { file: w.file, value: 'THAWED', sinceNs: monotonicNs() });
  const first = await w.wakeOnce();
  t.is(first.thaw?.kind, 'thawed');
  t.is(await readFile(w.file, 'utf8'), 'THAWED', 'written before the event reached the agent');
  const atNs = first.thaw?.kind === 'thawed' ? first.thaw.atNs : 0n;
  t.true(atNs >= first.tsNs, 'thawed after the packet, on the same clock');
  t.log(`packet → thawed by the reader: ${(Number(atNs - first.tsNs) / 1e6).toFixed(3)} ms`);
  await writeFile(w.file, 'FROZEN');
  const second = await w.wakeOnce();
  t.is(second.thaw, undefined, 'one-shot: the next sleep needs its own arm');
  t.is(await readFile(w.file, 'utf8'), 'FROZEN');
});

rootTest.serial('reader: an event older than the arm (an earlier sleep) does not fire it', async (t) => {
  const w = await world(t);
  w.control.setRoom(-1);
  // Armed for a sleep that starts in a minute: this packet belongs to an earlier one.
  w.control.arm(w.key, { file: w.file, value: 'THAWED', sinceNs: monotonicNs() + 60_000_000_000n });
  const event = await w.wakeOnce();
  t.is(event.thaw, undefined);
  t.is(await readFile(w.file, 'utf8'), 'FROZEN');
});

rootTest.serial('reader: no room, no early thaw (and the arm ends); disarmed, no early thaw; room given back, thawed', async (t) => {
  const w = await world(t);
  w.control.setRoom(0);
  w.control.arm(w.key, { file: w.file, value: 'THAWED', sinceNs: 0n });
  t.is((await w.wakeOnce()).thaw, undefined, 'room 0: the agent must make room first');
  t.is(await readFile(w.file, 'utf8'), 'FROZEN');
  w.control.setRoom(1);
  t.is((await w.wakeOnce()).thaw, undefined, 'that sleep\'s event ended its arm: room alone thaws nothing');
  w.control.arm(w.key, { file: w.file, value: 'THAWED', sinceNs: 0n });
  w.control.disarm(w.key);
  t.is((await w.wakeOnce()).thaw, undefined, 'disarmed');
  w.control.arm(w.key, { file: w.file, value: 'THAWED', sinceNs: 0n });
  t.is((await w.wakeOnce()).thaw?.kind, 'thawed', 'room 1, armed: thawed');
  await writeFile(w.file, 'FROZEN');
  w.control.arm(w.key, { file: w.file, value: 'THAWED', sinceNs: 0n });
  t.is((await w.wakeOnce()).thaw, undefined, 'room 1 was used up by that thaw');
  w.control.setRoom(1); // the agent looked again: room for one more
  w.control.arm(w.key, { file: w.file, value: 'THAWED', sinceNs: 0n });
  t.is((await w.wakeOnce()).thaw?.kind, 'thawed', 'the same room, said again, reaches the reader');
});

rootTest.serial('reader: a room granted before the agent has read the last thaw is not granted twice', async (t) => {
  const w = await world(t);
  w.control.setRoom(1);
  w.control.arm(w.key, { file: w.file, value: 'THAWED', sinceNs: 0n });
  const first = w.wakeOnce();
  // Granted again while that thaw's line may still be in the pipe (the agent counted it asleep):
  // the line says the agent has read no thaw yet, so the reader takes its own off the grant.
  await new Promise((resolve) => setImmediate(resolve));
  w.control.setRoom(1);
  t.is((await first).thaw?.kind, 'thawed');
  await writeFile(w.file, 'FROZEN');
  w.control.arm(w.key, { file: w.file, value: 'THAWED', sinceNs: 0n });
  t.is((await w.wakeOnce()).thaw, undefined, 'one room, one thaw');
  t.is(await readFile(w.file, 'utf8'), 'FROZEN');
});

rootTest.serial('reader: a write that fails says why, and the event still reaches the agent', async (t) => {
  const w = await world(t);
  w.control.setRoom(-1);
  w.control.arm(w.key, { file: join(w.dir, 'gone', 'freezer.state'), value: 'THAWED', sinceNs: 0n });
  const event = await w.wakeOnce();
  t.deepEqual(event.thaw, { kind: 'failed', errno: 2 }, 'ENOENT: the cgroup went with its task');
  t.is(event.instanceAddr, w.key);
});

rootTest.serial('reader: a restarted reader is armed again, with its room', async (t) => {
  const w = await world(t);
  w.control.setRoom(-1);
  w.control.arm(w.key, { file: w.file, value: 'THAWED', sinceNs: 0n });
  const restarted = new Promise<void>((resolve) => w.source.onGap((reason) => reason.includes('restarted') && resolve()));
  // The reader dies (as a crash would); the agent starts another and subscribes it again.
  await new Promise<void>((resolve, reject) => execFile('pkill', ['-KILL', '-f', `doze-maps events ${w.source.pin('doze_wake_events')}`], (error) => (error ? reject(error) : resolve())));
  await restarted;
  const event = await w.wakeOnce();
  t.is(event.thaw?.kind, 'thawed', 'the arm was sent to the new reader');
  t.is(await readFile(w.file, 'utf8'), 'THAWED');
});
