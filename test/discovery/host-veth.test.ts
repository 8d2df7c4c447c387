import test from 'ava';
import { findHostVeth } from '../../agent/discovery/host-veth.js';
import type { DozeError } from '../../agent/shared/errors.js';
import { uniqueSuffix } from '../helpers/names.js';
import { rootTest } from '../helpers/root.js';
import { sh, shQuiet } from '../helpers/sh.js';

rootTest.serial('finds the host side of a namespace\'s eth0 by its peer ifindex, as Nomad\'s bridge lays it out', async (t) => {
  // A stand-in for an allocation: a namespace named like its alloc id, eth0 inside, a random host-side name.
  const id = uniqueSuffix();
  const ns = `dz-${id}`;
  const hostIf = `dz${id}v`;
  t.teardown(async () => {
    await shQuiet('ip', ['link', 'del', hostIf]);
    await shQuiet('ip', ['netns', 'del', ns]);
  });
  await sh('ip', ['netns', 'add', ns]);
  await sh('ip', ['link', 'add', hostIf, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
  t.is(await findHostVeth(ns), hostIf);
  // A Docker task's namespace comes as a path (its pause container's SandboxKey).
  t.is(await findHostVeth(`/var/run/netns/${ns}`), hostIf);
});

test('a namespace that does not exist is a clear error', async (t) => {
  const error = await t.throwsAsync<DozeError>(findHostVeth('no-such-alloc', { netnsDir: '/nonexistent-netns-dir' }));
  t.is(error?.code, 'E_NETNS_MISSING');
  t.regex(error!.message, /network namespace \/nonexistent-netns-dir\/no-such-alloc does not exist/);
});

rootTest.serial('an eth0 that is not a veth is reported', async (t) => {
  const ns = `dz-${uniqueSuffix()}`;
  t.teardown(() => shQuiet('ip', ['netns', 'del', ns]));
  await sh('ip', ['netns', 'add', ns]);
  const error = await t.throwsAsync<DozeError>(findHostVeth(ns, { innerInterface: 'lo' }));
  t.is(error?.code, 'E_NETNS_LINK');
  t.regex(error!.message, /lo in \/var\/run\/netns\/dz-[0-9a-f]+ is not a veth/);
});
