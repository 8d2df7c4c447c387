import type { ExecutionContext } from 'ava';
import http from 'node:http';
import net from 'node:net';
import type { Agent } from '../../agent/agent.js';
import type { IdlePolicy } from '../../agent/config/schema.js';
import { get } from '../helpers/http.js';
import { nextState, startAgent } from '../helpers/agent.js';
import { createInstance, type TestInstance } from '../helpers/instance.js';
import { APP_PORT } from '../helpers/app.js';
import { rootTest } from '../helpers/root.js';
import { until } from '../helpers/until.js';

const IDLE_MS = 300;
const SHORT_CONNECTIONS = 200;
const RESETS = 10;
const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Client ports of the instance's entries in doze_conns, read through the agent's own source. */
async function trackedPorts(agent: Agent, inst: TestInstance): Promise<number[]> {
  return (await agent.source.connections()).filter((c) => c.instanceAddr === inst.ns.instanceIp).map((c) => c.clientPort).sort();
}

/** Waits (the last ACKs of the closes may still be on the wire) until one entry of the instance is left; returns its client port. */
async function onlyOneTracked(agent: Agent, inst: TestInstance): Promise<number> {
  const ports = await until('one entry of the instance left in doze_conns', async () => {
    const ports = await trackedPorts(agent, inst);
    return ports.length === 1 && ports;
  }, { timeoutMs: 2000, detail: async () => `tracked client ports: ${(await trackedPorts(agent, inst)).join(', ')}` });
  return ports[0]!;
}

/** A connection to `port` that the client resets (linger 0) once `sent` is written, or at once when it is empty. */
function resetConnection(inst: TestInstance, port: number, sent: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: inst.ns.instanceIp, port }, () => {
      socket.write(sent, () => setTimeout(() => socket.resetAndDestroy(), sent ? 50 : 0));
    });
    socket.on('close', () => resolve());
    socket.on('error', (error: NodeJS.ErrnoException) => (error.code === 'ECONNRESET' ? resolve() : reject(error)));
  });
}

/** The soak's churn in small: short connections that each close normally (FIN from both sides), and resets either way. */
async function churn(inst: TestInstance): Promise<void> {
  for (let batch = 0; batch < SHORT_CONNECTIONS / 10; batch++) {
    const answers = await Promise.all(Array.from({ length: 10 }, () => get(`${inst.app.url}/`, 3000)));
    if (answers.some((a) => a.status !== 200)) throw new Error('a short connection was not answered');
  }
  for (let i = 0; i < RESETS; i++) {
    await resetConnection(inst, APP_PORT, ''); // reset by the client when idle
    await resetConnection(inst, APP_PORT, 'GET /slow?ms=2000 HTTP/1.1\r\nHost: x\r\n\r\n'); // with a request in flight
  }
  // Reset by the instance: its kernel refuses a port nothing listens on, after the client's SYN made an entry.
  await new Promise<void>((resolve, reject) => {
    const socket = net.connect({ host: inst.ns.instanceIp, port: 9 });
    socket.on('error', (error: NodeJS.ErrnoException) => (error.code === 'ECONNREFUSED' ? resolve() : reject(error)));
  });
}

/** A keep-alive pool holding one connection to the instance, answered once; returns the pool and that connection's client port. */
async function pooledConnection(inst: TestInstance): Promise<{ pool: http.Agent; port: number }> {
  const pool = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const first = await get(`${inst.app.url}/`, 3000, pool);
  if (first.status !== 200) throw new Error(`the pooled request got ${first.status}`);
  const sockets = Object.values(pool.freeSockets).flat();
  const port = sockets[0]?.localPort;
  if (sockets.length !== 1 || port === undefined) throw new Error(`${sockets.length} pooled sockets, expected 1`);
  return { pool, port };
}

/**
 * An agent with one instance (idle policy `policy`), a keep-alive pool's one connection to it, then the
 * churn: once the closes are done, that pooled connection must be the instance's one entry left.
 */
async function churnedBesidePooled(t: ExecutionContext, policy: IdlePolicy): Promise<{ agent: Agent; inst: TestInstance; pool: http.Agent }> {
  const inst = await createInstance(t);
  const agent = await startAgent(t, { instances: [inst.config({ idleTimeout: `${IDLE_MS}ms`, idlePolicy: policy })] });
  const { pool, port } = await pooledConnection(inst);
  t.teardown(() => pool.destroy());
  await churn(inst);
  t.is(await onlyOneTracked(agent, inst), port, 'the one entry left is the idle keep-alive connection');
  return { agent, inst, pool };
}

rootTest.serial(`connections: ${SHORT_CONNECTIONS} closed and ${2 * RESETS + 1} reset connections leave no entry; an idle keep-alive one stays tracked and keeps the instance awake`, async (t) => {
  const { agent, inst, pool } = await churnedBesidePooled(t, 'connections');

  await delay(4 * IDLE_MS);
  t.is(agent.detector.get('web')!.state, 'running', 'the open keep-alive connection holds it');
  t.is(agent.detector.get('web')!.sleeps, 0);
  // Closing it (FIN from both sides) removes its entry, and with it the hold.
  const sleeping = nextState(agent, 'web', 'sleeping', 3 * IDLE_MS + 1000);
  pool.destroy();
  await sleeping;
  t.deepEqual(await trackedPorts(agent, inst), []);
});

rootTest.serial('requests: after the churn, a request in flight on a keep-alive connection still holds the instance awake', async (t) => {
  const { agent, inst, pool } = await churnedBesidePooled(t, 'requests');
  // It may fall asleep before the request (nothing holds it): then the request wakes it, and no sleep follows under it.
  const sleepsBefore = agent.detector.get('web')!.sleeps;
  const answer = await get(`${inst.app.url}/slow?ms=${5 * IDLE_MS}`, 5000, pool);
  t.is(answer.status, 200);
  t.regex(answer.body, /slow answer after/);
  t.is(agent.detector.get('web')!.sleeps, sleepsBefore, 'no sleep under the request');
  await nextState(agent, 'web', 'sleeping', 3 * IDLE_MS + 1000);
});
