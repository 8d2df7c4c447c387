import test from 'ava';
import { execFile } from 'node:child_process';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { REPO, runCli } from '../helpers/cli.js';
import { isRoot, rootTest } from '../helpers/root.js';
import { tempDir } from '../helpers/temp-dir.js';

/*
 * First use: `doze --version`, the package lists a demo and a test run install, and the Makefile's
 * answer to a user who is not root (re-run under sudo, or say to run it as root).
 */

const exec = promisify(execFile);

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function sh(file: string, args: string[], options: { env?: NodeJS.ProcessEnv } = {}): Promise<Run> {
  try {
    const { stdout, stderr } = await exec(file, args, { cwd: REPO, timeout: 30_000, env: { ...process.env, ...options.env } });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

test('doze --version prints the package version', async (t) => {
  const { version } = JSON.parse(await readFile(join(REPO, 'package.json'), 'utf8')) as { version: string };
  const result = await runCli(['--version']);
  t.is(result.code, 0, result.stderr);
  t.is(result.stdout, `doze ${version}\n`);
});

test('make demo installs only what the demo needs; make test adds the rest; .ci/run still gets the whole list', async (t) => {
  const list = async (profile: string) => (await sh('bash', ['scripts/setup.sh', profile, '--list'])).stdout.trim().split('\n');
  const demo = await list('demo');
  const full = await list('test');
  for (const p of ['make', 'gcc', 'clang', 'libbpf-dev', 'bpftool', 'iproute2']) t.true(demo.includes(p), `demo needs ${p}`);
  for (const p of ['chromium', 'qemu-system-x86', 'linux-image-cloud-amd64', 'wrk']) {
    t.false(demo.includes(p), `the demo does not install ${p}`);
    t.true(full.includes(p), `the tests install ${p}`);
  }
  t.deepEqual(full.slice(0, demo.length), demo, 'the test list is the demo list plus the rest');
  // .ci/run installs `grep -v '^#' scripts/system-packages.txt`: the same packages as the test profile.
  const file = (await readFile(join(REPO, 'scripts/system-packages.txt'), 'utf8')).split('\n').filter((l) => l && !l.startsWith('#'));
  t.deepEqual(file, full);
  t.is((await sh('bash', ['scripts/setup.sh', 'everything'])).code, 2, 'an unknown profile is a usage error');
});

// setpriv runs make as nobody; only root can do that.
const asNobody = isRoot ? test.serial : test.serial.skip;

asNobody('as a user without sudo, make demo says to run it as root (exit 2) instead of failing half way', async (t) => {
  const result = await sh('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'env', 'HOME=/tmp', 'PATH=/usr/bin:/bin', 'make', '--no-print-directory', 'demo']);
  t.is(result.code, 2, result.stderr);
  t.regex(result.stderr, /doze: make demo needs root .*: run it as root/);
});

asNobody('as a user with sudo, make test re-runs itself under sudo', async (t) => {
  const bin = await tempDir(t, 'sudo');
  await chmod(bin, 0o755);
  // A stand-in sudo that only says how it was called.
  await writeFile(join(bin, 'sudo'), '#!/bin/sh\necho "sudo $*"\n', { mode: 0o755 });
  const result = await sh('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'env', 'HOME=/tmp', `PATH=${bin}:/usr/bin:/bin`, 'make', '--no-print-directory', 'test']);
  t.is(result.code, 0, result.stderr);
  t.regex(result.stderr, /doze: make test needs root: re-running it under sudo/);
  t.regex(result.stdout, /^sudo make --no-print-directory test PREFIX=\/usr\/local$/m);
});

// As a user, make install re-runs under sudo (tried above for make test).
rootTest('make install puts a doze on PATH that prints its version', async (t) => {
  const prefix = await tempDir(t, 'prefix');
  // -o dist/.built: the link and its --version need the build, not a rebuild by this test.
  const result = await sh('make', ['--no-print-directory', '-o', 'build', 'install', `PREFIX=${prefix}`]);
  t.is(result.code, 0, result.stderr);
  const version = await sh(join(prefix, 'bin', 'doze'), ['--version']);
  t.regex(version.stdout, /^doze \d+\.\d+\.\d+/);
});
