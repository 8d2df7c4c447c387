import { readFileSync, watch, writeFileSync, type FSWatcher } from 'node:fs';
import { access } from 'node:fs/promises';
import { dirname, isAbsolute, join } from 'node:path';
import { readUsage, usageSourceOf, type UsageReading, type UsageSource, type UsageSourceView } from '../cgroups/cpu-usage.js';
import { DeadlineError, RuntimeError } from '../shared/errors.js';
import { locateMemoryCgroup, memoryCgroupBesideFreezer, memoryCgroupOfProcess, oomKills, readMajorFaults, readMemoryUsage, type MemoryCgroup, type MemoryUsage } from '../cgroups/memory-cgroup.js';
import { readNodeSwap, type NodeSwap } from '../cgroups/node-swap.js';
import { FreezerReclaim, type ReclaimOutcome } from './freezer-reclaim.js';
import type { ReclaimKeep } from './working-set-reclaim.js';
import type { ProbeResult, ReclaimState, Runtime, RuntimeObservedState } from './runtime.js';
import { Deadline } from '../shared/deadline.js';

export const CGROUP_ROOT = '/sys/fs/cgroup';

type Flavour = { version: 1; stateFile: string } | { version: 2; freezeFile: string; eventsFile: string };

/** Where the cgroup's freeze control lives: v1 freezer hierarchy first, then cgroup2. */
export async function locateFreezer(cgroup: string, root = CGROUP_ROOT): Promise<Flavour | undefined> {
  const candidates: Flavour[] = [];
  if (isAbsolute(cgroup)) {
    candidates.push({ version: 1, stateFile: join(cgroup, 'freezer.state') });
    candidates.push({ version: 2, freezeFile: join(cgroup, 'cgroup.freeze'), eventsFile: join(cgroup, 'cgroup.events') });
  } else {
    candidates.push({ version: 1, stateFile: join(root, 'freezer', cgroup, 'freezer.state') });
    for (const base of [root, join(root, 'unified')]) {
      candidates.push({ version: 2, freezeFile: join(base, cgroup, 'cgroup.freeze'), eventsFile: join(base, cgroup, 'cgroup.events') });
    }
  }
  for (const c of candidates) {
    try {
      await access(c.version === 1 ? c.stateFile : c.freezeFile);
      return c;
    } catch {
      // try the next hierarchy
    }
  }
  return undefined;
}

/**
 * How often a freeze or thaw is looked at until the kernel reports it done: as often as a timer
 * can fire (Node raises a delay under 1 ms to 1 ms, so the 0.2 this once said was 1 already).
 */
const FREEZE_POLL_MS = 1;

function readProcs(dir: string): number[] {
  try {
    return readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

async function waitFor(what: string, deadlineMs: number, check: () => Promise<boolean>, signal?: AbortSignal): Promise<void> {
  const deadline = new Deadline(what, deadlineMs, signal);
  for (;;) {
    if (await check()) return;
    if (deadline.expired) throw new DeadlineError(what, deadlineMs);
    await new Promise((resolve) => setTimeout(resolve, FREEZE_POLL_MS));
  }
}

export interface FreezerOptions {
  /** Where its memory is measured and reclaimed (relative to the v1 memory hierarchy or cgroup2, or absolute); else beside the freezer cgroup, else its processes' own. */
  memoryCgroup?: string;
  /** Push its memory out once it has slept this long (agent/runtimes/freezer-reclaim.ts). */
  reclaim?: { afterMs: number; handleFile?: string; prefetch?: boolean; keep?: ReclaimKeep };
  /** The node's swap (tests replace it). */
  swap?: () => NodeSwap;
}

/**
 * Sleep by freezing the instance's cgroup: the process and its sockets stay. Its memory
 * stays too, unless `reclaim` pushes it out to swap after `reclaim.afterMs` asleep; the
 * pages fault back as the thawed process touches them.
 */
export class FreezerRuntime implements Runtime {
  readonly kind = 'freezer';
  readonly capabilities: { keepsProcess: boolean; freesMemory: boolean };
  private flavour: Flavour | undefined;
  private memoryCg: MemoryCgroup | undefined;
  private reclaimer: FreezerReclaim | undefined;
  /** Why reclaim is off although configured (no swap, no memory cgroup). */
  private reclaimOff: string | null = null;
  private readonly reclaimListeners: Array<(outcome: ReclaimOutcome) => void> = [];
  /** OOM kills counted when it froze: more after the thaw means one died asleep. */
  private oomKillsAtSleep = 0;

  constructor(readonly cgroup: string, private readonly root = CGROUP_ROOT, private readonly options: FreezerOptions = {}) {
    this.capabilities = { keepsProcess: true, freesMemory: options.reclaim !== undefined };
  }

  async probe(): Promise<ProbeResult> {
    this.flavour = await locateFreezer(this.cgroup, this.root);
    if (!this.flavour) {
      return { ok: false, reason: `cgroup ${JSON.stringify(this.cgroup)} has no freezer (looked for freezer.state under ${this.root}/freezer and cgroup.freeze under cgroup2)` };
    }
    if (this.options.memoryCgroup) {
      this.memoryCg = locateMemoryCgroup(this.options.memoryCgroup, this.root);
      if (!this.memoryCg) return { ok: false, reason: `memory cgroup ${JSON.stringify(this.options.memoryCgroup)} not found (looked under ${this.root}/memory and cgroup2)` };
    }
    if (this.options.reclaim) {
      await this.prepareReclaim(this.options.reclaim);
      // Left frozen by an earlier agent (a crash, perhaps mid-reclaim): its reclaim runs again after reclaimAfter.
      if (this.reclaimer && (await this.inspect()) === 'asleep') this.reclaimer.arm();
    }
    return { ok: true };
  }

  /** Reclaim needs a memory cgroup and swap; without either the instance sleeps as a plain freezer instance and says why. */
  private async prepareReclaim(reclaim: NonNullable<FreezerOptions['reclaim']>): Promise<void> {
    const memory = this.findMemoryCgroup();
    if (!memory) {
      this.reclaimOff = `no memory cgroup of its own found for ${this.cgroup} (none beside its freezer cgroup, and its processes' is the root or shared with others; set runtime.memoryCgroup): sleeps keep memory resident`;
      return;
    }
    const swap = (this.options.swap ?? readNodeSwap)();
    this.reclaimOff = swap.available ? null : swap.reason;
    this.oomKillsAtSleep = oomKills(memory);
    if (!this.reclaimer) {
      this.reclaimer = new FreezerReclaim({
        memory,
        afterMs: reclaim.afterMs,
        handleFile: reclaim.handleFile,
        workingSetFile: reclaim.prefetch ? `${reclaim.handleFile ?? `/run/doze/freezer/${memory.dir.replace(/[^A-Za-z0-9._-]/g, '_')}`}.working-set` : undefined,
        swap: this.options.swap,
        keep: reclaim.keep,
        onReclaim: (outcome) => {
          // Swap may come and go: the last attempt says whether reclaim is on.
          this.reclaimOff = outcome.result === 'skipped' ? outcome.reason : null;
          for (const listener of this.reclaimListeners) listener(outcome);
        },
      });
      await this.reclaimer.recover();
    }
  }

  /** The memory cgroup: configured, else beside the freezer cgroup, else the one its first process is in. */
  private findMemoryCgroup(): MemoryCgroup | undefined {
    if (this.memoryCg) return this.memoryCg;
    const f = this.flavour;
    if (!f) return undefined;
    const dir = f.version === 1 ? f.stateFile.slice(0, -'/freezer.state'.length) : f.freezeFile.slice(0, -'/cgroup.freeze'.length);
    this.memoryCg = memoryCgroupBesideFreezer(dir, this.root);
    if (!this.memoryCg) {
      const procs = readProcs(dir);
      const found = procs[0] === undefined ? undefined : memoryCgroupOfProcess(procs[0], this.root);
      // Only a memory cgroup of its own: never the root or one shared with other processes,
      // whose reclaim would push out memory that is not the instance's.
      const isRoot = found && [join(this.root, 'memory'), this.root, join(this.root, 'unified')].includes(found.dir.replace(/\/+$/, ''));
      if (found && !isRoot && readProcs(found.dir).every((pid) => procs.includes(pid))) this.memoryCg = found;
    }
    return this.memoryCg;
  }

  async memory(): Promise<MemoryUsage | undefined> {
    let cg: MemoryCgroup | undefined;
    try {
      cg = this.findMemoryCgroup();
      return cg ? await readMemoryUsage(cg) : undefined;
    } catch {
      if (cg && cg === this.memoryCg && !this.options.memoryCgroup) this.memoryCg = undefined; // gone with its task: look again next time
      return undefined;
    }
  }

  async majorFaults(): Promise<number | undefined> {
    const cg = this.findMemoryCgroup();
    return cg ? readMajorFaults(cg).catch(() => undefined) : undefined;
  }

  reclaimState(): ReclaimState | undefined {
    if (!this.options.reclaim) return undefined;
    return {
      enabled: this.reclaimer !== undefined && this.reclaimOff === null,
      reason: this.reclaimOff,
      afterMs: this.options.reclaim.afterMs,
      reclaimed: this.reclaimer?.reclaimed ?? false,
      last: this.reclaimer?.last ?? null,
    };
  }

  onReclaim(listener: (outcome: ReclaimOutcome) => void): void {
    this.reclaimListeners.push(listener);
  }

  async sleep(deadlineMs: number, signal?: AbortSignal): Promise<void> {
    await this.setFrozen(true, deadlineMs, signal);
    // Its caller gave up (and wakes it next): no reclaim is armed for a sleep nobody waits for.
    signal?.throwIfAborted();
    if (!this.options.reclaim) return;
    if (!this.reclaimer) await this.prepareReclaim(this.options.reclaim); // its processes may have started after probe
    if (this.reclaimer && this.memoryCg) {
      this.oomKillsAtSleep = oomKills(this.memoryCg);
      // A node without swap now may have it by the time the timer fires: the reclaim checks again.
      this.reclaimer.arm();
    }
  }

  /** Asks the kernel to freeze or thaw the cgroup and waits until it reports it done. */
  private async setFrozen(frozen: boolean, deadlineMs: number, signal?: AbortSignal): Promise<void> {
    const f = await this.require();
    const what = `${frozen ? 'freezing' : 'thawing'} ${this.cgroup}`;
    if (f.version === 1) {
      // FREEZING means some task has not stopped yet; the kernel finishes it.
      const target = frozen ? 'FROZEN' : 'THAWED';
      await this.write(f.stateFile, target);
      await waitFor(what, deadlineMs, async () => (await this.read(f.stateFile)) === target, signal);
    } else {
      const bit = frozen ? '1' : '0';
      await this.write(f.freezeFile, bit);
      await waitFor(what, deadlineMs, async () => new RegExp(`^frozen ${bit}$`, 'm').test(await this.read(f.eventsFile)), signal);
    }
  }

  async wake(deadlineMs: number, signal?: AbortSignal): Promise<void> {
    // Stop a reclaim first (a signal, not a wait), so it stops evicting what the thaw needs.
    this.reclaimer?.cancel();
    await this.setFrozen(false, deadlineMs, signal);
    // Off the wake path: after the detector has seen the instance run.
    if (this.reclaimer) setImmediate(() => this.reclaimer?.afterThaw());
    if (this.reclaimer && this.memoryCg && oomKills(this.memoryCg) > this.oomKillsAtSleep) {
      throw new RuntimeError('E_OOM_KILLED', `the kernel OOM-killed a process of ${this.cgroup} while it slept with its memory reclaimed (memory cgroup ${this.memoryCg.dir}); its task must be restarted`);
    }
  }

  /**
   * Only without reclaim: a reclaim in progress may have lowered the cgroup's limit, which must be
   * put back before the app runs (freezer-reclaim.ts cancel), and only the agent's wake does that.
   */
  earlyThaw(): { file: string; value: string } | undefined {
    const f = this.flavour;
    if (!f || this.options.reclaim) return undefined;
    return f.version === 1 ? { file: f.stateFile, value: 'THAWED' } : { file: f.freezeFile, value: '0' };
  }

  async inspect(): Promise<RuntimeObservedState> {
    const f = await this.require().catch(() => undefined);
    if (!f) return 'gone';
    try {
      if (f.version === 1) {
        const state = await this.read(f.stateFile);
        return state === 'FROZEN' ? 'asleep' : state === 'THAWED' ? 'running' : 'transitioning';
      }
      return /^frozen 1$/m.test(await this.read(f.eventsFile)) ? 'asleep' : 'running';
    } catch {
      return 'gone';
    }
  }

  /** CPU and block I/O of the cgroup's tasks (agent/cgroups/cpu-usage.ts), once the freezer is located. */
  usage(): UsageReading | undefined {
    const source = this.usageCounters();
    return source ? readUsage(source) : undefined;
  }

  usageSource(): UsageSourceView {
    const source = this.usageCounters();
    return source ? usageSourceOf(source) : { kind: 'unavailable', reason: 'cgroup-gone' };
  }

  /**
   * inotify on the cgroup's membership files: a process enters a cgroup by a write to
   * `cgroup.procs` (or `tasks`, v1; `cgroup.threads`, v2), and every write() raises IN_MODIFY on
   * the file (the VFS's own notification, not a kernfs one), within a millisecond here. Costs
   * one inotify watch a file while armed and nothing for processes elsewhere on the node. Not
   * seen: a process cloned straight into a cgroup2 cgroup (clone3 CLONE_INTO_CGROUP), which
   * writes no file (docs/nomad.md).
   */
  watchEntries(onEntry: () => void): () => void {
    const f = this.flavour;
    if (!f) return () => {};
    const dir = dirname(f.version === 1 ? f.stateFile : f.freezeFile);
    const watchers: FSWatcher[] = [];
    for (const file of f.version === 1 ? ['cgroup.procs', 'tasks'] : ['cgroup.procs', 'cgroup.threads']) {
      try {
        const watcher = watch(join(dir, file), { persistent: false }, (event) => event === 'change' && onEntry());
        watcher.on('error', () => watcher.close()); // the cgroup went with its task
        watchers.push(watcher);
      } catch (error) {
        // cgroup.threads needs a cgroup2 with threaded support; cgroup.procs is always there, so
        // failing to watch it (ENOSPC: fs.inotify.max_user_watches reached) is said.
        if (file === 'cgroup.procs') {
          for (const watcher of watchers) watcher.close();
          throw new RuntimeError('E_ENTRY_WATCH', `cannot watch ${join(dir, file)}: ${(error as NodeJS.ErrnoException).code ?? String(error)}${(error as NodeJS.ErrnoException).code === 'ENOSPC' ? ' (raise fs.inotify.max_user_watches)' : ''}`, { cause: error });
        }
      }
    }
    return () => {
      for (const watcher of watchers) watcher.close();
    };
  }

  private usageCounters(): UsageSource | undefined {
    const f = this.flavour;
    return f && { kind: 'cgroup', version: f.version, dir: dirname(f.version === 1 ? f.stateFile : f.freezeFile), root: this.root };
  }

  private async require(): Promise<Flavour> {
    if (!this.flavour) {
      const probe = await this.probe();
      if (!probe.ok) throw new RuntimeError('E_RUNTIME_MISSING', probe.reason ?? 'freezer unavailable');
    }
    return this.flavour!;
  }

  // Synchronous on purpose: a cgroup control file answers in microseconds, and a
  // thread-pool hop would add more to every wake than the write itself costs.
  private async read(file: string): Promise<string> {
    return readFileSync(file, 'utf8').trim();
  }

  private async write(file: string, value: string): Promise<void> {
    try {
      writeFileSync(file, value);
    } catch (error) {
      this.flavour = undefined; // the cgroup may have gone with its allocation
      throw new RuntimeError('E_RUNTIME_IO', `cannot write ${value} to ${file}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`, { cause: error });
    }
  }
}
