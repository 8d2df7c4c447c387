import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createBpffs } from '../helpers/bpffs.js';
import { CHECKER_UID } from '../helpers/checker.js';
import { agentCrashedAsleep, logShows, spawnCli, stopAgent } from '../helpers/cli.js';
import { get } from '../helpers/http.js';
import { createInstance } from '../helpers/instance.js';
import { uniqueSuffix } from '../helpers/names.js';
import { sweepChainsAtTeardown } from '../helpers/netfilter.js';
import { rootTest } from '../helpers/root.js';
import { sh } from '../helpers/sh.js';
import { tempDir } from '../helpers/temp-dir.js';

rootTest.serial('after SIGKILL and a restart: no duplicate or stale rule or filter, and the sleeper still wakes on traffic', async (t) => {
  const inst = await createInstance(t);
  const bpffs = await createBpffs(t);
  const prefix = `DZ${uniqueSuffix().toUpperCase()}`;
  sweepChainsAtTeardown(t, prefix);
  const config = join(await tempDir(t, 'agent'), 'doze.json');
  await writeFile(config, JSON.stringify({
    listen: '127.0.0.1:0', bpffs, netfilter: { chainPrefix: prefix }, healthChecks: { fromUid: CHECKER_UID },
    instances: [inst.config({ idleTimeout: '200ms' })],
  }));

  await agentCrashedAsleep(t, config);
  t.is(await inst.cgroup.freezerState(), 'FROZEN', 'a crash leaves the instance asleep');

  const second = spawnCli(['agent', '--config', config]);
  t.teardown(() => second.kill('SIGKILL'));
  await logShows(second, /doze agent running/);
  t.is(await inst.cgroup.freezerState(), 'FROZEN', 'the restarted agent adopts the sleeper');
  const nat = (await sh('iptables', ['-t', 'nat', '-S'])).split('\n');
  t.is(nat.filter((l) => l.startsWith('-A OUTPUT') && l.includes(`${prefix}-STUB`)).length, 1, 'one jump to the redirect chain');
  t.is(nat.filter((l) => l.startsWith(`-A ${prefix}-STUB`) && l.includes('doze:')).length, 1, 'one redirect, for the adopted sleeper');

  const running = logShows(second, /"to":"running"/);
  const answer = await get(`${inst.app.url}/`, 3000);
  await running;
  t.is(answer.status, 200);
  t.regex(answer.body, /hello from web/);
  t.is(await inst.cgroup.freezerState(), 'THAWED');

  t.is((await sh('iptables', ['-t', 'nat', '-S', `${prefix}-STUB`])).split('\n').filter((l) => l.startsWith('-A') && l.includes('doze:')).length, 0, 'redirect removed on wake');
  const mangle = await sh('iptables', ['-t', 'mangle', '-S']);
  t.is(mangle.split('\n').filter((l) => l.startsWith('-A OUTPUT') && l.includes(`${prefix}-MARK-OUT`)).length, 1, 'one jump, not two');
  t.is(mangle.split('\n').filter((l) => l.startsWith('-A PREROUTING') && l.includes(`${prefix}-MARK-IN`)).length, 1);
  t.is(mangle.split('\n').filter((l) => l.startsWith(`-A ${prefix}-MARK-OUT`) && l.includes('uid-owner')).length, 1, 'the chain was rebuilt, not appended to');
  for (const hook of ['egress', 'ingress']) {
    const filters = await sh('tc', ['filter', 'show', 'dev', inst.ns.hostIf, hook]);
    // One filter line each (tc names a program attached by fd twice on its line: "doze_egress:[id] … name doze_egress").
    t.is(filters.split('\n').filter((line) => / name doze_(egress|ingress) /.test(line)).length, 1, `one doze filter on ${hook}`);
  }
  const readers = await sh('sh', ['-c', `ps -eo args | grep -c "[d]oze-maps events ${bpffs}" || true`]);
  t.is(readers.trim(), '1', 'the dead agent\'s wake-event reader was reaped');

  t.is(await stopAgent(second), 0);
});
