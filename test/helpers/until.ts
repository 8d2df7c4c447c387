/*
 * The one bounded poll of the tests: for state that announces itself with no
 * event a test can await. Past its bound it throws, which fails the test with
 * what was awaited (and `detail()`, e.g. a log tail), never returns quietly.
 */

export interface UntilOptions {
  /** Bound of the whole wait (default 5000 ms). */
  timeoutMs?: number;
  /** Pause between probes (default 10 ms). */
  everyMs?: number;
  /** Appended to the timeout message: what the test knows that explains it (a log tail). */
  detail?: () => string | Promise<string>;
  /**
   * Keep polling when the probe throws (a daemon that is not up yet), or when it throws an error
   * this predicate accepts; the last error goes in the message. Other errors end the wait at once.
   */
  retryErrors?: boolean | ((error: unknown) => boolean);
}

export type Probe<T> = () => T | undefined | false | Promise<T | undefined | false>;

/** Polls `probe` until it returns something other than undefined or false, and returns that. */
export async function until<T>(what: string, probe: Probe<T>, options: UntilOptions | number = {}): Promise<T> {
  const { timeoutMs = 5000, everyMs = 10, detail, retryErrors = false } = typeof options === 'number' ? { timeoutMs: options } : options;
  const deadline = performance.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined && value !== false) return value;
    } catch (error) {
      if (!(typeof retryErrors === 'function' ? retryErrors(error) : retryErrors)) throw error;
      lastError = error;
    }
    if (performance.now() > deadline) {
      const last = lastError === undefined ? '' : ` (last error: ${String(lastError)})`;
      const more = detail ? `\n${await detail()}` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last}${more}`);
    }
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}
