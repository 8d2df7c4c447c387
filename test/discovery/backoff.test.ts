import test from 'ava';
import { nextBackoff } from '../../agent/discovery/backoff.js';

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
