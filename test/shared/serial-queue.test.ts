import test from 'ava';
import { KeyedSerialQueue, SerialQueue } from '../../agent/shared/serial-queue.js';

/** A piece of work that records when it starts and ends, and finishes when told. */
function step(log: string[], name: string) {
  let finish!: (fail?: boolean) => void;
  const done = new Promise<void>((resolve, reject) => (finish = (fail) => (fail ? reject(new Error(`${name} failed`)) : resolve())));
  return { work: async () => { log.push(`${name} start`); await done; log.push(`${name} end`); return name; }, finish };
}

test('work runs one at a time in the order given; a failure goes to its caller only and the next still runs', async (t) => {
  const queue = new SerialQueue();
  const log: string[] = [];
  const a = step(log, 'a');
  const b = step(log, 'b');
  const ran = [queue.run(a.work), queue.run(b.work)];
  await Promise.resolve();
  t.deepEqual(log, ['a start'], 'b waits for a');
  a.finish(true);
  await t.throwsAsync(ran[0]!, { message: 'a failed' });
  b.finish();
  t.is(await ran[1], 'b');
  t.deepEqual(log, ['a start', 'b start', 'b end']);
});

test('a keyed queue orders work per key, lets other keys through, and says when all drained', async (t) => {
  const queue = new KeyedSerialQueue();
  const log: string[] = [];
  const a1 = step(log, 'a1');
  const a2 = step(log, 'a2');
  const b1 = step(log, 'b1');
  const ran = [queue.run('a', a1.work), queue.run('a', a2.work), queue.run('b', b1.work)];
  await Promise.resolve();
  t.deepEqual(log.sort(), ['a1 start', 'b1 start'], 'a2 waits for a1; b1 does not');
  let drained = false;
  const all = queue.drained().then(() => (drained = true));
  a1.finish();
  b1.finish();
  await Promise.all([ran[0], ran[2]]);
  t.false(drained, 'a2 is still to run');
  a2.finish();
  await all;
  t.deepEqual(await Promise.all(ran), ['a1', 'a2', 'b1']);
});
