import test from 'ava';
import { describeAwake } from '../../agent/status/awake-text.js';
import { ScriptedCpu } from '../helpers/scripted-cpu.js';
import { formatWhy } from '../../agent/cli/status-command.js';
import { viewOf } from '../../agent/status/instance-view.js';
import { detectorHarness } from '../helpers/detector-harness.js';

// "Why is it awake?" (agent/detector/why-awake.ts) on a fake clock and scripted connections: no kernel, no root.

test.serial('held by a client\'s open request: names the client, its port and the request\'s age', async (t) => {
  const h = detectorHarness(t);
  const { instance } = await h.add('web', { idleTimeout: '1s', idlePolicy: 'requests' });
  await h.clock.tickAsync(200);
  h.source.connection(instance.key, 40_000, 'request');
  await h.clock.tickAsync(3000);
  t.is(instance.state, 'running');
  const why = (await h.detector.whyAwake()).get('web')!;
  t.deepEqual(why[0], { kind: 'in-flight', clients: [{ address: '10.213.0.1', port: 40_000, ageMs: 3000 }] });
  t.is(describeAwake(why[0]!), '1 request(s) in flight from 10.213.0.1:40000 (3.0 s)');
  // The same through the API's view and `doze status --why`.
  const view = viewOf(instance, undefined, { why });
  t.regex(formatWhy(view), /^web is awake \(idle \d+\.\ds\) because:\n {2}in-flight {2}1 request\(s\) in flight from 10\.213\.0\.1:40000 \(3\.0 s\)\n$/);
  // Answered: nothing holds it any more, and it sleeps.
  h.source.connection(instance.key, 40_000, 'answer');
  t.deepEqual((await h.detector.whyAwake()).get('web'), []);
  await h.clock.tickAsync(200);
  t.is(instance.state, 'sleeping');
  t.is((await h.detector.whyAwake()).get('web'), undefined, 'a sleeper has no reason to be awake');
});

test.serial('recent traffic names the last client and the idle clock; minAwake says how long it has left', async (t) => {
  const h = detectorHarness(t);
  const { instance } = await h.add('web', { idleTimeout: '1s', idlePolicy: 'requests', minAwake: '10s' });
  h.source.connection(instance.key, 41_000, 'request');
  h.source.packet(instance.key);
  h.source.connection(instance.key, 41_000, 'answer');
  await h.clock.tickAsync(400);
  const why = (await h.detector.whyAwake()).get('web')!;
  t.deepEqual(why.map((r) => r.kind), ['min-awake', 'recent-traffic']);
  t.deepEqual(why[0], { kind: 'min-awake', leftMs: 9600, minAwakeMs: 10_000 });
  t.is(describeAwake(why[1]!), 'traffic 400 ms ago, idle timeout 1.0 s; last from 10.213.0.1:41000');
});

test.serial('held by the busy guard: names its CPU figure', async (t) => {
  const h = detectorHarness(t);
  const runtime = new ScriptedCpu();
  runtime.share = 1;
  const { instance } = await h.add('web', { idleTimeout: '1s', idlePolicy: 'traffic' }, runtime);
  await h.clock.tickAsync(3000);
  t.is(instance.state, 'running', 'still computing');
  const why = (await h.detector.whyAwake()).get('web')!;
  const busy = why.find((r) => r.kind === 'busy');
  t.truthy(busy, JSON.stringify(why));
  t.like(busy, { kind: 'busy', detail: { resource: 'cpu' } });
  t.regex(describeAwake(busy!), /^busy: \d+ ms CPU in the last \d+ ms$/);
  if (busy?.kind === 'busy' && busy.detail.resource === 'cpu') t.true(busy.detail.cpuMs / busy.detail.spanMs > 0.9, 'one full core');
});

test.serial('a dry-run instance that would be asleep says so', async (t) => {
  const h = detectorHarness(t);
  const { instance } = await h.add('web', { idleTimeout: '1s', dryRun: true });
  await h.clock.tickAsync(1500);
  const why = (await h.detector.whyAwake()).get('web')!;
  t.is(why[0]?.kind, 'dry-run');
  t.regex(formatWhy(viewOf(instance, undefined, { why })), /, dry run because:\n {2}dry-run {2}dry run: would be asleep since \d\d:\d\d:\d\d/);
});

test.serial('recent traffic over connections already closed names the top talkers: busiest first, only those within the idle timeout', async (t) => {
  const h = detectorHarness(t);
  const { instance } = await h.add('web', { idleTimeout: '1s', idlePolicy: 'requests' });
  h.source.talk(instance.key, '10.0.0.50', 50_000); // a one-off client, long before
  for (let n = 0; n < 6; n++) {
    await h.clock.tickAsync(200);
    h.source.talk(instance.key, '10.0.0.9', 41_000 + n); // a scraper, a new connection every 200 ms
    if (n % 2 === 0) h.source.talk(instance.key, 'fd00::53', 5353, 'udp');
  }
  await h.clock.tickAsync(100);
  t.is(instance.state, 'running');
  const recent = (await h.detector.whyAwake()).get('web')!.find((r) => r.kind === 'recent-traffic');
  t.deepEqual(recent, {
    kind: 'recent-traffic', idleForMs: 100, idleTimeoutMs: 1000, lastClient: null,
    topTalkers: [
      { address: '10.0.0.9', port: 41_005, protocol: 'tcp', connections: 6, packets: 0, overMs: 1000, ageMs: 100 },
      { address: 'fd00::53', port: 5353, protocol: 'udp', connections: 0, packets: 3, overMs: 800, ageMs: 300 },
    ],
  }, 'the one-off client, 1.3 s ago, is past the idle timeout');
  t.is(describeAwake(recent!), 'traffic 100 ms ago, idle timeout 1.0 s; top talkers 10.0.0.9:41005 (tcp, 6 connection(s) in 1.0 s, last 100 ms ago), [fd00::53]:5353 (udp, 3 packet(s) in 800 ms, last 300 ms ago)');
  t.regex(formatWhy(viewOf(instance, undefined, { why: [recent!] })), /recent-traffic {2}traffic 100 ms ago, .*; top talkers 10\.0\.0\.9:41005 \(tcp, 6 connection\(s\)/);
});

test.serial('talkers that cannot be read name none; the reasons are still given', async (t) => {
  const h = detectorHarness(t);
  const { instance } = await h.add('web', { idleTimeout: '1s', idlePolicy: 'requests' });
  h.source.talk(instance.key, '10.0.0.9', 41_000);
  await h.clock.tickAsync(100);
  h.source.failTalkers = 1;
  const why = (await h.detector.whyAwake()).get('web')!;
  t.like(why.find((r) => r.kind === 'recent-traffic'), { idleForMs: 100, topTalkers: [] });
  const again = (await h.detector.whyAwake()).get('web')!;
  t.like(again.find((r) => r.kind === 'recent-traffic'), { topTalkers: [{ address: '10.0.0.9', connections: 1 }] }, 'the next read names it');
});
