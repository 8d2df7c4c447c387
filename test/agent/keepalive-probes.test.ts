import type { ExecutionContext } from 'ava';
import http from 'node:http';
import type { Socket } from 'node:net';
import type { Agent } from '../../agent/agent.js';
import type { InstanceState } from '../../agent/detector/states.js';
import { type Connection } from '../../agent/sources/bpf-records.js';
import { monotonicNs } from '../../agent/shared/clock.js';
import { get } from '../helpers/http.js';
import { nextState, startAgent } from '../helpers/agent.js';
import { createInstance, type TestInstance } from '../helpers/instance.js';
import type { TestNetns } from '../helpers/netns.js';
import { wakeWithPooledRequest } from '../helpers/pooled-request.js';
import { rootTest } from '../helpers/root.js';
import { sh } from '../helpers/sh.js';
import type { Teardown } from '../helpers/teardown.js';

const PROBE_MS = 1000;
const IDLE_MS = 1500;
const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** TCP segments the instance's kernel has received and sent (its netns's Tcp InSegs, OutSegs): only this test talks to it. */
async function instanceSegments(ns: TestNetns): Promise<{ into: number; out: number }> {
  const snmp = await sh('ip', ['netns', 'exec', ns.name, 'cat', '/proc/net/snmp']);
  const [names, values] = snmp.split('\n').filter((line) => line.startsWith('Tcp:')).map((line) => line.trim().split(/\s+/));
  const counter = (name: string) => {
    const value = Number(values?.[names?.indexOf(name) ?? -1]);
    if (!Number.isInteger(value)) throw new Error(`no Tcp ${name} in the netns's /proc/net/snmp:\n${snmp}`);
    return value;
  };
  return { into: counter('InSegs'), out: counter('OutSegs') };
}

/** Every state instance `id` enters from now on, until the test ends. */
function recordTransitions(t: Teardown, agent: Agent, id: string): InstanceState[] {
  const seen: InstanceState[] = [];
  const listener = (e: { instance: { id: string }; to: InstanceState }) => {
    if (e.instance.id === id) seen.push(e.to);
  };
  agent.detector.on('transition', listener);
  t.teardown(() => agent.detector.off('transition', listener));
  return seen;
}

async function countersOf(agent: Agent, inst: TestInstance) {
  const counters = await agent.source.counter(inst.ns.instanceIp);
  if (!counters) throw new Error(`no doze_counters entry for ${inst.ns.instanceIp}`);
  return counters;
}

async function connectionFrom(agent: Agent, inst: TestInstance, clientPort: number): Promise<Connection> {
  const found = (await agent.source.connections()).find((c) => c.instanceAddr === inst.ns.instanceIp && c.clientPort === clientPort);
  if (!found) throw new Error(`no doze_conns entry for client port ${clientPort}`);
  return found;
}

function theOnePooledSocket(pool: http.Agent): Socket {
  const sockets = Object.values(pool.freeSockets).flat();
  if (sockets.length !== 1 || !sockets[0]) throw new Error(`${sockets.length} pooled sockets, expected 1`);
  return sockets[0];
}

/**
 * What either side's probes must leave alone: after one answer on `pool`'s one connection the instance
 * (a) sleeps on its idle timeout, not even the first probe 1 s later resetting the clock, (b) stays asleep
 * across three probe periods while the probes and their answers flow (one kernel sends, the other answers,
 * the frozen app's included), and (c) wakes on a request on that same connection and answers it.
 */
async function sleepsThroughProbes(t: ExecutionContext, inst: TestInstance, pool: http.Agent): Promise<void> {
  const agent = await startAgent(t, { instances: [inst.config({ idleTimeout: `${IDLE_MS}ms`, idlePolicy: 'requests' })] });
  t.teardown(() => pool.destroy());
  t.is((await get(`${inst.app.url}/`, 3000, pool)).status, 200);
  const sleeping = nextState(agent, 'web', 'sleeping', IDLE_MS + 3 * PROBE_MS);
  const socket = theOnePooledSocket(pool);
  const atAnswer = await instanceSegments(inst.ns);

  // (a)
  const tookMs = await sleeping;
  t.true(tookMs < IDLE_MS + PROBE_MS, `slept ${tookMs.toFixed(0)} ms after the answer (idle timeout ${IDLE_MS} ms)`);
  const atSleep = await instanceSegments(inst.ns);
  t.log(`slept ${tookMs.toFixed(0)} ms after the answer; meanwhile the instance got ${atSleep.into - atAnswer.into} segment(s) and sent ${atSleep.out - atAnswer.out}`);

  // (b)
  const before = { segments: await instanceSegments(inst.ns), counters: await countersOf(agent, inst), atNs: monotonicNs() };
  const moves = recordTransitions(t, agent, 'web');
  const windowMs = 3 * PROBE_MS + 500;
  await delay(windowMs); // a fixed window: nothing may happen in it
  const after = { segments: await instanceSegments(inst.ns), counters: await countersOf(agent, inst) };
  const got = after.segments.into - before.segments.into;
  const sent = after.segments.out - before.segments.out;
  t.log(`the sleeping instance got ${got} segment(s) and sent ${sent} in ${windowMs} ms`);
  t.true(got >= 3, `${got} segment(s) reached the instance in ${windowMs} ms, expected a probe or a probe's answer a second`);
  t.true(sent >= 3, `the instance sent ${sent} segment(s) in ${windowMs} ms, expected a probe or a probe's answer a second`);
  t.deepEqual(moves, [], 'no transition while the probes came');
  t.is(agent.detector.get('web')!.wakes, 0);
  t.is(await inst.cgroup.freezerState(), 'FROZEN');
  t.is(after.counters.packets, before.counters.packets, 'no probe counted as traffic');
  t.is(after.counters.lastSeenNs, before.counters.lastSeenNs, 'no probe stamped last_seen_ns');
  const conn = await connectionFrom(agent, inst, socket.localPort!);
  t.true(conn.lastNs > before.atNs, 'the probes kept the connection record alive');
  t.true(conn.clientPayloadNs < before.atNs, 'no probe taken for a request');
  t.true(conn.serverPayloadNs < before.atNs, 'no probe taken for an answer');

  // (c)
  const { answer: second, reused } = await wakeWithPooledRequest(agent, 'web', `${inst.app.url}/`, pool);
  t.is(second.status, 200);
  t.true(reused);
  t.is(theOnePooledSocket(pool), socket, 'the probing connection carried the request');
  t.is(agent.detector.get('web')!.wakes, 1);
}

rootTest.serial('requests: TCP keepalive probes every second neither keep the instance awake nor wake it; a request on that connection does', async (t) => {
  // node's keep-alive agent turns on SO_KEEPALIVE with TCP_KEEPIDLE = keepAliveMsecs on a pooled socket
  // (libuv leaves TCP_KEEPINTVL alone): while each probe is answered, the kernel sends one every second.
  await sleepsThroughProbes(t, await createInstance(t), new http.Agent({ keepAlive: true, keepAliveMsecs: PROBE_MS, maxSockets: 1 }));
});

/**
 * A keep-alive pool whose sockets have TCP keepalive off: http.Agent turns it on each time a socket goes
 * back to the pool, in its own 'free' listener, which runs before this one.
 */
function poolWithoutProbes(): http.Agent {
  const pool = new http.Agent({ keepAlive: true, maxSockets: 1 });
  pool.on('free', (socket: Socket) => socket.setKeepAlive(false));
  return pool;
}

rootTest.serial('requests: the client\'s ACKs to the instance\'s own keepalive probes neither keep it awake nor wake it; a request on that connection does', async (t) => {
  // The app's kernel probes each idle accepted connection (as a Go server's does every 15 s), also while
  // frozen; the client's kernel answers every probe with a bare ACK. The client itself never probes.
  const inst = await createInstance(t, 'web', { env: { DOZE_APP_KEEPALIVE_MS: String(PROBE_MS) } });
  await sleepsThroughProbes(t, inst, poolWithoutProbes());
});

rootTest.serial('requests: a response streamed over five idle timeouts keeps the instance awake on the client\'s ACKs alone', async (t) => {
  const inst = await createInstance(t);
  const agent = await startAgent(t, { instances: [inst.config({ idleTimeout: '400ms', idlePolicy: 'requests' })] });
  const moves = recordTransitions(t, agent, 'web');
  const packetsBefore = (await countersOf(agent, inst)).packets;
  const count = 20;
  // Kept open after the response, so its doze_conns entry is still there to read (a closed one is deleted).
  const pool = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => pool.destroy());
  // After its request the client only ACKs the pushes (100 ms apart): no request is in flight, so only
  // those ACKs, ordinary ones with the next sequence number, tell the agent the instance is in use.
  const { pushes, clientPort } = await new Promise<{ pushes: number; clientPort: number }>((resolve, reject) => {
    const req = http.get(`${inst.app.url}/stream?every=100&count=${count}`, { agent: pool, timeout: 5000 }, (res) => {
      let pushes = 0;
      res.setEncoding('utf8').on('data', (chunk: string) => (pushes += chunk.split('\n\n').length - 1));
      res.on('end', () => resolve({ pushes, clientPort: req.socket!.localPort! }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('stream timed out')));
  });
  t.is(pushes, count);
  t.deepEqual(moves, [], 'never paused mid-download');
  t.is(agent.detector.get('web')!.sleeps, 0);
  const conn = await connectionFrom(agent, inst, clientPort);
  t.true(conn.clientPayloadNs < conn.serverPayloadNs, 'the client sent nothing after its request');
  const counted = (await countersOf(agent, inst)).packets - packetsBefore;
  t.true(counted >= BigInt(count), `${counted} inbound packets counted for ${count} pushes`);
  await nextState(agent, 'web', 'sleeping', 2000);
});
