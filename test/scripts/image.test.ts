import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createBpffs } from '../helpers/bpffs.js';
import { REPO } from '../helpers/cli.js';
import { closedPort, get } from '../helpers/http.js';
import { createInstance } from '../helpers/instance.js';
import { uniqueSuffix } from '../helpers/names.js';
import { firstMissing, testIf } from '../helpers/needs.js';
import { sweepChainsAtTeardown } from '../helpers/netfilter.js';
import { noDocker, startPrivateDockerd } from '../helpers/private-dockerd.js';
import { noRoot } from '../helpers/root.js';
import { tempDir } from '../helpers/temp-dir.js';
import { until } from '../helpers/until.js';

/*
 * make image (Dockerfile, scripts/image.sh): the image built from the release
 * tarball on a dockerd of the test's own, run as the system job's Docker
 * variant runs it (privileged, host network and pid, the host's bpffs,
 * cgroups and netns mounted): the agent in it sleeps and wakes the demo's
 * instance, and `docker stop` is a clean stop that wakes and removes everything.
 */

const pkg = JSON.parse(await readFile(join(REPO, 'package.json'), 'utf8')) as { version: string };
const IMAGE = `doze:${pkg.version}`;

/** Capabilities by bit number (linux/capability.h), for the ones a sandbox may withhold. */
const CAP_NAMES: Record<number, string> = { 24: 'SYS_RESOURCE', 16: 'SYS_MODULE', 22: 'SYS_BOOT', 25: 'SYS_TIME', 34: 'WAKE_ALARM', 36: 'BLOCK_SUSPEND', 40: 'CHECKPOINT_RESTORE' };

/**
 * `--privileged`, as the job's Docker variant runs it; where this machine's own bounding set lacks
 * a capability (a sandboxed CI runner), runc cannot grant it and --privileged fails, so the test
 * asks for every capability it has instead, unconfined like --privileged.
 */
async function privilegedFlags(): Promise<string[]> {
  const bounding = BigInt(`0x${/CapBnd:\s*([0-9a-f]+)/.exec(await readFile('/proc/self/status', 'utf8'))![1]}`);
  const lacking = Object.keys(CAP_NAMES).map(Number).filter((bit) => (bounding & (1n << BigInt(bit))) === 0n);
  if (lacking.length === 0) return ['--privileged'];
  return ['--cap-add', 'ALL', ...lacking.flatMap((bit) => ['--cap-drop', CAP_NAMES[bit]!]), '--security-opt', 'seccomp=unconfined', '--security-opt', 'apparmor=unconfined'];
}

function make(target: string, env: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('make', ['-C', REPO, '--no-print-directory', target], { env: { ...process.env, ...env }, timeout: 200_000 }, (error, stdout, stderr) => (error ? reject(new Error(`make ${target}: ${stderr || error.message}`)) : resolve(stdout)));
  });
}

testIf(firstMissing(noRoot, noDocker)).serial('the image from make image runs the agent privileged with the host\'s bpffs, cgroups and netns: it sleeps and wakes an instance, and docker stop wakes and cleans up', async (t) => {
  t.timeout(300_000);
  const dockerd = await startPrivateDockerd(t);
  const started = performance.now();
  t.log((await make('image', { DOCKER_HOST: dockerd.host })).trim().split('\n').at(-1));
  t.log(`make image: ${((performance.now() - started) / 1000).toFixed(1)} s`);
  t.teardown(() => dockerd.docker(['rmi', '-f', IMAGE]).then(() => undefined, () => undefined));

  const inst = await createInstance(t);
  const bpffs = await createBpffs(t);
  const chainPrefix = `DZ${uniqueSuffix().toUpperCase()}`;
  sweepChainsAtTeardown(t, chainPrefix);
  const port = await closedPort();
  const etc = await tempDir(t, 'image-etc');
  await writeFile(join(etc, 'doze.json'), JSON.stringify({ listen: `127.0.0.1:${port}`, logLevel: 'warn', bpffs, netfilter: { chainPrefix }, instances: [inst.config({ idleTimeout: '10m' })] }));
  const name = `dz-agent-${uniqueSuffix()}`;
  const privileges = await privilegedFlags();
  t.log(`run with ${privileges.join(' ')}`);
  await dockerd.docker(['run', '-d', '--name', name, ...privileges, '--network', 'host', '--pid', 'host',
    '-v', `${bpffs}:${bpffs}`, '-v', '/sys/fs/cgroup:/sys/fs/cgroup', '-v', '/var/run/netns:/var/run/netns', '-v', `${etc}:/etc/doze:ro`,
    IMAGE, 'agent', '--config', '/etc/doze/doze.json']);
  t.teardown(() => dockerd.docker(['rm', '-f', name]).then(() => undefined, () => undefined));
  const logs = () => dockerd.docker(['logs', name]).catch((error: Error) => error.message);
  const api = `http://127.0.0.1:${port}`;
  await until('the agent in the container answers', async () => (await get(`${api}/api/instances`, 1000).catch(() => undefined))?.status === 200, { timeoutMs: 30_000, everyMs: 100, detail: logs });

  const slept = await fetch(`${api}/api/instances/web/sleep`, { method: 'POST' });
  t.is(slept.status, 200, await slept.text());
  t.is(await inst.cgroup.freezerState(), 'FROZEN');
  t.is((await get(`http://${inst.app.address}/`, 5000)).status, 200, 'a request wakes it');
  t.like((await (await fetch(`${api}/api/instances/web`)).json()) as object, { state: 'running', wakes: 1 });

  await dockerd.docker(['stop', '-t', '20', name], 40_000);
  t.is((await dockerd.docker(['inspect', '-f', '{{.State.ExitCode}}', name])).trim(), '0', await logs());
  t.is(await inst.cgroup.freezerState(), 'THAWED');
});
