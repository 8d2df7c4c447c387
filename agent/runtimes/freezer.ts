import { readFileSync, writeFileSync } from 'node:fs';
import { access } from 'node:fs/promises';
import { dirname, isAbsolute, join } from 'node:path';
import { readUsage, type UsageReading } from '../cgroups/cpu-usage.js';
import { DeadlineError, RuntimeError } from '../errors.js';
import type { ProbeResult, Runtime, RuntimeObservedState } from './runtime.js';

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

const POLL_MS = 0.2;

async function waitFor(what: string, deadlineMs: number, check: () => Promise<boolean>): Promise<void> {
  const until = performance.now() + deadlineMs;
  for (;;) {
    if (await check()) return;
    if (performance.now() >= until) throw new DeadlineError(what, deadlineMs);
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

/** Sleep by freezing the instance's cgroup: the process, its memory and its sockets stay. */
export class FreezerRuntime implements Runtime {
  readonly kind = 'freezer';
  readonly capabilities = { keepsProcess: true, freesMemory: false };
  private flavour: Flavour | undefined;

  constructor(readonly cgroup: string, private readonly root = CGROUP_ROOT) {}

  async probe(): Promise<ProbeResult> {
    this.flavour = await locateFreezer(this.cgroup, this.root);
    if (!this.flavour) {
      return { ok: false, reason: `cgroup ${JSON.stringify(this.cgroup)} has no freezer (looked for freezer.state under ${this.root}/freezer and cgroup.freeze under cgroup2)` };
    }
    return { ok: true };
  }

  async pause(deadlineMs: number): Promise<void> {
    const f = await this.require();
    if (f.version === 1) {
      await this.write(f.stateFile, 'FROZEN');
      // FREEZING means some task has not stopped yet; the kernel finishes it.
      await waitFor(`freezing ${this.cgroup}`, deadlineMs, async () => (await this.read(f.stateFile)) === 'FROZEN');
    } else {
      await this.write(f.freezeFile, '1');
      await waitFor(`freezing ${this.cgroup}`, deadlineMs, async () => /^frozen 1$/m.test(await this.read(f.eventsFile)));
    }
  }

  async resume(deadlineMs: number): Promise<void> {
    const f = await this.require();
    if (f.version === 1) {
      await this.write(f.stateFile, 'THAWED');
      await waitFor(`thawing ${this.cgroup}`, deadlineMs, async () => (await this.read(f.stateFile)) === 'THAWED');
    } else {
      await this.write(f.freezeFile, '0');
      await waitFor(`thawing ${this.cgroup}`, deadlineMs, async () => /^frozen 0$/m.test(await this.read(f.eventsFile)));
    }
  }

  async inspect(): Promise<RuntimeObservedState> {
    const f = await this.require().catch(() => undefined);
    if (!f) return 'gone';
    try {
      if (f.version === 1) {
        const state = await this.read(f.stateFile);
        return state === 'FROZEN' ? 'paused' : state === 'THAWED' ? 'running' : 'transitioning';
      }
      return /^frozen 1$/m.test(await this.read(f.eventsFile)) ? 'paused' : 'running';
    } catch {
      return 'gone';
    }
  }

  /** CPU and block I/O of the cgroup's tasks (agent/cgroups/cpu-usage.ts), once the freezer is located. */
  usage(): UsageReading | undefined {
    const f = this.flavour;
    if (!f) return undefined;
    return readUsage({ kind: 'cgroup', version: f.version, dir: dirname(f.version === 1 ? f.stateFile : f.freezeFile), root: this.root });
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
