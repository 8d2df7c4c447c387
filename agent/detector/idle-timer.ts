import { monotonicNs } from '../shared/clock.js';
import type { ManagedInstance } from './managed-instance.js';

/** The idle clock's one timer for all instances, set for the earliest idle deadline among running ones (cost follows active instances). */
export class IdleTimer {
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly due: () => void) {}

  set(instances: readonly ManagedInstance[]): void {
    clearTimeout(this.timer);
    let earliest: bigint | undefined;
    for (const instance of instances) {
      if (instance.state !== 'running') continue;
      if (earliest === undefined || instance.nextCheckNs < earliest) earliest = instance.nextCheckNs;
    }
    if (earliest === undefined) return;
    const delayMs = Math.max(0, Number(earliest - monotonicNs()) / 1e6);
    this.timer = setTimeout(this.due, Math.ceil(delayMs));
  }

  clear(): void {
    clearTimeout(this.timer);
  }
}
