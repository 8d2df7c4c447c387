import http from 'node:http';
import { get } from '../helpers/http.js';
import { nextState, startAgent } from '../helpers/agent.js';
import { createInstance } from '../helpers/instance.js';
import { wakeWithPooledRequest } from '../helpers/pooled-request.js';
import { rootTest } from '../helpers/root.js';
import { tweakRuntime } from '../helpers/runtime-wrappers.js';
import { sampleFreezerStates } from '../helpers/cgroup.js';

rootTest.serial('requests: a request 5× the idle timeout gets its full answer and is never frozen under it', async (t) => {
  const inst = await createInstance(t);
  const agent = await startAgent(t, { instances: [inst.config({ idleTimeout: '300ms', idlePolicy: 'requests' })] });
  const sampling = sampleFreezerStates(inst.cgroup);
  const states = sampling.states;
  const answer = await get(`${inst.app.url}/slow?ms=1500`, 5000);
  const answeredAt = performance.now();
  await sampling.stop();
  t.is(answer.status, 200);
  t.regex(answer.body, /slow answer after 1500 ms/);
  t.deepEqual([...states], ['THAWED'], 'the cgroup was never frozen during the request');
  t.is(agent.detector.get('web')!.sleeps, 0);
  await nextState(agent, 'web', 'sleeping', 2000);
  const after = performance.now() - answeredAt;
  t.true(after <= 300 + 100 + 50, `slept ${after.toFixed(0)} ms after the answer (idle timeout 300 ms)`);
});

rootTest.serial('requests: an idle keep-alive connection does not keep the instance awake; the next request on it wakes it', async (t) => {
  const inst = await createInstance(t);
  const agent = await startAgent(t, { instances: [inst.config({ idleTimeout: '300ms', idlePolicy: 'requests' })] });
  const pool = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => pool.destroy());
  const first = await get(`${inst.app.url}/`, 3000, pool);
  t.is(first.status, 200);
  await nextState(agent, 'web', 'sleeping', 2000);
  t.is(await inst.cgroup.freezerState(), 'FROZEN');
  const { answer: second, reused } = await wakeWithPooledRequest(agent, 'web', `${inst.app.url}/`, pool);
  t.is(second.status, 200);
  t.true(reused);
  t.is(Object.values(pool.freeSockets).flat().length, 1, 'still one pooled connection: the same one was reused');
  t.is(agent.detector.get('web')!.wakes, 1);
});

rootTest.serial('connections: a server-sent-events stream pushing every 2× the idle timeout gets every push on time', async (t) => {
  const inst = await createInstance(t);
  const agent = await startAgent(t, { instances: [inst.config({ idleTimeout: '250ms', idlePolicy: 'connections' })] });
  const arrivals: number[] = [];
  const started = performance.now();
  await new Promise<void>((resolve, reject) => {
    const req = http.get(`${inst.app.url}/stream?every=500&count=4`, { agent: false, timeout: 5000 }, (res) => {
      res.setEncoding('utf8').on('data', () => arrivals.push(performance.now() - started));
      res.on('end', () => resolve());
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('stream timed out')));
  });
  t.is(arrivals.length >= 4, true, `${arrivals.length} pushes`);
  const gaps = arrivals.slice(1).map((at, i) => at - arrivals[i]!);
  for (const gap of gaps) t.true(gap < 650, `a push came ${gap.toFixed(0)} ms after the previous one (every 500 ms)`);
  t.is(agent.detector.get('web')!.sleeps, 0, 'never slept while the stream was open');
  await nextState(agent, 'web', 'sleeping', 2000);
});

rootTest.serial('a request sent while the instance is pausing is answered, and nothing is left paused', async (t) => {
  const inst = await createInstance(t);
  // A pause that freezes at once but takes 400 ms to report: the request hits a frozen app mid-transition.
  let paused!: () => void;
  const pauseTookEffect = new Promise<void>((resolve) => (paused = resolve));
  const agent = await startAgent(t, { instances: [inst.config({ idleTimeout: '200ms' })] }, { wrapRuntime: tweakRuntime({ sleepLingerMs: 400, onAsleep: () => paused() }) });
  await nextState(agent, 'web', 'pausing', 2000);
  await pauseTookEffect;
  t.is(await inst.cgroup.freezerState(), 'FROZEN');
  t.is(agent.detector.get('web')!.state, 'pausing', 'frozen while the agent is still pausing');
  const running = nextState(agent, 'web', 'running', 3000);
  const answer = await get(`${inst.app.url}/`, 3000);
  await running;
  t.is(answer.status, 200);
  t.is(await inst.cgroup.freezerState(), 'THAWED');
  t.is(agent.detector.get('web')!.state, 'running');
});
