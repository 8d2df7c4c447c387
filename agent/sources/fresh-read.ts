/**
 * One read shared by concurrent callers, never an old one: a caller gets the result of a read
 * that started after it asked. While a read runs, callers that arrive wait for the next one,
 * which all of them share. The soak (bench/soak.ts) had 20–50 sleeps each dumping the whole
 * connection map (33,000 entries) through the one doze-maps helper at once: the dumps queued
 * past the helper's deadline, it was killed, and every pending request failed.
 */
export function freshRead<T>(read: () => Promise<T>): () => Promise<T> {
  let running: Promise<T> | undefined;
  let next: Promise<T> | undefined;
  const start = (): Promise<T> => {
    const current = read().finally(() => {
      if (running === current) running = undefined;
    });
    running = current;
    return current;
  };
  return () => {
    if (!running) return start();
    // Joins the read after the running one: that one may have started before this caller asked.
    next ??= running.catch(() => undefined).then(() => {
      next = undefined;
      return start();
    });
    return next;
  };
}
