import type { Teardown } from './teardown.js';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { defaultFreezerHandle } from '../../agent/runtimes/create-runtime.js';
import { startApp, type TestApp } from './app.js';
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
export async function createMemoryInstance(
  t: Teardown,
  holdMiB: number,
  id = 'web',
  memorySettings: Record<string, string> = {},
  memoryParent?: string,
  appEnv: Record<string, string> = {},
): Promise<MemoryInstance> {
  const ns = await createNetns(t);
  const cgroup = await createFreezerCgroup(t);
  // Under memoryParent (a directory of the memory hierarchy) its limits are shared; the config then names it.
  const memoryDir = memoryParent ? join(memoryParent, basename(cgroup.name)) : join(MEMORY_V1, cgroup.name);
  t.teardown(() => rmdirRetry(memoryDir));
  // The runtime's default handle file (a reclaim under way is recorded there).
  t.teardown(() => Promise.all([rm(defaultFreezerHandle(cgroup.name), { force: true }), rm(`${defaultFreezerHandle(cgroup.name)}.working-set`, { force: true })]));
  await mkdir(memoryDir, { recursive: true });
  for (const [file, value] of Object.entries(memorySettings)) await writeFile(join(memoryDir, file), value);
  const app = await startApp(t, ns, cgroup, id, { alsoJoin: [`${memoryDir}/cgroup.procs`], env: { DOZE_APP_HOLD_MIB: String(holdMiB), ...appEnv }, startTimeoutMs: 20_000 });
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
