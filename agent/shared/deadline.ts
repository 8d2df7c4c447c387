import { DeadlineError } from './errors.js';

/**
 * One deadline shared by the several calls of one operation (a sleep's VMM calls, a scale's
 * Nomad calls): each call gets what is left, and running out names the whole operation.
 */
export class Deadline {
  private readonly until: number;
  constructor(readonly what: string, readonly totalMs: number) {
    this.until = performance.now() + totalMs;
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
