import type { UsageReading } from '../../agent/cgroups/cpu-usage.js';
import { FakeRuntime } from '../../agent/runtimes/fake.js';

/** A fake workload whose CPU use is scripted: `share` of one core from now on (on a faked performance.now too). */
export class ScriptedCpu extends FakeRuntime {
  share = 0;
  private cpuUs = 0;
  private last = performance.now();

  override usage(): UsageReading {
    const now = performance.now();
    this.cpuUs += (now - this.last) * 1000 * this.share;
    this.last = now;
    return { identity: 'scripted', cpuUs: this.cpuUs, ioBytes: undefined };
  }
}
