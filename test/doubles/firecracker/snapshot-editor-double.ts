/**
 * Stands in for Firecracker's `snapshot-editor edit-memory rebase --memory-path
 * BASE --diff-path LAYER` on the double's JSON memory files: copies the layer's
 * pages over the base (Firecracker's tool copies the layer's data extents over
 * the base, holes meaning "unchanged"). Not the real tool: it reads only the
 * double's format. Run as a process, like the real one.
 */
import { readFile, writeFile } from 'node:fs/promises';
import type { DoubleMemoryFile } from './firecracker-double.js';

const args = process.argv.slice(2);
const flag = (name: string) => {
  const at = args.indexOf(name);
  return at >= 0 ? args[at + 1] : undefined;
};
const memoryPath = flag('--memory-path');
const diffPath = flag('--diff-path');
if (args[0] !== 'edit-memory' || args[1] !== 'rebase' || !memoryPath || !diffPath) {
  process.stderr.write('Usage: snapshot-editor edit-memory rebase --memory-path <PATH> --diff-path <PATH>\n');
  process.exit(2);
}
try {
  const base = JSON.parse(await readFile(memoryPath, 'utf8')) as DoubleMemoryFile;
  const layer = JSON.parse(await readFile(diffPath, 'utf8')) as DoubleMemoryFile;
  if (base.layer !== 'full') throw new Error(`${memoryPath} is not a base memory file`);
  Object.assign(base.pages, layer.pages);
  base.snapshotId = layer.snapshotId;
  await writeFile(memoryPath, JSON.stringify(base));
} catch (error) {
  process.stderr.write(`Error: ${(error as Error).message}\n`);
  process.exit(1);
}
