import test from 'ava';
import type { ExecutionContext } from 'ava';
import http from 'node:http';
import net from 'node:net';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import { CheckRunner } from './consul/check-runner.js';
import type { CheckRunnerOptions } from './consul/check-runner.js';
import { StubServer } from '../../agent/health/stub-server.js';
import type { StubStatus } from '../../agent/health/stub-server.js';
import { rootTest } from '../helpers/root.js';
import { until } from '../helpers/until.js';

const exec = promisify(execFile);
const HOST = '127.0.0.1';
const CHECKER_UID = 65534; // nobody: stands in for the consul user

type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => unknown;

/** A tiny app on 127.0.0.1 that counts connections and remembers request headers. */
async function server(t: ExecutionContext, handler: Handler) {
  const seen: http.IncomingHttpHeaders[] = [];
  const remotes: string[] = [];
  let connections = 0;
  const srv = http.createServer((req, res) => {
    seen.push(req.headers);
    remotes.push(req.socket.remoteAddress ?? '');
    void handler(req, res);
  });
  srv.on('connection', () => connections++);
  await new Promise<void>((resolve) => srv.listen(0, HOST, resolve));
  t.teardown(() => new Promise<void>((resolve) => {
    srv.closeAllConnections();
    srv.close(() => resolve());
  }));
  const { port } = srv.address() as net.AddressInfo;
  return { url: `http://${HOST}:${port}`, port, seen, remotes, connections: () => connections };
}

async function runner(t: ExecutionContext, options: CheckRunnerOptions = {}): Promise<CheckRunner> {
  const r = await CheckRunner.create({ stagger: false, ...options });
  t.teardown(() => r.stop());
  return r;
}

test('HTTP probes send Consul headers, each on a new connection', async (t) => {
  const app = await server(t, (_req, res) => res.end('ok'));
  const r = await runner(t);
  for (let i = 0; i < 3; i++) {
    const result = await r.probe({ kind: 'http', url: `${app.url}/health`, timeoutMs: 2000, outputMaxSize: 4096 });
    t.is(result.status, 'passing');
  }
  t.is(app.connections(), 3, 'keep-alives are off');
  const headers = app.seen[0]!;
  t.is(headers['user-agent'], 'Consul Health Check');
  t.is(headers.accept, 'text/plain, text/*, */*');
  t.is(headers.connection, 'close');
  t.is(headers['accept-encoding'], 'gzip');
});

test('a check header overrides the defaults, as Consul allows', async (t) => {
  const app = await server(t, (_req, res) => res.end('ok'));
  const r = await runner(t);
  await r.probe({ kind: 'http', url: app.url, header: { 'User-Agent': ['custom'], 'X-Extra': ['a', 'b'] }, timeoutMs: 2000, outputMaxSize: 4096 });
  t.is(app.seen[0]!['user-agent'], 'custom');
  t.is(app.seen[0]!['x-extra'], 'a, b');
});

test('status mapping: 2xx passing, 429 warning, 5xx and 404 critical, with Consul output', async (t) => {
  const app = await server(t, (req, res) => {
    const code = Number(req.url?.slice(1));
    res.writeHead(code, { 'content-type': 'text/plain' });
    res.end(`said ${code}`);
  });
  const r = await runner(t);
  const probe = (code: number) => r.probe({ kind: 'http', url: `${app.url}/${code}`, timeoutMs: 2000, outputMaxSize: 4096 });
  t.is((await probe(200)).status, 'passing');
  t.is((await probe(204)).status, 'passing');
  t.is((await probe(299)).status, 'passing');
  t.is((await probe(429)).status, 'warning');
  t.is((await probe(404)).status, 'critical');
  const down = await probe(503);
  t.is(down.status, 'critical');
  t.is(down.output, `HTTP GET ${app.url}/503: 503 Service Unavailable Output: said 503`);
  t.is((await probe(200)).output, `HTTP GET ${app.url}/200: 200 OK Output: said 200`);
});

test('a timeout is critical; so is a refused connection', async (t) => {
  const app = await server(t, () => undefined); // never answers
  const r = await runner(t);
  const started = Date.now();
  const slow = await r.probe({ kind: 'http', url: `${app.url}/slow`, timeoutMs: 300, outputMaxSize: 4096 });
  const took = Date.now() - started;
  t.is(slow.status, 'critical');
  t.regex(slow.output, /context deadline exceeded \(Client\.Timeout exceeded while awaiting headers\)/);
  t.true(took >= 280 && took < 2000, `timed out after ${took} ms`);

  const closed = await freePort();
  const refused = await r.probe({ kind: 'http', url: `http://${HOST}:${closed}/`, timeoutMs: 1000, outputMaxSize: 4096 });
  t.is(refused.status, 'critical');
  t.is(refused.output, `Get "http://${HOST}:${closed}/": dial tcp ${HOST}:${closed}: connect: connection refused`);
});

test('output keeps the last 4 KiB of the body (Consul reads it into a circular buffer)', async (t) => {
  const body = `${'a'.repeat(5000)}THE-END`;
  const app = await server(t, (_req, res) => res.end(body));
  const r = await runner(t);
  const result = await r.probe({ kind: 'http', url: app.url, timeoutMs: 2000, outputMaxSize: 4096 });
  const output = result.output.split(' Output: ')[1]!;
  t.is(output.length, 4096);
  t.true(output.endsWith('THE-END'));
});

test('gzip bodies are decoded, as Go does transparently', async (t) => {
  const app = await server(t, (_req, res) => {
    res.writeHead(200, { 'content-encoding': 'gzip' });
    res.end(zlib.gzipSync('compressed hello'));
  });
  const r = await runner(t);
  const result = await r.probe({ kind: 'http', url: app.url, timeoutMs: 2000, outputMaxSize: 4096 });
  t.true(result.output.endsWith('Output: compressed hello'));
});

test('redirects are followed unless disabled', async (t) => {
  const app = await server(t, (req, res) => {
    if (req.url === '/old') {
      res.writeHead(302, { location: '/new' });
      return res.end();
    }
    res.end('moved here');
  });
  const r = await runner(t);
  const followed = await r.probe({ kind: 'http', url: `${app.url}/old`, timeoutMs: 2000, outputMaxSize: 4096 });
  t.is(followed.status, 'passing');
  t.is(followed.output, `HTTP GET ${app.url}/old: 200 OK Output: moved here`);
  const kept = await r.probe({ kind: 'http', url: `${app.url}/old`, disableRedirects: true, timeoutMs: 2000, outputMaxSize: 4096 });
  t.is(kept.status, 'critical');
});

test('TCP: connect is passing, refused is critical', async (t) => {
  const app = await server(t, (_req, res) => res.end());
  const r = await runner(t);
  const up = await r.probe({ kind: 'tcp', address: `${HOST}:${app.port}`, timeoutMs: 1000 });
  t.deepEqual({ status: up.status, output: up.output }, { status: 'passing', output: `TCP connect ${HOST}:${app.port}: Success` });
  const closed = await freePort();
  const down = await r.probe({ kind: 'tcp', address: `${HOST}:${closed}`, timeoutMs: 1000 });
  t.is(down.status, 'critical');
  t.is(down.output, `dial tcp ${HOST}:${closed}: connect: connection refused`);
});

test('gRPC: SERVING is passing, NOT_SERVING and a refused connect are critical (against the doze stub)', async (t) => {
  let state: StubStatus = 'sleeping';
  const stub = new StubServer({ status: () => state });
  t.teardown(() => stub.stop());
  const port = await stub.open('api');
  const r = await runner(t);
  const serving = await r.probe({ kind: 'grpc', target: `${HOST}:${port}/api.v1`, timeoutMs: 2000 });
  t.deepEqual({ status: serving.status, output: serving.output }, { status: 'passing', output: `gRPC check ${HOST}:${port}/api.v1: success` });
  state = 'failed';
  const notServing = await r.probe({ kind: 'grpc', target: `${HOST}:${port}`, timeoutMs: 2000 });
  t.is(notServing.status, 'critical');
  t.is(notServing.output, `gRPC ${HOST}:${port} serving status: NOT_SERVING`);
  stub.markFailed('api');
  const refused = await r.probe({ kind: 'grpc', target: `${HOST}:${port}`, timeoutMs: 2000 });
  t.is(refused.status, 'critical');
  t.regex(refused.output, /^rpc error: code = Unavailable .*connection refused/);
});

test('a check loop runs at its interval and records every result with a timestamp', async (t) => {
  const app = await server(t, (_req, res) => res.end('fine'));
  const r = await runner(t);
  const updates: string[] = [];
  r.subscribe((u) => updates.push(u.status));
  r.add({ id: 'web', kind: 'http', target: app.url, intervalMs: 50 });
  t.is(r.status('web'), 'critical', 'checks start critical');
  await until('5 results', () => r.results('web').length >= 5);
  r.remove('web');
  const results = r.results('web');
  t.true(results.every((x) => x.status === 'passing' && x.kind === 'http'));
  const gaps = results.slice(1).map((x, i) => x.at - results[i]!.at);
  t.true(gaps.every((g) => g >= 40), `gaps ${gaps.join(',')}`);
  t.is(updates[0], 'passing');
});

test('failures_before_critical and success_before_passing behave as Consul\'s StatusHandler', async (t) => {
  let code = 200;
  const app = await server(t, (_req, res) => {
    res.statusCode = code;
    res.end();
  });
  const r = await runner(t);
  r.add({ id: 'c', kind: 'http', target: app.url, intervalMs: 30, failuresBeforeCritical: 3, successBeforePassing: 2 });
  await until('first result', () => r.results('c').length >= 1);
  // Counters start at the thresholds: the first success passes at once.
  t.is(r.results('c')[0]!.status, 'passing');
  code = 500;
  await until('critical', () => r.status('c') === 'critical');
  code = 200;
  await until('passing again', () => r.status('c') === 'passing');
  r.remove('c');
  const seq = r.results('c').map((x) => `${x.probe[0]}${x.status[0]}`);
  // After the first pass: failing probes keep "passing" until the 3rd (p→c), then 2 successes are needed.
  const firstFail = seq.indexOf('cp');
  t.deepEqual(seq.slice(firstFail, firstFail + 3), ['cp', 'cp', 'cc'], seq.join(' '));
  const firstRecovery = seq.indexOf('pc', firstFail);
  t.deepEqual(seq.slice(firstRecovery, firstRecovery + 2), ['pc', 'pp'], seq.join(' '));
});

test('failures_before_warning turns a failing check warning before critical', async (t) => {
  let code = 200;
  const app = await server(t, (_req, res) => {
    res.statusCode = code;
    res.end();
  });
  const r = await runner(t);
  r.add({ id: 'w', kind: 'tcp', target: `${HOST}:${app.port}`, intervalMs: 30 });
  r.add({ id: 'h', kind: 'http', target: app.url, intervalMs: 30, failuresBeforeWarning: 1, failuresBeforeCritical: 3 });
  await until('passing', () => r.status('h') === 'passing');
  code = 500;
  await until('critical', () => r.status('h') === 'critical');
  r.remove('h');
  const statuses = r.results('h').map((x) => x.status);
  t.deepEqual(statuses.slice(statuses.indexOf('warning'), statuses.indexOf('warning') + 3), ['warning', 'warning', 'critical']);
  t.is(r.status('w'), 'passing');
});

test('probes bind to a configured source address', async (t) => {
  const app = await server(t, (_req, res) => res.end('ok'));
  const r = await runner(t, { sourceAddress: '127.0.0.2' });
  const result = await r.probe({ kind: 'http', url: app.url, timeoutMs: 2000, outputMaxSize: 4096 });
  t.is(result.status, 'passing');
  t.is(app.remotes[0], '127.0.0.2');
});

rootTest('with a uid, probes come from a worker process owned by that uid', async (t) => {
  const owners: string[] = [];
  const app = await server(t, async (req, res) => {
    // While the request is held, ask the kernel who owns the client's socket.
    const { stdout } = await exec('ss', ['-Htnpe', 'state', 'established', 'sport', '=', `:${req.socket.remotePort}`]);
    owners.push(stdout);
    res.end('ok');
  });
  const r = await runner(t, { uid: CHECKER_UID });
  const pid = r.workerPid!;
  t.truthy(pid);
  t.is(r.probeUid, CHECKER_UID);
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  t.regex(status, new RegExp(`^Uid:\\s+${CHECKER_UID}\\s+${CHECKER_UID}\\s+${CHECKER_UID}\\s+${CHECKER_UID}$`, 'm'));
  t.regex(status, new RegExp(`^Gid:\\s+${CHECKER_UID}\\s`, 'm'));

  const result = await r.probe({ kind: 'http', url: app.url, timeoutMs: 3000, outputMaxSize: 4096 });
  t.is(result.status, 'passing');
  t.regex(owners[0] ?? '', new RegExp(`uid:${CHECKER_UID}\\b`));
  t.regex(owners[0] ?? '', new RegExp(`pid=${pid}\\b`));

  // The loop uses the same worker.
  r.add({ id: 'as-nobody', kind: 'http', target: app.url, intervalMs: 20 });
  await until('loop result', () => r.results('as-nobody').length >= 2);
  t.true(owners.slice(1).every((o) => o.includes(`uid:${CHECKER_UID}`)));

  await r.stop();
  t.true(await until('worker gone', () => !processExists(pid), 3000));
});

function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A port nothing listens on (bound, then released). */
async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve) => srv.listen(0, HOST, resolve));
  const { port } = srv.address() as net.AddressInfo;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}
