import { readdir, readFile } from 'node:fs/promises';
import test from 'ava';
import { isDeclaredMetaKey, metaKeysMarkdown } from '../../agent/nomad/meta-keys.js';

/** Node meta the agent job sets, not a job annotation. */
const NODE_META = new Set(['doze.agent']);

test('docs/nomad.md carries the meta key table generated from meta-keys.ts', async (t) => {
  const docs = await readFile('docs/nomad.md', 'utf8');
  const table = /<!-- meta-keys:start -->\n([\s\S]*?)\n<!-- meta-keys:end -->/.exec(docs)?.[1];
  t.truthy(table, 'docs/nomad.md lost its meta-keys markers');
  t.is(table, metaKeysMarkdown(), 'docs/nomad.md is stale: paste metaKeysMarkdown() (agent/nomad/meta-keys.ts) between the markers');
});

test('every doze.* key the docs and example jobs use is declared', async (t) => {
  const files = ['docs/nomad.md', ...(await readdir('jobs')).map((f) => `jobs/${f}`)];
  const undeclared: string[] = [];
  for (const file of files) {
    const text = await readFile(file, 'utf8');
    for (const [key] of text.matchAll(/(?<![\w/.-])doze\.[a-z_]*[a-z]/g)) {
      if (!isDeclaredMetaKey(key) && !NODE_META.has(key)) undeclared.push(`${file}: ${key}`);
    }
  }
  t.deepEqual(undeclared, []);
});
