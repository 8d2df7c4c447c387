import test from 'ava';
import { Detector } from '../../agent/detector/detector.js';
import { ManagedInstance } from '../../agent/detector/managed-instance.js';
import { parseConfig } from '../../agent/config/load.js';
import { createLogger } from '../../agent/shared/log.js';
import { FakeRuntime } from '../../agent/runtimes/fake.js';
import { monotonicNs } from '../../agent/shared/clock.js';
import { Metrics } from '../../agent/status/metrics.js';
import { inState, startAgent } from '../helpers/agent.js';
import { FakeTrafficSource } from '../helpers/fake-traffic-source.js';
import { get } from '../helpers/http.js';
import { createInstance } from '../helpers/instance.js';
import { rootTest } from '../helpers/root.js';
import { tweakRuntime } from '../helpers/runtime-wrappers.js';

const instanceConfig = (id: string, address: string) =>
  parseConfig({ instances: [{ id, address, interface: 'dzm0', idleTimeout: '1h', runtime: { kind: 'fake' } }] }).instances[0]!;

/** The value of one sample line, or undefined when the series does not exist. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

test('per-instance series exist at 0 from the moment an instance is managed, and go when it is released', async (t) => {
  const detector = new Detector(new FakeTrafficSource(), createLogger('silent'));
  t.teardown(() => detector.stop({ wakeAll: false }));
  const metrics = new Metrics(detector);
  const a = new ManagedInstance(instanceConfig('a', '10.9.0.2:80'), new FakeRuntime(), monotonicNs());
  const b = new ManagedInstance(instanceConfig('b', '10.9.0.3:80'), new FakeRuntime(), monotonicNs());
  await detector.add(a);
  await detector.add(b);

  let text = await metrics.text();
  for (const id of ['a', 'b']) {
    const labels = `{instance="${id}",runtime="fake"}`;
    for (const name of ['doze_sleeps_total', 'doze_wakes_total', 'doze_wake_failures_total', 'doze_health_checks_answered_total']) {
      t.is(sample(text, `${name}${labels}`), 0, `${name} for ${id}`);
    }
    t.is(sample(text, `doze_wake_seconds_count${labels}`), 0);
    t.is(sample(text, `doze_first_response_seconds_count${labels}`), 0);
    t.is(sample(text, `doze_wake_seconds_bucket{le="0.001",instance="${id}",runtime="fake"}`), 0);
  }
  t.regex(text, /# TYPE doze_budget_overruns_total counter\ndoze_budget_overruns_total 0/);
  t.notRegex(text, /doze_budget_overruns /, 'the old gauge name is gone');

  t.true(await detector.sleepNow('a'));
  text = await metrics.text();
  t.is(sample(text, 'doze_sleeps_total{instance="a",runtime="fake"}'), 1);

  await detector.remove('a', { wake: true });
  text = await metrics.text();
  t.false(text.includes('instance="a"'), 'every series of the released instance is gone');
  t.is(sample(text, 'doze_sleeps_total{instance="b",runtime="fake"}'), 0);
  // An event about the released instance (a late stub answer, a wake finishing) does not bring it back.
  detector.emit('slept', a);
  detector.emit('firstResponse', a, 0.01);
  t.false((await metrics.text()).includes('instance="a"'));

  // Churn: many instances come and go, the series count stays that of the managed ones.
  for (let n = 0; n < 50; n++) {
    const churn = new ManagedInstance(instanceConfig(`c${n}`, `10.9.1.${n + 2}:80`), new FakeRuntime(), monotonicNs());
    await detector.add(churn);
    await metrics.text();
    await detector.remove(churn.id, { wake: false });
  }
  text = await metrics.text();
  t.is(text.split('\n').filter((l) => l.startsWith('doze_sleeps_total{')).length, 1);
});

test('budget overruns are a counter that follows the detector', async (t) => {
  const detector = new Detector(new FakeTrafficSource(), createLogger('silent'));
  const metrics = new Metrics(detector);
  detector.budgetOverruns = 3;
  t.is(sample(await metrics.text(), 'doze_budget_overruns_total'), 3);
  detector.budgetOverruns = 5;
  t.is(sample(await metrics.text(), 'doze_budget_overruns_total'), 5);
});

rootTest.serial('a real wake observes both wake phases: runtime resumed, and the first response byte the tc program saw', async (t) => {
  const inst = await createInstance(t);
  const agent = await startAgent(t, { instances: [inst.config({ idleTimeout: '200ms' })] });
  await inState(agent, 'web', 'sleeping', 5000);
  const base = `http://${agent.address}`;
  let text = await (await fetch(`${base}/metrics`)).text();
  t.is(sample(text, 'doze_first_response_seconds_count{instance="web",runtime="freezer"}'), 0);

  const answered = await get(`http://${inst.app.address}/`, 5000);
  t.is(answered.status, 200);
  // The tc program's stamp reaches the agent as a perf event: wait for it, bounded.
  const until = Date.now() + 5000;
  let count: number | undefined = 0;
  while (Date.now() < until) {
    text = await (await fetch(`${base}/metrics`)).text();
    count = sample(text, 'doze_first_response_seconds_count{instance="web",runtime="freezer"}');
    if (count === 1) break;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  t.is(count, 1, 'one first response for one wake');
  t.is(sample(text, 'doze_wake_seconds_count{instance="web",runtime="freezer"}'), 1);
  const firstResponse = sample(text, 'doze_first_response_seconds_sum{instance="web",runtime="freezer"}')!;
  const wake = sample(text, 'doze_wake_seconds_sum{instance="web",runtime="freezer"}')!;
  // Both start at the same packet; the answer comes after the thaw, and within the client's wait.
  t.true(firstResponse > 0 && firstResponse * 1000 < answered.ms, `first response ${firstResponse * 1000} ms, client saw ${answered.ms} ms`);
  t.true(wake > 0);
  t.log(`wake ${(wake * 1000).toFixed(2)} ms, first response ${(firstResponse * 1000).toFixed(2)} ms, client ${answered.ms.toFixed(2)} ms`);
  const view = ((await (await fetch(`${base}/api/instances`)).json()) as Array<{ lastFirstResponseMs: number | null }>)[0]!;
  t.is(view.lastFirstResponseMs, Math.round(firstResponse * 1e6) / 1000);

  // Health checks and later requests do not re-stamp it: still one observation.
  await get(`http://${inst.app.address}/`, 5000);
  text = await (await fetch(`${base}/metrics`)).text();
  t.is(sample(text, 'doze_first_response_seconds_count{instance="web",runtime="freezer"}'), 1);
});

test('what happened before the first scrape is kept: giving an instance its zero series never resets it', async (t) => {
  const detector = new Detector(new FakeTrafficSource(), createLogger('silent'));
  t.teardown(() => detector.stop({ wakeAll: false }));
  const metrics = new Metrics(detector);
  const a = new ManagedInstance(instanceConfig('a', '10.9.0.2:80'), new FakeRuntime(), monotonicNs());
  await detector.add(a);
  t.true(await detector.sleepNow('a'));
  await detector.wake(a, 'test');
  const text = await metrics.text();
  t.is(sample(text, 'doze_sleeps_total{instance="a",runtime="fake"}'), 1);
  t.is(sample(text, 'doze_wakes_total{instance="a",runtime="fake"}'), 1);
  t.is(sample(text, 'doze_wake_seconds_count{instance="a",runtime="fake"}'), 1);
  t.is(sample(text, 'doze_wake_failures_total{instance="a",runtime="fake"}'), 0);
});

/** Polls /metrics until `series` has `value`, bounded; returns the last exposition text. */
async function metricsWhen(base: string, series: string, value: number, timeoutMs = 5000): Promise<string> {
  const until = Date.now() + timeoutMs;
  let text = '';
  while (Date.now() < until) {
    text = await (await fetch(`${base}/metrics`)).text();
    if (sample(text, series) === value) break;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return text;
}

rootTest.serial('a hold-mode wake has its first response too, timed by the hold listener', async (t) => {
  const inst = await createInstance(t);
  const agent = await startAgent(t, { instances: [inst.config({ idleTimeout: '10m', wake: 'hold' })] }, { wrapRuntime: tweakRuntime({ wakeDelayMs: 150 }) });
  t.true(await agent.detector.sleepNow('web'));
  const answered = await get(`http://${inst.app.address}/`, 5000);
  t.is(answered.status, 200);
  const series = 'doze_first_response_seconds_count{instance="web",runtime="freezer"}';
  const text = await metricsWhen(`http://${agent.address}`, series, 1);
  t.is(sample(text, series), 1);
  const firstResponseMs = sample(text, 'doze_first_response_seconds_sum{instance="web",runtime="freezer"}')! * 1000;
  // Held through a 150 ms resume, answered before the client saw its answer.
  t.true(firstResponseMs >= 150 && firstResponseMs <= answered.ms, `first response ${firstResponseMs.toFixed(1)} ms, client ${answered.ms.toFixed(1)} ms`);
  t.is(agent.detector.get('web')!.lastFirstResponseMs, firstResponseMs);
});
