import { access, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { LATE_EVENT_MS, WAKE_EVENT_GRACE_MS, WATCHDOG_INTERVAL_MS } from '../../agent/detector/wake-signals.js';
import { inState, nextState, startAgent } from '../helpers/agent.js';
import { runCli } from '../helpers/cli.js';
import { get } from '../helpers/http.js';
import { createInstance } from '../helpers/instance.js';
import { uniqueSuffix } from '../helpers/names.js';
import { rootTest } from '../helpers/root.js';
import { sh } from '../helpers/sh.js';
import type { Teardown } from '../helpers/teardown.js';
import { tempDir } from '../helpers/temp-dir.js';
import { until } from '../helpers/until.js';


async function tempConfig(t: Teardown, config: unknown): Promise<string> {
  const file = join(await tempDir(t, 'agent'), 'doze.json');
  await writeFile(file, JSON.stringify(config));
  return file;
}

rootTest.serial('a second agent on the same bpffs exits 2 naming the first, touches nothing, and the first one\'s sleeper wakes within 0.3 s', async (t) => {
  const inst = await createInstance(t);
  const agent = await startAgent(t, { instances: [inst.config({ idleTimeout: '200ms' })] });
  await inState(agent, 'web', 'sleeping');
  const pins = join(agent.config.bpffs, 'tc', 'globals');

  // The same instance and bpffs, its own chains: what an operator debugging by hand would start.
  const config = await tempConfig(t, {
    listen: '127.0.0.1:0', bpffs: agent.config.bpffs, netfilter: { chainPrefix: `DZ${uniqueSuffix().toUpperCase()}` },
    instances: [inst.config({ idleTimeout: '200ms' })],
  });
  const second = await runCli(['agent', '--config', config]);
  t.is(second.code, 2, second.stderr);
  t.regex(second.stderr, new RegExp(`another doze agent \\(pid ${process.pid}, listening on ${agent.address.replace(/\./g, '\\.')}`));
  t.regex(second.stderr, /--bpffs/);
  t.regex(second.stderr, /--chain-prefix/);
  await t.notThrowsAsync(access(join(pins, 'doze_wake_events')), 'the first agent\'s pins are still there');
  t.regex(await sh('tc', ['filter', 'show', 'dev', inst.ns.hostIf, 'egress']), /doze_egress/, 'its tc program is still attached');
  t.is(agent.detector.get('web')?.state, 'sleeping');

  const answer = await get(`${inst.app.url}/`, 3000);
  t.is(answer.status, 200);
  t.true(answer.ms < 300, `woken by a plain request in ${answer.ms.toFixed(1)} ms`);
  t.log(`the first agent's sleeper answered in ${answer.ms.toFixed(1)} ms after a refused second agent`);
});

rootTest.serial('a second agent on its own bpffs and chain prefix runs beside the first, and neither disturbs the other', async (t) => {
  const one = await createInstance(t, 'one');
  const two = await createInstance(t, 'two');
  const first = await startAgent(t, { instances: [one.config({ idleTimeout: '200ms' })] });
  const second = await startAgent(t, { instances: [two.config({ idleTimeout: '200ms' })] });
  t.not(first.config.bpffs, second.config.bpffs);
  await Promise.all([inState(first, 'one', 'sleeping'), inState(second, 'two', 'sleeping')]);

  for (const [agent, inst, id] of [[first, one, 'one'], [second, two, 'two']] as const) {
    const running = nextState(agent, id, 'running');
    const answer = await get(`${inst.app.url}/`, 3000);
    await running;
    t.is(answer.status, 200);
    t.regex(answer.body, new RegExp(`hello from ${id}`));
    t.true((agent.detector.get(id)?.wakes ?? 0) >= 1, `${id} was woken by its own agent`);
  }
  await second.stop();
  await t.notThrowsAsync(access(join(first.config.bpffs, 'tc', 'globals', 'doze_wake_events')), 'the second agent\'s exit left the first one\'s pins');
  await inState(first, 'one', 'sleeping');
  const wakes = first.detector.get('one')!.wakes;
  const running = nextState(first, 'one', 'running');
  const answer = await get(`${one.app.url}/`, 3000);
  t.is(answer.status, 200);
  await running; // the app answers once thawed, a moment before the wake is booked
  t.is(first.detector.get('one')?.wakes, wakes + 1, 'the first agent still wakes its sleeper after the second one left');
});

rootTest.serial('the wake-event reader killed while an instance sleeps: it is restarted, the next request is answered, and the status says so', async (t) => {
  const inst = await createInstance(t);
  const agent = await startAgent(t, { instances: [inst.config({ idleTimeout: '200ms' })] });
  await inState(agent, 'web', 'sleeping');
  const events = join(agent.config.bpffs, 'tc', 'globals', 'doze_wake_events');
  const pid = (await sh('pgrep', ['-f', `doze-maps events ${events}`])).trim().split('\n')[0];
  t.truthy(pid, 'the reader runs');
  await sh('kill', ['-KILL', pid!]);

  const answer = await get(`${inst.app.url}/`, 3000);
  t.is(answer.status, 200);
  t.log(`answered in ${answer.ms.toFixed(1)} ms with the reader killed just before`);
  t.true(agent.detector.wakeEvents.gaps >= 1, 'the restart was noticed as a gap');
  const status = await get(`http://${agent.address}/api/status`, 3000);
  const report = JSON.parse(status.body) as { wakeEvents: { gaps: number; lastGap: { reason: string } | null } };
  t.true(report.wakeEvents.gaps >= 1);
  t.regex(report.wakeEvents.lastGap?.reason ?? '', /wake event reader (exited|restarted)/);
  const page = await get(`http://${agent.address}/`, 3000);
  t.regex(page.body, /data-card="wake-events"[\s\S]*wake-event rescan/, "the status page says so");
  // And it is a live reader again: a later sleep wakes by its event, not by the watchdog.
  // The first wake may have been the watchdog's (the event was lost with the reader): let its count settle.
  await until('the watchdog wake to be booked', () => !agent.detector.wakeSignals.awaitsLateEvent(agent.detector.get('web')!), { timeoutMs: LATE_EVENT_MS + 1000 });
  await inState(agent, 'web', 'sleeping');
  const missedBefore = agent.detector.wakeEvents.missed;
  const again = await get(`${inst.app.url}/`, 3000);
  t.is(again.status, 200);
  t.is(agent.detector.wakeEvents.missed, missedBefore, 'this wake came by its event, not by the watchdog');
  t.false(agent.detector.wakeSignals.awaitsLateEvent(agent.detector.get('web')!), 'no watchdog wake waiting for its event either');
});

rootTest.serial('a wake event dropped on purpose: the watchdog wakes the instance within its bound and counts it', async (t) => {
  const inst = await createInstance(t);
  const agent = await startAgent(t, { instances: [inst.config({ idleTimeout: '200ms' })] }, { faults: { dropWakeEvents: 1 } });
  await inState(agent, 'web', 'sleeping');
  const answer = await get(`${inst.app.url}/`, 3000);
  t.is(answer.status, 200);
  // One interval to notice, the grace for an event still on its way, and the wake itself.
  const bound = WATCHDOG_INTERVAL_MS * 2 + WAKE_EVENT_GRACE_MS + 100;
  t.true(answer.ms < bound, `answered in ${answer.ms.toFixed(0)} ms (bound ${bound} ms)`);
  // Counted once the event has had LATE_EVENT_MS to turn up late instead.
  await until('the missed event to be counted', () => agent.detector.wakeEvents.missed > 0, { timeoutMs: LATE_EVENT_MS + 1000 });
  t.is(agent.detector.wakeEvents.missed, 1);
  t.is(agent.detector.wakeEvents.late, 0);
  const metrics = await get(`http://${agent.address}/metrics`, 3000);
  t.regex(metrics.body, /doze_wake_events_missed_total\{instance="web",runtime="freezer"\} 1/);
  t.log(`woken by the watchdog: first request ${answer.ms.toFixed(0)} ms`);
  // The knob is spent: the next wake comes by its event again.
  await inState(agent, 'web', 'sleeping');
  const again = await get(`${inst.app.url}/`, 3000);
  t.is(again.status, 200);
  t.is(agent.detector.wakeEvents.missed, 1);
});
