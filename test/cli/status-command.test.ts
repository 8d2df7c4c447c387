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

test('doze status prints the node at a glance with bars, then the instances (known state)', async (t) => {
  const rows = [
    { id: 'api', state: 'running', sleeps: 4, wakes: 5, lastWakeMs: 1.5, lastFirstResponseMs: 3, idleForMs: 200, checksAnswered: 2, failure: null, heldBy: null },
    { id: 'web', state: 'sleeping', sleeps: 3, wakes: 2, lastWakeMs: 1.25, lastFirstResponseMs: 2.5, idleForMs: 4200, checksAnswered: 7, failure: null, heldBy: null },
  ];
  const status = {
    instances: { total: 12, byState: { running: 3, sleeping: 9 } },
    budget: { maxActive: 10, maxActiveMemory: 2048, active: 3, activeMemory: 768, freedMemory: 1024, queued: 0, overruns: 0 },
    savings: { lastHour: { asleepMs: 0, managedMs: 0, asleepShare: 0.5 }, lastDay: { asleepMs: 0, managedMs: 0, asleepShare: 0.73 } },
  };
  const server = createServer((req, res) => res.end(JSON.stringify(req.url === '/api/status' ? status : rows)));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => server.close());
  const result = await runCli(['status', '--addr', `http://127.0.0.1:${(server.address() as AddressInfo).port}`]);
  t.is(result.code, 0);
  t.is(
    result.stdout,
    [
      'Awake         3 of 10              ██████░░░░░░░░░░░░░░  30%',
      'Instances     12',
      'Awake memory  768 of 2048 MiB      ████████░░░░░░░░░░░░  38%',
      'Memory freed  1024 MiB now',
      'Asleep today  73% (this hour 50%)  ███████████████░░░░░  73%',
      '',
      'INSTANCE  STATE     IDLE  LAST WAKE  SLEEPS  WAKES  CHECKS  ANSWERED  NOTE',
      'api       running   0.2s  1.50ms     4       5      2       3.00ms',
      'web       sleeping  4.2s  1.25ms     3       2      7       2.50ms',
      '',
    ].join('\n'),
  );
});

test('doze status --why ID names what holds the instance awake; an unknown id is a usage error', async (t) => {
  const view = { id: 'web', state: 'running', idleForMs: 3000, whyAwake: [{ kind: 'in-flight' }, { kind: 'busy' }], whyAwakeText: ['1 request(s) in flight from 10.0.0.9:40000 (3.0 s)', 'busy: 950 ms CPU in the last 1000 ms'] };
  const server = createServer((req, res) => {
    if (req.url === '/api/instances/web') return void res.end(JSON.stringify(view));
    res.statusCode = 404;
    res.end('{"error":"no instance"}');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => server.close());
  const addr = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const why = await runCli(['status', '--addr', addr, '--why', 'web']);
  t.is(why.code, 0);
  t.is(why.stdout, 'web is awake (idle 3.0s) because:\n  in-flight  1 request(s) in flight from 10.0.0.9:40000 (3.0 s)\n  busy       busy: 950 ms CPU in the last 1000 ms\n');
  const unknown = await runCli(['status', '--addr', addr, '--why', 'nope']);
  t.is(unknown.code, 2);
  t.regex(unknown.stderr, /manages no instance "nope"/);
});
