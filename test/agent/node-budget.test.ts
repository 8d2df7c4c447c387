import { get } from '../helpers/http.js';
import { nextState, startAgent } from '../helpers/agent.js';
import { createInstance } from '../helpers/instance.js';
import { rootTest } from '../helpers/root.js';

rootTest.serial('maxActive: waking a third instance puts the least recently used one to sleep first', async (t) => {
  const [a, b, c] = await Promise.all([createInstance(t, 'a'), createInstance(t, 'b'), createInstance(t, 'c')]);
  const agent = await startAgent(t, {
    budget: { maxActive: 2 },
    instances: [a!.config({ idleTimeout: '10m' }), b!.config({ idleTimeout: '10m' }), c!.config({ idleTimeout: '10m' })],
  });
  const base = `http://${agent.address}`;
  // Start from c asleep, a and b awake (a used longer ago than b).
  await agent.detector.sleepNow('c');
  t.is(await c!.cgroup.freezerState(), 'FROZEN');
  await get(`${a!.app.url}/`);
  await new Promise((resolve) => setTimeout(resolve, 50));
  await get(`${b!.app.url}/`);
  const aSleeps = nextState(agent, 'a', 'sleeping', 3000);
  const cRuns = nextState(agent, 'c', 'running', 3000);
  const answer = await get(`${c!.app.url}/`, 3000);
  await Promise.all([aSleeps, cRuns]);
  t.is(answer.status, 200);
  t.is(await a!.cgroup.freezerState(), 'FROZEN', 'a, the least recently used, made room');
  t.is(await b!.cgroup.freezerState(), 'THAWED');
  t.is(await c!.cgroup.freezerState(), 'THAWED');
  const states = ((await (await fetch(`${base}/api/instances`)).json()) as Array<{ id: string; state: string }>).map((i) => `${i.id}:${i.state}`);
  t.deepEqual(states.sort(), ['a:sleeping', 'b:running', 'c:running']);
});

rootTest.serial('when nothing may sleep (min_awake), the wake waits in the queue, the status shows it, and it proceeds when room appears', async (t) => {
  const [a, b] = await Promise.all([createInstance(t, 'a'), createInstance(t, 'b')]);
  const agent = await startAgent(t, {
    budget: { maxActive: 1 },
    instances: [a!.config({ idleTimeout: '10m', minAwake: '10m', wakeTimeout: '10s' }), b!.config({ idleTimeout: '10m' })],
  });
  await agent.detector.sleepNow('b');
  const queued = new Promise<void>((resolve) => {
    const poll = setInterval(() => {
      if (agent.detector.get('b')!.queuedSinceMs !== undefined) {
        clearInterval(poll);
        resolve();
      }
    }, 5);
  });
  const answer = get(`${b!.app.url}/`, 8000);
  await queued;
  const view = ((await (await fetch(`http://${agent.address}/api/instances/b`)).json()) as { state: string; queuedSince: string | null });
  t.is(view.state, 'sleeping');
  t.truthy(view.queuedSince, 'the status shows the queued wake');
  t.is(await b!.cgroup.freezerState(), 'FROZEN', 'a is within min_awake: b waits');
  // Room appears: an operator puts a to sleep.
  agent.detector.get('a')!.config.minAwake = 0;
  await agent.detector.sleepNow('a');
  t.is((await answer).status, 200);
  t.is(await b!.cgroup.freezerState(), 'THAWED');
  t.is(agent.detector.get('b')!.queuedSinceMs, undefined);
});
