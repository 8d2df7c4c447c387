import { FreezerRuntime } from '../../agent/runtimes/freezer.js';
import { startDockerd, noDocker } from '../helpers/dockerd.js';
import { containerCgroup } from '../helpers/docker-alloc.js';
import { firstMissing } from '../helpers/needs.js';
import { noRoot } from '../helpers/root.js';
import { runtimeContract } from './contract.js';

// The freezer runtime over a container as Docker makes it (a real dockerd, cgroupfs driver): the
// same contract as over a cgroup of doze's own, on the cgroup a docker task sleeps through
// (docs/docker.md). One dockerd per test, one at a time.
runtimeContract('freezer (docker container)', async (t) => {
  const dockerd = await startDockerd(t);
  const container = await dockerd.run({ name: `dz-sleeper-${Date.now()}`, cmd: ['/bin/busybox', 'sleep', '600'], networkMode: 'none' });
  const { cgroupDir } = containerCgroup(container.id);
  const make = () => new FreezerRuntime(cgroupDir);
  return { runtime: make(), another: make };
}, { unavailable: firstMissing(noRoot, noDocker), slowable: false, serial: true, timeoutMs: 60_000 });
