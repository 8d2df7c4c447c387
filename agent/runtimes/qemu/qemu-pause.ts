import { constants, existsSync } from 'node:fs';
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { readUsage, usageSourceOf, type UsageReading, type UsageSource, type UsageSourceView } from '../../cgroups/cpu-usage.js';
import { DeadlineError, RuntimeError, messageOf } from '../../shared/errors.js';
import { withDeadline } from '../../shared/deadline.js';
import type { ProbeResult, Runtime, RuntimeObservedState } from '../runtime.js';
import { cgroupMemoryBytes, inMemoryFilesystem, locateMemoryCgroup, pageoutFile, pageoutHelperPath, type MemoryCgroup } from './memory-reclaim.js';
import { QmpSession } from './qmp-session.js';
import { Deadline } from '../../shared/deadline.js';

export interface QemuPauseOptions {
  /** The VM's QMP socket (`-qmp unix:PATH,server=on,wait=off`). */
  qmp: string;
  /** Push guest RAM out of memory while asleep (needs it in a shared file on disk). */
  reclaim: boolean;
  /** The QEMU process's memory cgroup (relative to the v1 memory hierarchy or cgroup2, or absolute): where memory is measured. */
  memoryCgroup?: string;
  /** The guest RAM file (mem-path of the memory-backend-file); found through QMP when omitted. */
  ramFile?: string;
  cgroupRoot?: string;
  /** Busy guard: QEMU's cgroup (absolute; a v1 freezer cgroup or a cgroup2 directory), else its process. */
  cpuCgroup?: string;
  /** The doze-pageout helper (tests point it elsewhere). */
  pageoutHelper?: string;
}

/** QEMU's run states (qapi/run-state.json) as doze sees them. */
export function observedFromQemuStatus(status: string): RuntimeObservedState {
  switch (status) {
    case 'running':
      return 'running';
    // Stopped, and `cont` starts it: what doze calls asleep.
    case 'paused':
    case 'suspended':
    case 'prelaunch':
    case 'postmigrate':
    case 'inmigrate':
    case 'debug':
      return 'asleep';
    case 'finish-migrate':
    case 'save-vm':
    case 'restore-vm':
    case 'colo':
      return 'transitioning';
    default:
      // shutdown, internal-error, io-error, guest-panicked, watchdog: nothing to wake
      return 'gone';
  }
}

const statusSchema = z.looseObject({ running: z.boolean(), status: z.string() });
const memdevListSchema = z.array(z.looseObject({ id: z.string().optional(), size: z.number(), share: z.boolean() }));

const PROBE_MS = 3000;
const INSPECT_MS = 1000;

/**
 * `pause` mode: QMP `stop` / `cont` on a VM whose QEMU process stays alive (the
 * only sleep allowed when the VMM is the Nomad task itself). With `reclaim`, the
 * guest's RAM (a `memory-backend-file,share=on` on disk) is written back and
 * dropped from memory after the stop (doze-pageout: only the guest's pages, not
 * QEMU's own), and faults back from the file as the guest touches it after `cont`.
 */
export class QemuPauseRuntime implements Runtime {
  readonly kind = 'qemu';
  readonly mode = 'pause';
  readonly capabilities: { keepsProcess: boolean; freesMemory: boolean };
  readonly qmp: QmpSession;
  private cgroup: MemoryCgroup | undefined;
  private ramFile: string | undefined;
  /** QEMU's pid, learnt from the first page-out (saves a scan of /proc on the next ones). */
  private qemuPid: number | undefined;
  private cpuCgroupVersion: 1 | 2 | undefined;
  /** What the last reclaim did, for status and benchmarks. */
  lastReclaim: { ms: number; bytesAdvised: number } | undefined;

  constructor(private readonly options: QemuPauseOptions) {
    this.capabilities = { keepsProcess: true, freesMemory: options.reclaim };
    this.qmp = new QmpSession(options.qmp);
    this.ramFile = options.ramFile;
  }

  async probe(): Promise<ProbeResult> {
    let status: z.infer<typeof statusSchema>;
    try {
      status = await this.status(PROBE_MS);
    } catch (error) {
      return { ok: false, reason: `QMP socket ${this.options.qmp} does not answer: ${messageOf(error)}` };
    }
    if (observedFromQemuStatus(status.status) === 'gone') return { ok: false, reason: `QEMU at ${this.options.qmp} is in state ${status.status}: nothing to manage` };
    if (this.options.memoryCgroup) {
      this.cgroup = await locateMemoryCgroup(this.options.memoryCgroup, this.options.cgroupRoot);
      if (!this.cgroup) {
        return { ok: false, reason: `memory cgroup ${JSON.stringify(this.options.memoryCgroup)} not found (looked under the v1 memory hierarchy and cgroup2)` };
      }
    }
    if (!this.options.reclaim) return { ok: true };
    return this.probeReclaim();
  }

  /** Reclaim needs guest RAM in a shared file on a real disk, and the page-out helper. */
  private async probeReclaim(): Promise<ProbeResult> {
    const hint = 'start QEMU with -object memory-backend-file,id=ram0,size=<RAM>,mem-path=<file on disk>,share=on -machine memory-backend=ram0, or set reclaim: false';
    const helper = this.options.pageoutHelper ?? pageoutHelperPath();
    try {
      await access(helper, constants.X_OK);
    } catch {
      return { ok: false, reason: `reclaim needs the doze-pageout helper at ${helper} (built by make build), or set reclaim: false` };
    }
    let memdevs: z.infer<typeof memdevListSchema>;
    try {
      memdevs = memdevListSchema.parse(await this.qmp.execute('query-memdev', undefined, PROBE_MS));
    } catch (error) {
      return { ok: false, reason: `query-memdev failed: ${messageOf(error)}` };
    }
    const shared = memdevs.filter((m) => m.share && m.id !== undefined);
    if (shared.length === 0) return { ok: false, reason: `guest RAM is not a shared file-backed memory backend: ${hint}` };
    if (!this.ramFile) {
      for (const memdev of shared) {
        try {
          const path = await this.qmp.execute<unknown>('qom-get', { path: `/objects/${memdev.id}`, property: 'mem-path' }, PROBE_MS);
          if (typeof path === 'string' && path) {
            this.ramFile = path;
            break;
          }
        } catch {
          // memory-backend-memfd and friends have no mem-path
        }
      }
      if (!this.ramFile) return { ok: false, reason: `no shared memory backend has a mem-path: ${hint}` };
    }
    try {
      const fs = await inMemoryFilesystem(this.ramFile);
      if (fs) return { ok: false, reason: `RAM file ${this.ramFile} is on ${fs}: reclaim would free nothing; put it on a disk filesystem or set reclaim: false` };
    } catch (error) {
      return { ok: false, reason: `RAM file ${this.ramFile}: ${(error as NodeJS.ErrnoException).code ?? messageOf(error)}` };
    }
    return { ok: true };
  }

  async sleep(deadlineMs: number, signal?: AbortSignal): Promise<void> {
    const deadline = new Deadline('pausing QEMU (before reclaim)', deadlineMs, signal);
    await this.qmp.execute('stop', undefined, deadlineMs);
    if (!this.options.reclaim) return;
    const remaining = Math.round(deadline.remainingMs());
    if (remaining <= 0 || deadline.expired) throw new DeadlineError(deadline.what, deadlineMs);
    await withDeadline('reclaiming guest memory', remaining, this.reclaim(remaining));
  }

  async wake(deadlineMs: number): Promise<void> {
    // Reclaimed guest pages fault back in from the RAM file as the guest touches them.
    await this.qmp.execute('cont', undefined, deadlineMs);
  }

  /** QEMU's CPU time and I/O (busy guard): its cgroup when given, else its process once its pid is known (learnt by the first page-out). */
  usage(): UsageReading | undefined {
    const source = this.usageCounters();
    return source ? readUsage(source) : undefined;
  }

  usageSource(): UsageSourceView {
    const source = this.usageCounters();
    return source ? usageSourceOf(source) : { kind: 'unavailable', reason: 'no-process-yet' };
  }

  private usageCounters(): UsageSource | undefined {
    const dir = this.options.cpuCgroup;
    if (dir !== undefined) {
      this.cpuCgroupVersion ??= existsSync(join(dir, 'freezer.state')) ? 1 : 2;
      return { kind: 'cgroup', version: this.cpuCgroupVersion, dir, root: this.options.cgroupRoot };
    }
    return this.qemuPid ? { kind: 'process', pid: this.qemuPid } : undefined;
  }

  async inspect(): Promise<RuntimeObservedState> {
    try {
      return observedFromQemuStatus((await this.status(INSPECT_MS)).status);
    } catch {
      return 'gone';
    }
  }

  /** Bytes charged to the VM's memory cgroup (undefined without one): for status and benchmarks. */
  async memoryBytes(): Promise<number | undefined> {
    return this.cgroup ? cgroupMemoryBytes(this.cgroup) : undefined;
  }

  get ramFilePath(): string | undefined {
    return this.ramFile;
  }

  /** Closes the QMP connection; the VM is left as it is. */
  async close(): Promise<void> {
    this.qmp.close();
  }

  private async status(deadlineMs: number): Promise<z.infer<typeof statusSchema>> {
    const raw = await this.qmp.execute('query-status', undefined, deadlineMs);
    const parsed = statusSchema.safeParse(raw);
    if (!parsed.success) throw new RuntimeError('E_QMP_PROTOCOL', `query-status answered ${JSON.stringify(raw).slice(0, 120)}`);
    return parsed.data;
  }

  private async reclaim(deadlineMs: number): Promise<void> {
    if (!this.ramFile) {
      const probe = await this.probeReclaim();
      if (!probe.ok) throw new RuntimeError('E_RECLAIM', probe.reason ?? 'reclaim is not possible');
    }
    // The stopped guest dirties nothing more: write its RAM back, unmap it from QEMU, drop it.
    const started = performance.now();
    const result = await pageoutFile(this.ramFile!, this.qemuPid, deadlineMs, this.options.pageoutHelper);
    this.qemuPid = result.processes[0]?.pid;
    this.lastReclaim = { ms: performance.now() - started, bytesAdvised: result.processes.reduce((sum, p) => sum + p.bytes, 0) };
  }
}
