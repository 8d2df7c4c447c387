/** Exponential backoff bounds for reconnecting to Nomad. */
export interface BackoffOptions {
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

export function nextBackoff(currentMs: number, options: BackoffOptions): number {
  const min = options.minBackoffMs ?? 250;
  const max = options.maxBackoffMs ?? 10_000;
  return Math.min(Math.max(currentMs * 2, min), max);
}

/** Resolves after `ms`, or early (without throwing) when `signal` aborts; never keeps the process alive. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
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
