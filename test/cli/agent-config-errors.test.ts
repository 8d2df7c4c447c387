import test from 'ava';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runCli } from '../helpers/cli.js';
import { rootTest } from '../helpers/root.js';
import { tempDir } from '../helpers/temp-dir.js';
import type { Teardown } from '../helpers/teardown.js';

async function configFile(t: Teardown, content: string): Promise<string> {
  const file = join(await tempDir(t, 'config'), 'doze.json');
  await writeFile(file, content);
  return file;
}

const instance = { id: 'web', address: '10.200.0.2:8080', interface: 'dz-web-h', runtime: { kind: 'freezer', cgroup: 'doze/web' } };

const cases: Array<[string, string, RegExp[]]> = [
  ['not JSON', '{ "listen": ', [/is not valid JSON/]],
  ['a bad duration', JSON.stringify({ instances: [{ ...instance, idleTimeout: '5 parsecs' }] }), [/instances\[0\]\.idleTimeout/, /"5 parsecs" is not a duration/]],
  ['an unknown field', JSON.stringify({ instances: [{ ...instance, idle: '1s' }] }), [/instances\[0\]/, /idle/]],
  ['a bad address', JSON.stringify({ instances: [{ ...instance, address: 'web:80' }] }), [/instances\[0\]\.address/, /"web:80"/]],
  ['a mark using the portmap bit', JSON.stringify({ healthChecks: { mark: '0x2000' } }), [/healthChecks\.mark/, /0x2000/]],
  ['duplicate ids', JSON.stringify({ instances: [instance, { ...instance, address: '10.200.0.3:8080' }] }), [/instances\[1\]\.id: duplicate id "web"/]],
  ['a bad runtime kind', JSON.stringify({ instances: [{ ...instance, runtime: { kind: 'criu' } }] }), [/instances\[0\]\.runtime/]],
];

for (const [what, content, patterns] of cases) {
  test(`doze agent rejects a config with ${what}: clear error, exit 2`, async (t) => {
    const file = await configFile(t, content);
    const result = await runCli(['agent', '--config', file]);
    t.is(result.code, 2, result.stderr);
    for (const pattern of patterns) t.regex(result.stderr, pattern);
  });
}

test('doze agent names a missing config file', async (t) => {
  const result = await runCli(['agent', '--config', '/nonexistent/doze.json']);
  t.is(result.code, 2);
  t.regex(result.stderr, /cannot read config file \/nonexistent\/doze\.json: no such file \(ENOENT\)/);
});

test('doze agent without --config is a usage error', async (t) => {
  const result = await runCli(['agent']);
  t.is(result.code, 2);
  t.regex(result.stderr, /--config FILE is required/);
});

test('--help works on every command', async (t) => {
  for (const args of [['--help'], ['agent', '--help'], ['status', '--help']]) {
    const result = await runCli(args);
    t.is(result.code, 0, `doze ${args.join(' ')}`);
    t.regex(result.stdout, /Usage: doze/);
  }
});

rootTest('an instance whose cgroup has no freezer is a config error naming it', async (t) => {
  const file = await configFile(t, JSON.stringify({ listen: '127.0.0.1:0', instances: [{ ...instance, runtime: { kind: 'freezer', cgroup: 'doze-test/does-not-exist' } }] }));
  const result = await runCli(['agent', '--config', file]);
  t.is(result.code, 2, result.stderr);
  t.regex(result.stderr, /instances\[0\] \(web\)\.runtime: cgroup "doze-test\/does-not-exist" has no freezer/);
});

test('a missing tool is a clear startup error naming its Debian package', async (t) => {
  const file = await configFile(t, JSON.stringify({ listen: '127.0.0.1:0', instances: [] }));
  const result = await runCli(['agent', '--config', file], { PATH: '/nonexistent' });
  t.is(result.code, 1, result.stderr);
  t.regex(result.stderr, /missing tools: tc \(Debian package iproute2\), ip \(Debian package iproute2\)/);
});
