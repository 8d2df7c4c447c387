import test from 'ava';
import { writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from '../helpers/cli.js';
import type { Teardown } from '../helpers/teardown.js';
import { tempDir } from '../helpers/temp-dir.js';

/*
 * Errors a user must fix name the fix: the instance and field (or the flag), the nearest valid
 * key, and exit 2; an agent that is merely unreachable exits 1. One row per message.
 */

async function configFile(t: Teardown, content: unknown): Promise<string> {
  const file = join(await tempDir(t, 'errors'), 'doze.json');
  await writeFile(file, typeof content === 'string' ? content : JSON.stringify(content));
  return file;
}

// A fake runtime needs no cgroup, so the interface check is the first thing that can fail.
const instance = { id: 'web', address: '10.200.0.2:8080', runtime: { kind: 'fake' } };
const base = { listen: '127.0.0.1:0', stub: { listen: '127.0.0.1:0' } };

interface Row {
  what: string;
  config?: unknown;
  args: (file: string) => string[];
  env?: NodeJS.ProcessEnv;
  code: number;
  says: RegExp[];
  never?: RegExp[];
}

const rows: Row[] = [
  {
    what: 'an interface that does not exist',
    config: { ...base, instances: [{ ...instance, interface: 'dz-nothere' }] },
    args: (file) => ['agent', '--config', file],
    code: 2,
    says: [/instances\[0\] \(web\)\.interface: no interface "dz-nothere" on this node/],
    // Checked before anything is attached: no tc error, no half start to undo.
    never: [/tc -j qdisc/, /doze agent stopped/],
  },
  {
    what: 'a node interface that does not exist',
    config: { ...base, hostPorts: { interfaces: ['dz-nonode'] } },
    args: (file) => ['agent', '--config', file],
    code: 2,
    says: [/hostPorts\.interfaces\[0\]: no interface "dz-nonode"/],
  },
  {
    what: "a typo'd instance key",
    config: { ...base, instances: [{ ...instance, interface: 'lo', idleTimout: '1s' }] },
    args: (file) => ['agent', '--config', file],
    code: 2,
    says: [/instances\[0\]: unknown key "idleTimout" \(did you mean "idleTimeout"\?\)/],
    // The object is not echoed (it used to be, cut off mid-word at 80 characters).
    never: [/\(got \{/],
  },
  {
    what: "a typo'd top-level key",
    config: { ...base, lisen: '127.0.0.1:7070' },
    args: (file) => ['agent', '--config', file],
    code: 2,
    says: [/\(top level\): unknown key "lisen" \(did you mean "listen"\?\)/],
  },
  {
    what: "a typo'd runtime key",
    config: { ...base, instances: [{ ...instance, runtime: { kind: 'freezer', cgroupe: 'doze/web' } }] },
    args: (file) => ['agent', '--config', file],
    code: 2,
    says: [/instances\[0\]\.runtime: unknown key "cgroupe" \(did you mean "cgroup"\?\)/],
  },
  {
    what: 'a key nothing is near',
    config: { ...base, healthChecks: { frobnicate: true } },
    args: (file) => ['agent', '--config', file],
    code: 2,
    says: [/healthChecks: unknown key "frobnicate" \(known here: mark, fromUid, fromUser, fromSources, tls\)/],
  },
  {
    what: 'a long bad value',
    config: { ...base, instances: [{ ...instance, idleTimeout: 'a very long and entirely unparseable duration written by somebody in a hurry on a Friday' }] },
    args: (file) => ['agent', '--config', file],
    code: 2,
    says: [/instances\[0\]\.idleTimeout: .* \(got "a very long and entirely unparseable duration written by somebody in a hurry …\)/],
  },
  {
    what: 'a bad --log-level flag',
    config: base,
    args: (file) => ['agent', '--config', file, '--log-level', 'loud'],
    code: 2,
    says: [/invalid option --log-level: .*expected one of "fatal"\|"error".* \(got "loud"\)/],
    never: [/config file .* is invalid/],
  },
  {
    what: 'a bad DOZE_LOG_LEVEL',
    config: base,
    args: (file) => ['agent', '--config', file],
    env: { DOZE_LOG_LEVEL: 'chatty' },
    code: 2,
    says: [/invalid option DOZE_LOG_LEVEL: .* \(got "chatty"\)/],
  },
  {
    what: 'a bad --listen flag beside a bad file',
    config: { ...base, instances: [{ ...instance, wake: 'later' }] },
    args: (file) => ['agent', '--config', file, '--listen', 'nowhere'],
    code: 2,
    says: [/and options are invalid/, /--listen: expected "host:port" \(got "nowhere"\)/, /instances\[0\]\.wake:/],
  },
  {
    what: 'a bad token in the file (never echoed)',
    config: { ...base, token: '' },
    args: (file) => ['agent', '--config', file],
    code: 2,
    says: [/token: Too small/],
    never: [/\(got/],
  },
  {
    what: 'a missing config file',
    args: () => ['agent', '--config', '/nonexistent/doze.json'],
    code: 2,
    says: [/cannot read config file \/nonexistent\/doze\.json: no such file \(ENOENT\)/],
  },
  {
    what: 'a directory as config file',
    args: () => ['agent', '--config', tmpdir()],
    code: 2,
    says: [/it is a directory, not a file \(EISDIR\)/],
  },
  {
    what: 'doze status --addr host:port (nobody listening)',
    args: () => ['status', '--addr', '127.0.0.1:1'],
    code: 1,
    says: [/agent at http:\/\/127\.0\.0\.1:1 is unreachable: connect ECONNREFUSED/, /is the agent running/],
    never: [/Invalid URL/],
  },
  {
    what: 'doze status --addr that is no address',
    args: () => ['status', '--addr', 'ftp://127.0.0.1:7070'],
    code: 2,
    says: [/--addr "ftp:\/\/127\.0\.0\.1:7070" is not an address: write host:port/],
  },
];

for (const row of rows) {
  // Serial: each row spawns the CLI under tsx, and a dozen at once on a loaded 2-core machine time out.
  test.serial(`error names the fix: ${row.what} (exit ${row.code})`, async (t) => {
    const file = row.config === undefined ? '' : await configFile(t, row.config);
    const result = await runCli(row.args(file), row.env);
    t.is(result.code, row.code, result.stderr);
    for (const pattern of row.says) t.regex(result.stderr, pattern);
    for (const pattern of row.never ?? []) t.notRegex(result.stderr + result.stdout, pattern);
  });
}
