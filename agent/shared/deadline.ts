import { DeadlineError } from './errors.js';

/*
 * Deadlines, one way for every room: withDeadline bounds one call, Deadline one operation of
 * several calls (each gets what is left), and a wait loop asks a Deadline whether it has expired.
 */

/** Rejects with a DeadlineError when `work` outlives `ms`; the timer never keeps the process alive. */
export async function withDeadline<T>(what: string, ms: number, work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new DeadlineError(what, ms)), ms);
    timer.unref();
  });
  try {
    return await Promise.race([work, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * One deadline shared by the several calls of one operation (a sleep's VMM calls, a scale's
 * Nomad calls): each call gets what is left, and running out names the whole operation.
 */
export class Deadline {
  private readonly until: number;
  constructor(readonly what: string, readonly totalMs: number) {
    this.until = performance.now() + totalMs;
  }

  /** Whether it has run out. */
  get expired(): boolean {
    return performance.now() >= this.until;
  }

  /** Milliseconds left, 0 once it has run out (never throws). */
  remainingMs(): number {
    return Math.max(0, this.until - performance.now());
  }

  /** Milliseconds left; throws E_DEADLINE when none are. */
  left(): number {
    const left = Math.floor(this.until - performance.now());
    if (left <= 0) throw new DeadlineError(this.what, this.totalMs);
    return left;
  }

  /** Runs `work` with whatever is left, as a DeadlineError naming the whole operation when it runs out. */
  async run<T>(work: (leftMs: number) => Promise<T>): Promise<T> {
    try {
      return await work(this.left());
    } catch (error) {
      if (error instanceof DeadlineError) throw new DeadlineError(this.what, this.totalMs);
      throw error;
    }
  }
}
