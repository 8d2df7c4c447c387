import { isAbsolute, join } from 'node:path';
import { readUsage, usageSourceOf, type UsageReading, type UsageSource, type UsageSourceView } from '../cgroups/cpu-usage.js';
import { RuntimeError } from '../shared/errors.js';
import { withDeadline } from '../shared/deadline.js';
import { CGROUP_ROOT } from './freezer.js';
import type { ProbeResult, Runtime, RuntimeObservedState } from './runtime.js';

/** The knobs keep the config's names (runtime `kind: "fake"`: pauseMs, resumeMs, failResume; failPause, for tests, goes with them). */
export interface FakeRuntimeKnobs {
  pauseMs?: number;
  resumeMs?: number;
  failResume?: boolean;
  failPause?: boolean;
  /** A v1 freezer cgroup (relative or absolute) whose CPU and I/O `usage()` reports. */
  usageCgroup?: string;
}

/** A runtime with failure knobs (after Nomad's mock driver): slow sleeps, failing wakes. */
export class FakeRuntime implements Runtime {
  readonly kind = 'fake';
  readonly capabilities = { keepsProcess: true, freesMemory: false };
  state: RuntimeObservedState = 'running';
  /** Sleeps and wakes that took effect. */
  sleeps = 0;
  wakes = 0;

  constructor(public knobs: FakeRuntimeKnobs = {}) {}

  async probe(): Promise<ProbeResult> {
    return { ok: true };
  }

  /** The signal of the last sleep: aborted once its caller gave up (tests read it). */
  sleepSignal: AbortSignal | undefined;

  /** Both calls honour their deadline (E_DEADLINE) when given one; the slow work still finishes behind it. */
  async sleep(deadlineMs?: number, signal?: AbortSignal): Promise<void> {
    this.sleepSignal = signal;
    return deadlineMs === undefined ? this.doSleep() : withDeadline('fake runtime: pause', deadlineMs, this.doSleep());
  }

  async wake(deadlineMs?: number): Promise<void> {
    return deadlineMs === undefined ? this.doWake() : withDeadline('fake runtime: resume', deadlineMs, this.doWake());
  }

  private async doSleep(): Promise<void> {
    this.state = 'transitioning';
    await delay(this.knobs.pauseMs ?? 0);
    if (this.knobs.failPause) {
      this.state = 'running';
      throw new RuntimeError('E_FAKE_PAUSE', 'fake runtime: pause failed on purpose');
    }
    this.sleeps++;
    this.state = 'asleep';
  }

  private async doWake(): Promise<void> {
    await delay(this.knobs.resumeMs ?? 0);
    if (this.knobs.failResume) throw new RuntimeError('E_FAKE_RESUME', 'fake runtime: resume failed on purpose');
    this.wakes++;
    this.state = 'running';
  }

  async inspect(): Promise<RuntimeObservedState> {
    return this.state;
  }

  usage(): UsageReading | undefined {
    const source = this.usageCounters();
    return source ? readUsage(source) : undefined;
  }

  usageSource(): UsageSourceView {
    const source = this.usageCounters();
    return source ? usageSourceOf(source) : { kind: 'unavailable', reason: 'runtime-has-no-counters' };
  }

  private usageCounters(): UsageSource | undefined {
    const cgroup = this.knobs.usageCgroup;
    return cgroup === undefined ? undefined : { kind: 'cgroup', version: 1, dir: isAbsolute(cgroup) ? cgroup : join(CGROUP_ROOT, 'freezer', cgroup) };
  }
}

function delay(ms: number): Promise<void> {
  return ms > 0 ? new Promise((resolve) => setTimeout(resolve, ms)) : Promise.resolve();
}
