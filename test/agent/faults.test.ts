import { get } from '../helpers/http.js';
import { nextState, startAgent } from '../helpers/agent.js';
import { createInstance } from '../helpers/instance.js';
import { rootTest } from '../helpers/root.js';
import { tweakRuntime } from '../helpers/runtime-wrappers.js';

rootTest.serial('a resume that hangs past wakeTimeout is a failed wake with the reason, not a stuck instance', async (t) => {
  const inst = await createInstance(t);
  const agent = await startAgent(t, { instances: [inst.config({ idleTimeout: '10m', wakeTimeout: '300ms' })] }, { wrapRuntime: tweakRuntime({ wakeDelayMs: 2000 }) });
  await agent.detector.sleepNow('web');
  const failed = nextState(agent, 'web', 'failed', 3000);
  void get(`${inst.app.url}/`, 500).catch(() => undefined);
  await failed;
  const view = (await (await fetch(`http://${agent.address}/api/instances/web`)).json()) as { state: string; failure: string };
  t.is(view.state, 'failed');
  t.regex(view.failure, /wake failed: resuming web did not finish within 300 ms/);
});

rootTest.serial('a pause that fails leaves the instance awake and serving, never half paused', async (t) => {
  const inst = await createInstance(t);
  const agent = await startAgent(t, { instances: [inst.config({ idleTimeout: '200ms' })] }, { wrapRuntime: tweakRuntime({ failSleep: () => true }) });
  const back = new Promise<string>((resolve) => {
    agent.detector.on('transition', (e) => {
      if (e.instance.id === 'web' && e.from === 'pausing' && e.to === 'running') resolve(e.reason);
    });
  });
  t.regex(await back, /pause failed: pause failed on purpose/);
  t.is(await inst.cgroup.freezerState(), 'THAWED', 'the freeze was undone');
  t.is((await get(`${inst.app.url}/`)).status, 200);
  t.is(agent.detector.get('web')!.sleeps, 0);
});
