import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';

/*
 * Reclaims must never slow the instances still awake. A reclaim is CPU work: zram compresses
 * each page in the context of the task that reclaims it, here the writer of memory.force_empty
 * / memory.reclaim (~0.6 s of one core for 200 MiB, lz4). So the writer runs at SCHED_IDLE (it
 * gets a core only when no awake task wants one) and the node runs a bounded number of them
 * at once: on this 2-core machine a burst of sleeps used to start one reclaim per instance,
 * all compressing beside the busy apps (density benchmark: busy p99 173 ms with doze against
 * 108 ms without, docs/memory.md).
 */

/** At most this many reclaims at once per agent: half the cores, at least one. */
export const MAX_CONCURRENT_RECLAIMS = Math.max(1, Math.floor(availableParallelism() / 2));

/** A counting semaphore: a reclaim waits for a slot; a wake while it waits gives up its turn. */
export class ReclaimSlots {
  private used = 0;
  private readonly waiting: Array<() => void> = [];

  /** `idlePriority` false and an unbounded limit give the behaviour before both (the density benchmark compares). */
  constructor(
    public limit = MAX_CONCURRENT_RECLAIMS,
    public idlePriority = true,
  ) {}

  get running(): number {
    return this.used;
  }

  /** Resolves with a release function once a slot is free, or with undefined when `signal` aborts first. */
  acquire(signal?: AbortSignal): Promise<(() => void) | undefined> {
    if (signal?.aborted) return Promise.resolve(undefined);
    if (this.used < this.limit) {
      this.used++;
      return Promise.resolve(this.releaser());
    }
    return new Promise((resolve) => {
      const turn = () => {
        signal?.removeEventListener('abort', giveUp);
        this.used++;
        resolve(this.releaser());
      };
      const giveUp = () => {
        const at = this.waiting.indexOf(turn);
        if (at >= 0) this.waiting.splice(at, 1);
        resolve(undefined);
      };
      this.waiting.push(turn);
      signal?.addEventListener('abort', giveUp, { once: true });
    });
  }

  private releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.used--;
      this.waiting.shift()?.();
    };
  }
}

/** The node's reclaims share one set of slots (one agent per node). */
export const reclaimSlots = new ReclaimSlots();

const CHRT = ['/usr/bin/chrt', '/bin/chrt'].find((path) => existsSync(path));

/**
 * The command that runs `argv` at SCHED_IDLE (util-linux chrt), or `argv` itself where chrt is
 * missing (then at normal priority: the bound on concurrency still holds).
 */
export function atIdlePriority(argv: string[], slots: ReclaimSlots = reclaimSlots): string[] {
  return CHRT && slots.idlePriority ? [CHRT, '--idle', '0', ...argv] : argv;
}

/** Puts a writer back at SCHED_OTHER (a cancelled one must exit fast); never waited for, errors ignored. */
export function toNormalPriority(pid: number): void {
  if (!CHRT) return;
  const child = spawn(CHRT, ['--other', '--pid', '0', String(pid)], { stdio: 'ignore' });
  child.on('error', () => undefined);
  child.unref();
}
