import test from 'ava';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DozeError } from '../../agent/shared/errors.js';
import { ipv4Addresses, listLinks } from '../../agent/net/ip.js';
import { listRules } from '../../agent/net/iptables.js';

/*
 * How agent/net/ reads what ip and iptables print, against stand-ins on PATH: each prints the
 * file <name>.out and records its argv in <name>.argv, so the tests run unprivileged and can
 * feed output the real tools would print only on another version.
 */

let bin = '';

// Not tempDir(t): a before hook's teardown runs as soon as the hook ends, and the tests need the stand-ins.
test.before(async () => {
  bin = await mkdtemp(join(tmpdir(), 'dz-net-output-'));
  for (const tool of ['ip', 'iptables', 'nsenter']) {
    const script = join(bin, tool);
    await writeFile(script, `#!/bin/sh\nprintf "%s\\n" "$*" > "${script}.argv"\ncat "${script}.out"\n`);
    await chmod(script, 0o755);
  }
  process.env.PATH = `${bin}:${process.env.PATH}`;
});

test.after.always(() => rm(bin, { recursive: true, force: true }));

const prints = (tool: string, output: string) => writeFile(join(bin, `${tool}.out`), output);
const argvOf = async (tool: string) => (await readFile(join(bin, `${tool}.argv`), 'utf8')).trim();

test.serial('iptables -S: policies, chains and rules come back; iptables-nft\'s comment lines do not', async (t) => {
  await prints('iptables', '# Warning: iptables-legacy tables present, use iptables-legacy to see them\n-P OUTPUT ACCEPT\n-N DOZE-STUB\n-A DOZE-STUB -d 10.0.0.2/32 -m comment --comment "doze:web" -j DNAT --to-destination 10.0.0.1:7071\n');
  t.deepEqual(await listRules('nat', 'DOZE-STUB'), [
    '-P OUTPUT ACCEPT',
    '-N DOZE-STUB',
    '-A DOZE-STUB -d 10.0.0.2/32 -m comment --comment "doze:web" -j DNAT --to-destination 10.0.0.1:7071',
  ]);
  t.is(await argvOf('iptables'), '-w 5 -t nat -S DOZE-STUB');
});

test.serial('iptables -S printing something that is not a rule is an error naming the line', async (t) => {
  await prints('iptables', '-N DOZE-STUB\nChain DOZE-STUB (1 references)\n');
  const error = await t.throwsAsync<DozeError>(listRules('nat', 'DOZE-STUB'));
  t.is(error?.code, 'E_COMMAND');
  t.regex(error!.message, /iptables -w 5 -t nat -S DOZE-STUB printed a line that is not a policy, chain or rule: "Chain DOZE-STUB \(1 references\)"/);
});

test.serial('ip -j addr: the IPv4 addresses as CIDRs', async (t) => {
  await prints('ip', JSON.stringify([{ ifindex: 7, addr_info: [{ family: 'inet', local: '10.213.7.1', prefixlen: 30 }, { family: 'inet6', local: 'fe80::1', prefixlen: 64 }] }]));
  t.deepEqual(await ipv4Addresses('dzweb0'), ['10.213.7.1/30']);
  t.is(await argvOf('ip'), '-j -4 addr show dev dzweb0');
});

test.serial('ip -j link printing what the schema does not expect is an error naming the command and the field', async (t) => {
  await prints('ip', JSON.stringify([{ ifindex: '7', ifname: 'eth0' }]));
  const error = await t.throwsAsync<DozeError>(listLinks({ device: 'eth0' }));
  t.regex(error!.message, /^ip -j link show dev eth0 printed unexpected JSON: \[0\]\.ifindex: .*expected number/);
});

test.serial('a namespace given by path is entered with nsenter, one given by name with ip -n', async (t) => {
  await prints('nsenter', '[]');
  await prints('ip', '[]');
  await listLinks({ netns: { path: '/run/docker/netns/abc' }, device: 'eth0' });
  t.is(await argvOf('nsenter'), '--net=/run/docker/netns/abc ip -j link show dev eth0');
  await listLinks({ netns: { name: 'alloc-1' }, device: 'eth0' });
  t.is(await argvOf('ip'), '-n alloc-1 -j link show dev eth0');
});
