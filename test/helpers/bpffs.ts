import type { Teardown } from './teardown.js';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sh, shQuiet } from './sh.js';

/** A private bpffs mount: this test's pinned maps cannot meet another test's (or a real agent's). */
export async function createBpffs(t: Teardown): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'dz-bpffs-'));
  t.teardown(async () => {
    await shQuiet('umount', [dir]);
    await rm(dir, { recursive: true, force: true });
  });
  await sh('mount', ['-t', 'bpf', 'bpf', dir]);
  return dir;
}
