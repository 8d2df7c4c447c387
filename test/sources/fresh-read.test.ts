import test from 'ava';
import { freshRead } from '../../agent/sources/fresh-read.js';

/** A read the test finishes by hand; `started` counts the reads begun. */
function manualRead() {
  const pending: Array<(value: number) => void> = [];
  let started = 0;
  const read = () => new Promise<number>((resolve) => {
    started++;
    pending.push(resolve);
  });
  return { read, finish: (value: number) => pending.shift()!(value), started: () => started };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

test('callers during a read share the next one, which starts after they asked', async (t) => {
  const m = manualRead();
  const shared = freshRead(m.read);
  const first = shared();
  t.is(m.started(), 1);
  // Three more callers while the first read runs: one more read for all three, not three.
  const later = [shared(), shared(), shared()];
  t.is(m.started(), 1, 'the next read waits for the running one');
  m.finish(1);
  t.is(await first, 1);
  await tick();
  t.is(m.started(), 2);
  m.finish(2);
  t.deepEqual(await Promise.all(later), [2, 2, 2], 'they got the read that began after they asked');
  // Idle again: a new caller starts a read of its own at once.
  const alone = shared();
  t.is(m.started(), 3);
  m.finish(3);
  t.is(await alone, 3);
});

test('a failed read fails its callers only; the next callers get a new read', async (t) => {
  let n = 0;
  const shared = freshRead(async () => {
    n++;
    if (n === 1) throw new Error('doze-maps exited');
    return n;
  });
  await t.throwsAsync(shared(), { message: 'doze-maps exited' });
  t.is(await shared(), 2);
});
