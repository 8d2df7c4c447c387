import test from 'ava';
import { spawn } from 'node:child_process';
import { REPO } from '../helpers/cli.js';

/*
 * scripts/run-tests.mjs on one real, quick, root-gated test, with root pretended
 * missing (DOZE_TEST_PRETEND_MISSING): the skip is counted as one, and a CI run
 * (DOZE_TEST_ALLOWED_SKIPS) fails unless that need is in its list.
 */

const target = ['test/cli/agent-config-errors.test.ts', '--match', '*has no freezer*'];

/** The runner with root pretended missing; `allowedSkips` undefined: not a CI run. */
function runTests(allowedSkips?: string, args = target): Promise<{ code: number | null; stdout: string }> {
  // Not CI's settings: the temp check would see the other tests running beside this nested run.
  const { DOZE_TEST_ALLOWED_SKIPS: _ci, DOZE_TEST_CHECK_TMP: _tmp, ...inherited } = process.env;
  const child = spawn(process.execPath, ['scripts/run-tests.mjs', ...args], {
    cwd: REPO,
    env: { ...inherited, DOZE_TEST_PRETEND_MISSING: 'root', ...(allowedSkips === undefined ? {} : { DOZE_TEST_ALLOWED_SKIPS: allowedSkips }) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.resume();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.once('error', reject);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout });
    });
  });
}

test('a test gated on a missing need is counted as skipped, with its reason in the TAP line', async (t) => {
  const result = await runTests();
  t.is(result.code, 0, result.stdout);
  t.regex(result.stdout, /^ok 1 - .*has no freezer.* \(skipped, needs root: pretended missing by DOZE_TEST_PRETEND_MISSING\) # SKIP$/m);
  t.regex(result.stdout, /^0 passed, 0 failed, 1 skipped$/m);
});

test('with DOZE_TEST_ALLOWED_SKIPS (CI), a skip for a need not in the list fails the run and is named', async (t) => {
  const result = await runTests('consul-nomad cni');
  t.is(result.code, 1, result.stdout);
  t.regex(result.stdout, /^0 passed, 0 failed, 1 skipped$/m);
  t.regex(result.stdout, /^1 skipped for a need this run should have/m);
  t.regex(result.stdout, /^ {2}an instance whose cgroup has no freezer .*\(skipped, needs root: /m);
});

test('with DOZE_TEST_ALLOWED_SKIPS naming the need, the same skip is accepted', async (t) => {
  const result = await runTests('consul-nomad,root');
  t.is(result.code, 0, result.stdout);
  t.regex(result.stdout, /^0 passed, 0 failed, 1 skipped$/m);
});

test('a todo is counted as todo, not failed; a bare skip and a gated one as skipped, and CI refuses the bare one', async (t) => {
  const fixture = ['test/scripts/run-tests.fixture.ts'];
  const plain = await runTests(undefined, fixture);
  t.is(plain.code, 0, plain.stdout);
  t.regex(plain.stdout, /^1 passed, 0 failed, 2 skipped, 1 todo$/m);
  const ci = await runTests('cni', fixture);
  t.is(ci.code, 1, ci.stdout);
  t.regex(ci.stdout, /^1 skipped for a need this run should have/m);
  t.regex(ci.stdout, /^ {2}is skipped by hand, with no need \(a bare skip, no need given\)$/m);
  t.notRegex(ci.stdout, /^ {2}needs the CNI plugins/m, 'the allowed need is not refused');
});
