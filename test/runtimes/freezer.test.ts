import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { FreezerRuntime } from '../../agent/runtimes/freezer.js';
import { createFreezerCgroup } from '../helpers/cgroup.js';
import { noRoot } from '../helpers/root.js';
import { runtimeContract } from './contract.js';

// The freezer runtime over a real v1 freezer cgroup holding one process. A freeze is one
// write the kernel carries out: nothing outside can make it late, so no deadline case.
runtimeContract('freezer', async (t) => {
  const cgroup = await createFreezerCgroup(t);
  const child = spawn('sleep', ['600'], { stdio: 'ignore' });
  t.teardown(() => void child.kill('SIGKILL'));
  await new Promise((resolve, reject) => child.once('spawn', resolve).once('error', reject));
  await writeFile(cgroup.procsFile, String(child.pid));
  const make = () => new FreezerRuntime(cgroup.name);
  return { runtime: make(), another: make };
}, { unavailable: noRoot, slowable: false });
