import { createLogger } from '../../agent/shared/log.js';
import { EbpfSource, hostInterfaces } from '../../agent/sources/ebpf-source.js';
import { createBpffs } from '../helpers/bpffs.js';
import { createNetns } from '../helpers/netns.js';
import { rootTest } from '../helpers/root.js';
import { sh, shQuiet } from '../helpers/sh.js';
import { uniqueSuffix } from '../helpers/names.js';

/*
 * Which node interfaces host-port instances are watched on by default: lo and every up interface
 * with an address, but none that carries an instance's own programs (they share the tc hook).
 */

rootTest('every up interface with an address is a host interface; a bridge port without one is not', async (t) => {
  const ns = await createNetns(t);
  const bare = `dzp${uniqueSuffix()}`;
  t.teardown(() => shQuiet('ip', ['link', 'del', bare]));
  await sh('ip', ['link', 'add', bare, 'type', 'veth', 'peer', 'name', `${bare}x`]);
  await sh('ip', ['link', 'set', bare, 'up']);
  const found = await hostInterfaces();
  t.is(found[0], 'lo');
  t.true(found.includes(ns.hostIf), `${ns.hostIf} (10.213.x.1) is among ${found.join(', ')}`);
  t.false(found.includes(bare), 'an interface without an address is not');
});

rootTest('an interface carrying an instance\'s own programs is never given the host-port ones, this agent\'s or another\'s', async (t) => {
  const own = await createNetns(t);
  const others = await createNetns(t);
  const plain = await createNetns(t);
  const source = new EbpfSource({ bpffs: await createBpffs(t), checkMark: 1, log: createLogger('silent') });
  t.teardown(() => source.close({ removePins: true }));
  await source.start();
  await source.attach(own.hostIf);
  // Another agent's instance interface: its programs are there, this agent does not know it.
  const other = new EbpfSource({ bpffs: await createBpffs(t), checkMark: 1, log: createLogger('silent') });
  t.teardown(() => other.close({ removePins: true }));
  await other.attach(others.hostIf);
  const candidates = await source['hostCandidates']();
  t.false(candidates.includes(own.hostIf), 'not this agent\'s instance interface');
  t.false(candidates.includes(others.hostIf), 'not another agent\'s instance interface');
  t.true(candidates.includes(plain.hostIf), 'an interface with an address and no programs is');
});
