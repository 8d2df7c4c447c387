/** Exponential backoff bounds for reconnecting to Nomad. */
export interface BackoffOptions {
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

/**
 * The next delay: double the current one within [min, max], then jittered
 * down by up to half ("equal jitter"), so the agents of a cluster do not all
 * reconnect in the same millisecond after a Nomad restart. `random` is
 * Math.random (tests pass their own).
 */
export function nextBackoff(currentMs: number, options: BackoffOptions, random: () => number = Math.random): number {
  const min = options.minBackoffMs ?? 250;
  const max = options.maxBackoffMs ?? 10_000;
  const ceiling = Math.min(Math.max(currentMs * 2, min), max);
  return Math.max(Math.round(ceiling / 2 + (random() * ceiling) / 2), 1);
}

/** Resolves after `ms`, or early (without throwing) when `signal` aborts; never keeps the process alive. */
export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    timer.unref();
    signal?.addEventListener('abort', done, { once: true });
  });
}

export interface RetryOptions extends BackoffOptions {
  signal: AbortSignal;
  /** Told of each failure (not of one that the abort caused), before the wait. */
  onFailure: (error: unknown) => void;
}

/**
 * Runs `attempt` until it resolves, waiting with backoff after each failure;
 * its result, or undefined once `signal` aborts.
 */
export async function retryWithBackoff<T>(attempt: () => Promise<T>, options: RetryOptions): Promise<T | undefined> {
  let backoffMs = 0;
  while (!options.signal.aborted) {
    try {
      return await attempt();
    } catch (error) {
      if (options.signal.aborted) return undefined;
      options.onFailure(error);
      backoffMs = nextBackoff(backoffMs, options);
      await delay(backoffMs, options.signal);
    }
  }
  return undefined;
}
