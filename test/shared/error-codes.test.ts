import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import test from 'ava';
import { ERROR_CODES } from '../../agent/shared/error-codes.js';

/*
 * DozeError takes only declared codes (the compiler refuses another); this keeps the declared list
 * honest the other way: every code in it is raised somewhere, so the list is what doze says.
 */

async function sourceFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries.filter((e) => e.isFile() && e.name.endsWith('.ts')).map((e) => relative('.', join(e.parentPath, e.name)));
}

test('every declared error code is raised somewhere (agent/, plugin/, or the test doubles)', async (t) => {
  const files = [...(await sourceFiles('agent')), ...(await sourceFiles('plugin')), ...(await sourceFiles('test'))].filter((f) => f !== 'agent/shared/error-codes.ts');
  const text = (await Promise.all(files.map((f) => readFile(f, 'utf8')))).join('\n');
  const unused = Object.keys(ERROR_CODES).filter((code) => !text.includes(`'${code}'`));
  t.deepEqual(unused, [], 'declared but never raised: remove them from agent/shared/error-codes.ts');
});

test('each code says what it means', (t) => {
  for (const [code, meaning] of Object.entries(ERROR_CODES)) {
    t.regex(code, /^E_[A-Z0-9_]+$/);
    t.true(meaning.length > 10, `${code} needs a meaning`);
  }
});
