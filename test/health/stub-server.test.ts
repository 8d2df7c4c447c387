import test from 'ava';
import type { ExecutionContext } from 'ava';
import net from 'node:net';
import http from 'node:http';
import http2 from 'node:http2';
import { StubServer } from '../../agent/health/stub-server.js';
import type { CheckKind, StubStatus } from '../../agent/health/stub-server.js';
import { until } from '../helpers/until.js';

const HOST = '127.0.0.1';

interface Harness {
  stub: StubServer;
  states: Map<string, StubStatus>;
  answers: Array<[string, CheckKind]>;
}

function harness(t: ExecutionContext): Harness {
  const states = new Map<string, StubStatus>();
  const answers: Array<[string, CheckKind]> = [];
  const stub = new StubServer({
    status: (id) => states.get(id) ?? 'other',
    onAnswered: (id, kind) => answers.push([id, kind]),
  });
  t.teardown(() => stub.stop());
  return { stub, states, answers };
}

/** One HTTP/1.1 GET on a fresh connection, the way Consul probes. */
function get(port: number, timeoutMs = 3000): Promise<{ status: number; body: string; connection: string | undefined }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: HOST, port, path: '/health', agent: false, headers: { 'user-agent': 'Consul Health Check', accept: 'text/plain, text/*, */*' } },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, connection: res.headers.connection }));
      },
    );
    req.setTimeout(timeoutMs, () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

/** Connect, then close without a byte: a Consul TCP check. Resolves with the error code, or 'connected'. */
function tcpConnect(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: HOST, port });
    socket.setTimeout(3000, () => {
      socket.destroy();
      resolve('timeout');
    });
    socket.once('connect', () => {
      socket.end();
      resolve('connected');
    });
    socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
  });
}

interface GrpcAnswer {
  httpStatus: number | undefined;
  grpcStatus: string | undefined;
  servingStatus: number | undefined;
}

/** grpc.health.v1.Health/Check over h2c with a raw node:http2 client. */
function grpcHealthCheck(port: number, service = '', path = '/grpc.health.v1.Health/Check'): Promise<GrpcAnswer> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://${HOST}:${port}`);
    const timer = setTimeout(() => {
      session.destroy();
      reject(new Error('grpc check timed out'));
    }, 3000);
    session.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    const name = Buffer.from(service, 'utf8');
    // HealthCheckRequest { string service = 1 } (short names only: one-byte length).
    const message = name.length > 0 ? Buffer.concat([Buffer.from([0x0a, name.length]), name]) : Buffer.alloc(0);
    const frame = Buffer.alloc(5 + message.length);
    frame.writeUInt32BE(message.length, 1);
    message.copy(frame, 5);
    const stream = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers' });
    const answer: GrpcAnswer = { httpStatus: undefined, grpcStatus: undefined, servingStatus: undefined };
    const chunks: Buffer[] = [];
    stream.on('response', (headers) => {
      answer.httpStatus = Number(headers[':status']);
      // Trailers-only responses carry grpc-status in the headers.
      if (headers['grpc-status'] !== undefined) answer.grpcStatus = String(headers['grpc-status']);
    });
    stream.on('trailers', (trailers) => (answer.grpcStatus = String(trailers['grpc-status'])));
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('error', reject);
    stream.on('close', () => {
      clearTimeout(timer);
      const body = Buffer.concat(chunks);
      // 5-byte prefix, then HealthCheckResponse { status = 1 }: 08 <status>.
      if (body.length >= 7 && body[5] === 0x08) answer.servingStatus = body[6];
      session.close();
      resolve(answer);
    });
    stream.end(frame);
  });
}

test('HTTP check of a sleeping instance gets 200 naming the instance', async (t) => {
  const { stub, states, answers } = harness(t);
  states.set('web', 'sleeping');
  const port = await stub.open('web');
  const r = await get(port);
  t.is(r.status, 200);
  t.is(r.body, 'doze: web is asleep; answering its health check\n');
  t.is(r.connection, 'close', 'every answer closes, so pooled checkers reconnect through the redirect');
  t.deepEqual(answers, [['web', 'http']]);
  t.is(stub.answeredCount('web'), 1);
});

test('each instance has its own port, and the status is read at request time', async (t) => {
  const { stub, states } = harness(t);
  states.set('a', 'sleeping');
  states.set('b', 'sleeping');
  const [pa, pb] = [await stub.open('a'), await stub.open('b')];
  t.not(pa, pb);
  t.is(await stub.open('a'), pa, 'open is idempotent');
  const [c1, c2] = await Promise.all([stub.open('c'), stub.open('c')]);
  t.is(c1, c2, 'concurrent opens share one listener');
  t.deepEqual(stub.instanceIds().sort(), ['a', 'b', 'c']);
  t.regex((await get(pb)).body, /doze: b is asleep/);
  states.set('a', 'other');
  const r = await get(pa);
  t.is(r.status, 503);
  t.is(r.body, 'doze: a is not managed by the stub\n');
});

test('a failed instance gets 503 naming the failure, never 200, and its listener closes', async (t) => {
  const states = new Map<string, StubStatus>([['web', 'sleeping']]);
  const stub = new StubServer({ status: (id) => states.get(id) ?? 'other', failureReason: () => 'resume error: EBUSY' });
  t.teardown(() => stub.stop());
  const port = await stub.open('web');
  states.set('web', 'failed'); // the detector says so before anyone calls markFailed
  const r = await get(port);
  t.is(r.status, 503);
  t.is(r.body, 'doze: web failed: resume error: EBUSY\n');
  t.is(stub.answeredCount('web'), 0);
  t.is(await tcpConnect(port), 'ECONNREFUSED', 'the connection that saw the failure closed the listener');
});

test('open refuses to listen for a failed instance', async (t) => {
  const { stub, states } = harness(t);
  states.set('web', 'failed');
  await t.throwsAsync(stub.open('web'), { code: 'E_STUB_FAILED' });
  t.is(stub.port('web'), undefined);
});

test('an unmanaged instance gets 503', async (t) => {
  const { stub, answers } = harness(t);
  const port = await stub.open('ghost');
  const r = await get(port);
  t.is(r.status, 503);
  t.regex(r.body, /not managed by the stub/);
  t.deepEqual(answers, []);
});

test('a TCP check is accepted while sleeping and counted as tcp', async (t) => {
  const { stub, states, answers } = harness(t);
  states.set('db', 'sleeping');
  const port = await stub.open('db');
  t.is(await tcpConnect(port), 'connected');
  t.is(await tcpConnect(port), 'connected');
  // The stub learns it was a bare TCP check when the client closes without sending.
  await until('both checks counted', () => answers.length >= 2, 1000);
  t.deepEqual(answers, [['db', 'tcp'], ['db', 'tcp']]);
});

test('a TCP check that connects and never closes (Nomad\'s checkTCP) is counted once, by its silence', async (t) => {
  const { stub, states, answers } = harness(t);
  states.set('db', 'sleeping');
  const port = await stub.open('db');
  const socket = net.connect({ host: HOST, port });
  t.teardown(() => socket.destroy());
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  for (let i = 0; i < 100 && answers.length < 1; i++) await new Promise((r) => setTimeout(r, 10));
  t.deepEqual(answers, [['db', 'tcp']], 'counted while the connection is still open');
  // An HTTP check on another connection is counted as http, not also as tcp.
  const r = await get(port);
  t.is(r.status, 200);
  t.deepEqual(answers, [['db', 'tcp'], ['db', 'http']]);
});

test('after markFailed new connections are refused: TCP, HTTP and gRPC checks all go critical', async (t) => {
  const { stub, states, answers } = harness(t);
  states.set('web', 'sleeping');
  const port = await stub.open('web');
  t.is((await get(port)).status, 200);
  stub.markFailed('web', 'resume failed: freezer.state stuck in FREEZING');
  t.is(stub.port('web'), undefined);
  t.is(await tcpConnect(port), 'ECONNREFUSED');
  await t.throwsAsync(get(port), { code: 'ECONNREFUSED' });
  await t.throwsAsync(grpcHealthCheck(port), { message: /ECONNREFUSED/ });
  t.deepEqual(answers, [['web', 'http']]);
});

test('a connection open when the instance failed gets 503 with the reason', async (t) => {
  const { stub, states } = harness(t);
  states.set('web', 'sleeping');
  const port = await stub.open('web');
  // Connect first, fail the instance, then send the request on the open connection.
  const socket = net.connect({ host: HOST, port });
  t.teardown(() => socket.destroy());
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  stub.markFailed('web', 'not serving within 2000 ms');
  let reply = '';
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => (reply += chunk));
  const ended = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.write('GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: Consul Health Check\r\n\r\n');
  await ended;
  t.regex(reply, /^HTTP\/1\.1 503 /);
  t.regex(reply, /doze: web failed: not serving within 2000 ms/);
});

test('gRPC Health/Check: SERVING while sleeping, NOT_SERVING when failed, UNAVAILABLE when unmanaged', async (t) => {
  const { stub, states, answers } = harness(t);
  states.set('api', 'sleeping');
  const port = await stub.open('api');
  const serving = await grpcHealthCheck(port, 'api.v1.Service');
  t.deepEqual(serving, { httpStatus: 200, grpcStatus: '0', servingStatus: 1 });
  t.deepEqual(answers, [['api', 'grpc']]);

  states.set('api', 'failed');
  const notServing = await grpcHealthCheck(port);
  t.deepEqual(notServing, { httpStatus: 200, grpcStatus: '0', servingStatus: 2 });

  await t.throwsAsync(grpcHealthCheck(port), { message: /ECONNREFUSED/ }, 'the failed answer closed the listener');

  states.set('api', 'other');
  const reopened = await stub.open('api');
  const unmanaged = await grpcHealthCheck(reopened);
  t.is(unmanaged.grpcStatus, '14');
  t.is(unmanaged.servingStatus, undefined);

  const unknown = await grpcHealthCheck(reopened, '', '/grpc.health.v1.Health/Watch');
  t.is(unknown.grpcStatus, '12');
  t.is(stub.answeredCount('api'), 1);
});

test('HTTP, TCP and gRPC answers are counted per instance and kind', async (t) => {
  const { stub, states, answers } = harness(t);
  states.set('a', 'sleeping');
  states.set('b', 'sleeping');
  const pa = await stub.open('a');
  const pb = await stub.open('b');
  await get(pa);
  await get(pa);
  await grpcHealthCheck(pb);
  await tcpConnect(pb);
  await until('all four checks counted', () => answers.length >= 4, 1000);
  t.is(stub.answeredCount('a'), 2);
  t.is(stub.answeredCount('b'), 2);
  t.deepEqual(answers.filter(([id]) => id === 'b').map(([, kind]) => kind).sort(), ['grpc', 'tcp']);
});

test('close removes the listener; open after markFailed starts a fresh one', async (t) => {
  const { stub, states } = harness(t);
  states.set('web', 'sleeping');
  const port = await stub.open('web');
  stub.markFailed('web');
  const again = await stub.open('web');
  t.is((await get(again)).status, 200);
  await stub.close('web');
  t.is(await tcpConnect(again), 'ECONNREFUSED');
  t.deepEqual(stub.instanceIds(), []);
  t.true(port > 0);
});

test('many sequential checks stay correct (each a new connection)', async (t) => {
  const { stub, states } = harness(t);
  states.set('web', 'sleeping');
  const port = await stub.open('web');
  for (let i = 0; i < 200; i++) {
    const r = await get(port);
    if (r.status !== 200) t.fail(`check ${i} got ${r.status}`);
  }
  t.is(stub.answeredCount('web'), 200);
});

/** A stub answering for a sleeping `web`, and a raw connection to it; `states` wakes it. */
async function connectedToSleeper(t: ExecutionContext): Promise<Harness & { port: number; socket: net.Socket }> {
  const h = harness(t);
  h.states.set('web', 'sleeping');
  const port = await h.stub.open('web');
  const socket = net.connect(port, HOST);
  t.teardown(() => socket.destroy());
  await new Promise((resolve) => socket.once('connect', resolve));
  return { ...h, port, socket };
}

test('a keep-alive client is answered on one connection while the instance sleeps, and cut when it wakes', async (t) => {
  const { stub, states, socket } = await connectedToSleeper(t);
  const answers: string[] = [];
  socket.setEncoding('utf8').on('data', (chunk: string) => answers.push(chunk));
  for (let i = 0; i < 3; i++) {
    socket.write('GET /health HTTP/1.1\r\nHost: x\r\n\r\n');
    await new Promise((resolve) => socket.once('data', resolve));
  }
  t.is(answers.length, 3);
  for (const a of answers) t.regex(a, /^HTTP\/1\.1 200 OK[\s\S]*connection: keep-alive/);
  t.is(stub.answeredCount('web'), 3);
  const closed = new Promise((resolve) => socket.once('close', resolve));
  states.set('web', 'other');
  stub.closeConnections('web');
  await closed;
  t.pass('the pooled connection was cut at wake');
});

test('a check under way when its instance wakes is answered 200 and closed, not reset', async (t) => {
  // A Consul check: a new connection, accepted by the stub while the instance sleeps...
  const { stub, states, port, socket } = await connectedToSleeper(t);
  await until('the stub to see the connection', () => stub.openConnections('web') > 0, 3000);
  t.is(stub.openConnections('web'), 1);
  // ...then the instance wakes before the request is read.
  states.set('web', 'other');
  stub.closeConnections('web');
  let answer = '';
  socket.setEncoding('utf8').on('data', (chunk: string) => (answer += chunk));
  const ended = new Promise<string>((resolve) => {
    socket.once('close', () => resolve('closed'));
    socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
  });
  socket.write('GET /health HTTP/1.1\r\nHost: x\r\nUser-Agent: Consul Health Check\r\n\r\n');
  t.is(await ended, 'closed');
  t.regex(answer, /^HTTP\/1\.1 200 OK[\s\S]*connection: close[\s\S]*doze: web has just woken/);
  // A connection idle between requests is still cut at once.
  states.set('web', 'sleeping');
  const pooled = net.connect(port, HOST);
  t.teardown(() => pooled.destroy());
  await new Promise((resolve) => pooled.once('connect', resolve));
  pooled.write('GET /health HTTP/1.1\r\nHost: x\r\n\r\n');
  await new Promise((resolve) => pooled.once('data', resolve));
  const cut = new Promise((resolve) => pooled.once('close', resolve));
  states.set('web', 'other');
  stub.closeConnections('web');
  await cut;
  t.pass();
});
