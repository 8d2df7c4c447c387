import type { Teardown } from './teardown.js';
import { spawn } from 'node:child_process';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { defaultFreezerHandle } from '../../agent/runtimes/create-runtime.js';
import { APP_PATH, APP_PORT, type TestApp } from './app.js';
import { createFreezerCgroup, rmdirRetry, type TestCgroup } from './cgroup.js';
import { createNetns, type TestNetns } from './netns.js';

const MEMORY_V1 = '/sys/fs/cgroup/memory';

export interface MemoryInstance {
  ns: TestNetns;
  cgroup: TestCgroup;
  /** Its v1 memory cgroup, at the freezer cgroup's path under the memory hierarchy (as Nomad's executor lays them out). */
  memoryDir: string;
  app: TestApp;
  residentBytes(): Promise<number>;
  config(overrides?: Record<string, unknown>, runtime?: Record<string, unknown>): Record<string, unknown>;
}

/**
 * A freezer instance whose app holds `holdMiB` of text-like data (demo/app.mjs
 * DOZE_APP_HOLD_MIB), in a freezer cgroup and a memory cgroup of the same name.
 */
export async function createMemoryInstance(t: Teardown, holdMiB: number, id = 'web', memorySettings: Record<string, string> = {}, memoryParent?: string): Promise<MemoryInstance> {
  const ns = await createNetns(t);
  const cgroup = await createFreezerCgroup(t);
  // Under memoryParent (a directory of the memory hierarchy) its limits are shared; the config then names it.
  const memoryDir = memoryParent ? join(memoryParent, basename(cgroup.name)) : join(MEMORY_V1, cgroup.name);
  t.teardown(() => rmdirRetry(memoryDir));
  // The runtime's default handle file (a reclaim under way is recorded there).
  t.teardown(() => Promise.all([rm(defaultFreezerHandle(cgroup.name), { force: true }), rm(`${defaultFreezerHandle(cgroup.name)}.working-set`, { force: true })]));
  await mkdir(memoryDir, { recursive: true });
  for (const [file, value] of Object.entries(memorySettings)) await writeFile(join(memoryDir, file), value);
  const script = `echo $$ > ${cgroup.procsFile} && echo $$ > ${memoryDir}/cgroup.procs && exec ip netns exec ${ns.name} ${process.execPath} ${APP_PATH} ${ns.instanceIp} ${APP_PORT} ${id}`;
  const child = spawn('sh', ['-c', script], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, DOZE_APP_HOLD_MIB: String(holdMiB) } });
  t.teardown(() => {
    child.kill('SIGKILL');
  });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('app did not start within 20 s')), 20_000);
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
  const app = { child, url: `http://${ns.instanceIp}:${APP_PORT}`, address: `${ns.instanceIp}:${APP_PORT}` };
  return {
    ns,
    cgroup,
    memoryDir,
    app,
    residentBytes: async () => Number((await readFile(join(memoryDir, 'memory.usage_in_bytes'), 'utf8')).trim()),
    config: (overrides = {}, runtime = {}) => ({
      id,
      address: app.address,
      interface: ns.hostIf,
      idleTimeout: '300ms',
      runtime: { kind: 'freezer', cgroup: cgroup.name, ...(memoryParent ? { memoryCgroup: memoryDir } : {}), ...runtime },
      ...overrides,
    }),
  };
}
