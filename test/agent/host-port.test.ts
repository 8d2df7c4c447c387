import { createBpffs } from '../helpers/bpffs.js';
import { CHECKER_UID } from '../helpers/checker.js';
import { logShows } from '../helpers/cli.js';
import { getInNetns, startNodeAgent } from '../helpers/node-netns.js';
import { get } from '../helpers/http.js';
import { createInstance } from '../helpers/instance.js';
import { rootTest } from '../helpers/root.js';
import { startAgent } from '../helpers/agent.js';
import { sh, shQuiet } from '../helpers/sh.js';
import { uniqueSuffix } from '../helpers/names.js';

/*
 * A host-port instance: a process in the node's own network namespace (Nomad's host network
 * mode), with no interface of its own. The test's namespace plays the node (helpers/node-netns):
 * the app listens on its address and the agent, inside it, counts traffic by port on the
 * namespace's lo and veth. Clients: the root namespace through the veth, the node itself over lo.
 */

/** A second client address on the root side: health checks come from it (healthChecks.fromSources). */
function checkerAddress(hostIp: string): string {
  const [, , c, d] = hostIp.split('.').map(Number);
  return `10.214.${c}.${d}`;
}

rootTest.serial('host port: counted on the node\'s lo and interfaces by port; checks (local by uid, remote by source) never wake it; a request does', async (t) => {
  const inst = await createInstance(t);
  const { ns } = inst;
  const checker = checkerAddress(ns.hostIp);
  await sh('ip', ['addr', 'add', `${checker}/32`, 'dev', ns.hostIf]);
  await sh('ip', ['-n', ns.name, 'route', 'add', `${checker}/32`, 'dev', ns.instanceIf]);

  const bpffs = await createBpffs(t);
  const agent = await startNodeAgent(t, ns.name, ns.instanceIp, {
    bpffs,
    healthChecks: { fromUid: CHECKER_UID, fromSources: [`${checker}/32`] },
    hostPorts: { interfaces: ['lo', ns.instanceIf] },
    instances: [{ id: 'web', address: inst.app.address, idleTimeout: '300ms', runtime: { kind: 'freezer', cgroup: inst.cgroup.name } }],
  });
  // Its status API listens only once start-up is done, which can come after the first sleep.
  await Promise.all([logShows(agent.child, /"to":"sleeping"/, 15_000), logShows(agent.child, /doze agent running/, 15_000)]).catch((error) => {
    throw new Error(`${(error as Error).message}\nstderr: ${agent.stderr()}`);
  });
  t.is(await inst.cgroup.freezerState(), 'FROZEN');
  const asleep = await agent.instance('web');
  t.is(asleep.interface, null, 'shown as a host-port instance');

  // A remote checker (by source address): tc sees it on the veth's ingress before netfilter marks it.
  const remoteCheck = await get(inst.app.url, 3000, false, checker);
  t.is(remoteCheck.status, 200);
  t.regex(remoteCheck.body, /web is asleep/, 'the stub answered the remote check');
  // A local checker (by uid), over lo.
  const localCheck = await getInNetns(ns.name, inst.app.url, CHECKER_UID);
  t.is(localCheck.status, 200);
  t.regex(localCheck.body, /web is asleep/, 'the stub answered the local check');
  const afterChecks = await agent.instance('web');
  t.is(afterChecks.state, 'sleeping', 'checks did not wake it');
  t.is(afterChecks.wakes, 0);
  t.true(afterChecks.checksAnswered >= 2);
  t.is(await inst.cgroup.freezerState(), 'FROZEN');

  // A real request from outside the node wakes it; the kernel held the handshake meanwhile.
  const remote = await get(inst.app.url, 3000);
  const asleepAgain = logShows(agent.child, /"to":"sleeping"/, 10_000);
  t.is(remote.status, 200);
  t.regex(remote.body, /hello from web/);
  t.true(remote.ms < 500, `first request took ${remote.ms.toFixed(1)} ms`);
  t.is(await inst.cgroup.freezerState(), 'THAWED');

  // Asleep again; a request from the node itself (lo) wakes it too.
  await asleepAgain;
  const wokeAgain = logShows(agent.child, /"to":"running"/, 10_000);
  const local = await getInNetns(ns.name, inst.app.url);
  await wokeAgain;
  t.is(local.status, 200);
  t.regex(local.body, /hello from web/);
  t.is((await agent.instance('web')).wakes, 2);

  // A clean exit takes the programs off the node's interfaces.
  agent.child.kill('SIGTERM');
  t.is(await agent.exited, 0);
  for (const [device, hook] of [['lo', 'ingress'], [ns.instanceIf, 'ingress'], [ns.instanceIf, 'egress']] as const) {
    t.notRegex(await sh('tc', ['-n', ns.name, 'filter', 'show', 'dev', device, hook]), /doze_/, `no doze filter left on ${device} ${hook}`);
  }
  t.is(await inst.cgroup.freezerState(), 'THAWED');
});

rootTest.serial('an instance with no interface at an address that is not the node\'s is a config error, not a silent host port', async (t) => {
  // 10.213.0.0/16 belongs to test namespaces only; nothing here owns this address.
  const error = await t.throwsAsync(startAgent(t, { instances: [{ id: 'web', address: '10.213.255.254:8080', runtime: { kind: 'fake' } }] }));
  t.regex(error!.message, /10\.213\.255\.254 is not an address of this node: give the instance its own interface/);
});

rootTest.serial('host-port programs a crashed agent left on the node\'s interfaces are removed by the next clean exit', async (t) => {
  t.timeout(60_000);
  const inst = await createInstance(t);
  const { ns } = inst;
  const bpffs = await createBpffs(t);
  const hostPorts = { interfaces: ['lo', ns.instanceIf] };
  const crashed = await startNodeAgent(t, ns.name, ns.instanceIp, {
    bpffs, hostPorts,
    instances: [{ id: 'web', address: inst.app.address, idleTimeout: '10s', runtime: { kind: 'freezer', cgroup: inst.cgroup.name } }],
  });
  await logShows(crashed.child, /host-port programs attached/, 15_000);
  crashed.child.kill('SIGKILL');
  await crashed.exited;
  const filters = async () => (await sh('tc', ['-n', ns.name, 'filter', 'show', 'dev', 'lo', 'ingress'])) + (await sh('tc', ['-n', ns.name, 'filter', 'show', 'dev', ns.instanceIf, 'egress']));
  t.regex(await filters(), /doze_host_in[\s\S]*doze_host_out/, 'the crash left them');

  // The next agent manages nothing on a host port, so it never attaches; its clean exit still sweeps.
  const next = await startNodeAgent(t, ns.name, ns.instanceIp, { bpffs, hostPorts });
  await logShows(next.child, /doze agent running/, 15_000);
  // (Right after start-up: a signal then must not be lost, nor kill the agent half way.)
  next.child.kill('SIGTERM');
  t.is(await next.exited, 0, next.stderr());
  t.notRegex(await filters(), /doze_/, 'gone after the clean exit');
});

rootTest.serial('host port: a request arriving on another interface of the node (a bridge, as nomad or docker0 are) wakes it; the status names the interfaces watched', async (t) => {
  const inst = await createInstance(t);
  const { ns } = inst;
  // The node's second interface: a bridge with an address, and a client namespace behind it (a
  // container on the nomad bridge). No default route leaves by it, so only the wider default sees it.
  const id = uniqueSuffix();
  const bridge = `dzb${id}`;
  const port = `dzc${id}n`;
  const clientEnd = `dzc${id}c`;
  const clientNs = `dz-c${id}`;
  const subnet = `10.215.${Math.floor(Math.random() * 256)}`;
  t.teardown(() => shQuiet('ip', ['netns', 'del', clientNs]));
  await sh('ip', ['-n', ns.name, 'link', 'add', bridge, 'type', 'bridge']);
  await sh('ip', ['-n', ns.name, 'addr', 'add', `${subnet}.1/24`, 'dev', bridge]);
  await sh('ip', ['-n', ns.name, 'link', 'set', bridge, 'up']);
  await sh('ip', ['netns', 'add', clientNs]);
  await sh('ip', ['-n', ns.name, 'link', 'add', port, 'type', 'veth', 'peer', 'name', clientEnd, 'netns', clientNs]);
  await sh('ip', ['-n', ns.name, 'link', 'set', port, 'master', bridge, 'up']);
  await sh('ip', ['-n', clientNs, 'addr', 'add', `${subnet}.2/24`, 'dev', clientEnd]);
  await sh('ip', ['-n', clientNs, 'link', 'set', clientEnd, 'up']);
  await sh('ip', ['-n', clientNs, 'link', 'set', 'lo', 'up']);
  await sh('ip', ['-n', clientNs, 'route', 'add', 'default', 'via', `${subnet}.1`]);

  const bpffs = await createBpffs(t);
  // No hostPorts.interfaces: the agent finds the node's interfaces itself.
  const agent = await startNodeAgent(t, ns.name, ns.instanceIp, {
    bpffs,
    instances: [{ id: 'web', address: inst.app.address, idleTimeout: '300ms', runtime: { kind: 'freezer', cgroup: inst.cgroup.name } }],
  });
  // Its status API listens only once start-up is done, which can come after the first sleep.
  await Promise.all([logShows(agent.child, /"to":"sleeping"/, 15_000), logShows(agent.child, /doze agent running/, 15_000)]).catch((error) => {
    throw new Error(`${(error as Error).message}\nstderr: ${agent.stderr()}`);
  });
  const status = JSON.parse((await get(`${agent.statusUrl}/api/status`)).body) as { hostPorts: { interfaces: string[] } };
  t.deepEqual([...status.hostPorts.interfaces].sort(), ['lo', ns.instanceIf, bridge].sort(), 'every interface with an address; not the bridge port');
  t.regex((await get(agent.statusUrl)).body, new RegExp(`interfaces watched for host ports: [^<]*${bridge}`));

  const answer = await getInNetns(clientNs, inst.app.url);
  t.is(answer.status, 200);
  t.regex(answer.body, /^hello from web/);
  const woken = await agent.instance('web');
  t.is(woken.wakes, 1, 'the request that came in on the bridge woke it');
});
