import test from 'ava';
import { createConnection, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { z } from 'zod';
import { DeadlineError, DozeError } from '../../agent/shared/errors.js';
import { JsonLinesChannel, type RequestErrors } from '../../agent/runtimes/qemu/json-lines-channel.js';
import { OwnerControlServer, type OwnerOperations } from '../../agent/runtimes/qemu/owner-control-server.js';
import { OwnerClient, type OwnerStatus } from '../../agent/runtimes/qemu/owner-protocol.js';
import type { Teardown } from '../helpers/teardown.js';
import { tempDir } from '../helpers/temp-dir.js';

const messageSchema = z.looseObject({ id: z.number().optional(), value: z.string() });
type Message = z.infer<typeof messageSchema>;

const errors: RequestErrors = {
  deadline: () => new DeadlineError('test request', 0),
  closed: (cause) => new DozeError('E_CLOSED', `closed${cause ? `: ${cause.message}` : ''}`, { cause }),
};

/** A channel to a server whose side of the connection the test drives by hand. */
async function connected(t: Teardown, options: { maxBufferedChars?: number } = {}): Promise<{ channel: JsonLinesChannel<Message>; peer: Socket }> {
  const path = join(await tempDir(t, 'jsonl'), 'peer.sock');
  const server = createServer();
  const peer = new Promise<Socket>((resolve) => server.once('connection', resolve));
  await new Promise<void>((resolve) => server.listen(path, resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const socket = createConnection(path);
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  const channel = new JsonLinesChannel(socket, { schema: messageSchema, answers: (m) => m.id, ...options });
  t.teardown(() => channel.close());
  const peerSocket = await peer;
  peerSocket.setEncoding('utf8');
  return { channel, peer: peerSocket };
}

/** The requests the peer has read so far, parsed. */
function requestsSeen(peer: Socket): Array<{ id: number; ask: string }> {
  const seen: Array<{ id: number; ask: string }> = [];
  let buffer = '';
  peer.on('data', (chunk: string) => {
    buffer += chunk;
    for (let nl = buffer.indexOf('\n'); nl >= 0; nl = buffer.indexOf('\n')) {
      seen.push(JSON.parse(buffer.slice(0, nl)) as { id: number; ask: string });
      buffer = buffer.slice(nl + 1);
    }
  });
  return seen;
}

const waitFor = async (check: () => boolean) => {
  while (!check()) await new Promise((resolve) => setTimeout(resolve, 2));
};

test('answers are matched to requests by id, in whatever order they come; lines may be split or joined', async (t) => {
  const { channel, peer } = await connected(t);
  const seen = requestsSeen(peer);
  const a = channel.request((id) => ({ id, ask: 'a' }), 1000, errors);
  const b = channel.request((id) => ({ id, ask: 'b' }), 1000, errors);
  await waitFor(() => seen.length === 2);
  const [ra, rb] = seen;
  t.not(ra!.id, rb!.id, 'each request has its own id');
  peer.write(`${JSON.stringify({ id: rb!.id, value: 'for b' })}\r\n{"id": ${ra!.id}, "val`);
  peer.write('ue": "for a"}\n');
  t.like(await a, { value: 'for a' });
  t.like(await b, { value: 'for b' });
});

test('a request without an answer fails at its deadline; its late answer is dropped and the channel stays usable', async (t) => {
  const { channel, peer } = await connected(t);
  const seen = requestsSeen(peer);
  const unsolicited: Message[] = [];
  channel.on('message', (m) => unsolicited.push(m));
  await t.throwsAsync(channel.request((id) => ({ id, ask: 'slow' }), 50, errors), { instanceOf: DeadlineError });
  peer.write(`${JSON.stringify({ id: seen[0]!.id, value: 'late' })}\n`);
  const next = channel.request((id) => ({ id, ask: 'next' }), 1000, errors);
  await waitFor(() => seen.length === 2);
  peer.write(`${JSON.stringify({ id: seen[1]!.id, value: 'on time' })}\n`);
  t.like(await next, { value: 'on time' });
  t.deepEqual(unsolicited, [], 'the late answer is neither an answer nor a message of its own');
});

test('messages that answer nothing, lines that are not JSON and messages the schema refuses are told apart', async (t) => {
  const { channel, peer } = await connected(t);
  const messages: Message[] = [];
  const invalid: Array<{ line: string; raw: unknown }> = [];
  channel.on('message', (m) => messages.push(m));
  channel.on('invalid', (line, _error, raw) => invalid.push({ line, raw }));
  peer.write('{"value": "event"}\n\nnot json\n{"value": 3}\n');
  await waitFor(() => messages.length + invalid.length === 3);
  t.deepEqual(messages, [{ value: 'event' }]);
  t.deepEqual(invalid, [{ line: 'not json', raw: undefined }, { line: '{"value": 3}', raw: { value: 3 } }]);
});

test('a closing connection fails every request still waiting, with its cause; later requests fail at once', async (t) => {
  const { channel, peer } = await connected(t);
  const seen = requestsSeen(peer);
  const closed = new Promise<Error | undefined>((resolve) => channel.once('close', resolve));
  const waiting = [1, 2].map((n) => channel.request((id) => ({ id, ask: String(n) }), 5000, errors));
  await waitFor(() => seen.length === 2);
  peer.destroy();
  for (const request of waiting) t.is((await t.throwsAsync(request, { instanceOf: DozeError })).code, 'E_CLOSED');
  await closed;
  t.false(channel.isOpen);
  t.is((await t.throwsAsync(channel.request((id) => ({ id }), 1000, errors))).message, 'closed');
});

test('a peer that sends more than the limit without a newline is cut off', async (t) => {
  const { channel, peer } = await connected(t, { maxBufferedChars: 100 });
  const closed = new Promise<void>((resolve) => channel.once('close', () => resolve()));
  peer.write('x'.repeat(101));
  await closed;
  t.false(channel.isOpen);
});


test('the owner control server answers requests, names a malformed one, and refuses work while stopping', async (t) => {
  const path = join(await tempDir(t, 'ctl'), 'control.sock');
  let stopping = false;
  const status = (state: OwnerStatus['state']): OwnerStatus => ({ state, qemuPid: null });
  const owner: OwnerOperations = {
    state: 'running',
    get isStopping() {
      return stopping;
    },
    status: () => status('running'),
    sleep: async () => status('sleeping'),
    wake: async () => {
      throw new DozeError('E_WAKE', 'no snapshot');
    },
  };
  const server = await OwnerControlServer.listen(path, owner);
  t.teardown(() => server.close());
  const client = await OwnerClient.connect(path, 1000);
  t.teardown(() => client.close());
  t.like(await client.request('status', 1000), { state: 'running', ok: true });
  t.like(await client.request('sleep', 1000), { state: 'sleeping' });
  const failed = await t.throwsAsync(client.request('wake', 1000));
  t.is((failed as DozeError).code, 'E_WAKE');
  t.regex(failed.message, /doze vm wake: no snapshot/);
  stopping = true;
  t.is(((await t.throwsAsync(client.request('sleep', 1000))) as DozeError).code, 'E_OWNER_STOPPING');

  const raw = createConnection(path);
  t.teardown(() => raw.destroy());
  const answers = requestsSeen(raw.setEncoding('utf8')) as unknown as Array<Record<string, unknown>>;
  raw.write('hello\n{"id": 7, "op": "reboot"}\n');
  await waitFor(() => answers.length === 2);
  t.like(answers[0], { id: null, ok: false, code: 'E_PROTOCOL', error: 'not JSON' });
  t.like(answers[1], { id: 7, ok: false, code: 'E_PROTOCOL' });
});
