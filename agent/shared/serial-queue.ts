/*
 * Work that must not overlap, run one at a time in the order it was given: each piece waits for
 * the previous one, whether that succeeded or failed, and its own result (or error) goes to its
 * caller alone. One instance's transitions, the registry's registrations, a VM owner's sleeps and
 * wakes, discovery's reconciliations all queue so.
 */
export class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(work: () => Promise<T>): Promise<T> {
    const next = this.tail.then(work, work);
    this.tail = next.catch(() => undefined);
    return next;
  }
}

/** One queue per key: work on one key runs in order, different keys proceed independently. A drained key's queue is dropped. */
export class KeyedSerialQueue {
  private readonly tails = new Map<string, Promise<unknown>>();

  run<T>(key: string, work: () => Promise<T>): Promise<T> {
    const next = (this.tails.get(key) ?? Promise.resolve()).then(work, work);
    const tail = next.catch(() => undefined);
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return next;
  }

  /** Settles once everything queued so far, on every key, has run. */
  async drained(): Promise<void> {
    await Promise.all([...this.tails.values()]);
  }
}
