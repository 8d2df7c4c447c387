import type { TrafficSource } from '../../agent/sources/traffic-source.js';

/** The source calls the detector makes around a sleep and a wake, where a test can step in. */
export type SourceCall = 'swapState' | 'setState' | 'counter' | 'countersOf' | 'connections' | 'talkersOf' | 'state';

/**
 * A traffic source (fake or real) whose next call of a method first runs what the test put
 * there: "the tc program runs on a packet right before the agent's swap to PAUSING". One-shot,
 * in order per method; the call goes on once the step is done.
 */
export function steppedSource<T extends TrafficSource>(source: T): { source: T; before(call: SourceCall, step: () => unknown): void; pending(): number } {
  const steps = new Map<SourceCall, (() => unknown)[]>();
  const proxy = new Proxy(source, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver) as unknown;
      if (typeof value !== 'function') return value;
      const queued = steps.get(prop as SourceCall);
      return async (...args: unknown[]) => {
        const step = queued?.shift();
        if (step) await step();
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return {
    source: proxy,
    before(call, step) {
      steps.set(call, [...(steps.get(call) ?? []), step]);
    },
    pending: () => [...steps.values()].reduce((n, s) => n + s.length, 0),
  };
}
