import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createBpffs } from '../helpers/bpffs.js';
import { REPO } from '../helpers/cli.js';
import { closedPort, get } from '../helpers/http.js';
import { createInstance } from '../helpers/instance.js';
import { uniqueSuffix } from '../helpers/names.js';
import { sweepChainsAtTeardown } from '../helpers/netfilter.js';
import { rootTest } from '../helpers/root.js';
import { sh } from '../helpers/sh.js';
import { tempDir } from '../helpers/temp-dir.js';
import { until } from '../helpers/until.js';

/*
 * make dist (scripts/dist.sh): the release tarball, unpacked into an empty
 * directory and run with `env -i` and a PATH that holds only the system tools
 * the agent shells out to: no node, no compiler, no libbpf. `doze --version`,
 * `doze agent --help`, and a real agent with the demo's instance (a namespace,
 * a veth, an app in a freezer cgroup) that sleeps and wakes on a request.
 */

const pkg = JSON.parse(await readFile(join(REPO, 'package.json'), 'utf8')) as { version: string };
const ARCH = process.arch === 'x64' ? 'x86_64' : process.arch;
const NAME = `doze-${pkg.version}-linux-${ARCH}.tar.gz`;
/** What the agent runs from PATH (agent/process/exec.ts PACKAGE_OF) and the launcher's /bin/sh and readlink. */
const SYSTEM_TOOLS = ['sh', 'readlink', 'ip', 'tc', 'iptables', 'iptables-save', 'nsenter', 'setpriv', 'getent'];

function run(file: string, args: string[], options: { cwd: string; env: Record<string, string> }): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { cwd: options.cwd, env: options.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('error', reject);
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

rootTest.serial('the release tarball runs from an empty directory with no Node.js and no compiler on PATH: --version, --help, and an agent that sleeps and wakes the demo\'s instance', async (t) => {
  t.timeout(240_000);
  const started = performance.now();
  await sh('make', ['-C', REPO, '--no-print-directory', 'dist'], 180_000);
  t.log(`make dist: ${((performance.now() - started) / 1000).toFixed(1)} s`);
  // npm pack too keeps what .gitignore's *.o and helper names would drop (package.json "files").
  const packed = JSON.parse(await sh('npm', ['pack', REPO, '--dry-run', '--json', '--ignore-scripts'], 60_000).then((out) => out, () => '[]')) as { files: { path: string }[] }[];
  const packedFiles = new Set(packed[0]?.files.map((f) => f.path) ?? []);
  for (const file of ['dist/agent/bpf/doze.bpf.o', 'dist/agent/bpf/doze-maps', 'dist/agent/runtimes/qemu/doze-pageout', 'dist/cli.js']) t.true(packedFiles.has(file), `npm pack keeps ${file}`);
  const tarball = join(REPO, 'build', NAME);
  const sum = (await readFile(`${tarball}.sha256`, 'utf8')).split(' ')[0]!;
  t.is(createHash('sha256').update(await readFile(tarball)).digest('hex'), sum, 'the .sha256 matches');

  // A PATH with the system tools only, checked to hold no node and no compiler.
  const bin = await tempDir(t, 'dist-bin');
  for (const tool of SYSTEM_TOOLS) {
    const path = (await sh('sh', ['-c', `command -v ${tool}`])).trim();
    await symlink(path, join(bin, tool));
  }
  t.deepEqual((await readdir(bin)).filter((f) => ['node', 'nodejs', 'cc', 'gcc', 'clang', 'bpftool'].includes(f)), []);
  const env = { PATH: bin };

  const dir = await tempDir(t, 'dist');
  t.deepEqual(await readdir(dir), [], 'an empty directory');
  await sh('tar', ['-xzf', tarball, '-C', dir], 60_000);
  for (const file of ['doze', 'node', 'lib/dist/agent/bpf/doze.bpf.o', 'lib/dist/agent/bpf/doze-maps', 'lib/dist/agent/runtimes/qemu/doze-pageout', 'lib/node_modules/express/package.json']) {
    t.true(existsSync(join(dir, file)), file);
  }
  // Static helpers: no libbpf, libelf or libz needed on the node.
  t.regex(await sh('file', [join(dir, 'lib/dist/agent/bpf/doze-maps')]), /statically linked/);

  const version = await run('./doze', ['--version'], { cwd: dir, env });
  t.is(version.code, 0, version.stderr);
  t.is(version.stdout.trim(), `doze ${pkg.version}`);
  const help = await run('./doze', ['agent', '--help'], { cwd: dir, env });
  t.is(help.code, 0, help.stderr);
  t.regex(help.stdout, /Usage: doze agent --config FILE/);

  // The demo's instance, and the agent from the tarball managing it.
  const inst = await createInstance(t);
  const bpffs = await createBpffs(t);
  const chainPrefix = `DZ${uniqueSuffix().toUpperCase()}`;
  sweepChainsAtTeardown(t, chainPrefix);
  const port = await closedPort();
  const configDir = join(dir, 'etc');
  await mkdir(configDir);
  await writeFile(join(configDir, 'doze.json'), JSON.stringify({ listen: `127.0.0.1:${port}`, bpffs, netfilter: { chainPrefix }, instances: [inst.config({ idleTimeout: '10m' })] }));
  const agent = spawn('./doze', ['agent', '--config', 'etc/doze.json', '--log-level', 'warn'], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  agent.stdout.on('data', (c: Buffer) => (output += c.toString()));
  agent.stderr.on('data', (c: Buffer) => (output += c.toString()));
  const exited = new Promise<number | null>((resolve) => agent.on('exit', (code) => resolve(code)));
  t.teardown(() => void agent.kill('SIGKILL'));
  const api = `http://127.0.0.1:${port}`;
  await until('the agent from the tarball answers', async () => (await get(`${api}/api/instances`, 1000).catch(() => undefined))?.status === 200, { timeoutMs: 30_000, detail: () => output });

  const slept = await fetch(`${api}/api/instances/web/sleep`, { method: 'POST' });
  t.is(slept.status, 200, await slept.text());
  t.is(await inst.cgroup.freezerState(), 'FROZEN');
  const answer = await get(`http://${inst.app.address}/`, 5000);
  t.is(answer.status, 200, 'a request wakes it');
  const view = (await (await fetch(`${api}/api/instances/web`)).json()) as { state: string; wakes: number };
  t.like(view, { state: 'running', wakes: 1 });
  t.is(await inst.cgroup.freezerState(), 'THAWED');

  agent.kill('SIGTERM');
  t.is(await exited, 0, output);
});
