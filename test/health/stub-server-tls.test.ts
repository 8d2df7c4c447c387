import test from 'ava';
import type { ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http2 from 'node:http2';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { StubServer } from '../../agent/health/stub-server.js';
import type { CheckKind, StubStatus } from '../../agent/health/stub-server.js';
import type { KeyPair } from '../../agent/health/self-signed.js';
import { AgentApiDouble } from '../doubles/consul/agent-api.js';
import { CheckRunner } from '../doubles/consul/check-runner.js';

// TLS checks (Nomad: protocol = "https", tls_skip_verify, grpc_use_tls; Consul: H2PING, TCP+TLS) answered by the stub.

const HOST = '127.0.0.1';

/** An operator's certificate for 127.0.0.1 (its own CA, for the test). */
function operatorPair(): KeyPair {
  const dir = mkdtempSync(join(tmpdir(), 'dz-tls-'));
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=web.service.consul', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:web.service.consul', '-keyout', join(dir, 'k.pem'), '-out', join(dir, 'c.pem')], { stdio: 'ignore' });
    return { key: readFileSync(join(dir, 'k.pem')), cert: readFileSync(join(dir, 'c.pem')) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function harness(t: ExecutionContext, pairs: Map<string, KeyPair> = new Map()) {
  const states = new Map<string, StubStatus>();
  const answers: Array<[string, CheckKind]> = [];
  const stub = new StubServer({ status: (id) => states.get(id) ?? 'other', onAnswered: (id, kind) => answers.push([id, kind]), tls: (id) => pairs.get(id) });
  t.teardown(() => stub.stop());
  return { stub, states, answers };
}

function httpsGet(port: number, options: https.RequestOptions = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: HOST, port, path: '/health', agent: false, rejectUnauthorized: false, ...options }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.setTimeout(5000, () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

async function until(what: string, probe: () => boolean): Promise<void> {
  for (let i = 0; i < 300 && !probe(); i++) await new Promise((r) => setTimeout(r, 10));
  if (!probe()) throw new Error(`timed out waiting for ${what}`);
}

test('an HTTPS check that skips verification is answered 200 with the stub\'s own certificate', async (t) => {
  const { stub, states, answers } = harness(t);
  states.set('web', 'sleeping');
  const port = await stub.open('web');
  const r = await httpsGet(port);
  t.is(r.status, 200);
  t.regex(r.body, /web is asleep/);
  t.deepEqual(answers, [['web', 'http']]);
});

test('an HTTPS check that verifies is answered with the operator\'s certificate; the stub\'s own is refused by it', async (t) => {
  const pair = operatorPair();
  const { stub, states } = harness(t, new Map([['web', pair]]));
  states.set('web', 'sleeping');
  const port = await stub.open('web');
  t.is((await httpsGet(port, { rejectUnauthorized: true, ca: pair.cert })).status, 200, 'verified against the operator\'s CA');
  t.is((await httpsGet(port, { rejectUnauthorized: true, ca: pair.cert, servername: 'web.service.consul' })).status, 200, 'tls_server_name');
  const other = harness(t);
  other.states.set('api', 'sleeping');
  const plain = await other.stub.open('api');
  await t.throwsAsync(httpsGet(plain, { rejectUnauthorized: true, ca: pair.cert }), { message: /self[- ]signed|unable to verify|certificate/i });
});

test('a failed instance answers an HTTPS check 503, not 200', async (t) => {
  const { stub, states, answers } = harness(t);
  states.set('web', 'sleeping');
  const port = await stub.open('web');
  states.set('web', 'failed');
  const r = await httpsGet(port);
  t.is(r.status, 503);
  t.deepEqual(answers, []);
});

test('gRPC with grpc_use_tls gets SERVING over TLS (ALPN h2)', async (t) => {
  const { stub, states, answers } = harness(t);
  states.set('rpc', 'sleeping');
  const port = await stub.open('rpc');
  const session = http2.connect(`https://${HOST}:${port}`, { rejectUnauthorized: false });
  t.teardown(() => session.destroy());
  const stream = session.request({ ':method': 'POST', ':path': '/grpc.health.v1.Health/Check', 'content-type': 'application/grpc', te: 'trailers' });
  const chunks: Buffer[] = [];
  let grpcStatus: string | undefined;
  stream.on('data', (c: Buffer) => chunks.push(c));
  stream.on('trailers', (trailers) => (grpcStatus = String(trailers['grpc-status'])));
  stream.end(Buffer.from([0, 0, 0, 0, 0]));
  await new Promise<void>((resolve, reject) => stream.once('close', resolve).once('error', reject));
  t.is(grpcStatus, '0');
  t.deepEqual([...Buffer.concat(chunks)], [0, 0, 0, 0, 2, 0x08, 1], 'HealthCheckResponse{status: SERVING}');
  t.deepEqual(answers, [['rpc', 'grpc']]);
});

test('H2PING checks are acknowledged over TLS and over h2c, and counted while asleep', async (t) => {
  const { stub, states, answers } = harness(t);
  states.set('h2', 'sleeping');
  const port = await stub.open('h2');
  for (const url of [`https://${HOST}:${port}`, `http://${HOST}:${port}`]) {
    const session = http2.connect(url, { rejectUnauthorized: false });
    t.teardown(() => session.destroy());
    await new Promise<void>((resolve, reject) => session.once('connect', () => resolve()).once('error', reject));
    const acked = await new Promise<boolean>((resolve) => session.ping((error) => resolve(!error)));
    t.true(acked, url);
    session.close();
  }
  await until('two pings counted', () => answers.filter(([, k]) => k === 'h2ping').length === 2);
  t.pass();
});

test('a TCP check with TLS (handshake, then close) is counted once as tcp', async (t) => {
  const { stub, states, answers } = harness(t);
  states.set('db', 'sleeping');
  const port = await stub.open('db');
  const socket = tls.connect({ host: HOST, port, rejectUnauthorized: false });
  await new Promise<void>((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject));
  socket.end();
  await until('the count', () => answers.length === 1);
  t.deepEqual(answers, [['db', 'tcp']]);
});

test('through the Consul double\'s check runner: skip-verify HTTPS and gRPC-with-TLS pass on the stub\'s own certificate; a verifying check passes only with the operator\'s', async (t) => {
  const pair = operatorPair();
  const withCert = harness(t, new Map([['web', pair]]));
  const without = harness(t);
  withCert.states.set('web', 'sleeping');
  without.states.set('api', 'sleeping');
  const certPort = await withCert.stub.open('web');
  const plainPort = await without.stub.open('api');
  const runner = await CheckRunner.create({ stagger: false, caPem: pair.cert.toString() });
  t.teardown(() => runner.stop());
  const consul = await AgentApiDouble.start({ runner });
  t.teardown(() => consul.close());
  const checks = [
    { CheckID: 'skip', HTTP: `https://127.0.0.1:${plainPort}/health`, TLSSkipVerify: true },
    { CheckID: 'grpc', GRPC: `127.0.0.1:${plainPort}`, GRPCUseTLS: true, TLSSkipVerify: true },
    { CheckID: 'verified', HTTP: `https://127.0.0.1:${certPort}/health` },
    { CheckID: 'named', HTTP: `https://127.0.0.1:${certPort}/health`, TLSServerName: 'web.service.consul' },
    { CheckID: 'untrusted', HTTP: `https://127.0.0.1:${plainPort}/health` },
  ].map((c) => ({ Interval: '200ms', Timeout: '2s', ...c }));
  const r = await fetch(`${consul.url}/v1/agent/service/register`, { method: 'PUT', body: JSON.stringify({ ID: 'svc', Name: 'svc', Checks: checks }) });
  t.is(r.status, 200, await r.text());
  await until('every check run twice', () => ['skip', 'grpc', 'verified', 'named', 'untrusted'].every((id) => runner.results(id).length >= 2));
  for (const id of ['skip', 'grpc', 'verified', 'named']) t.like(consul.check(id), { Status: 'passing' }, id);
  t.like(consul.check('untrusted'), { Status: 'critical' }, 'the stub\'s own certificate fails a verifying check: why the agent keeps such an instance awake');
});
