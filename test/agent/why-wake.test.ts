import { randomInt } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import { inState, nextState, startAgent } from '../helpers/agent.js';
import { APP_PORT } from '../helpers/app.js';
import { get } from '../helpers/http.js';
import { createInstance } from '../helpers/instance.js';
import { rootTest } from '../helpers/root.js';
import type { WakeRecord } from '../../agent/status/wake-log.js';

/*
 * Why did it wake? A request from a known address and port wakes a sleeper, and GET /api/wakes
 * (and the status page) names that packet: its source, TCP, SYN (the handshake's first segment
 * reaches the sleeper first), no payload.
 */

/** An HTTP/1.0 GET from `localAddress`:`localPort`; resolves with the status line once the server closes. */
function getFrom(host: string, localAddress: string, localPort: number, timeoutMs = 3000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port: APP_PORT, localAddress, localPort, timeout: timeoutMs });
    let answer = '';
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(`GET / HTTP/1.0\r\nHost: ${host.includes(':') ? `[${host}]` : host}\r\n\r\n`));
    socket.on('data', (chunk: string) => (answer += chunk));
    socket.on('end', () => resolve(answer.split('\r\n')[0] ?? ''));
    socket.on('timeout', () => socket.destroy(new Error(`no answer from ${host} within ${timeoutMs} ms`)));
    socket.on('error', reject);
  });
}

async function wakesOf(address: string): Promise<WakeRecord[]> {
  return JSON.parse((await get(`http://${address}/api/wakes`)).body) as WakeRecord[];
}

rootTest.serial('a request from a known address and port wakes a sleeper, and GET /api/wakes and the page name that packet', async (t) => {
  const inst = await createInstance(t);
  const agent = await startAgent(t, { instances: [inst.config()] });
  await inState(agent, 'web', 'sleeping', 3000);
  const port = randomInt(40000, 50000);
  const running = nextState(agent, 'web', 'running', 3000);
  t.regex(await getFrom(inst.ns.instanceIp, inst.ns.hostIp, port), /^HTTP\/1\.[01] 200/);
  await running;
  const [wake] = await wakesOf(agent.address);
  t.is(wake?.instance, 'web');
  t.deepEqual(wake?.packet, { sourceAddr: inst.ns.hostIp, sourcePort: port, protocol: 'tcp', tcpFlags: ['SYN'], hasPayload: false });
  const page = (await get(`http://${agent.address}/`)).body;
  t.true(page.includes(`tcp from ${inst.ns.hostIp}:${port} SYN`), 'the status page shows the packet beside the wake');
});

rootTest.serial('over IPv6: the wake names the IPv6 source and port', async (t) => {
  const inst = await createInstance(t, 'web', { dualStack: true });
  const address6 = `[${inst.ns.instanceIp6!}]:${APP_PORT}`;
  const agent = await startAgent(t, { instances: [inst.config({ addresses: [address6] })] });
  await inState(agent, 'web', 'sleeping', 3000);
  const port = randomInt(40000, 50000);
  const running = nextState(agent, 'web', 'running', 3000);
  t.regex(await getFrom(inst.ns.instanceIp6!, inst.ns.hostIp6!, port), /^HTTP\/1\.[01] 200/);
  await running;
  const [wake] = await wakesOf(agent.address);
  t.deepEqual(wake?.packet, { sourceAddr: inst.ns.hostIp6!, sourcePort: port, protocol: 'tcp', tcpFlags: ['SYN'], hasPayload: false });
});

rootTest.serial('a UDP datagram that wakes a sleeper is named with its source port', async (t) => {
  const inst = await createInstance(t);
  const agent = await startAgent(t, { instances: [inst.config()] });
  await inState(agent, 'web', 'sleeping', 3000);
  const port = randomInt(40000, 50000);
  const running = nextState(agent, 'web', 'running', 3000);
  const socket = dgram.createSocket('udp4');
  t.teardown(() => socket.close());
  await new Promise<void>((resolve) => socket.bind(port, inst.ns.hostIp, resolve));
  await new Promise<void>((resolve, reject) => socket.send('hello', APP_PORT, inst.ns.instanceIp, (error) => (error ? reject(error) : resolve())));
  await running;
  const [wake] = await wakesOf(agent.address);
  t.deepEqual(wake?.packet, { sourceAddr: inst.ns.hostIp, sourcePort: port, protocol: 'udp', hasPayload: false });
});

rootTest.serial('a wake no packet caused names none', async (t) => {
  const inst = await createInstance(t);
  const agent = await startAgent(t, { instances: [inst.config()] });
  await inState(agent, 'web', 'sleeping', 3000);
  const running = nextState(agent, 'web', 'running', 3000);
  t.is((await fetch(`http://${agent.address}/api/instances/web/wake`, { method: 'POST' })).status, 200);
  await running;
  const [wake] = await wakesOf(agent.address);
  t.is(wake?.packet, null);
});
