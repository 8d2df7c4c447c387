import dgram from 'node:dgram';
import { nextState, startAgent } from '../helpers/agent.js';
import { APP_PORT } from '../helpers/app.js';
import { CHECKER_UID, tcpProbeAs } from '../helpers/checker.js';
import { createInstance } from '../helpers/instance.js';
import { rootTest } from '../helpers/root.js';

rootTest.serial('a flood of packets to a sleeper raises one wake event and one wake (no wake storm)', async (t) => {
  const inst = await createInstance(t);
  const agent = await startAgent(t, { instances: [inst.config({ idleTimeout: '10m' })] });
  let events = 0;
  agent.source.onWake(() => events++);
  await agent.detector.sleepNow('web');
  const running = nextState(agent, 'web', 'running', 3000);
  const socket = dgram.createSocket('udp4');
  for (let i = 0; i < 500; i++) socket.send('flood', 9, inst.ns.instanceIp);
  await running;
  await new Promise((resolve) => setTimeout(resolve, 200)); // late events would land here
  socket.close();
  t.is(events, 1, 'the program signals once per sleep (compare-and-swap on the state)');
  t.is(agent.detector.get('web')!.wakes, 1);
});

rootTest.serial('only the configured checker identity is trusted: another local user\'s traffic is real traffic', async (t) => {
  const inst = await createInstance(t);
  const agent = await startAgent(t, { healthChecks: { fromUid: CHECKER_UID }, instances: [inst.config({ idleTimeout: '10m' })] });
  await agent.detector.sleepNow('web');
  t.true(await tcpProbeAs(CHECKER_UID, inst.ns.instanceIp, APP_PORT));
  t.is(agent.detector.get('web')!.state, 'sleeping', 'the checker does not wake it');
  const running = nextState(agent, 'web', 'running', 3000);
  t.true(await tcpProbeAs(CHECKER_UID - 1, inst.ns.instanceIp, APP_PORT), 'another uid connects');
  await running;
  t.is(agent.detector.get('web')!.wakes, 1, 'and, not being the checker, wakes it: it cannot pass for a check');
});

rootTest.serial('checks can be identified by user name; an unknown user is a config error naming it', async (t) => {
  const inst = await createInstance(t);
  const agent = await startAgent(t, { healthChecks: { fromUser: 'nobody' }, instances: [inst.config({ idleTimeout: '10m' })] });
  await agent.detector.sleepNow('web');
  t.true(await tcpProbeAs(CHECKER_UID, inst.ns.instanceIp, APP_PORT));
  t.is(agent.detector.get('web')!.state, 'sleeping', 'nobody (uid 65534) is the checker');
  await t.throwsAsync(() => startAgent(t, { healthChecks: { fromUser: 'no-such-user' }, instances: [] }), { message: /healthChecks\.fromUser: there is no user "no-such-user"/ });
});
