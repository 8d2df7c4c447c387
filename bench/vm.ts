/**
 * VM benchmark (issue 11): a live test guest (TCG, 256 MiB, 100 MiB written into its RAM at
 * boot, as in docs/design.md's table) managed by the agent, per QEMU mode, over N sleep/wake cycles:
 *  - time to sleep (pausing → sleeping, reclaim included),
 *  - memory: the VM's memory cgroup and the RAM file's resident pages, awake → asleep,
 *  - doze's own wake overhead (wake event → `cont` returned: the agent's clock pair),
 *  - wake time as a client sees it (first request to the sleeping VM → answer) against the same
 *    request to the awake VM. Packets wait in the tap's queue while the VM is stopped, so a
 *    "retry" wake needs no SYN retransmission here.
 */
import type { Agent } from '../agent/agent.js';
import type { TransitionEvent } from '../agent/detector/detector.js';
import { nextState, startAgent } from '../test/helpers/agent.js';
import { get } from '../test/helpers/http.js';
import { startGuest, type TestGuest } from '../test/helpers/qemu-guest.js';
import { startOwnedGuest, type OwnedGuest } from '../test/helpers/qemu-owner.js';
import { QemuSnapshotRuntime } from '../agent/runtimes/qemu/qemu-snapshot.js';
import type { Runtime } from '../agent/runtimes/runtime.js';
import { Cleanups } from '../test/helpers/teardown.js';
import { percentile, summary, verdict } from './stats.js';
import { synRetransmits } from './tcp-counters.js';

const MiB = 1024 * 1024;

interface ModeResult {
  sleepMs: number[];
  overheadMs: number[];
  asleepMs: number[];
  awakeMs: number[];
  cgroupAwake: number[];
  cgroupAsleep: number[];
  ramAwake: number[];
  ramAsleep: number[];
  retransmits: number;
}

async function runMode(guest: TestGuest, reclaim: boolean, cycles: number): Promise<ModeResult> {
  const cleanups = new Cleanups();
  try {
    const agent: Agent = await startAgent(cleanups, {
      instances: [{
        id: 'vm', address: guest.address, interface: guest.tap, idleTimeout: '200ms', pauseTimeout: '10s',
        runtime: { kind: 'qemu', qmp: guest.qmp, reclaim, memoryCgroup: guest.memoryCgroup },
      }],
    });
    cleanups.teardown(() => agent.detector.get('vm')?.runtime.close?.());
    const r: ModeResult = { sleepMs: [], overheadMs: [], asleepMs: [], awakeMs: [], cgroupAwake: [], cgroupAsleep: [], ramAwake: [], ramAsleep: [], retransmits: 0 };
    let pausingAt = 0;
    const onTransition = (e: TransitionEvent) => {
      if (e.to === 'pausing') pausingAt = performance.now();
      if (e.to === 'sleeping' && pausingAt) r.sleepMs.push(performance.now() - pausingAt);
    };
    agent.detector.on('transition', onTransition);
    const retransBefore = await synRetransmits();
    for (let i = 0; i < cycles; i++) {
      // Awake: the working set the guest touched since the last wake (plus, first time, the fill).
      r.cgroupAwake.push(await guest.cgroupBytes());
      r.ramAwake.push(await guest.ramResidentBytes());
      await nextState(agent, 'vm', 'sleeping', 15_000);
      r.cgroupAsleep.push(await guest.cgroupBytes());
      r.ramAsleep.push(await guest.ramResidentBytes());
      const running = nextState(agent, 'vm', 'running', 5000);
      const cold = await get(guest.url, 5000);
      await running;
      if (cold.status !== 200) throw new Error(`cycle ${i}: status ${cold.status}`);
      r.asleepMs.push(cold.ms);
      r.overheadMs.push(agent.detector.get('vm')!.lastWakeMs!);
      r.awakeMs.push((await get(guest.url, 5000)).ms);
    }
    r.retransmits = (await synRetransmits()) - retransBefore;
    agent.detector.off('transition', onTransition);
    return r;
  } finally {
    await cleanups.run();
  }
}

function report(label: string, r: ModeResult, targetWakeMs: number): string[] {
  const mib = (values: number[]) => (percentile(values, 50) / MiB).toFixed(0);
  const freed = r.ramAwake.map((awake, i) => (awake > 0 ? (awake - r.ramAsleep[i]!) / awake : 0));
  return [
    `-- ${label}`,
    summary('time to sleep (pausing → sleeping)', r.sleepMs),
    summary("doze's wake overhead (event → cont returned)", r.overheadMs),
    summary('wake: first request, VM asleep', r.asleepMs),
    summary('same request, VM awake', r.awakeMs),
    `memory cgroup awake → asleep (p50)               ${mib(r.cgroupAwake)} → ${mib(r.cgroupAsleep)} MiB`,
    `RAM file resident awake → asleep (p50)           ${mib(r.ramAwake)} → ${mib(r.ramAsleep)} MiB (${(percentile(freed, 50) * 100).toFixed(0)} % freed; first cycle ${(r.ramAwake[0]! / MiB).toFixed(0)} → ${(r.ramAsleep[0]! / MiB).toFixed(0)} MiB)`,
    `state written: 0 (the QEMU process and its device state stay); SYN retransmissions: ${r.retransmits}`,
    verdict(percentile(r.overheadMs, 50) <= 10, "target doze's wake overhead ≤ 10 ms (pause)"),
    verdict(percentile(r.asleepMs, 50) <= targetWakeMs, `target wake ≤ ${targetWakeMs} ms (p50)`),
  ];
}

interface SnapshotResult {
  sleepMs: number[];
  stateBytes: number[];
  overheadMs: number[];
  ownerContMs: number[];
  answerMs: number[];
  firstRequestMs: number[];
  awakeMs: number[];
  cgroupAwake: number[];
  cgroupAsleep: number[];
  ramAwake: number[];
  ramAsleep: number[];
  retransmits: number;
  /** The wake mode the instance used (set, or the runtime's default). */
  wake: string;
}

/**
 * `snapshot` mode behind a `doze vm run` owner: per cycle the owner's own sleep timing and
 * state size, memory awake → asleep, doze's wake overhead (wake event → `cont` returned, the
 * agent's clock pair), the wake as the guest answers it (wake event → a request sent the
 * moment the agent reports running is answered) and the first request as a client sees it.
 */
async function runSnapshotMode(guest: OwnedGuest, cycles: number, wake: 'retry' | 'hold' | undefined): Promise<SnapshotResult> {
  const cleanups = new Cleanups();
  try {
    const agent: Agent = await startAgent(cleanups, {
      instances: [{
        id: 'vm', address: guest.address, interface: guest.tap, idleTimeout: '1500ms', pauseTimeout: '10s', wakeTimeout: '10s', ...(wake ? { wake } : {}),
        runtime: { kind: 'qemu', mode: 'snapshot', control: guest.control },
      }],
    });
    cleanups.teardown(() => agent.detector.get('vm')?.runtime.close?.());
    const runtime = agent.detector.get('vm')!.runtime as Runtime as QemuSnapshotRuntime;
    const r: SnapshotResult = { sleepMs: [], stateBytes: [], overheadMs: [], ownerContMs: [], answerMs: [], firstRequestMs: [], awakeMs: [], cgroupAwake: [], cgroupAsleep: [], ramAwake: [], ramAsleep: [], retransmits: 0, wake: agent.detector.get('vm')!.wake };
    let wakingAt = 0;
    let answered: Promise<number> | undefined;
    const onTransition = (e: TransitionEvent) => {
      if (e.to === 'waking') wakingAt = performance.now();
      // The guest's own answer time: a request sent the moment the VM runs again.
      if (e.to === 'running' && wakingAt) {
        const from = wakingAt;
        answered = get(guest.url, 5000).then(() => performance.now() - from);
      }
    };
    agent.detector.on('transition', onTransition);
    const retransBefore = await synRetransmits();
    for (let i = 0; i < cycles; i++) {
      r.cgroupAwake.push(await guest.cgroupBytes());
      r.ramAwake.push(await ramResident(guest));
      await nextState(agent, 'vm', 'sleeping', 15_000);
      const sleep = runtime.lastStatus?.lastSleep;
      if (sleep) {
        r.sleepMs.push(sleep.totalMs);
        r.stateBytes.push(sleep.stateBytes);
      }
      await delay(500); // a pre-spawned receiver is up and waiting: measured with it
      r.cgroupAsleep.push(await guest.cgroupBytes());
      r.ramAsleep.push(await ramResident(guest));
      wakingAt = 0;
      answered = undefined;
      const running = nextState(agent, 'vm', 'running', 10_000);
      const cold = await get(guest.url, 8000);
      await running;
      if (cold.status !== 200) throw new Error(`cycle ${i}: status ${cold.status}`);
      r.firstRequestMs.push(cold.ms);
      r.overheadMs.push(agent.detector.get('vm')!.lastWakeMs!);
      const wake = runtime.lastStatus?.lastWake;
      if (wake) r.ownerContMs.push(wake.contMs);
      if (answered) r.answerMs.push(await answered);
      r.awakeMs.push((await get(guest.url, 5000)).ms);
    }
    r.retransmits = (await synRetransmits()) - retransBefore;
    agent.detector.off('transition', onTransition);
    return r;
  } finally {
    await cleanups.run();
  }
}

/** The RAM file's resident bytes; 0 for a full snapshot's VM, whose RAM is QEMU's own (no file). */
function ramResident(guest: OwnedGuest): Promise<number> {
  return guest.ramResidentBytes().catch(() => 0);
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function reportSnapshot(label: string, r: SnapshotResult, targetOverheadMs: number, full = false): string[] {
  const mib = (values: number[], digits = 0) => (percentile(values, 50) / MiB).toFixed(digits);
  const heldFirst = percentile(r.firstRequestMs, 50) - percentile(r.answerMs, 50);
  return [
    `-- ${label}`,
    summary("time to sleep (owner: stop → QEMU gone, RAM dropped)", r.sleepMs),
    `state written (${full ? 'everything, RAM included' : 'device state'}, p50)${' '.repeat(full ? 7 : 16)}${(percentile(r.stateBytes, 50) / 1024).toFixed(0)} KiB`,
    summary("doze's wake overhead (event → cont returned)", r.overheadMs),
    summary('  of which the owner (request → cont)', r.ownerContMs),
    summary('wake: event → guest answers HTTP', r.answerMs),
    summary('first request to the sleeping VM (client)', r.firstRequestMs),
    summary('same request, VM awake', r.awakeMs),
    `memory cgroup awake → asleep (p50, 0.5 s in)      ${mib(r.cgroupAwake)} → ${mib(r.cgroupAsleep, 1)} MiB`,
    `RAM file resident awake → asleep (p50)           ${mib(r.ramAwake)} → ${mib(r.ramAsleep, 1)} MiB (first cycle ${(r.ramAwake[0]! / MiB).toFixed(0)} → ${(r.ramAsleep[0]! / MiB).toFixed(1)} MiB)`,
    `wake ${r.wake}; SYN retransmissions: ${r.retransmits}; first request − wake (p50): ${heldFirst.toFixed(0)} ms`,
    ...(full ? [] : [verdict(percentile(r.sleepMs, 50) <= 200 && percentile(r.stateBytes, 50) <= MiB, 'target sleep ≤ 0.2 s with state ≤ 1 MiB')]),
    verdict(percentile(r.overheadMs, 50) <= targetOverheadMs, `target doze's wake overhead ≤ ${targetOverheadMs} ms`),
    verdict(percentile(r.answerMs, 50) <= 400, 'target wake (event → guest answers) ≤ 400 ms'),
  ];
}

const SNAPSHOT_VARIANTS = [
  { ownerArgs: [], wake: 'retry', target: 100, label: 'snapshot, new QEMU process on wake (doze vm run; device state only, RAM file on disk written back and dropped, faulted back as the guest touches it); wake retry' },
  { ownerArgs: ['--readahead'], wake: 'retry', target: 100, label: 'snapshot, new QEMU process on wake, --readahead (the working set recorded at the sleep is read back while QEMU restores); wake retry' },
  { ownerArgs: ['--prespawn'], wake: 'retry', target: 30, label: 'snapshot, pre-spawned receiver (doze vm run --prespawn; the waiting QEMU holds the tap, so the first SYN is queued, not dropped); wake retry' },
  { ownerArgs: [], wake: 'hold', target: 100, label: 'snapshot, new QEMU process on wake; wake hold (the agent takes the first connection and relays it once the VM runs: no retransmission)' },
  { ownerArgs: ['--snapshot', 'full'], wake: 'retry', target: 100, label: 'full-RAM snapshot (doze vm run --snapshot full: everything in one stream, written by the owner outside the VM cgroup; read back whole on wake); wake retry' },
  { ownerArgs: [], wake: undefined, target: 100, label: 'snapshot, new QEMU process on wake; wake unset (the default: hold, since the runtime declares it drops the first SYN)' },
] as const;

export async function benchVmSnapshot(cycles = 10): Promise<string[]> {
  const lines: string[] = [];
  // DOZE_BENCH_VM_VARIANTS=0,2 runs only those (indexes into SNAPSHOT_VARIANTS).
  const only = process.env.DOZE_BENCH_VM_VARIANTS?.split(',').map(Number);
  for (const [index, variant] of SNAPSHOT_VARIANTS.entries()) {
    if (only && !only.includes(index)) continue;
    const cleanups = new Cleanups();
    try {
      const guest = await startOwnedGuest(cleanups, { memMiB: 256, fillMiB: 100, ownerArgs: [...variant.ownerArgs] });
      const full = (variant.ownerArgs as readonly string[]).includes('full');
      lines.push(...reportSnapshot(`${variant.label}; booted in ${guest.bootMs.toFixed(0)} ms`, await runSnapshotMode(guest, cycles, variant.wake), variant.target, full));
    } finally {
      await cleanups.run();
    }
  }
  lines.push('reference (docs/design.md, shell prototype, a QMP client process per step): device-state snapshot, RAM on disk + cache dropped: sleep 196 ms, 358 KiB, wake 542 ms, cgroup 141 → 4 MiB; pre-spawned: wake 290 ms, +50 MiB; full-RAM snapshot: sleep 377 ms, 170 MiB, wake 985 ms');
  return lines;
}

export async function benchVm(cycles = 10): Promise<string[]> {
  const cleanups = new Cleanups();
  try {
    const guest = await startGuest(cleanups, { memMiB: 256, fillMiB: 100, memoryCgroup: true });
    const lines = [`vm (QEMU under TCG, 1 vCPU, 256 MiB guest with 100 MiB written at boot; ${cycles} cycles per mode, idle timeout 200 ms; booted to HTTP in ${guest.bootMs.toFixed(0)} ms)`];
    lines.push(...report('pause, memory kept (stop/cont)', await runMode(guest, false, cycles), 60));
    lines.push(...report('pause + reclaim (RAM file written back, paged out of QEMU and dropped: doze-pageout)', await runMode(guest, true, cycles), 200));
    lines.push('reference (docs/design.md, shell prototype, a QMP client process per step): stop/cont wake 102 ms; reclaim wake 195–231 ms, cgroup 172 → 88 MiB');
    return lines;
  } finally {
    await cleanups.run();
  }
}
