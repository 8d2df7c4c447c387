import { CheckRunner } from '../doubles/consul/check-runner.js';
import { inState, nextState, startAgent } from '../helpers/agent.js';
import { APP_PORT } from '../helpers/app.js';
import { CHECKER_UID } from '../helpers/checker.js';
import { get } from '../helpers/http.js';
import { createInstance } from '../helpers/instance.js';
import { rootTest } from '../helpers/root.js';
import { sh } from '../helpers/sh.js';
import { tweakRuntime } from '../helpers/runtime-wrappers.js';

/** Consul's check runner (the double), probing as the checker uid so doze's marking applies. */
async function consulChecks(t: { teardown(fn: () => unknown): void }, url: string, intervalMs = 100): Promise<CheckRunner> {
  const runner = await CheckRunner.create({ uid: CHECKER_UID, stagger: false });
  t.teardown(() => runner.stop());
  runner.add({ id: 'web-http', kind: 'http', target: url, intervalMs, timeoutMs: 1000 });
  runner.add({ id: 'web-tcp', kind: 'tcp', target: url.replace(/^http:\/\//, '').replace(/\/.*$/, ''), intervalMs, timeoutMs: 1000 });
  return runner;
}

rootTest.serial('50 sleep/wake cycles with checks every 100 ms: never a non-passing check, and no check wakes the instance', async (t) => {
  const inst = await createInstance(t);
  const agent = await startAgent(t, { healthChecks: { fromUid: CHECKER_UID }, instances: [inst.config({ idleTimeout: '200ms' })] });
  const runner = await consulChecks(t, `${inst.app.url}/health`);
  await new Promise<void>((resolve) => {
    const off = runner.subscribe((u) => {
      if (runner.status('web-http') === 'passing' && runner.status('web-tcp') === 'passing') {
        off();
        resolve();
      }
      void u;
    });
  });
  const startedAt = Date.now();
  const cycles = 50;
  for (let i = 0; i < cycles; i++) {
    // The first sleep may come while the checks were still getting to passing.
    await inState(agent, 'web', 'sleeping', 5000);
    // Let a few checks hit the sleeper (two intervals), then wake it with a real request.
    await new Promise((resolve) => setTimeout(resolve, 200));
    t.is(agent.detector.get('web')!.state, 'sleeping', `cycle ${i}: a check woke the instance`);
    const running = nextState(agent, 'web', 'running', 3000);
    const r = await get(`${inst.app.url}/`, 3000);
    await running;
    t.is(r.status, 200);
  }
  const results = runner.history.filter((r) => r.at >= startedAt);
  const bad = results.filter((r) => r.status !== 'passing');
  t.true(results.length >= cycles * 4, `${results.length} checks ran`);
  t.deepEqual(bad.map((r) => `${r.checkId} ${r.status} ${r.output}`), [], 'every check passed');
  const instance = agent.detector.get('web')!;
  t.is(instance.wakes, cycles, 'only the real requests woke it');
  t.true(instance.checksAnswered >= cycles * 2, `stub answered ${instance.checksAnswered} checks`);
  const metrics = await (await fetch(`http://${agent.address}/metrics`)).text();
  t.regex(metrics, /doze_health_checks_answered_total\{instance="web",runtime="freezer"\} \d+/);
});

rootTest.serial('a real request during sleep gets the app\'s own answer, not the stub\'s', async (t) => {
  const inst = await createInstance(t);
  const agent = await startAgent(t, { healthChecks: { fromUid: CHECKER_UID }, instances: [inst.config({ idleTimeout: '200ms' })] });
  const runner = await consulChecks(t, `${inst.app.url}/`);
  await inState(agent, 'web', 'sleeping', 5000);
  const stubbed = await runner.probe({ kind: 'http', url: `${inst.app.url}/`, timeoutMs: 1000, outputMaxSize: 4096 });
  t.regex(stubbed.output, /doze: web is asleep/, 'a check during sleep is answered by the stub');
  const r = await get(`${inst.app.url}/`, 3000);
  t.is(r.status, 200);
  t.regex(r.body, /^hello from web #\d+/);
  t.notRegex(r.body, /doze/);
});

rootTest.serial('a resume that fails turns the checks critical within two intervals and is reported', async (t) => {
  const inst = await createInstance(t);
  let wakeFails = false;
  const agent = await startAgent(t, { healthChecks: { fromUid: CHECKER_UID }, instances: [inst.config({ idleTimeout: '200ms' })] }, { wrapRuntime: tweakRuntime({ failWake: () => wakeFails }) });
  const interval = 100;
  const runner = await consulChecks(t, `${inst.app.url}/`, interval);
  await inState(agent, 'web', 'sleeping', 5000);
  wakeFails = true;
  const failed = nextState(agent, 'web', 'failed', 3000);
  void get(`${inst.app.url}/`, 500).catch(() => undefined); // the app stays frozen: this request cannot be answered
  await failed;
  const failedAt = Date.now();
  const critical = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('checks never went critical')), 3000);
    const off = runner.subscribe(() => {
      if (runner.status('web-http') === 'critical' && runner.status('web-tcp') === 'critical') {
        clearTimeout(timer);
        off();
        resolve(Date.now() - failedAt);
      }
    });
  });
  t.true(critical <= 2 * interval + 50, `critical ${critical} ms after the failure`);
  const view = await (await fetch(`http://${agent.address}/api/instances`)).json() as Array<{ id: string; state: string; failure: string }>;
  t.is(view[0]!.state, 'failed');
  t.regex(view[0]!.failure, /wake failed: resume refused on purpose/);
  const metrics = await (await fetch(`http://${agent.address}/metrics`)).text();
  t.regex(metrics, /doze_wake_failures_total\{instance="web",runtime="freezer"\} 1/);
});

rootTest.serial('unmarked traffic is never redirected; the redirect exists only while asleep', async (t) => {
  const inst = await createInstance(t);
  const agent = await startAgent(t, { healthChecks: { fromUid: CHECKER_UID }, instances: [inst.config({ idleTimeout: '200ms' })] });
  const chain = `${agent.config.netfilter.chainPrefix}-STUB`;
  const rules = async () => (await sh('iptables', ['-t', 'nat', '-S', chain])).split('\n').filter((l) => l.startsWith('-A') && l.includes('doze:'));
  t.deepEqual(await rules(), []);
  await inState(agent, 'web', 'sleeping', 5000);
  const asleep = await rules();
  t.is(asleep.length, 1);
  t.regex(asleep[0]!, new RegExp(`-d ${inst.ns.instanceIp}/32 -p tcp -m tcp --dport ${APP_PORT} -m mark --mark 0x1/0x1`));
  const running = nextState(agent, 'web', 'running', 3000);
  t.regex((await get(`${inst.app.url}/`, 3000)).body, /hello from web/);
  await running;
  t.deepEqual(await rules(), [], 'removed before the instance is declared running');
});

rootTest.serial('checks sent to a mapped host port (Nomad\'s default address_mode) are answered too', async (t) => {
  const inst = await createInstance(t);
  // A port map like CNI portmap's: host_ip:hostPort → instance:8080, in nat OUTPUT after doze's jump.
  const hostPort = 20000 + Math.floor(Math.random() * 20000);
  const chain = `DZPM${Math.floor(Math.random() * 1e6)}`;
  const dnat = ['-d', `${inst.ns.hostIp}/32`, '-p', 'tcp', '--dport', String(hostPort), '-j', 'DNAT', '--to-destination', inst.app.address];
  t.teardown(async () => {
    await sh('iptables', ['-t', 'nat', '-D', 'OUTPUT', '-j', chain]).catch(() => undefined);
    await sh('iptables', ['-t', 'nat', '-F', chain]).catch(() => undefined);
    await sh('iptables', ['-t', 'nat', '-X', chain]).catch(() => undefined);
  });
  await sh('iptables', ['-t', 'nat', '-N', chain]);
  await sh('iptables', ['-t', 'nat', '-A', chain, ...dnat]);
  await sh('iptables', ['-t', 'nat', '-A', 'OUTPUT', '-j', chain]);
  // The checker first (it spawns a worker): the awake probe must come inside the 200 ms idle timeout.
  const runner = await CheckRunner.create({ uid: CHECKER_UID, stagger: false });
  t.teardown(() => runner.stop());
  const agent = await startAgent(t, {
    healthChecks: { fromUid: CHECKER_UID },
    instances: [inst.config({ idleTimeout: '200ms', checkAddresses: [`${inst.ns.hostIp}:${hostPort}`] })],
  });
  const url = `http://${inst.ns.hostIp}:${hostPort}/`;
  const awake = await runner.probe({ kind: 'http', url, timeoutMs: 1000, outputMaxSize: 4096 });
  t.regex(awake.output, /hello from web/, 'awake: the port map reaches the app');
  await inState(agent, 'web', 'sleeping', 5000);
  const asleep = await runner.probe({ kind: 'http', url, timeoutMs: 1000, outputMaxSize: 4096 });
  t.is(asleep.status, 'passing');
  t.regex(asleep.output, /doze: web is asleep/);
  t.is(agent.detector.get('web')!.state, 'sleeping');
});
