import { REPO } from '../helpers/cli.js';
import { rootTest } from '../helpers/root.js';
import { sh } from '../helpers/sh.js';
import { tempDir } from '../helpers/temp-dir.js';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';

rootTest('the demo sets up, sleeps, wakes on a request and cleans up (--self-test)', async (t) => {
  const child = spawn(process.execPath, ['--import', 'tsx', 'demo/demo.ts', '--self-test'], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
  child.stderr.setEncoding('utf8').on('data', (c: string) => (out += c));
  const code = await new Promise<number | null>((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('exit', (c) => {
      clearTimeout(timer);
      resolve(c);
    });
  });
  t.is(code, 0, out);
  t.regex(out, /running → pausing/);
  t.regex(out, /self-test: cgroup was FROZEN; first request answered 200/);
  const config = /^self-test: config (\S+)$/m.exec(out)?.[1];
  t.truthy(config, out);
  t.false(existsSync(dirname(config!)), `the demo removed its config directory ${dirname(config!)}`);
});

rootTest('a demo whose set-up fails half way (its `ip -n … addr add`) removes the namespace, veth and cgroups it made, and says what failed', async (t) => {
  // A shim `ip` first on PATH fails the step that failed for a user (the address inside the namespace), like the kernel refusing it.
  const bin = await tempDir(t, 'demo-ip');
  const realIp = (await sh('sh', ['-c', 'command -v ip'])).trim();
  await writeFile(join(bin, 'ip'), `#!/bin/sh\nif [ "$1" = "-n" ] && [ "$3" = "addr" ] && [ "$4" = "add" ]; then echo "RTNETLINK answers: Cannot assign requested address" >&2; exit 2; fi\nexec ${realIp} "$@"\n`);
  await chmod(join(bin, 'ip'), 0o755);
  const child = spawn(process.execPath, ['--import', 'tsx', 'demo/demo.ts', '--self-test'], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PATH: `${bin}:${process.env.PATH}` } });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
  child.stderr.setEncoding('utf8').on('data', (c: string) => (out += c));
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  t.is(code, 1, out);
  const failed = /ip -n (dz-demo-([0-9a-f]{6})) addr add \S+ dev dz[0-9a-f]{6}i failed .*Cannot assign requested address/.exec(out);
  t.truthy(failed, out);
  const [, ns, id] = failed!;
  t.false((await sh('ip', ['netns', 'list'])).includes(ns!), `namespace ${ns} removed`);
  t.false((await sh('ip', ['-o', 'link', 'show'])).includes(`dz${id}h`), `veth dz${id}h removed`);
  t.false(existsSync(`/sys/fs/cgroup/freezer/doze-demo/dz-${id}`), 'freezer cgroup removed');
  t.false(existsSync(`/sys/fs/cgroup/memory/doze-demo/dz-${id}`), 'memory cgroup removed');
});
