// Writes the configuration table generated from agent/config/schema.ts (`doze config reference`)
// between README.md's config-reference markers: `make docs`. test/config/reference.test.ts fails
// while the README is stale.
import { readFile, writeFile } from 'node:fs/promises';
import { configReferenceMarkdown, withConfigReference } from '../dist/agent/config/reference.js';

const readme = new URL('../README.md', import.meta.url);
const before = await readFile(readme, 'utf8');
const after = withConfigReference(before, configReferenceMarkdown());
if (after !== before) await writeFile(readme, after);
process.stdout.write(`README.md: configuration table ${after === before ? 'already up to date' : 'rewritten'}\n`);
