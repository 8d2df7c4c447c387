import test from 'ava';
import { Deadline, withDeadline } from '../../agent/shared/deadline.js';
import { DeadlineError, type DozeError } from '../../agent/shared/errors.js';

test('withDeadline aborts the work\'s signal the moment it gives up, with the same DeadlineError', async (t) => {
  let seen: AbortSignal | undefined;
  const error = await t.throwsAsync<DozeError>(withDeadline('a slow step', 30, (signal) => {
    seen = signal;
    return new Promise<void>((resolve) => setTimeout(resolve, 300));
  }));
  t.is(error?.code, 'E_DEADLINE');
  t.true(seen?.aborted);
  t.is(seen?.reason, error);
});

test('work that finishes in time keeps its signal unaborted', async (t) => {
  let seen: AbortSignal | undefined;
  t.is(await withDeadline('a quick step', 1000, async (signal) => ((seen = signal), 'done')), 'done');
  t.false(seen?.aborted);
});

test('an operation of several steps stops before its next step once its caller gave up', async (t) => {
  const steps: string[] = [];
  const operation = async (signal: AbortSignal) => {
    const deadline = new Deadline('pausing and snapshotting', 5000, signal);
    await deadline.run(async () => {
      steps.push('pause');
      await new Promise((resolve) => setTimeout(resolve, 100));
    });
    await deadline.run(async () => void steps.push('snapshot'));
  };
  const running = withDeadline('the sleep', 30, operation);
  await t.throwsAsync(running, { instanceOf: DeadlineError });
  await new Promise((resolve) => setTimeout(resolve, 150));
  t.deepEqual(steps, ['pause'], 'the snapshot step never ran behind the caller');
});

test('a Deadline whose caller gave up has expired, whatever time it has left', (t) => {
  const controller = new AbortController();
  const deadline = new Deadline('waiting', 5000, controller.signal);
  t.false(deadline.expired);
  controller.abort();
  t.true(deadline.expired);
  t.throws(() => deadline.left(), { instanceOf: DeadlineError });
});
