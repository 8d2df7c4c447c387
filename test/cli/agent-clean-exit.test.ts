import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createBpffs } from '../helpers/bpffs.js';
import { CHECKER_UID } from '../helpers/checker.js';
import { spawnCli } from '../helpers/cli.js';
import { createInstance } from '../helpers/instance.js';
import { uniqueSuffix } from '../helpers/names.js';
import { sweepChainsAtTeardown } from '../helpers/netfilter.js';
import { rootTest } from '../helpers/root.js';
import { sh } from '../helpers/sh.js';
import { tempDir } from '../helpers/temp-dir.js';

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  rootTest.serial(`${signal}: the agent wakes what it put to sleep, then removes its qdisc, filters, maps and rules`, async (t) => {
    const inst = await createInstance(t);
    const bpffs = await createBpffs(t);
    const prefix = `DZ${uniqueSuffix().toUpperCase()}`;
    sweepChainsAtTeardown(t, prefix);
    const dir = await tempDir(t, 'agent');
    const config = join(dir, 'doze.json');
    await writeFile(config, JSON.stringify({
      listen: '127.0.0.1:0', bpffs, netfilter: { chainPrefix: prefix },
      healthChecks: { fromUid: CHECKER_UID },
      instances: [inst.config({ idleTimeout: '200ms' })],
    }));
    const agent = spawnCli(['agent', '--config', config]);
    t.teardown(() => agent.kill('SIGKILL'));
    // The agent's structured log is the event stream: wait for the sleep.
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('agent never put the instance to sleep')), 15_000);
      let buffered = '';
      agent.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
        buffered += chunk;
        if (/"to":"sleeping"/.test(buffered)) {
          clearTimeout(timer);
          resolve();
        }
      });
      agent.on('exit', (code) => reject(new Error(`agent exited early with ${code}`)));
    });
    t.is(await inst.cgroup.freezerState(), 'FROZEN');
    t.regex(await sh('tc', ['qdisc', 'show', 'dev', inst.ns.hostIf]), /clsact/);
    t.true((await readdir(join(bpffs, 'tc', 'globals'))).includes('doze_state'));
    t.regex(await sh('iptables', ['-t', 'mangle', '-S']), new RegExp(`${prefix}-MARK-OUT`));

    const exited = new Promise<number | null>((resolve) => agent.on('exit', resolve));
    agent.kill(signal);
    t.is(await exited, 0);
    t.is(await inst.cgroup.freezerState(), 'THAWED', 'the sleeper was woken');
    t.notRegex(await sh('tc', ['qdisc', 'show', 'dev', inst.ns.hostIf]), /clsact/);
    t.deepEqual((await readdir(join(bpffs, 'tc', 'globals'))).filter((f) => f.startsWith('doze_')), []);
    t.notRegex(await sh('iptables', ['-t', 'mangle', '-S']), new RegExp(prefix));
  });
}
