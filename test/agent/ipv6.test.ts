import http from 'node:http';
import type { Socket } from 'node:net';
import type { Agent } from '../../agent/agent.js';
import { monotonicNs } from '../../agent/shared/clock.js';
import { CheckRunner } from '../doubles/consul/check-runner.js';
import { inState, nextState, startAgent } from '../helpers/agent.js';
import { CHECKER_UID } from '../helpers/checker.js';
import { APP_PORT } from '../helpers/app.js';
import { get } from '../helpers/http.js';
import { createInstance, type TestInstance } from '../helpers/instance.js';
import { wakeWithPooledRequest } from '../helpers/pooled-request.js';
import { rootTest } from '../helpers/root.js';
import { sh } from '../helpers/sh.js';
import { tweakRuntime } from '../helpers/runtime-wrappers.js';
import type { Teardown } from '../helpers/teardown.js';
import { sampleFreezerStates } from '../helpers/cgroup.js';

/*
 * A dual-stack instance (an IPv6 address beside its IPv4 one on its veth, as a Nomad bridge with an
 * IPv6 range gives it), its app listening on both: what IPv4 clients get, IPv6 clients get too.
 */

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function dualStack(t: Teardown): Promise<TestInstance & { url6: string; address6: string }> {
  const inst = await createInstance(t, 'web', { dualStack: true });
  const address6 = `[${inst.ns.instanceIp6!}]:${APP_PORT}`;
  return { ...inst, address6, url6: `http://${address6}` };
}

async function packetsOf(agent: Agent, inst: TestInstance): Promise<bigint> {
  const counters = await agent.source.counter(inst.ns.instanceIp);
  if (!counters) throw new Error(`no doze_counters entry for ${inst.ns.instanceIp}`);
  return counters.packets;
}

rootTest.serial('dual-stack: a request over IPv6 counts, and one to the sleeping instance wakes it and is answered within 100 ms', async (t) => {
  const inst = await dualStack(t);
  const agent = await startAgent(t, { instances: [inst.config({ idleTimeout: '300ms', addresses: [inst.address6] })] });
  const before = await packetsOf(agent, inst);
  t.is((await get(`${inst.url6}/`, 3000)).status, 200);
  t.true((await packetsOf(agent, inst)) > before, 'packets over IPv6 counted on the instance\'s counters');
  await inState(agent, 'web', 'sleeping', 3000);
  t.is(await inst.cgroup.freezerState(), 'FROZEN');
  const running = nextState(agent, 'web', 'running', 3000);
  // Kept alive afterwards, so its doze_conns entry is still there to read (a closed one is deleted).
  const pool = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => pool.destroy());
  const answer = await get(`${inst.url6}/`, 3000, pool);
  await running;
  t.is(answer.status, 200);
  t.regex(answer.body, /^hello from web #\d+/);
  t.true(answer.ms < 100, `answered in ${answer.ms.toFixed(1)} ms`);
  t.is(agent.detector.get('web')!.wakes, 1);
  // The tc program stamps the first response on the way out over IPv6 too (doze_first_response_seconds).
  const until = Date.now() + 2000;
  while (agent.detector.get('web')!.lastFirstResponseMs === undefined && Date.now() < until) await delay(20);
  const firstResponseMs = agent.detector.get('web')!.lastFirstResponseMs;
  t.true(firstResponseMs !== undefined && firstResponseMs < 100, `first response ${firstResponseMs} ms after the first packet`);
  const conn = (await agent.source.connections()).find((c) => c.clientAddr === inst.ns.hostIp6);
  t.truthy(conn, 'the IPv6 connection is tracked under the instance, its client by its IPv6 address');
  t.is(conn?.instanceAddr, inst.ns.instanceIp);
});

rootTest.serial('IPv6-only address: the instance is keyed by a derived key and still wakes on a request', async (t) => {
  const inst = await dualStack(t);
  const agent = await startAgent(t, { instances: [inst.config({ idleTimeout: '300ms', address: inst.address6 })] });
  const key = agent.detector.get('web')!.key;
  t.regex(key, /^0\.([1-9]\d*)\.\d+\.\d+$/, 'a key in 0.1.0.0-0.255.255.255');
  await inState(agent, 'web', 'sleeping', 3000);
  const running = nextState(agent, 'web', 'running', 3000);
  const answer = await get(`${inst.url6}/`, 3000);
  await running;
  t.is(answer.status, 200);
  t.is(agent.detector.get('web')!.wakes, 1);
});

rootTest.serial('dual-stack: a 3 s request over IPv6 gets its full answer and is never frozen under it', async (t) => {
  const inst = await dualStack(t);
  const agent = await startAgent(t, { instances: [inst.config({ idleTimeout: '300ms', idlePolicy: 'requests', addresses: [inst.address6] })] });
  const sampling = sampleFreezerStates(inst.cgroup);
  const states = sampling.states;
  const answer = await get(`${inst.url6}/slow?ms=3000`, 6000);
  await sampling.stop();
  t.is(answer.status, 200);
  t.regex(answer.body, /slow answer after 3000 ms/);
  t.deepEqual([...states], ['THAWED'], 'the cgroup was never frozen during the request');
  t.is(agent.detector.get('web')!.sleeps, 0);
  await nextState(agent, 'web', 'sleeping', 2000);
});

rootTest.serial('dual-stack: TCP keepalive probes over IPv6 neither keep the instance awake nor wake it; a request on that connection does', async (t) => {
  const inst = await dualStack(t);
  const idleMs = 1500;
  const agent = await startAgent(t, { instances: [inst.config({ idleTimeout: `${idleMs}ms`, idlePolicy: 'requests', addresses: [inst.address6] })] });
  // node's keep-alive agent turns SO_KEEPALIVE on with TCP_KEEPIDLE = keepAliveMsecs: a probe a second.
  const pool = new http.Agent({ keepAlive: true, keepAliveMsecs: 1000, maxSockets: 1 });
  t.teardown(() => pool.destroy());
  t.is((await get(`${inst.url6}/`, 3000, pool)).status, 200);
  const socket = Object.values(pool.freeSockets).flat()[0] as Socket;
  const tookMs = await nextState(agent, 'web', 'sleeping', idleMs + 3000);
  t.true(tookMs < idleMs + 1000, `slept ${tookMs.toFixed(0)} ms after the answer (idle timeout ${idleMs} ms)`);
  const before = { packets: await packetsOf(agent, inst), atNs: monotonicNs() };
  await delay(3500); // a fixed window: three probes come, and nothing may happen
  t.is(agent.detector.get('web')!.state, 'sleeping');
  t.is(agent.detector.get('web')!.wakes, 0);
  t.is(await packetsOf(agent, inst), before.packets, 'no probe counted as traffic');
  const conn = (await agent.source.connections()).find((c) => c.clientAddr === inst.ns.hostIp6 && c.clientPort === socket.localPort);
  t.truthy(conn, 'the probed connection is tracked');
  t.true(conn!.lastNs > before.atNs, 'the probes kept the connection record alive');
  t.true(conn!.clientPayloadNs < before.atNs, 'no probe taken for a request');
  const { answer, reused } = await wakeWithPooledRequest(agent, 'web', `${inst.url6}/`, pool);
  t.is(answer.status, 200);
  t.true(reused);
  t.is(agent.detector.get('web')!.wakes, 1);
});

rootTest.serial('dual-stack: IPv6 health checks (marked by uid) neither keep the instance awake nor wake it, and pass while it sleeps', async (t) => {
  const inst = await dualStack(t);
  // The checker first (it spawns a worker), as in healthy-while-asleep.test.ts.
  const runner = await CheckRunner.create({ uid: CHECKER_UID, stagger: false });
  t.teardown(() => runner.stop());
  const agent = await startAgent(t, { healthChecks: { fromUid: CHECKER_UID }, instances: [inst.config({ idleTimeout: '300ms', addresses: [inst.address6] })] });
  const startedAt = Date.now();
  runner.add({ id: 'web-http6', kind: 'http', target: `${inst.url6}/health`, intervalMs: 100, timeoutMs: 1000 });
  runner.add({ id: 'web-tcp6', kind: 'tcp', target: inst.address6, intervalMs: 100, timeoutMs: 1000 });
  // Checks every 100 ms, a third of the idle timeout: they would keep it awake if they counted.
  await inState(agent, 'web', 'sleeping', 3000);
  const rules = (await sh('ip6tables', ['-t', 'nat', '-S', `${agent.config.netfilter.chainPrefix}-STUB`])).split('\n').filter((l) => l.includes('doze:'));
  t.is(rules.length, 1, 'one IPv6 redirect while asleep');
  t.regex(rules[0]!, new RegExp(`-d ${inst.ns.instanceIp6}/128 -p tcp -m tcp --dport ${APP_PORT}`));
  await delay(600); // six check intervals against the sleeper
  t.is(agent.detector.get('web')!.state, 'sleeping', 'no IPv6 check woke it');
  t.is(agent.detector.get('web')!.wakes, 0);
  const asleep = await runner.probe({ kind: 'http', url: `${inst.url6}/`, timeoutMs: 1000, outputMaxSize: 4096 });
  t.is(asleep.status, 'passing');
  t.regex(asleep.output, /doze: web is asleep/, 'answered by the stub over IPv6');
  const results = runner.history.filter((r) => r.at >= startedAt);
  t.deepEqual(results.filter((r) => r.status !== 'passing').map((r) => `${r.checkId} ${r.status} ${r.output}`), [], 'every check passed');
  t.true(agent.detector.get('web')!.checksAnswered >= 4, `the stub answered ${agent.detector.get('web')!.checksAnswered} checks`);
  // A real request over IPv6 still wakes it.
  const running = nextState(agent, 'web', 'running', 3000);
  t.regex((await get(`${inst.url6}/`, 3000)).body, /^hello from web/);
  await running;
});

rootTest.serial('dual-stack, hold mode: IPv6 connections to the sleeping instance are held while it wakes and all answered', async (t) => {
  const inst = await dualStack(t);
  const agent = await startAgent(t, { instances: [inst.config({ idleTimeout: '10m', wake: 'hold', maxHeld: 4, addresses: [inst.address6] })] }, { wrapRuntime: tweakRuntime({ wakeDelayMs: 300 }) });
  await agent.detector.sleepNow('web');
  const chain = `${agent.config.netfilter.chainPrefix}-HOLD`;
  t.regex(await sh('ip6tables', ['-t', 'nat', '-S', chain]), new RegExp(`-d ${inst.ns.instanceIp6}/128 .*connlimit-upto 4 --connlimit-mask 128`));
  const running = nextState(agent, 'web', 'running', 5000);
  const answers = await Promise.all(Array.from({ length: 3 }, () => get(`${inst.url6}/`, 5000)));
  await running;
  t.deepEqual(answers.map((a) => a.status), [200, 200, 200]);
  for (const a of answers) t.regex(a.body, /^hello from web/);
  t.true(agent.guards.hold.held('web').peak >= 1, 'held by the agent while it woke');
  t.is(agent.detector.get('web')!.wakes, 1);
  t.notRegex(await sh('ip6tables', ['-t', 'nat', '-S', chain]), /doze:web/, 'hold rule removed once it serves');
});
