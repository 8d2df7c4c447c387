import { readdir, readFile } from 'node:fs/promises';
import { dirname, join, normalize, relative } from 'node:path';
import test from 'ava';

/*
 * The architecture README.md draws, checked: every module sits on a floor, and
 * imports point down (or sideways, within a floor), never up. A new folder or
 * top-level module must be given its floor here and its line in the drawing.
 */

/** Floors from the ground up; each entry is a folder (trailing /) or a module. */
const FLOORS: string[][] = [
  ['agent/shared/'],
  ['agent/config/', 'agent/process/'],
  ['agent/net/', 'agent/cgroups/'],
  ['agent/sources/', 'agent/netfilter/', 'agent/nomad/', 'agent/docker/'],
  ['agent/runtimes/', 'agent/health/', 'agent/hold/', 'agent/scheduler/'],
  ['agent/detector/'],
  ['agent/instances/', 'agent/discovery/', 'agent/sleep-guards.ts', 'agent/preflight.ts', 'agent/upstream-versions.ts'],
  ['agent/status/'],
  ['agent/agent.ts'],
  ['agent/cli/', 'plugin/'],
];

function floorOf(file: string): number | undefined {
  let best: { floor: number; length: number } | undefined;
  for (const [floor, entries] of FLOORS.entries()) {
    for (const entry of entries) {
      const matches = entry.endsWith('/') ? file.startsWith(entry) : file === entry;
      if (matches && (!best || entry.length > best.length)) best = { floor, length: entry.length };
    }
  }
  return best?.floor;
}

async function sourceFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries.filter((e) => e.isFile() && e.name.endsWith('.ts')).map((e) => relative('.', join(e.parentPath, e.name)));
}

/** Relative imports of a module (static, re-exports and dynamic), resolved to repository paths. */
function importsOf(file: string, text: string): string[] {
  const specifiers = [...text.matchAll(/(?:from\s+|import\s*\(\s*|import\s+)'(\.{1,2}\/[^']+)'/g)].map((m) => m[1]!);
  return specifiers.map((s) => normalize(join(dirname(file), s)).replace(/\.js$/, '.ts'));
}

test('every module of agent/ and plugin/ has a floor, and imports only its own floor or lower ones', async (t) => {
  const files = [...(await sourceFiles('agent')), ...(await sourceFiles('plugin'))];
  t.true(files.length > 50, `found only ${files.length} modules: is the test running from the repository root?`);
  const unplaced: string[] = [];
  const upward: string[] = [];
  for (const file of files) {
    const floor = floorOf(file);
    if (floor === undefined) {
      unplaced.push(file);
      continue;
    }
    for (const target of importsOf(file, await readFile(file, 'utf8'))) {
      const targetFloor = floorOf(target);
      if (targetFloor !== undefined && targetFloor > floor) upward.push(`${file} (floor ${floor}) imports ${target} (floor ${targetFloor})`);
    }
  }
  t.deepEqual(unplaced, [], 'give these modules a floor in test/architecture/floors.test.ts and a line in README "How it works"');
  t.deepEqual(upward, [], 'an import points up the architecture: move the shared part down a floor');
});

test('README "How it works" draws every folder of agent/, and no folder that is gone', async (t) => {
  const readme = await readFile('README.md', 'utf8');
  const drawing = /## How it works\n+```\n([\s\S]*?)```/.exec(readme)?.[1];
  t.truthy(drawing, 'README.md lost its "How it works" drawing');
  const drawnInOrder = [...drawing!.matchAll(/^ {1,4}(?:agent\/)?\s*([a-z][a-z-]*)\/ /gm)].map((m) => m[1]!);
  const drawn = new Set(drawnInOrder);
  const folders = (await readdir('agent', { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name);
  t.deepEqual(folders.filter((f) => !drawn.has(f)).sort(), [], 'folders of agent/ missing from the drawing');
  const topLevel = new Set(['agent', 'plugin', 'jobs', 'demo', 'test', 'bench']);
  const stale = [...drawn].filter((d) => !folders.includes(d) && !topLevel.has(d));
  t.deepEqual(stale.sort(), [], 'the drawing names folders agent/ no longer has');
  // Drawn top down: no folder is drawn above one on a higher floor.
  const floors = drawnInOrder.filter((d) => folders.includes(d)).map((d) => ({ d, floor: floorOf(`agent/${d}/`) }));
  const misplaced = floors.filter((f, i) => i > 0 && f.floor !== undefined && floors[i - 1]!.floor !== undefined && f.floor > floors[i - 1]!.floor!);
  t.deepEqual(misplaced.map((f) => f.d), [], 'the drawing lists these above where their floor puts them');
});

test('the floor table names only folders and modules that exist', async (t) => {
  const files = [...(await sourceFiles('agent')), ...(await sourceFiles('plugin'))];
  const missing = FLOORS.flat().filter((entry) => !files.some((f) => (entry.endsWith('/') ? f.startsWith(entry) : f === entry)));
  t.deepEqual(missing, [], 'remove these from FLOORS (or they moved: follow them)');
});
