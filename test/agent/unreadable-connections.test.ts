import { get } from '../helpers/http.js';
import { startAgent } from '../helpers/agent.js';
import { createInstance } from '../helpers/instance.js';
import { rootTest } from '../helpers/root.js';
import { sampleFreezerStates } from '../helpers/cgroup.js';

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/*
 * doze-maps answered "ok 0" when a dump of doze_conns failed, so a request in flight read as none
 * and the instance could be frozen under it. The helper's test knob (DOZE_MAPS_FAIL_DUMP, see
 * agent/bpf/doze-maps.c) makes every dump of doze_conns fail with EIO.
 */
rootTest.serial('a failed read of the connections during a request in flight keeps the instance awake and says why', async (t) => {
  const inst = await createInstance(t);
  process.env.DOZE_MAPS_FAIL_DUMP = 'doze_conns:1';
  t.teardown(() => void delete process.env.DOZE_MAPS_FAIL_DUMP);
  const agent = await startAgent(t, { instances: [inst.config({ idleTimeout: '200ms', idlePolicy: 'requests' })] });
  const sampling = sampleFreezerStates(inst.cgroup);
  const states = sampling.states;
  const answering = get(`${inst.app.url}/slow?ms=1500`, 5000);
  // While the request is in flight the status API says why the instance is awake (polled, bounded by the request).
  let listed = '';
  for (let i = 0; i < 100 && !/its connections could not be read/.test(listed); i++) {
    await delay(20);
    listed = (await get(`http://${agent.address}/api/instances`, 2000)).body;
  }
  t.regex(listed, /"heldBy":"its connections could not be read \(.*Input\/output error\): kept awake/, 'the status API says why it is awake');
  const answer = await answering;
  await sampling.stop();
  t.is(answer.status, 200);
  t.regex(answer.body, /slow answer after 1500 ms/);
  t.deepEqual([...states], ['THAWED'], 'never frozen during the request');
  const web = agent.detector.get('web')!;
  t.is(web.sleeps, 0);
  t.is(web.state, 'running');
});
