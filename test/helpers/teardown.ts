/** What the helpers need from a test: somewhere to register cleanup (ava's t, or bench/'s collector). */
export interface Teardown {
  teardown(fn: () => unknown): void;
}

/** For benchmarks: collects cleanups and runs them in reverse order. */
export class Cleanups implements Teardown {
  private readonly fns: Array<() => unknown> = [];

  teardown(fn: () => unknown): void {
    this.fns.push(fn);
  }

  async run(): Promise<void> {
    for (const fn of this.fns.reverse()) await Promise.resolve(fn()).catch(() => undefined);
    this.fns.length = 0;
  }
}
