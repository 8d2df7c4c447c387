import { DeadlineError } from './errors.js';

/*
 * Deadlines, one way for every room: withDeadline bounds one call, Deadline one operation of
 * several calls (each gets what is left), and a wait loop asks a Deadline whether it has expired.
 */

/**
 * Rejects with a DeadlineError when `work` outlives `ms`; the timer never keeps the process alive.
 * Work given as a function gets an AbortSignal, aborted (with that DeadlineError) the moment the
 * deadline passes: an operation of several steps stops before its next one instead of running
 * on behind whatever the caller does next (a wake after a sleep that timed out).
 */
export async function withDeadline<T>(what: string, ms: number, work: Promise<T> | ((signal: AbortSignal) => Promise<T>)): Promise<T> {
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const error = new DeadlineError(what, ms);
      controller.abort(error);
      reject(error);
    }, ms);
    timer.unref();
  });
  try {
    return await Promise.race([typeof work === 'function' ? work(controller.signal) : work, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * One deadline shared by the several calls of one operation (a sleep's VMM calls, a scale's
 * Nomad calls): each call gets what is left, and running out names the whole operation. With the
 * caller's `signal`, it has run out as soon as the caller gave up too.
 */
export class Deadline {
  private readonly until: number;
  constructor(readonly what: string, readonly totalMs: number, private readonly signal?: AbortSignal) {
    this.until = performance.now() + totalMs;
  }

  /** Whether it has run out (or its caller gave up). */
  get expired(): boolean {
    return this.signal?.aborted === true || performance.now() >= this.until;
  }

  /** Milliseconds left, 0 once it has run out (never throws). */
  remainingMs(): number {
    return Math.max(0, this.until - performance.now());
  }

  /** Milliseconds left; throws E_DEADLINE when none are. */
  left(): number {
    const left = Math.floor(this.until - performance.now());
    if (left <= 0 || this.signal?.aborted) throw new DeadlineError(this.what, this.totalMs);
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
