// The test files `make check` runs: every test that needs no root, no kernel object and no
// external binary, found by rule so a new one is picked up without a list to keep:
//  - not under test/agent/ (whole agents on real kernel objects), test/live/ (Consul and Nomad
//    binaries), test/scripts/ (runs ava itself), and no *.browser.test.ts (Chromium);
//  - no gate of test/helpers/needs.ts in the file (rootTest, guestTest, testIf, a contract run
//    gated on its runtime): a gated test needs something this machine may lack.
// Prints the files, one a line, sorted: the same checkout always runs the same tests.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const EXCLUDED_DIRS = new Set(['test/agent', 'test/live', 'test/scripts', 'test/helpers', 'test/fixtures']);
const GATES = /\b(rootTest|guestTest|testIf|runtimeContract)\b|Test\(/;

function* testFiles(dir) {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory() && !EXCLUDED_DIRS.has(path)) yield* testFiles(path);
    else if (entry.isFile() && entry.name.endsWith('.test.ts') && !entry.name.endsWith('.browser.test.ts')) yield path;
  }
}

const files = [...testFiles('test')].filter((file) => !GATES.test(readFileSync(file, 'utf8'))).sort();
process.stdout.write(files.join('\n') + '\n');
