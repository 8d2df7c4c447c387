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

export interface AppOptions {
  /** More cgroup.procs files to join first (a memory cgroup beside the freezer one). */
  alsoJoin?: string[];
  /** The app's environment on top of this process's (DOZE_APP_HOLD_MIB, DOZE_APP_KEEPALIVE_MS: demo/app.mjs). */
  env?: Record<string, string>;
  startTimeoutMs?: number;
  /** Listen on every address of the namespace, both families (`::`), not only its IPv4 one. */
  dualStack?: boolean;
}

/**
 * Starts the fixture app inside the namespace, already inside the cgroup
 * (the shell joins the cgroup before it execs, so no thread escapes it).
 */
export async function startApp(
  t: Teardown,
  ns: TestNetns,
  cgroup: TestCgroup,
  name = 'app',
  options: AppOptions = {},
): Promise<TestApp> {
  const joins = [cgroup.procsFile, ...(options.alsoJoin ?? [])].map((file) => `echo $$ > ${file} && `).join('');
  const script = `${joins}exec ip netns exec ${ns.name} ${process.execPath} ${APP_PATH} ${options.dualStack ? '::' : ns.instanceIp} ${APP_PORT} ${name}`;
  const child = spawn('sh', ['-c', script], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...options.env } });
  t.teardown(() => {
    child.kill('SIGKILL');
  });
  const startTimeoutMs = options.startTimeoutMs ?? 10_000;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`app did not start within ${startTimeoutMs} ms`)), startTimeoutMs);
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
