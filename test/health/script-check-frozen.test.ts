import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createFreezerCgroup } from '../helpers/cgroup.js';
import { rootTest } from '../helpers/root.js';

/*
 * The fact behind "doze does not manage a task with a script check"
 * (docs/nomad.md): Nomad runs a script check by exec'ing into the task, and
 * the exec joins the task's cgroup. Here, a process that joins a frozen v1
 * freezer cgroup freezes before it runs its command, and finishes only once
 * the cgroup is thawed: the exec outlives any check timeout.
 */

rootTest('an exec that joins a frozen freezer cgroup does not run until the cgroup thaws', async (t) => {
  const cgroup = await createFreezerCgroup(t);
  const holder = spawn('sleep', ['30'], { stdio: 'ignore' });
  t.teardown(() => holder.kill('SIGKILL'));
  await writeFile(cgroup.procsFile, String(holder.pid));
  await writeFile(join(cgroup.dir, 'freezer.state'), 'FROZEN');
  for (let i = 0; i < 100 && (await cgroup.freezerState()) !== 'FROZEN'; i++) await new Promise((r) => setTimeout(r, 10));
  t.is(await cgroup.freezerState(), 'FROZEN');

  // What an executor does for a script check: join the task's cgroup, then exec the command.
  const started = performance.now();
  const check = spawn('sh', ['-c', `echo $$ > ${cgroup.procsFile} && exec echo ran`], { stdio: ['ignore', 'pipe', 'ignore'] });
  t.teardown(() => check.kill('SIGKILL'));
  let output = '';
  check.stdout.on('data', (chunk: Buffer) => (output += String(chunk)));
  const exited = new Promise<number | null>((resolve) => check.once('exit', resolve));
  const early = await Promise.race([exited.then(() => 'exited'), new Promise((r) => setTimeout(() => r('still frozen'), 1500))]);
  t.is(early, 'still frozen', 'the check command has not run 1.5 s later (a Nomad check timeout is typically 1-5 s)');
  t.is(output, '');

  await writeFile(join(cgroup.dir, 'freezer.state'), 'THAWED');
  t.is(await exited, 0);
  t.is(output.trim(), 'ran');
  t.log(`the exec finished ${(performance.now() - started).toFixed(0)} ms after it started, once thawed`);
});
