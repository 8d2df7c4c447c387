import test from 'ava';
import { CONFIG_HELP } from '../../agent/cli/config-command.js';
import { configJsonSchema, configReferenceMarkdown } from '../../agent/config/reference.js';
import { runCli } from '../helpers/cli.js';

test('doze config schema prints the config file\'s JSON Schema and exits 0', async (t) => {
  const result = await runCli(['config', 'schema']);
  t.is(result.code, 0, result.stderr);
  const printed = JSON.parse(result.stdout) as Record<string, unknown>;
  t.is(printed.$schema, 'https://json-schema.org/draft/2020-12/schema');
  t.deepEqual(printed, configJsonSchema());
});

test('doze config reference prints the README table', async (t) => {
  const result = await runCli(['config', 'reference']);
  t.is(result.code, 0, result.stderr);
  t.is(result.stdout, `${configReferenceMarkdown()}\n`);
});

test('doze config without a known subcommand exits 2 with its usage; --help exits 0', async (t) => {
  const bad = await runCli(['config', 'scheme']);
  t.is(bad.code, 2);
  t.regex(bad.stderr, /doze config: unknown subcommand "scheme"/);
  t.true(bad.stderr.includes(CONFIG_HELP));
  const bare = await runCli(['config']);
  t.is(bare.code, 2);
  t.true(bare.stdout.includes(CONFIG_HELP));
  const extra = await runCli(['config', 'schema', 'README.md']);
  t.is(extra.code, 2);
  t.regex(extra.stderr, /takes no arguments/);
  const help = await runCli(['config', '--help']);
  t.is(help.code, 0);
  t.is(help.stdout, `${CONFIG_HELP}\n`);
});

test('doze --help lists the config command', async (t) => {
  const result = await runCli(['--help']);
  t.is(result.code, 0);
  t.regex(result.stdout, /config\s+print the config file's JSON Schema/);
});
