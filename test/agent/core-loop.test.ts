import { get } from '../helpers/http.js';
import { inState, nextState, startAgent } from '../helpers/agent.js';
import { CHECKER_UID, tcpProbeAs } from '../helpers/checker.js';
import { createInstance } from '../helpers/instance.js';
import { rootTest } from '../helpers/root.js';
import { APP_PORT } from '../helpers/app.js';

rootTest.serial('an instance with no traffic is frozen after its idle timeout', async (t) => {
  const inst = await createInstance(t);
  const agent = await startAgent(t, { instances: [inst.config({ idleTimeout: '300ms' })] });
  t.is(await inst.cgroup.freezerState(), 'THAWED');
  const awakeSince = agent.detector.get('web')!.awakeSinceNs;
  await nextState(agent, 'web', 'sleeping', 3000);
  // Idleness counts from when the agent took the instance on, not from this line.
  const took = Number(process.hrtime.bigint() - awakeSince) / 1e6;
  t.true(took >= 300, `slept after ${took} ms, before its idle timeout`);
  t.is(await inst.cgroup.freezerState(), 'FROZEN');
});

rootTest.serial('traffic keeps an instance awake', async (t) => {
  const inst = await createInstance(t);
  const agent = await startAgent(t, { instances: [inst.config({ idleTimeout: '400ms' })] });
  // Requests every 100 ms for 1.2 s: three idle timeouts' worth.
  for (let i = 0; i < 12; i++) {
    const r = await get(`${inst.app.url}/`);
    t.is(r.status, 200);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  t.is(agent.detector.get('web')!.sleeps, 0);
  t.is(await inst.cgroup.freezerState(), 'THAWED');
});

rootTest.serial('a plain request to a sleeping instance wakes it and gets its 200', async (t) => {
  const inst = await createInstance(t);
  const agent = await startAgent(t, { instances: [inst.config()] });
  await inState(agent, 'web', 'sleeping', 3000);
  t.is(await inst.cgroup.freezerState(), 'FROZEN');
  const running = nextState(agent, 'web', 'running', 3000);
  const r = await get(`${inst.app.url}/`);
  await running;
  t.is(r.status, 200);
  t.regex(r.body, /^hello from web #\d+/);
  // The kernel queued the handshake while frozen: no SYN retransmit (1 s) was needed.
  t.true(r.ms < 500, `first request took ${r.ms.toFixed(1)} ms`);
  const instance = agent.detector.get('web')!;
  t.is(instance.wakes, 1);
  t.is(instance.state, 'running');
  t.true(instance.lastWakeMs! > 0 && instance.lastWakeMs! < 200, `wake took ${instance.lastWakeMs} ms`);
  t.is(await inst.cgroup.freezerState(), 'THAWED');
});

rootTest.serial('sleep and wake repeat: the process keeps its memory', async (t) => {
  const inst = await createInstance(t);
  const agent = await startAgent(t, { instances: [inst.config({ idleTimeout: '200ms' })] });
  const counts: number[] = [];
  for (let cycle = 0; cycle < 5; cycle++) {
    await inState(agent, 'web', 'sleeping', 3000);
    const running = nextState(agent, 'web', 'running', 3000);
    const r = await get(`${inst.app.url}/`);
    await running;
    t.is(r.status, 200);
    counts.push(Number(/#(\d+)/.exec(r.body)![1]));
  }
  t.deepEqual(counts, [...counts].sort((a, b) => a - b), 'the in-memory counter only grows');
  t.is(agent.detector.get('web')!.wakes, 5);
});

rootTest.serial('health-check traffic neither resets idleness nor wakes a sleeper', async (t) => {
  const inst = await createInstance(t);
  const agent = await startAgent(t, {
    healthChecks: { mark: '0x1', fromUid: CHECKER_UID },
    instances: [inst.config({ idleTimeout: '400ms' })],
  });
  const sleeping = nextState(agent, 'web', 'sleeping', 3000);
  // Checks every 100 ms from the start: they must not hold the instance awake.
  let probes = 0;
  let asleep = false;
  void sleeping.then(() => (asleep = true));
  while (!asleep && probes < 30) {
    t.true(await tcpProbeAs(CHECKER_UID, inst.ns.instanceIp, APP_PORT));
    probes++;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const took = await sleeping;
  t.true(took < 1000, `slept after ${took} ms despite checks`);
  // Checks against the sleeper: answered by the stub, no wake.
  for (let i = 0; i < 5; i++) t.true(await tcpProbeAs(CHECKER_UID, inst.ns.instanceIp, APP_PORT));
  await new Promise((resolve) => setTimeout(resolve, 200)); // window for a wrong wake event to arrive
  const instance = agent.detector.get('web')!;
  t.is(instance.state, 'sleeping');
  t.is(instance.wakes, 0);
  t.is(await inst.cgroup.freezerState(), 'FROZEN');
  const counters = (await agent.source.counter(inst.ns.instanceIp))!;
  t.true(counters.checks >= BigInt(probes), `only ${counters.checks} check packets were seen`);
  t.true(instance.checksAnswered >= 5, 'the stub answered the checks made while asleep');
  // And a real request still wakes it.
  const running = nextState(agent, 'web', 'running', 3000);
  t.is((await get(`${inst.app.url}/`)).status, 200);
  await running;
  t.is(instance.wakes, 1);
});

rootTest.serial('max_sleep: an instance wakes by itself after its longest sleep', async (t) => {
  const inst = await createInstance(t);
  const agent = await startAgent(t, { instances: [inst.config({ idleTimeout: '10m', maxSleep: '300ms' })] });
  await agent.detector.sleepNow('web');
  const started = performance.now();
  const reason = await new Promise<string>((resolve) => {
    agent.detector.on('transition', (e) => {
      if (e.instance.id === 'web' && e.to === 'waking') resolve(e.reason);
    });
  });
  await nextState(agent, 'web', 'running', 3000);
  const took = performance.now() - started;
  t.regex(reason, /max_sleep/);
  t.true(took >= 280 && took < 1500, `woke after ${took.toFixed(0)} ms`);
  t.is(await inst.cgroup.freezerState(), 'THAWED');
});
