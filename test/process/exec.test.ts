import test from 'ava';
import { z } from 'zod';
import { DozeError } from '../../agent/shared/errors.js';
import { run, runJson } from '../../agent/process/exec.js';

test('a command that outlives its deadline is killed, and the error names the command and the deadline', async (t) => {
  const started = Date.now();
  const error = await t.throwsAsync<DozeError>(run('sleep', ['5'], { timeoutMs: 200 }));
  t.true(Date.now() - started < 2000, `took ${Date.now() - started} ms`);
  t.is(error?.code, 'E_DEADLINE');
  t.regex(error!.message, /sleep 5 did not finish within 200 ms/);
});

test('allowFailure answers with a non-zero exit, never with a missed deadline', async (t) => {
  const error = await t.throwsAsync<DozeError>(run('sleep', ['5'], { timeoutMs: 200, allowFailure: true }));
  t.is(error?.code, 'E_DEADLINE');
});

test('there is no way to switch the deadline off', async (t) => {
  for (const timeoutMs of [0, -1, Number.POSITIVE_INFINITY, Number.NaN]) {
    await t.throwsAsync(run('true', [], { timeoutMs }), { instanceOf: RangeError, message: /deadline must be a positive number of ms/ });
  }
});

test('a missing tool names the Debian package that provides it', async (t) => {
  const error = await t.throwsAsync<DozeError>(run('tc', ['-V'], { env: { PATH: '/nonexistent' } }));
  t.is(error?.code, 'E_MISSING_TOOL');
  t.regex(error!.message, /tc is not installed \(Debian package iproute2\)/);
  await t.throwsAsync(run('doze-no-such-tool', []), { message: /doze-no-such-tool is not installed \(not on PATH\)/ });
});

test('a non-zero exit names the command, the exit code and stderr', async (t) => {
  const error = await t.throwsAsync<DozeError>(run('sh', ['-c', 'echo broken pipe dream >&2; exit 3']));
  t.is(error?.code, 'E_COMMAND');
  t.regex(error!.message, /^sh -c .* failed \(exit 3\): broken pipe dream$/);
  t.deepEqual(await run('sh', ['-c', 'echo out; echo err >&2; exit 3'], { allowFailure: true }), { stdout: 'out\n', stderr: 'err\n', code: 3 });
});

const links = z.array(z.object({ ifindex: z.number(), ifname: z.string() }));

test('runJson gives the output as the schema says', async (t) => {
  t.deepEqual(await runJson('echo', ['[{"ifindex":1,"ifname":"lo"}]'], links), [{ ifindex: 1, ifname: 'lo' }]);
  t.deepEqual(await runJson('true', [], links, { emptyOutput: [] }), [], 'empty output stands for what the caller says');
  t.is(await runJson('false', [], links, { allowFailure: true }), undefined);
});

test('runJson rejects output that does not match the schema, naming what was expected', async (t) => {
  const error = await t.throwsAsync<DozeError>(runJson('echo', ['[{"ifindex":"1","ifname":"lo"}]'], links));
  t.is(error?.code, 'E_COMMAND');
  t.regex(error!.message, /^echo .* printed unexpected JSON: \[0\]\.ifindex: .*expected number/);
  await t.throwsAsync(runJson('echo', ['Cannot find device "x"'], links), { message: /echo .* printed something that is not JSON: "Cannot find device/ });
  await t.throwsAsync(runJson('true', [], links), { message: /true printed nothing; expected JSON/ });
});
