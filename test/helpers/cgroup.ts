import type { Teardown } from './teardown.js';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { uniqueSuffix } from './names.js';

const V1 = '/sys/fs/cgroup/freezer';

export interface TestCgroup {
  /** Path relative to the freezer hierarchy, as doze's config takes it. */
  name: string;
  dir: string;
  freezerState(): Promise<string>;
  procsFile: string;
}

/** A freezer cgroup under doze-test/; teardown thaws it, kills what is left and removes it. */
export async function createFreezerCgroup(t: Teardown): Promise<TestCgroup> {
  if (!existsSync(V1)) throw new Error('these tests use the cgroup v1 freezer at /sys/fs/cgroup/freezer');
  const name = `doze-test/dz-${uniqueSuffix()}`;
  const dir = join(V1, name);
  t.teardown(() => removeCgroup(dir));
  await mkdir(dir, { recursive: true });
  return {
    name,
    dir,
    procsFile: join(dir, 'cgroup.procs'),
    freezerState: async () => (await readFile(join(dir, 'freezer.state'), 'utf8')).trim(),
  };
}

/**
 * Samples a cgroup's freezer state every 10 ms until stopped (`onSample` runs at each one):
 * every state it was seen in, for "never frozen under a request" checks.
 */
export function sampleFreezerStates(cgroup: Pick<TestCgroup, 'freezerState'>, onSample?: () => void): { states: Set<string>; stop(): Promise<void> } {
  const states = new Set<string>();
  let sampling = true;
  const loop = (async () => {
    while (sampling) {
      states.add(await cgroup.freezerState());
      onSample?.();
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  })();
  return {
    states,
    stop: async () => {
      sampling = false;
      await loop;
    },
  };
}

/**
 * Thaws a test cgroup (v1 freezer.state or v2 cgroup.freeze, whichever it has),
 * kills what is left in it, removes it, and removes the shared doze-test/
 * (or doze-demo/) parent too once no other test's cgroup is in it.
 */
export async function removeCgroup(dir: string): Promise<void> {
  await writeFile(join(dir, 'freezer.state'), 'THAWED').catch(() => undefined);
  await writeFile(join(dir, 'cgroup.freeze'), '0').catch(() => undefined);
  const pids = (await readFile(join(dir, 'cgroup.procs'), 'utf8').catch(() => '')).split('\n').filter(Boolean);
  for (const pid of pids) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      // already gone
    }
  }
  await rmdirRetry(dir);
  await removeSharedParent(dir);
}

/** The doze-test/ or doze-demo/ directory above `dir`, if it is empty now (another test's cgroup keeps it). */
export async function removeSharedParent(dir: string): Promise<void> {
  const parent = dirname(dir);
  if (['doze-test', 'doze-demo'].includes(basename(parent))) await rmdir(parent).catch(() => undefined);
}

/** rmdir that waits for a cgroup's last task to leave; gone already is fine. */
export async function rmdirRetry(dir: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    try {
      await rmdir(dir);
      return;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
}
