import type { ExecutionContext } from 'ava';
import http from 'node:http';
import type { Agent } from '../../agent/agent.js';
import type { InstanceState } from '../../agent/detector/states.js';
import { ConnFlag } from '../../agent/sources/bpf-records.js';
import { nextState, startAgent } from '../helpers/agent.js';
import { createInstance, type TestInstance } from '../helpers/instance.js';
import { rootTest } from '../helpers/root.js';
import { sh } from '../helpers/sh.js';

const MiB = 1 << 20;
// Far more than the two kernels buffer for a reader that stopped (about 1.5 MiB here: a receive buffer
// grows only while its reader reads), so the writer is still blocked when the reader's window closes.
const BODY_MIB = 16;
const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** What happened to instance `id` from now on: the states it entered, and its freezer.state sampled every 50 ms. */
function watch(t: ExecutionContext, agent: Agent, inst: TestInstance, id = 'web'): { moves: InstanceState[]; freezer: Set<string> } {
  const moves: InstanceState[] = [];
  const freezer = new Set<string>();
  const listener = (e: { instance: { id: string }; to: InstanceState }) => void (e.instance.id === id && moves.push(e.to));
  agent.detector.on('transition', listener);
  const sampler = setInterval(() => void inst.cgroup.freezerState().then((state) => freezer.add(state)), 50);
  t.teardown(() => {
    clearInterval(sampler);
    agent.detector.off('transition', listener);
  });
  return { moves, freezer };
}

/** The instance's TCP sockets as its kernel sees them (`ss -tni` in its namespace): logged as the evidence. */
function instanceSockets(inst: TestInstance): Promise<string> {
  return sh('ip', ['netns', 'exec', inst.ns.name, 'ss', '-tni', 'state', 'established']);
}

interface StalledDownload {
  clientPort: number;
  status: number;
  /** Reads the rest of the body; resolves with how many bytes the body had. */
  resume(): Promise<number>;
}

/** A GET on `pool` whose reader stops right after the headers (its socket stops being read, so its window closes). */
function stalledDownload(url: string, pool: http.Agent): Promise<StalledDownload> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: pool }, (res) => {
      res.pause(); // before the 'data' listener, which then does not resume it
      let bytes = 0;
      const body = new Promise<number>((resolveBody, rejectBody) => {
        res.on('data', (chunk: Buffer) => (bytes += chunk.length));
        res.on('end', () => resolveBody(bytes));
        res.on('error', rejectBody);
      });
      body.catch(() => undefined); // read by resume(); a test that failed before it tears the socket down unread
      resolve({ clientPort: req.socket!.localPort!, status: res.statusCode ?? 0, resume: () => (res.resume(), body) });
    });
    req.on('error', reject);
  });
}

rootTest.serial('requests: a response waiting on a client that stopped reading keeps the instance awake through four idle timeouts; then the whole body arrives and it sleeps', async (t) => {
  const idleMs = 500;
  const stallMs = 4 * idleMs;
  const inst = await createInstance(t);
  const agent = await startAgent(t, { instances: [inst.config({ idleTimeout: `${idleMs}ms`, idlePolicy: 'requests' })] });
  // Kept open after the response, so the connection's doze_conns entry is still there once the body is read.
  const pool = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => pool.destroy());
  const { moves, freezer } = watch(t, agent, inst);

  const download = await stalledDownload(`${inst.app.url}/big?mb=${BODY_MIB}`, pool);
  t.is(download.status, 200);
  await delay(stallMs);
  // The instance's kernel sees the client's window closed (snd_wnd:0) and probes it; the app is blocked in write().
  t.log(`after a ${stallMs} ms stall the instance's sockets:\n${await instanceSockets(inst)}`);
  t.deepEqual(moves, [], 'never paused while the response waited on the client');
  t.deepEqual([...freezer], ['THAWED'], 'freezer.state throughout the stall');
  const conn = (await agent.source.connections()).find((c) => c.instanceAddr === inst.ns.instanceIp && c.clientPort === download.clientPort);
  t.truthy(conn, 'the download\'s connection is tracked');
  t.truthy(conn && conn.flags & ConnFlag.clientWindowClosed, 'doze_conns says the client\'s window is closed');
  t.true(conn !== undefined && conn.serverPayloadNs > conn.clientPayloadNs, 'by payloads alone the request looks answered');

  const bytes = await download.resume();
  t.is(bytes, BODY_MIB * MiB, 'the whole body arrived');
  t.deepEqual(moves, [], 'never paused while the client read the rest');
  const tookMs = await nextState(agent, 'web', 'sleeping', idleMs + 3000);
  t.log(`slept ${tookMs.toFixed(0)} ms after the last byte (idle timeout ${idleMs} ms)`);
});

/** POSTs `body` to `url` and resolves with the answer's text. */
function upload(url: string, body: Buffer, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', agent: false, timeout: timeoutMs, headers: { 'content-length': String(body.length) } }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
      res.on('end', () => resolve(text));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`POST ${url} timed out after ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(body);
  });
}

rootTest.serial('traffic: an upload stalled on the instance\'s closed window keeps it awake on the client\'s zero-window probes, and arrives whole', async (t) => {
  // The app stops reading for `pauseMs`; its window closes and the client's kernel probes it with a
  // backoff from the 200 ms minimum RTO (after 0.2, 0.6, 1.4, 3.0 s): no gap before the app reads again
  // is as long as the idle timeout, while nothing else but those probes reaches the instance.
  const idleMs = 1200;
  const pauseMs = 2000;
  const inst = await createInstance(t);
  const agent = await startAgent(t, { instances: [inst.config({ idleTimeout: `${idleMs}ms`, idlePolicy: 'traffic' })] });
  const { moves, freezer } = watch(t, agent, inst);
  const body = Buffer.alloc(BODY_MIB * MiB, 'u');
  const started = performance.now();
  const answer = await upload(`${inst.app.url}/upload?pause=${pauseMs}`, body, pauseMs + 8000);
  t.log(`the upload took ${(performance.now() - started).toFixed(0)} ms`);
  t.is(answer, `received ${body.length} bytes\n`);
  t.deepEqual(moves, [], 'never paused while the upload waited on the instance');
  t.deepEqual([...freezer], ['THAWED'], 'freezer.state throughout the upload');
  await nextState(agent, 'web', 'sleeping', idleMs + 3000);
});
