import http from 'node:http';
import type { InstanceView } from '../../agent/status/instance-view.js';
import { startAgent } from '../helpers/agent.js';
import { get } from '../helpers/http.js';
import { createInstance } from '../helpers/instance.js';
import { rootTest } from '../helpers/root.js';
import { runCli } from '../helpers/cli.js';

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

rootTest.serial('why is it awake, on real connections: a slow request names its client address, port and age (API and doze status --why)', async (t) => {
  const inst = await createInstance(t);
  const agent = await startAgent(t, { instances: [inst.config({ idleTimeout: '300ms', idlePolicy: 'requests' })] });
  // A client from the host's side of the veth, on a port we know.
  const socketPort = await new Promise<number>((resolve) => {
    const req = http.get(`${inst.app.url}/slow?ms=8000`, { agent: false });
    req.on('socket', (socket) => socket.on('connect', () => resolve(socket.localPort!)));
    req.on('response', (res) => res.resume());
    req.on('error', () => undefined); // destroyed at teardown
    t.teardown(() => void req.destroy());
  });
  await delay(1000);
  const asked = performance.now();
  const view = (await (await fetch(`http://${agent.address}/api/instances/web`)).json()) as InstanceView;
  t.log(`GET /api/instances/web with why-awake (one counters, one connections and one talkers read): ${(performance.now() - asked).toFixed(1)} ms`);
  const reads = performance.now();
  await agent.detector.whyAwake();
  t.log(`why-awake alone (one counters, one connections and one talkers read through doze-maps): ${(performance.now() - reads).toFixed(1)} ms`);
  t.is(view.state, 'running');
  const inFlight = view.whyAwake?.find((r) => r.kind === 'in-flight');
  t.truthy(inFlight, JSON.stringify(view.whyAwake));
  if (inFlight?.kind !== 'in-flight') return;
  t.is(inFlight.clients.length, 1);
  t.is(inFlight.clients[0]!.address, inst.ns.hostIp);
  t.is(inFlight.clients[0]!.port, socketPort);
  t.true(inFlight.clients[0]!.ageMs >= 900 && inFlight.clients[0]!.ageMs < 2500, `age ${inFlight.clients[0]!.ageMs} ms`);
  const cli = await runCli(['status', '--addr', agent.address, '--why', 'web']);
  t.is(cli.code, 0);
  t.regex(cli.stdout, new RegExp(`in-flight +1 request\\(s\\) in flight from ${inst.ns.hostIp.replaceAll('.', '\\.')}:${socketPort} \\(\\d+\\.\\d s\\)`));
  // A plain request answered at once leaves nothing in flight.
  t.is((await get(`${inst.app.url}/`)).status, 200);
});
