import { REPO } from '../helpers/cli.js';
import { rootTest } from '../helpers/root.js';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname } from 'node:path';

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
