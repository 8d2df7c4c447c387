import test from 'ava';
import { nextBackoff, retryWithBackoff } from '../../agent/discovery/backoff.js';

test('backoff doubles within its bounds and is jittered down by up to half', (t) => {
  const options = { minBackoffMs: 100, maxBackoffMs: 1000 };
  t.is(nextBackoff(0, options, () => 1), 100);
  t.is(nextBackoff(0, options, () => 0), 50);
  t.is(nextBackoff(400, options, () => 1), 800);
  t.is(nextBackoff(800, options, () => 0.5), 750, 'capped at max before the jitter');
  // Two agents that failed at the same moment do not retry at the same moment.
  const delays = new Set(Array.from({ length: 20 }, () => nextBackoff(400, options)));
  t.true(delays.size > 1);
  for (const d of delays) t.true(d >= 400 && d <= 800);
});

test('retryWithBackoff: retries until the attempt succeeds, told of each failure; undefined once aborted', async (t) => {
  // The waits never keep the process alive (unref): this timer does, for the test.
  const alive = setInterval(() => {}, 1000);
  t.teardown(() => clearInterval(alive));
  const failures: string[] = [];
  let calls = 0;
  const signal = new AbortController().signal;
  const result = await retryWithBackoff(async () => {
    if (++calls < 3) throw new Error(`no ${calls}`);
    return 'node-1';
  }, { signal, minBackoffMs: 1, maxBackoffMs: 2, onFailure: (error) => failures.push((error as Error).message) });
  t.is(result, 'node-1');
  t.deepEqual(failures, ['no 1', 'no 2']);

  const controller = new AbortController();
  const aborted = retryWithBackoff(async () => {
    controller.abort();
    throw new Error('refused because the agent is stopping');
  }, { signal: controller.signal, onFailure: () => t.fail('an abort is not a failure') });
  t.is(await aborted, undefined);
});
