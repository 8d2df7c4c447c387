import { messageOf } from '../shared/errors.js';
import type { Logger } from '../shared/log.js';
import type { Detector, TransitionEvent } from './detector.js';
import type { ReadonlyInstance } from './managed-instance.js';

/**
 * Wakes a sleeper when a process enters its cgroup: `nomad alloc exec`, a script check or a cron
 * run from outside the task writes the new process into the task's cgroup, where a frozen
 * cgroup freezes it at once (v1: freezer_attach; v2: the same), so the command would hang until
 * the next request. The runtime's watch (Runtime.watchEntries, inotify on cgroup.procs for the
 * freezer) is armed from the moment a sleep begins until the instance is awake again; an entry
 * during the pause queues the wake behind it, so the instance wakes once.
 *
 * Its own room, on the detector's floor, fed by transitions: the detector itself is unchanged.
 */
export class EntryWake {
  private readonly armed = new Map<ReadonlyInstance, () => void>();
  private readonly listener = (e: TransitionEvent) => this.onTransition(e);

  constructor(private readonly detector: Detector, private readonly log: Logger) {
    detector.on('transition', this.listener);
  }

  private onTransition({ instance, to }: TransitionEvent): void {
    if (to === 'pausing') this.arm(instance);
    else if (to === 'waking' || to === 'running' || to === 'failed') this.disarm(instance);
  }

  private arm(instance: ReadonlyInstance): void {
    if (this.armed.has(instance) || !instance.runtime.watchEntries) return;
    let entered = false;
    let stop: () => void;
    try {
      stop = instance.runtime.watchEntries(() => {
        // One inotify event per write, several per `echo $$ > cgroup.procs` (the truncate, the write): one wake.
        if (entered || this.detector.get(instance.id) !== instance || instance.removed) return;
        entered = true;
        this.log.info({ instance: instance.id }, 'a process entered the cgroup of a sleeping instance: waking it');
        void this.detector.wake(instance, 'a process entered its cgroup (nomad alloc exec, a script check)');
      });
    } catch (error) {
      // Asleep without the watch: a process that enters waits frozen until the next request.
      this.log.warn({ instance: instance.id, err: messageOf(error) }, 'cannot watch the cgroup of a sleeping instance for processes entering it');
      return;
    }
    this.armed.set(instance, stop);
  }

  private disarm(instance: ReadonlyInstance): void {
    const stop = this.armed.get(instance);
    if (!stop) return;
    this.armed.delete(instance);
    stop();
  }

  /** Closes every watch (agent stop). */
  stop(): void {
    this.detector.off('transition', this.listener);
    for (const instance of [...this.armed.keys()]) this.disarm(instance);
  }
}
