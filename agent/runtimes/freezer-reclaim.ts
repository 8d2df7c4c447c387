import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { messageOf } from '../shared/errors.js';
import { liftSettings, readMemoryUsage, reclaimRequest, restoreSettings, swapBlockers, type LiftedSetting, type MemoryCgroup } from '../cgroups/memory-cgroup.js';
import { readNodeSwap, type NodeSwap } from '../cgroups/node-swap.js';
import { pageoutHelperPath } from './qemu/memory-reclaim.js';
import { atIdlePriority, reclaimSlots, toNormalPriority, type ReclaimSlots } from './reclaim-slots.js';
import { HandleFile } from './runtime-handle.js';
import { clearReferences, coldBytes, workingSetRequest, type ReclaimKeep } from './working-set-reclaim.js';

/*
 * Pushes a frozen instance's memory out once it has slept `afterMs`: anonymous memory to
 * swap, clean page cache dropped, through its memory cgroup (v1 memory.force_empty, v2
 * memory.reclaim). Chosen by measurement over process_madvise(MADV_PAGEOUT) and a lowered
 * limit (docs/memory.md): it reclaims in LRU order what the cgroup is charged for, leaves
 * code shared with other cgroups alone, and its first request after a thaw was the fastest.
 *
 * The write runs in a child process: the kernel reclaims inside that write(2) for as long as
 * it takes (~0.6 s for 200 MiB here), and a child is what a wake can stop at once. A wake
 * SIGKILLs it and thaws without waiting; the kernel's loop sees the pending signal and
 * returns between two batches. The swap settings lifted for the reclaim go back as soon as
 * the writer exits, while the instance still sleeps, so the instance runs under exactly the
 * settings its scheduler gave it.
 *
 * The writer runs at SCHED_IDLE and at most a few run at once on the node (reclaim-slots.ts):
 * the compression happens in its context, and must not take a core from an awake app.
 */

export const RECLAIM_RESULTS = ['done', 'partial', 'cancelled', 'skipped', 'failed'] as const;
export type ReclaimResult = (typeof RECLAIM_RESULTS)[number];

export interface ReclaimOutcome {
  result: ReclaimResult;
  /** Epoch ms when it finished. */
  atMs: number;
  ms: number;
  beforeBytes: number;
  afterBytes: number;
  swappedBytes: number;
  reason: string | null;
}

const liftedSchema = z.strictObject({ file: z.string(), value: z.string() });
/** What a restarted agent needs to undo a reclaim its predecessor died in. */
export const freezerHandleSchema = z.strictObject({
  version: z.literal(1),
  kind: z.literal('freezer'),
  memoryCgroup: z.string(),
  reclaim: z.strictObject({ writerPid: z.number().int().positive().optional(), lifted: z.array(liftedSchema) }).nullable(),
});
export type FreezerHandle = z.infer<typeof freezerHandleSchema>;

export interface FreezerReclaimOptions {
  memory: MemoryCgroup;
  afterMs: number;
  /** Kept across agent restarts (a reclaim interrupted by a crash is undone by the next agent). */
  handleFile?: string;
  /** The node's swap (tests replace it). */
  swap?: () => NodeSwap;
  onReclaim?: (outcome: ReclaimOutcome) => void;
  /**
   * Working-set prefetch: before a reclaim that follows a reclaimed wake, record the pages the
   * app brought back since (its working set), and on the next wake read exactly those back from
   * swap ahead of its faults, beside it (doze-pageout --record / --willneed). Where the record
   * is kept; off without it.
   */
  workingSetFile?: string;
  /** The doze-pageout helper (agent/runtimes/qemu/doze-pageout.c). */
  helper?: string;
  /** The node's bound on reclaims at once (tests give their own). */
  slots?: ReclaimSlots;
  /**
   * What a reclaim keeps resident: the working set (the pages the app referenced since the last
   * reclaim, working-set-reclaim.ts; the config's default), or nothing (everything goes; unset).
   */
  keep?: ReclaimKeep;
}

/** The argv a reclaim writer runs with: recognisable in /proc/PID/cmdline after a crash. */
const WRITER_ARGV0 = 'doze-reclaim';

export class FreezerReclaim {
  private timer: NodeJS.Timeout | undefined;
  private writer: ChildProcess | undefined;
  /** Bumped by every freeze and wake: a reclaim started for an earlier sleep must not go on. */
  private generation = 0;
  /** Aborted by the wake that ends the sleep a reclaim was armed for (it may be waiting for a slot). */
  private sleepEnded = new AbortController();
  private readonly handle: HandleFile<FreezerHandle>;
  last: ReclaimOutcome | undefined;
  /** Set while the instance sleeps and its memory is out (a reclaim finished since the last freeze). */
  reclaimed = false;
  /** The last wake followed a reclaim: what is resident at the next sleep is what the app touched since. */
  private wokeReclaimed = false;
  /** Referenced bits cleared at the last reclaim: what is referenced now was touched since (working-set mode). */
  private referencesCleared = false;
  /** Settings lifted for the writer now running: put back before a thaw, not only when it exits. */
  private liftedNow: LiftedSetting[] = [];
  /** A writer the last wake killed, until afterThaw() raised its priority. */
  private killedWriter: number | undefined;

  constructor(private readonly options: FreezerReclaimOptions) {
    this.handle = new HandleFile(options.handleFile, freezerHandleSchema, { version: 1, kind: 'freezer', memoryCgroup: options.memory.dir, reclaim: null });
  }

  get running(): boolean {
    return this.writer !== undefined;
  }

  /**
   * At start: a previous agent that died during a reclaim left its writer running and the
   * swap settings lifted. Stop the writer (only if its command line is still ours) and put
   * the settings back.
   */
  async recover(): Promise<void> {
    const saved = await this.handle.load();
    if (!saved.reclaim) return;
    const pid = saved.reclaim.writerPid;
    if (pid !== undefined && isWriter(pid)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // exited in between
      }
    }
    restoreSettings(saved.reclaim.lifted);
    await this.handle.save({ reclaim: null });
  }

  /** The instance is frozen: reclaim once it has slept `afterMs`. */
  arm(): void {
    clearTimeout(this.timer);
    const generation = ++this.generation;
    this.sleepEnded.abort();
    this.sleepEnded = new AbortController();
    this.reclaimed = false;
    this.timer = setTimeout(() => void this.run(generation), this.options.afterMs);
    this.timer.unref();
  }

  /** The instance wakes: stop a pending or running reclaim now; never waits for it. */
  cancel(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.wokeReclaimed = this.reclaimed;
    if (this.reclaimed) this.prefetch();
    this.reclaimed = false;
    this.generation++;
    this.sleepEnded.abort();
    if (this.writer) {
      this.writer.kill('SIGKILL');
      // A lowered limit (working-set mode, v1) must not meet the thawed app: back before the thaw.
      restoreSettings(this.liftedNow);
      this.killedWriter = this.writer.pid;
    }
  }

  /**
   * Once the instance is thawed: a killed writer at SCHED_IDLE on busy cores could wait long for
   * the CPU to see the kill, holding pages the app faults on; back to normal priority so it exits.
   * After the thaw, not before: spawning chrt took tens of ms on the wake path of a loaded node.
   */
  afterThaw(): void {
    const pid = this.killedWriter;
    this.killedWriter = undefined;
    if (pid !== undefined && this.writer?.pid === pid) toNormalPriority(pid);
  }

  private async run(generation: number): Promise<void> {
    this.timer = undefined;
    let started = performance.now();
    const outcome = (result: ReclaimResult, before: number, after: { residentBytes: number; swappedBytes: number }, reason: string | null): ReclaimOutcome => ({
      result,
      atMs: Date.now(),
      ms: Math.round((performance.now() - started) * 10) / 10,
      beforeBytes: before,
      afterBytes: after.residentBytes,
      swappedBytes: after.swappedBytes,
      reason,
    });
    const swap = (this.options.swap ?? readNodeSwap)();
    let before = { residentBytes: 0, swappedBytes: 0 };
    let lifted: LiftedSetting[] = [];
    let release: (() => void) | undefined;
    try {
      before = await readMemoryUsage(this.options.memory);
      if (!swap.available) return this.finish(outcome('skipped', before.residentBytes, before, swap.reason));
      release = await (this.options.slots ?? reclaimSlots).acquire(this.sleepEnded.signal);
      if (!release || generation !== this.generation) return this.finish(outcome('cancelled', before.residentBytes, before, 'the instance woke'));
      // Its time is the reclaim's, not the wait for a slot.
      started = performance.now();
      if (this.options.workingSetFile) await this.recordWorkingSet(this.options.workingSetFile);
      // Working-set mode, once references were cleared: push out only the untouched pages' worth.
      const pids = readFileSync(join(this.options.memory.dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
      const cold = this.options.keep === 'working-set' && this.referencesCleared ? coldBytes(pids) : undefined;
      const plan = cold === undefined ? undefined : workingSetRequest(this.options.memory, before.residentBytes, cold);
      const blockers = swapBlockers(this.options.memory);
      lifted = [...blockers.map(({ file, value }) => ({ file, value })), ...(plan?.restore ?? [])];
      // Saved before anything changes: a crash from here on is undone by the next agent.
      await this.handle.save({ reclaim: { lifted } });
      // A wake while the steps above awaited: the instance runs now, nothing may be reclaimed.
      if (generation !== this.generation) {
        await this.handle.save({ reclaim: null });
        return this.finish(outcome('cancelled', before.residentBytes, before, 'the instance woke'));
      }
      if (plan === null) {
        // Nothing cold to push out: the whole resident set is its working set.
        await this.handle.save({ reclaim: null });
        this.reclaimed = true;
        return this.finish(outcome('done', before.residentBytes, before, null));
      }
      liftSettings(blockers);
      const request = plan?.request ?? reclaimRequest(this.options.memory, before.residentBytes);
      const exit = await this.write(request.file, request.value, lifted);
      const after = await readMemoryUsage(this.options.memory);
      if (generation !== this.generation) return this.finish(outcome('cancelled', before.residentBytes, after, 'the instance woke'));
      if (this.options.keep === 'working-set') this.referencesCleared = clearReferences(pids);
      // force_empty answers EBUSY, memory.reclaim EAGAIN, when some memory would not go (unevictable, no swap left).
      const result = exit.code === 0 ? 'done' : 'partial';
      this.reclaimed = true;
      return this.finish(outcome(result, before.residentBytes, after, result === 'done' ? null : exit.stderr.trim().slice(0, 200) || `writer exited with ${exit.code}`));
    } catch (error) {
      restoreSettings(lifted);
      const after = await readMemoryUsage(this.options.memory).catch(() => before);
      return this.finish(outcome('failed', before.residentBytes, after, messageOf(error)));
    } finally {
      release?.();
    }
  }

  /** Runs the reclaim write in a child; the lifted settings go back the moment it exits. */
  private write(file: string, value: string, lifted: LiftedSetting[]): Promise<{ code: number | null; stderr: string }> {
    this.liftedNow = lifted;
    return new Promise((resolve, reject) => {
      // chrt execs the shell: the child's pid is the writer's, and its command line still names doze-reclaim.
      const [command, ...args] = atIdlePriority(['/bin/sh', '-c', 'echo "$2" > "$1"', WRITER_ARGV0, file, value], this.options.slots);
      const child = spawn(command!, args, { stdio: ['ignore', 'ignore', 'pipe'] });
      this.writer = child;
      let stderr = '';
      child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
      child.once('spawn', () => void this.handle.save({ reclaim: { writerPid: child.pid, lifted } }).catch(() => undefined));
      child.once('error', (error) => {
        this.writer = undefined;
        restoreSettings(lifted);
        reject(error);
      });
      child.once('exit', (code) => {
        this.writer = undefined;
        restoreSettings(lifted);
        void this.handle.save({ reclaim: null }).catch(() => undefined);
        resolve({ code, stderr });
      });
    });
  }

  /** Only after a reclaimed wake is the resident set the working set (else it is everything the app ever touched). */
  private async recordWorkingSet(file: string): Promise<void> {
    rmSync(file, { force: true });
    if (!this.wokeReclaimed) return;
    const pids = readFileSync(join(this.options.memory.dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean);
    if (pids.length === 0) return;
    const ranges = await new Promise<string>((resolve, reject) =>
      execFile(this.options.helper ?? pageoutHelperPath(), ['--record', ...pids], { timeout: 5000, maxBuffer: 64 << 20 }, (error, stdout) => (error ? reject(error) : resolve(stdout))),
    );
    writeFileSync(file, ranges);
  }

  /** Reads the recorded working set back beside the thawed app; never waited for. */
  private prefetch(): void {
    const file = this.options.workingSetFile;
    if (!file || !existsSync(file)) return;
    const child = spawn(this.options.helper ?? pageoutHelperPath(), ['--willneed', file], { stdio: 'ignore' });
    child.on('error', () => undefined);
    child.unref();
  }

  private finish(outcome: ReclaimOutcome): void {
    this.last = outcome;
    this.options.onReclaim?.(outcome);
  }
}

function isWriter(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes(WRITER_ARGV0);
  } catch {
    return false;
  }
}
