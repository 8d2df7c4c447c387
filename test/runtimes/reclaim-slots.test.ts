import test from 'ava';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { atIdlePriority, ReclaimSlots } from '../../agent/runtimes/reclaim-slots.js';

test('at most `limit` reclaims hold a slot; the next waits for a release, in order', async (t) => {
  const slots = new ReclaimSlots(2);
  const a = await slots.acquire();
  const b = await slots.acquire();
  t.is(slots.running, 2);
  const order: string[] = [];
  const c = slots.acquire().then((release) => (order.push('c'), release));
  const d = slots.acquire().then((release) => (order.push('d'), release));
  await new Promise((resolve) => setImmediate(resolve));
  t.deepEqual(order, [], 'both wait');
  a!();
  a!(); // a second release of the same slot frees nothing more
  const releaseC = await c;
  t.deepEqual(order, ['c']);
  t.is(slots.running, 2);
  b!();
  (await d)!();
  releaseC!();
  t.is(slots.running, 0);
});

test('a wake while a reclaim waits for a slot gives up its turn: it gets none and takes none', async (t) => {
  const slots = new ReclaimSlots(1);
  const first = await slots.acquire();
  const woke = new AbortController();
  const waiting = slots.acquire(woke.signal);
  woke.abort();
  t.is(await waiting, undefined);
  first!();
  t.is(slots.running, 0, 'the given-up turn took no slot');
  t.is(await slots.acquire(AbortSignal.abort()), undefined, 'already woken: no slot');
});

test('the writer runs at SCHED_IDLE (policy 5 in /proc/PID/stat)', async (t) => {
  const argv = atIdlePriority(['/bin/sleep', '5']);
  if (argv[0] === '/bin/sleep') return t.fail('chrt (util-linux) is missing on this machine');
  const child = spawn(argv[0]!, argv.slice(1), { stdio: 'ignore' });
  t.teardown(() => child.kill('SIGKILL'));
  await new Promise((resolve) => child.once('spawn', resolve));
  // chrt execs the command: poll (bounded) until the pid shows sleep, then read its policy (field 41).
  const until = Date.now() + 2000;
  let stat = '';
  while (Date.now() < until) {
    stat = readFileSync(`/proc/${child.pid}/stat`, 'utf8');
    if (stat.includes('(sleep)')) break;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  t.is(fields[41 - 3], '5', `policy of ${stat.slice(0, 40)}`);
});
