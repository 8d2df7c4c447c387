import { dirname } from 'node:path';
import type { RehearsedEvent } from '../../agent/detector/detector.js';
import type { InstanceView } from '../../agent/status/instance-view.js';
import { nextState, startAgent } from '../helpers/agent.js';
import { get } from '../helpers/http.js';
import { createInstance } from '../helpers/instance.js';
import { rootTest } from '../helpers/root.js';

/** The next rehearsed event of `kind` for `id` (an event, not a poll); rejects after the deadline. */
function nextRehearsed(agent: Awaited<ReturnType<typeof startAgent>>, id: string, kind: RehearsedEvent['kind'], timeoutMs = 3000): Promise<RehearsedEvent> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${id}: no ${kind} within ${timeoutMs} ms`)), timeoutMs);
    const listener = (e: RehearsedEvent) => {
      if (e.instance.id !== id || e.kind !== kind) return;
      clearTimeout(timer);
      agent.detector.off('rehearsed', listener);
      resolve(e);
    };
    agent.detector.on('rehearsed', listener);
  });
}

rootTest.serial('dry run on a real freezer cgroup: would sleep and wake, never frozen; a PUT turning it off makes it sleep for real, no restart', async (t) => {
  const inst = await createInstance(t);
  // Registrations on, allowed the test's cgroups (below doze-test/) as a node would allow Nomad's.
  const agent = await startAgent(t, { registrations: { enabled: true, cgroupRoots: [dirname(inst.cgroup.dir)] }, instances: [] });
  const base = `http://${agent.address}`;
  const put = (dryRun: boolean) => fetch(`${base}/api/instances/web`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify(inst.config({ idleTimeout: '300ms', dryRun })) });
  t.is((await put(true)).status, 201);

  for (let cycle = 0; cycle < 2; cycle++) {
    await nextRehearsed(agent, 'web', 'would-sleep');
    t.is(await inst.cgroup.freezerState(), 'THAWED', 'a would-be sleeper is never frozen');
    const woke = nextRehearsed(agent, 'web', 'would-wake');
    const r = await get(`${inst.app.url}/`);
    t.is(r.status, 200);
    t.true(r.ms < 200, `answered at once, nothing to thaw (${r.ms.toFixed(1)} ms)`);
    await woke;
  }
  await nextRehearsed(agent, 'web', 'would-sleep');
  t.is(await inst.cgroup.freezerState(), 'THAWED');
  const view = (await (await fetch(`${base}/api/instances/web`)).json()) as InstanceView;
  t.true(view.dryRun);
  t.is(view.state, 'running');
  t.is(view.sleeps, 0);
  t.is(view.wouldSleeps, 3);
  t.is(view.wouldWakes, 2);
  t.truthy(view.wouldSleepSince);
  t.true(view.wouldAsleepMs > 0);
  t.true(view.wouldFreeByteSeconds > 0 || view.memoryUsage === null, 'its measured memory over the would-sleep time, where its cgroup has one');

  // Turned off through the API: managed for real from here, frozen at its next idle timeout.
  const sleeping = nextState(agent, 'web', 'sleeping', 3000);
  t.is((await put(false)).status, 200);
  await sleeping;
  t.is(await inst.cgroup.freezerState(), 'FROZEN');
  const real = (await (await fetch(`${base}/api/instances/web`)).json()) as InstanceView;
  t.false(real.dryRun);
  t.is(real.sleeps, 1);
});
