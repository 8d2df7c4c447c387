import test from 'ava';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { runCli } from '../helpers/cli.js';

test('doze status exits 1 and says so when the agent is unreachable', async (t) => {
  const result = await runCli(['status', '--addr', 'http://127.0.0.1:1']);
  t.is(result.code, 1);
  t.regex(result.stderr, /agent at http:\/\/127\.0\.0\.1:1 is unreachable/);
});

test('doze status prints a table and --json', async (t) => {
  const rows = [{ id: 'web', state: 'sleeping', sleeps: 3, wakes: 2, lastWakeMs: 1.25, lastFirstResponseMs: 2.5, idleForMs: 4200, checksAnswered: 7, failure: null, heldBy: null }];
  const server = createServer((_req, res) => res.end(JSON.stringify(rows)));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => server.close());
  const addr = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const table = await runCli(['status', '--addr', addr]);
  t.is(table.code, 0);
  t.regex(table.stdout, /INSTANCE\s+STATE/);
  t.regex(table.stdout, /web\s+sleeping\s+4\.2s\s+1\.25ms\s+3\s+2\s+7\s+2\.50ms/);
  const json = await runCli(['status', '--addr', addr, '--json']);
  t.deepEqual(JSON.parse(json.stdout), rows);
});

test('doze status rejects a malformed answer', async (t) => {
  const server = createServer((_req, res) => res.end('{"not":"a list"}'));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => server.close());
  const result = await runCli(['status', '--addr', `http://127.0.0.1:${(server.address() as AddressInfo).port}`]);
  t.is(result.code, 1);
  t.regex(result.stderr, /unexpected answer/);
});
