// Runs ava with the TAP reporter, streams its output, and ends with the plain
// "N passed, N failed, N skipped" line CI reads (", N todo" when there are any).
// Exit code is ava's, or 1 when DOZE_TEST_ALLOWED_SKIPS is set (as .ci/run sets it)
// and a test was skipped for a need not in that list: a test CI can run must run.
//
// ava's TAP lines (supertap): "ok 3 - title # SKIP", "not ok 4 - title # TODO".
// Tests gated by test/helpers/needs.ts carry "(skipped, needs <need>: <reason>)"
// in their title; a skip without it (a bare test.skip) has no need CI could allow.
//
// With DOZE_TEST_CHECK_TMP=1 (.ci/run), a dz-*/doze-* entry the run left in the temp
// directories fails it too: tests and the demo remove what they make.
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const allowedEnv = process.env.DOZE_TEST_ALLOWED_SKIPS;
const allowed = allowedEnv === undefined ? undefined : new Set(allowedEnv.split(/[\s,]+/).filter(Boolean));
const tempDirs = [...new Set([tmpdir(), '/var/tmp'])];
const ours = () => tempDirs.flatMap((dir) => {
  try {
    return readdirSync(dir).filter((name) => /^(dz|doze)-/.test(name)).map((name) => join(dir, name));
  } catch {
    return [];
  }
});
const tmpBefore = process.env.DOZE_TEST_CHECK_TMP === '1' ? new Set(ours()) : undefined;

const args = ['ava', '--tap', ...process.argv.slice(2)];
const child = spawn('npx', args, { stdio: ['ignore', 'pipe', 'inherit'] });
let passed = 0;
let failed = 0;
let skipped = 0;
let todo = 0;
const refused = [];
let rest = '';

function count(line) {
  const result = /^(ok|not ok) \d+ (.*)$/.exec(line);
  if (!result) return;
  const [, status, text] = result;
  if (/ # TODO$/.test(text)) todo++;
  else if (status === 'not ok') failed++;
  else if (/ # SKIP$/.test(text)) {
    skipped++;
    const need = /\(skipped, needs ([a-z0-9-]+): /.exec(text)?.[1];
    const title = text.replace(/^- /, '').replace(/ # SKIP$/, '');
    if (allowed && !(need && allowed.has(need))) refused.push(need ? title : `${title} (a bare skip, no need given)`);
  } else passed++;
}

child.stdout.setEncoding('utf8');
child.stdout.on('data', (chunk) => {
  process.stdout.write(chunk);
  const lines = (rest + chunk).split('\n');
  rest = lines.pop() ?? '';
  for (const line of lines) count(line);
});
child.on('exit', (code, signal) => {
  count(rest);
  let exitCode = code ?? (signal ? 1 : 0);
  // A crashed run that reported nothing still counts as a failure.
  if (exitCode !== 0 && failed === 0) failed = 1;
  process.stdout.write(`\n${passed} passed, ${failed} failed, ${skipped} skipped${todo > 0 ? `, ${todo} todo` : ''}\n`);
  if (refused.length > 0) {
    process.stdout.write(`\n${refused.length} skipped for a need this run should have (DOZE_TEST_ALLOWED_SKIPS="${allowedEnv}"):\n`);
    for (const line of refused) process.stdout.write(`  ${line}\n`);
    if (exitCode === 0) exitCode = 1;
  }
  const left = tmpBefore ? ours().filter((path) => !tmpBefore.has(path)) : [];
  if (left.length > 0) {
    process.stdout.write(`\n${left.length} temporary file(s) or directories left behind (DOZE_TEST_CHECK_TMP=1):\n`);
    for (const path of left) process.stdout.write(`  ${path}\n`);
    if (exitCode === 0) exitCode = 1;
  }
  process.exit(exitCode);
});
