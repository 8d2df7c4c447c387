import test from 'ava';
import { configSchema, instanceSchema } from '../../agent/config/schema.js';
import { describeRegistrationRefusal, registrationRefusal, registrationRoots } from '../../agent/instances/registration-policy.js';

/*
 * What a registration may name (agent/instances/registration-policy.ts), as a
 * pure decision over the agent's roots: Nomad's task cgroups and /run/doze by
 * default, Nomad's alloc dir too when Nomad is configured.
 */

const instance = (runtime: Record<string, unknown>) => instanceSchema.parse({ id: 'r', address: '10.213.7.2:80', interface: 'dzvm0t', runtime });

test('the default roots: Nomad\'s task cgroups (cgroup2 and each v1 controller) and /run/doze; the alloc dir with Nomad', (t) => {
  const plain = registrationRoots(configSchema.parse({}));
  t.true(plain.cgroups.includes('/sys/fs/cgroup/nomad.slice'));
  t.true(plain.cgroups.includes('/sys/fs/cgroup/freezer/nomad'));
  t.true(plain.cgroups.includes('/sys/fs/cgroup/memory/nomad'));
  t.deepEqual(plain.paths, ['/run/doze']);
  t.deepEqual(registrationRoots(configSchema.parse({ nomad: { address: 'http://127.0.0.1:4646' } })).paths, ['/run/doze', '/opt/nomad/data/alloc']);
  const own = registrationRoots(configSchema.parse({ registrations: { cgroupRoots: ['/sys/fs/cgroup/freezer/vms'], pathRoots: ['/srv/vms'] } }));
  t.deepEqual(own, { cgroups: ['/sys/fs/cgroup/freezer/vms'], paths: ['/srv/vms'] });
});

test('a Nomad task cgroup is allowed, absolute or relative; a root, a sibling, a climb or a prefix look-alike is not', (t) => {
  const roots = registrationRoots(configSchema.parse({}));
  const verdict = (cgroup: string) => registrationRefusal(instance({ kind: 'freezer', cgroup }), roots);
  t.is(verdict('/sys/fs/cgroup/freezer/nomad/share/5f1e2d3c.app'), undefined);
  t.is(verdict('/sys/fs/cgroup/nomad.slice/share.slice/5f1e2d3c.app.scope'), undefined);
  t.is(verdict('nomad/share/5f1e2d3c.app'), undefined, 'relative to the freezer hierarchy');
  t.like(verdict('/sys/fs/cgroup/freezer/nomad'), { kind: 'is-root' }, 'the root holds every task');
  t.like(verdict('/sys/fs/cgroup/freezer'), { kind: 'is-root' });
  t.like(verdict('/sys/fs/cgroup/freezer/nomadic'), { kind: 'outside-roots' }, 'a name that only starts like a root');
  t.like(verdict('/sys/fs/cgroup/freezer/nomad/../system.slice'), { kind: 'parent-reference' });
  t.like(verdict('system.slice'), { kind: 'outside-roots' });
});

test('every refusal names the field and what to do', (t) => {
  const roots = { cgroups: ['/sys/fs/cgroup/freezer/nomad'], paths: ['/run/doze'] };
  const refusal = registrationRefusal(instance({ kind: 'qemu', qmp: '/tmp/q.sock', memoryCgroup: 'nomad/x' }), roots)!;
  t.regex(describeRegistrationRefusal(refusal), /^runtime\.qmp: "\/tmp\/q\.sock" is outside the path roots registrations may name \(\/run\/doze\); add its parent to registrations\.pathRoots/);
  t.regex(describeRegistrationRefusal(registrationRefusal(instance({ kind: 'nomad-scale', job: 'web', group: 'web' }), roots)!), /declare it in the config file/);
});
