import { get } from '../helpers/http.js';
import { nextState, startAgent } from '../helpers/agent.js';
import { createInstance } from '../helpers/instance.js';
import { rootTest } from '../helpers/root.js';
import { sh } from '../helpers/sh.js';
import { tweakRuntime } from '../helpers/runtime-wrappers.js';

rootTest.serial('hold: more connections than maxHeld during a wake are all answered; at most maxHeld are held', async (t) => {
  const inst = await createInstance(t);
  const agent = await startAgent(t, { instances: [inst.config({ idleTimeout: '10m', wake: 'hold', maxHeld: 2 })] }, { wrapRuntime: tweakRuntime({ wakeDelayMs: 400 }) });
  await agent.detector.sleepNow('web');
  const chain = `${agent.config.netfilter.chainPrefix}-HOLD`;
  t.regex(await sh('iptables', ['-t', 'nat', '-S', chain]), /connlimit-upto 2/);
  const running = nextState(agent, 'web', 'running', 5000);
  const answers = await Promise.all(Array.from({ length: 5 }, () => get(`${inst.app.url}/`, 5000)));
  await running;
  t.deepEqual(answers.map((a) => a.status), [200, 200, 200, 200, 200]);
  for (const a of answers) t.regex(a.body, /^hello from web/);
  const peak = agent.guards.hold.held('web').peak;
  t.true(peak >= 1 && peak <= 2, `held ${peak} at once (maxHeld 2)`);
  t.is(agent.detector.get('web')!.wakes, 1);
  t.notRegex(await sh('iptables', ['-t', 'nat', '-S', chain]), /doze:web/, 'hold rule removed once it serves');
});

rootTest.serial('hold: a failed wake resets every held connection at once, not at its deadline', async (t) => {
  const inst = await createInstance(t);
  const agent = await startAgent(
    t,
    { instances: [inst.config({ idleTimeout: '10m', wake: 'hold', maxHeld: 4, holdTimeout: '5s' })] },
    { wrapRuntime: tweakRuntime({ wakeDelayMs: 200, failWake: () => true }) },
  );
  await agent.detector.sleepNow('web');
  const started = performance.now();
  const results = await Promise.allSettled(Array.from({ length: 3 }, () => get(`${inst.app.url}/`, 4000)));
  const took = performance.now() - started;
  t.is(agent.detector.get('web')!.state, 'failed');
  for (const r of results) {
    t.is(r.status, 'rejected');
    if (r.status === 'rejected') t.regex(String(r.reason), /ECONNRESET|socket hang up/);
  }
  t.true(took < 1500, `held clients learned of the failure after ${took.toFixed(0)} ms (deadline 5 s)`);
});

rootTest.serial('hold: a held connection past its deadline is reset, not left hanging', async (t) => {
  const inst = await createInstance(t);
  const agent = await startAgent(
    t,
    { instances: [inst.config({ idleTimeout: '10m', wake: 'hold', holdTimeout: '300ms', wakeTimeout: '5s' })] },
    { wrapRuntime: tweakRuntime({ wakeDelayMs: 1500 }) },
  );
  await agent.detector.sleepNow('web');
  const started = performance.now();
  const result = await get(`${inst.app.url}/`, 4000).then(() => 'answered', (error: Error) => error.message);
  const took = performance.now() - started;
  t.regex(result, /ECONNRESET|socket hang up/);
  t.true(took >= 250 && took < 1200, `reset after ${took.toFixed(0)} ms (deadline 300 ms)`);
});
