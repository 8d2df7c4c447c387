import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import test from 'ava';
import type { ReadonlyInstance } from '../../agent/detector/managed-instance.js';

/*
 * One writer for an instance's state: the detector (agent/detector/) holds each ManagedInstance
 * and changes it; every other module reads it as a ReadonlyInstance, whose fields the compiler
 * refuses to assign. Two checks keep it so: no module outside the detector names the writable
 * class (so none can cast its way back to it), and the assignments below must stay compile
 * errors (`tsc --noEmit`, part of `make check`, fails on an unused @ts-expect-error).
 */

const WRITERS = 'agent/detector/';

async function sourceFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries.filter((e) => e.isFile() && e.name.endsWith('.ts')).map((e) => relative('.', join(e.parentPath, e.name)));
}

test('no module outside agent/detector/ names ManagedInstance, the writable instance (others read a ReadonlyInstance)', async (t) => {
  const files = [...(await sourceFiles('agent')), ...(await sourceFiles('plugin')), 'cli.ts'];
  t.true(files.length > 50, `found only ${files.length} modules: is the test running from the repository root?`);
  const writers: string[] = [];
  for (const file of files) {
    if (file.startsWith(WRITERS)) continue;
    const text = await readFile(file, 'utf8');
    for (const [n, line] of text.split('\n').entries()) if (/\bManagedInstance\b/.test(line)) writers.push(`${file}:${n + 1}: ${line.trim()}`);
  }
  t.deepEqual(writers, [], 'these modules could write instance state: give them the ReadonlyInstance and ask the detector to change it');
});

/** Never called: it only has to compile, with each assignment refused. */
export function readOnlyForOthers(instance: ReadonlyInstance): void {
  // @ts-expect-error the state is the detector's to change
  instance.state = 'sleeping';
  // @ts-expect-error counters too
  instance.checksAnswered++;
  // @ts-expect-error and timing
  instance.lastSeenNs = 0n;
  // @ts-expect-error and the hold count
  instance.held = 1;
  // @ts-expect-error and what admission said of it
  instance.sleepBlockedBy = undefined;
  // The detector's own bookkeeping (its queue and timers) is not even readable.
  type Visible = Extract<keyof ReadonlyInstance, 'exclusive' | 'nextCheckNs' | 'wakesPending'>;
  const hidden: [Visible] extends [never] ? true : false = true;
  void hidden;
}
