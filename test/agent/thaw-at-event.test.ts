import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { WakeEvent } from '../../agent/sources/bpf-records.js';
import type { Agent } from '../../agent/agent.js';
import http from 'node:http';
import { inState, nextState, startAgent } from '../helpers/agent.js';
import { createInstance, type TestInstance } from '../helpers/instance.js';
import { rootTest } from '../helpers/root.js';

// Thaw at the event, for real: the tc program's wake event reaches doze-maps, which thaws the
// freezer cgroup before the line reaches the agent. Each test reads the cgroup's freezer.state at
// the moment the agent first hears of the event (its wake listener, before any wake of its own
// has run): THAWED there means the reader did it.

/**
 * One GET whose connection has sent its last packet when it resolves: the client kernel's last
 * ACK (after both FINs) reaching a sleeper would wake it like any packet, and a test that puts the
 * instance to sleep right after the answer would race it. That ACK has gone once the client's
 * socket is in TIME_WAIT or gone from /proc/net/tcp; nothing signals it, so it is polled (bounded).
 */
async function get(url: string, timeoutMs: number): Promise<{ status: number }> {
  let localPort = 0;
  const status = await new Promise<number>((resolve, reject) => {
    const req = http.get(url, { agent: false, timeout: timeoutMs }, (res) => {
      localPort = req.socket?.localPort ?? 0;
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url} timed out after ${timeoutMs} ms`)));
    req.on('error', reject);
  });
  const port = localPort.toString(16).toUpperCase().padStart(4, '0');
  for (let i = 0; i < 200; i++) {
    // Columns: sl local_address rem_address st …; TIME_WAIT is 06.
    const row = readFileSync('/proc/net/tcp', 'utf8').split('\n').find((line) => line.trim().split(/\s+/)[1]?.endsWith(`:${port}`));
    if (!row || row.trim().split(/\s+/)[3] === '06') return { status };
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  throw new Error(`GET ${url}: the connection from port ${localPort} did not close within 1 s`);
}

interface SeenEvent {
  event: WakeEvent;
  /** freezer.state as the agent hears of the event. */
  freezer: string;
  /** The detector's state then. */
  detectorState: string | undefined;
}

/** Records the instance's wake events (not first responses) with the cgroup's state at that moment. */
function watchEvents(agent: Agent, inst: TestInstance, id: string): SeenEvent[] {
  const seen: SeenEvent[] = [];
  const stateFile = join(inst.cgroup.dir, 'freezer.state');
  agent.source.onWake((event) => {
    if (event.answersWakeNs !== undefined || event.instanceAddr !== inst.ns.instanceIp) return;
    seen.push({ event, freezer: readFileSync(stateFile, 'utf8').trim(), detectorState: agent.detector.get(id)?.state });
  });
  return seen;
}

rootTest.serial('a request to a sleeping freezer instance is thawed by the wake-event reader before the agent hears of it', async (t) => {
  const inst = await createInstance(t);
  const agent = await startAgent(t, { instances: [inst.config({ idleTimeout: '10m' })] });
  const seen = watchEvents(agent, inst, 'web');
  for (let cycle = 0; cycle < 3; cycle++) {
    t.true(await agent.detector.sleepNow('web'));
    t.is(await inst.cgroup.freezerState(), 'FROZEN');
    await agent.detector.earlyThaws.settled();
    const running = nextState(agent, 'web', 'running', 3000);
    const r = await get(`${inst.app.url}/`, 3000);
    await running;
    t.is(r.status, 200);
  }
  t.is(seen.length, 3, 'one wake event per sleep');
  for (const { event, freezer, detectorState } of seen) {
    t.is(event.thaw?.kind, 'thawed', 'the reader says it thawed it');
    t.is(freezer, 'THAWED', 'already thawed when the agent heard of the event');
    t.is(detectorState, 'sleeping', 'before the agent had started its own wake');
  }
  const instance = agent.detector.get('web')!;
  t.is(instance.wakes, 3);
  t.true(instance.lastWakeMs! > 0 && instance.lastWakeMs! < 50, `wake reaction ${instance.lastWakeMs} ms`);
  t.log(`wake reactions measured to the reader's thaw; last ${instance.lastWakeMs!.toFixed(2)} ms`);
  // What the operator sees: each wake says who thawed it, the page marks it, the metric counts it.
  const wakes = (await (await fetch(`http://${agent.address}/api/wakes`)).json()) as Array<{ thawedBy: string | null }>;
  t.deepEqual(wakes.map((w) => w.thawedBy), ['event-reader', 'event-reader', 'event-reader']);
  t.true((await (await fetch(`http://${agent.address}/`)).text()).includes('at the event'));
  t.regex(await (await fetch(`http://${agent.address}/metrics`)).text(), /doze_wakes_thawed_at_event_total\{instance="web",runtime="freezer"\} 3/);
});

rootTest.serial('earlyThaw: false leaves the thaw to the agent: the cgroup is still frozen when the event reaches it', async (t) => {
  const inst = await createInstance(t);
  const agent = await startAgent(t, { earlyThaw: false, instances: [inst.config({ idleTimeout: '10m' })] });
  const seen = watchEvents(agent, inst, 'web');
  await agent.detector.sleepNow('web');
  const running = nextState(agent, 'web', 'running', 3000);
  t.is((await get(`${inst.app.url}/`, 3000)).status, 200);
  await running;
  t.is(seen.length, 1);
  t.is(seen[0]!.event.thaw, undefined);
  t.is(seen[0]!.freezer, 'FROZEN');
  t.is(await inst.cgroup.freezerState(), 'THAWED', 'the agent thawed it');
  const wakes = (await (await fetch(`http://${agent.address}/api/wakes`)).json()) as Array<{ thawedBy: string | null }>;
  t.deepEqual(wakes.map((w) => w.thawedBy), ['agent']);
});

rootTest.serial('hold mode is never armed: the agent hands the held connection over itself', async (t) => {
  const inst = await createInstance(t);
  const agent = await startAgent(t, { instances: [inst.config({ idleTimeout: '10m', wake: 'hold' })] });
  await agent.detector.sleepNow('web');
  await agent.detector.earlyThaws.settled();
  t.false(agent.detector.earlyThaws.isArmed(agent.detector.get('web')!));
  // The held connection wakes it (its packets go to the hold listener, not to the instance).
  let frozenAtWake = '';
  agent.detector.on('transition', (e) => {
    if (e.to === 'waking') frozenAtWake = readFileSync(join(inst.cgroup.dir, 'freezer.state'), 'utf8').trim();
  });
  const running = nextState(agent, 'web', 'running', 3000);
  t.is((await get(`${inst.app.url}/`, 3000)).status, 200);
  await running;
  t.is(frozenAtWake, 'FROZEN', 'still frozen when the agent began its wake');
});

rootTest.serial('budget: a sleeper that must wait for room is not thawed early; one that fits is', async (t) => {
  const [a, b] = await Promise.all([createInstance(t, 'a'), createInstance(t, 'b')]);
  const agent = await startAgent(t, {
    budget: { maxActive: 1 },
    instances: [a!.config({ idleTimeout: '10m' }), b!.config({ idleTimeout: '10m' })],
  });
  const seenA = watchEvents(agent, a!, 'a');
  const seenB = watchEvents(agent, b!, 'b');
  // a awake, b asleep: the budget is full, so b's wake must first put a to sleep.
  await agent.detector.sleepNow('b');
  await inState(agent, 'a', 'running');
  await agent.detector.earlyThaws.settled();
  const aSleeps = nextState(agent, 'a', 'sleeping', 3000);
  const bRuns = nextState(agent, 'b', 'running', 3000);
  t.is((await get(`${b!.app.url}/`, 3000)).status, 200);
  await Promise.all([aSleeps, bRuns]);
  t.is(seenB.length, 1);
  t.is(seenB[0]!.event.thaw, undefined, 'no early thaw: there was no room');
  t.is(seenB[0]!.freezer, 'FROZEN');
  // Now a is asleep and b awake; put b to sleep too: a fits without making room.
  await agent.detector.sleepNow('b');
  await agent.detector.earlyThaws.settled();
  const aRuns = nextState(agent, 'a', 'running', 3000);
  t.is((await get(`${a!.app.url}/`, 3000)).status, 200);
  await aRuns;
  t.is(seenA.length, 1);
  t.is(seenA[0]!.event.thaw?.kind, 'thawed', 'room for one: thawed at the event');
  t.is(seenA[0]!.freezer, 'THAWED');
});
