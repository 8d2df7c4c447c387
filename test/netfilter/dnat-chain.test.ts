import test from 'ava';
import { DnatChain, tagOf } from '../../agent/netfilter/dnat-chain.js';
import { uniqueSuffix } from '../helpers/names.js';
import { isRoot } from '../helpers/root.js';

test('a rule\'s tag is its whole comment, quoted or not', (t) => {
  t.is(tagOf('-A DZ-STUB -d 10.213.0.2/32 -p tcp -m tcp --dport 8080 -m comment --comment "doze:s11" -j DNAT --to-destination 10.213.0.1:4000'), 'doze:s11');
  t.is(tagOf('-A DZ-STUB -p tcp -m comment --comment doze:web -j DNAT --to-destination 127.0.0.1:9'), 'doze:web');
  t.is(tagOf('-A DZ-STUB -d 255.255.255.255/32 -p tcp -m comment --comment "doze anchor, keeps NAT replies translated" -j DNAT --to-destination 127.0.0.1:9'), 'doze anchor, keeps NAT replies translated');
  t.is(tagOf('-A DZ-STUB -p tcp -j DNAT --to-destination 127.0.0.1:9'), undefined);
});

// A chain of the test's own in the nat table (rules for 10.213.0.0/16 test addresses only): root.
const rootTest = isRoot ? test.serial : test.serial.skip;

rootTest('removing one instance\'s redirect leaves an instance whose id it prefixes alone (s1 vs s11)', async (t) => {
  const chain = new DnatChain(`DZ${uniqueSuffix().toUpperCase()}-STUB`, [], ['-m', 'mark', '--mark', '0x1/0x1']);
  t.teardown(() => chain.uninstall());
  await chain.install();
  await chain.add('s1', { ip: '10.213.250.2', port: 8080, toHost: '127.0.0.1', toPort: 9 });
  await chain.add('s11', { ip: '10.213.250.6', port: 8080, toHost: '127.0.0.1', toPort: 9 });
  await chain.add('s12', { ip: '10.213.250.10', port: 8080, toHost: '127.0.0.1', toPort: 9 });
  await chain.remove('s1');
  t.deepEqual((await chain.active()).map(tagOf), ['doze:s11', 'doze:s12']);
  // The others' own removals still work (they used to fail: their rules were gone already).
  await Promise.all([chain.remove('s11'), chain.remove('s12')]);
  t.deepEqual(await chain.active(), []);
});
