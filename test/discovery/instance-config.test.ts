import test from 'ava';
import { readFileSync } from 'node:fs';
import { allocationInstance, type AnnotatedAllocation } from '../../agent/discovery/allocation-instance.js';
import { instanceConfigFor, unsupportedReason, type InstanceConfigResult, type NodeFacts } from '../../agent/discovery/instance-config.js';
import { allocationSchema, type NomadAllocation } from '../../agent/nomad/nomad-schemas.js';

/*
 * Allocation → instance config, without root: Nomad's own sample payloads
 * (test/fixtures/nomad/, each says what was completed) through the schema,
 * the allocation mapping and the node facts discovery would find.
 */

type Edit = (alloc: Record<string, any>) => void;

/** A fixture's allocation, edited (as a job would differ), then validated like the client does. */
function fixtureAllocation(name: 'allocation-bridge' | 'node-allocations', edit: Edit = () => {}): NomadAllocation {
  const body = (JSON.parse(readFileSync(new URL(`../fixtures/nomad/${name}.json`, import.meta.url), 'utf8')) as { body: unknown }).body;
  const raw = structuredClone(Array.isArray(body) ? body[0] : body) as Record<string, any>;
  edit(raw);
  return allocationSchema.parse(raw);
}

const driver = (name: string): Edit => (alloc) => void (alloc.Job.TaskGroups[0].Tasks[0].Driver = name);
const groupMeta = (meta: Record<string, string>): Edit => (alloc) => void (alloc.Job.TaskGroups[0].Meta = { ...alloc.Job.TaskGroups[0].Meta, ...meta });
const both = (...edits: Edit[]): Edit => (alloc) => edits.forEach((edit) => edit(alloc));

function instanceOf(alloc: NomadAllocation): AnnotatedAllocation {
  const mapped = allocationInstance(alloc);
  if (mapped.kind !== 'instance') throw new Error(`not an instance: ${mapped.reason}`);
  return mapped.instance;
}

const V1 = (path: string): NodeFacts['cgroup'] => ({ version: 1, path });
const V2 = (path: string): NodeFacts['cgroup'] => ({ version: 2, path });

function configOf(result: InstanceConfigResult) {
  if (result.kind !== 'config') throw new Error(`no config: ${result.reason}`);
  return result.config;
}

test('a host-mode exec allocation: its host address and port, no interface, the freezer on its task cgroup', (t) => {
  const alloc = fixtureAllocation('node-allocations', driver('exec'));
  const cgroup = `/sys/fs/cgroup/freezer/nomad/${alloc.ID}.webapp`;
  const config = configOf(instanceConfigFor(instanceOf(alloc), { cgroup: V1(cgroup) }));
  t.like(config, { id: `webapp.webapp.${alloc.ID.slice(0, 8)}`, address: '10.138.0.5:25920', checkAddresses: [], idlePolicy: 'requests', idleTimeout: 300_000, minAwake: 0 });
  t.is(config.interface, undefined, 'counted by host port on the node\'s interfaces');
  t.like(config.runtime, { kind: 'freezer', cgroup });
});

test('a bridge-mode allocation: its own address on the port\'s "to", the host veth, the mapped host port for checks, its meta', (t) => {
  const alloc = fixtureAllocation('allocation-bridge', both(driver('exec'), groupMeta({ 'doze.idle_timeout': '45s', 'doze.wake': 'hold', 'doze.max_awake': '1h', 'doze.reclaim': 'true', 'doze.reclaim_after': '30s' })));
  const config = configOf(instanceConfigFor(instanceOf(alloc), { interface: 'veth1a2b3c4d', cgroup: V2(`/sys/fs/cgroup/nomad.slice/share.slice/${alloc.ID}.redis.scope`) }));
  t.like(config, { address: '172.26.64.12:6379', interface: 'veth1a2b3c4d', checkAddresses: ['127.0.0.1:23116'], idleTimeout: 45_000, wake: 'hold', maxAwake: 3_600_000 });
  t.like(config.runtime, { kind: 'freezer', reclaim: true, reclaimAfter: 30_000, reclaimKeep: 'working-set' });
  const keepNothing = fixtureAllocation('allocation-bridge', both(driver('exec'), groupMeta({ 'doze.reclaim': 'true', 'doze.reclaim_keep': 'nothing' })));
  const whole = configOf(instanceConfigFor(instanceOf(keepNothing), { interface: 'veth1a2b3c4d', cgroup: V2(`/sys/fs/cgroup/nomad.slice/share.slice/${keepNothing.ID}.redis.scope`) }));
  t.like(whole.runtime, { kind: 'freezer', reclaim: true, reclaimKeep: 'nothing' });
});

test('a task of Nomad\'s qemu driver: QMP pause on the socket doze job render gave it, RAM file and cgroups', (t) => {
  const alloc = fixtureAllocation('allocation-bridge', driver('qemu'));
  const cgroup = `/sys/fs/cgroup/nomad.slice/share.slice/${alloc.ID}.redis.scope`;
  const config = configOf(instanceConfigFor(instanceOf(alloc), { interface: 'veth0', cgroup: V2(cgroup) }, { allocDir: '/var/lib/nomad/alloc' }));
  t.deepEqual(config.runtime, {
    ...config.runtime,
    kind: 'qemu',
    mode: 'pause',
    qmp: `/var/lib/nomad/alloc/${alloc.ID}/redis/local/doze-qmp.sock`,
    reclaim: true,
    ramFile: `/var/lib/nomad/alloc/${alloc.ID}/redis/local/doze-ram`,
    memoryCgroup: cgroup,
    cpuCgroup: cgroup,
  });
  const v1 = configOf(instanceConfigFor(instanceOf(alloc), { interface: 'veth0', cgroup: V1('/sys/fs/cgroup/freezer/nomad/x.redis') }));
  t.like(v1.runtime, { qmp: `/opt/nomad/data/alloc/${alloc.ID}/redis/local/doze-qmp.sock` }, 'Nomad\'s default data_dir');
  t.false('memoryCgroup' in v1.runtime, 'v1 keeps memory in another hierarchy');
});

test('the service\'s TLS certificate, from nomad.checkTls by service name', (t) => {
  const alloc = fixtureAllocation('allocation-bridge', driver('exec'));
  const checkTls = { certFile: '/etc/doze/redis.pem', keyFile: '/etc/doze/redis-key.pem' };
  const node = { interface: 'veth0', cgroup: V1('/sys/fs/cgroup/freezer/nomad/x.redis') };
  t.like(configOf(instanceConfigFor(instanceOf(alloc), node, { checkTls: { 'redis-cache': checkTls } })), { checkTls });
  t.is(configOf(instanceConfigFor(instanceOf(alloc), node, { checkTls: { other: checkTls } })).checkTls, undefined);
});

test('what cannot be an instance says why: podman, snapshot, scale, the agent itself, a config the schema refuses; a docker task (Nomad\'s sample as it is) is one', (t) => {
  const node = { interface: 'veth0', cgroup: V1('/sys/fs/cgroup/freezer/nomad/x.redis') };
  const reason = (alloc: NomadAllocation, settings = {}) => {
    const result = instanceConfigFor(instanceOf(alloc), node, settings);
    return result.kind === 'invalid' ? result.reason : `a config: ${JSON.stringify(result.config)}`;
  };
  const docker = fixtureAllocation('allocation-bridge');
  t.like(configOf(instanceConfigFor(instanceOf(docker), { interface: 'veth0', cgroup: V1('/sys/fs/cgroup/freezer/docker/0123abcd') })).runtime, { kind: 'freezer', cgroup: '/sys/fs/cgroup/freezer/docker/0123abcd' }, 'the container\'s cgroup, found through the engine (agent/docker/)');
  const podman = fixtureAllocation('allocation-bridge', driver('podman'));
  t.regex(reason(podman), /^the podman driver keeps task "redis" in its own cgroup/);
  t.is(unsupportedReason(instanceOf(podman), undefined), reason(podman), 'known before the node is searched');
  t.regex(reason(fixtureAllocation('allocation-bridge', both(driver('qemu'), groupMeta({ 'doze.mode': 'snapshot' })))), /^doze\.mode "snapshot" is not supported by this agent yet for a task not run by "doze vm run --register" \(task "redis" uses the qemu driver\)/);
  t.regex(reason(fixtureAllocation('allocation-bridge', both(driver('exec'), groupMeta({ 'doze.mode': 'scale' })))), /^doze\.mode "scale" is not supported by this agent yet \(supported: "pause"\)/);
  const exec = fixtureAllocation('allocation-bridge', driver('exec'));
  t.regex(reason(exec, { ownAllocId: exec.ID }), /the doze agent's own allocation/);
  t.regex(reason(fixtureAllocation('allocation-bridge', driver('qemu')), { allocDir: `/${'x'.repeat(120)}` }), /^cannot be an instance:\n {2}runtime\.qmp: .*unix socket path has at most/);
});

test('doze.dry_run on a group: its instance is rehearsed; a job update setting it to false makes a config that is managed for real', (t) => {
  const facts = { interface: 'veth0', cgroup: V2('/sys/fs/cgroup/nomad.slice/share.slice/x.redis.scope') };
  const rehearsed = fixtureAllocation('allocation-bridge', both(driver('exec'), groupMeta({ 'doze.dry_run': 'true' })));
  t.true(configOf(instanceConfigFor(instanceOf(rehearsed), facts)).dryRun);
  const real = fixtureAllocation('allocation-bridge', both(driver('exec'), groupMeta({ 'doze.dry_run': 'false' })));
  t.false(configOf(instanceConfigFor(instanceOf(real), facts)).dryRun);
  // Discovery replaces an instance whose allocation maps differently (agent/discovery/nomad-instances.ts): the flag is part of it.
  t.notDeepEqual(instanceOf(rehearsed), instanceOf(real));
});
