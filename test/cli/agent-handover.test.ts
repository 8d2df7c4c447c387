import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { createBpffs } from '../helpers/bpffs.js';
import { logShows, spawnCli, stopAgent } from '../helpers/cli.js';
import { get } from '../helpers/http.js';
import { createMemoryInstance } from '../helpers/memory-instance.js';
import { uniqueSuffix } from '../helpers/names.js';
import { testIf, firstMissing, missing } from '../helpers/needs.js';
import { sweepChainsAtTeardown } from '../helpers/netfilter.js';
import { noRoot } from '../helpers/root.js';
import { sh } from '../helpers/sh.js';
import { tempDir } from '../helpers/temp-dir.js';
import { until } from '../helpers/until.js';
import { createZramSwap, zramUnavailable } from '../helpers/zram.js';

/*
 * Upgrades wake nobody: an agent stopped for hand-over (SIGUSR2) leaves a
 * reclaimed sleeper asleep, frozen with its memory still out, its tc programs
 * and pinned maps in place; the next agent adopts it as after a crash, and a
 * request wakes it. (A final stop waking everything: test/cli/agent-clean-exit.)
 */

const MiB = 1 << 20;
const noSwap = missing('root', () => zramUnavailable());

function exited(agent: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => agent.on('exit', resolve));
}

testIf(firstMissing(noRoot, noSwap)).serial('a hand-over stop leaves a reclaimed sleeper asleep with memory out; the next agent adopts it and a request wakes it', async (t) => {
  t.timeout(90_000);
  await createZramSwap(t);
  const inst = await createMemoryInstance(t, 64);
  const awake = await inst.residentBytes();
  const bpffs = await createBpffs(t);
  const prefix = `DZ${uniqueSuffix().toUpperCase()}`;
  sweepChainsAtTeardown(t, prefix);
  const config = join(await tempDir(t, 'handover'), 'doze.json');
  await writeFile(config, JSON.stringify({ listen: '127.0.0.1:0', bpffs, netfilter: { chainPrefix: prefix }, instances: [inst.config({ idleTimeout: '300ms' }, { reclaim: true, reclaimAfter: '200ms' })] }));

  const first = spawnCli(['agent', '--config', config]);
  t.teardown(() => void first.kill('SIGKILL'));
  await logShows(first, /"to":"sleeping"/);
  await until('the sleeper\'s memory pushed out', async () => (await inst.residentBytes()) < awake * 0.2, { timeoutMs: 20_000, everyMs: 50 });
  const out = await inst.residentBytes();
  t.log(`awake ${(awake / MiB).toFixed(1)} MiB, asleep ${(out / MiB).toFixed(1)} MiB`);

  const firstExit = exited(first);
  first.kill('SIGUSR2');
  t.is(await firstExit, 0);
  t.is(await inst.cgroup.freezerState(), 'FROZEN', 'still frozen after the hand-over');
  t.true((await inst.residentBytes()) < awake * 0.2, 'its memory still out');
  for (const hook of ['egress', 'ingress']) t.regex(await sh('tc', ['filter', 'show', 'dev', inst.ns.hostIf, hook]), /doze_/, `the program stays on ${hook}`);
  t.true((await readdir(join(bpffs, 'tc', 'globals'))).includes('doze_state'), 'the pinned maps stay');

  const second = spawnCli(['agent', '--config', config]);
  t.teardown(() => void second.kill('SIGKILL'));
  await logShows(second, /doze agent running/);
  t.is(await inst.cgroup.freezerState(), 'FROZEN', 'adopted asleep, not woken');
  const running = logShows(second, /"to":"running"/);
  const answer = await get(`${inst.app.url}/`, 10_000);
  await running;
  t.is(answer.status, 200);
  t.is(await inst.cgroup.freezerState(), 'THAWED');
  t.is(await stopAgent(second), 0);
});
