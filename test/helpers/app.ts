import type { Teardown } from './teardown.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { TestCgroup } from './cgroup.js';
import type { TestNetns } from './netns.js';

export const APP_PATH = fileURLToPath(new URL('../../demo/app.mjs', import.meta.url));
export const APP_PORT = 8080;

export interface TestApp {
  child: ChildProcess;
  url: string;
  address: string;
}

/**
 * Starts the fixture app inside the namespace, already inside the cgroup
 * (the shell joins the cgroup before it execs, so no thread escapes it).
 */
export async function startApp(t: Teardown, ns: TestNetns, cgroup: TestCgroup, name = 'app'): Promise<TestApp> {
  const script = `echo $$ > ${cgroup.procsFile} && exec ip netns exec ${ns.name} ${process.execPath} ${APP_PATH} ${ns.instanceIp} ${APP_PORT} ${name}`;
  const child = spawn('sh', ['-c', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => {
    child.kill('SIGKILL');
  });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('app did not start within 10 s')), 10_000);
    child.stdout!.setEncoding('utf8');
    child.stdout!.once('data', () => {
      clearTimeout(timer);
      resolve();
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`app exited with ${code}`));
    });
  });
  return { child, url: `http://${ns.instanceIp}:${APP_PORT}`, address: `${ns.instanceIp}:${APP_PORT}` };
}
