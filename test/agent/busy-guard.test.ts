import type { ExecutionContext } from 'ava';
import { existsSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TransitionEvent } from '../../agent/detector/detector.js';
import { inState, nextState, startAgent } from '../helpers/agent.js';
import { createAccountingCgroups } from '../helpers/cpu-cgroup.js';
import { get } from '../helpers/http.js';
import { createInstance, type TestInstance } from '../helpers/instance.js';
import { createMemoryInstance } from '../helpers/memory-instance.js';
import { createFreezerCgroup, sampleFreezerStates } from '../helpers/cgroup.js';
import { createNetns } from '../helpers/netns.js';
import { uniqueSuffix } from '../helpers/names.js';
import { rootTest } from '../helpers/root.js';
import { describeHold } from '../../agent/detector/reasons.js';

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A freezer instance whose app is also in cpuacct/blkio cgroups at the same path, as Nomad lays out v1 task cgroups. */
async function accountedInstance(t: Parameters<typeof createInstance>[0]): Promise<TestInstance> {
  const inst = await createInstance(t);
  const accounting = await createAccountingCgroups(t, inst.cgroup.name);
  await accounting.join(inst.app.child.pid!);
  return inst;
}

function doneFile(t: { teardown(fn: () => unknown): void }): string {
  const file = join(tmpdir(), `dz-job-${uniqueSuffix()}`);
  t.teardown(() => rm(file, { force: true }));
  return file;
}

/** Polls a file the app writes (no traffic to the instance), bounded. */
async function waitForFile(file: string, timeoutMs: number): Promise<boolean> {
  const until = performance.now() + timeoutMs;
  while (performance.now() < until) {
    if (existsSync(file)) return true;
    await delay(20);
  }
  return existsSync(file);
}

/**
 * Asks the app for a 1.5 s job computed after its answer, then sends nothing more and waits (3 s at
 * most) for the job's done file, sampling the cgroup's freezer state throughout (`onSample` on each).
 * What the job took is counted from the answer.
 */
async function backgroundJob(t: ExecutionContext, inst: { app: { url: string }; cgroup: Parameters<typeof sampleFreezerStates>[0] }, onSample?: () => void) {
  const done = doneFile(t);
  const sampler = sampleFreezerStates(inst.cgroup, onSample);
  const answer = await get(`${inst.app.url}/job?ms=1500&done=${done}`, 3000);
  const acceptedAt = Date.now();
  t.regex(answer.body, /^accepted/);
  const finished = await waitForFile(done, 3000);
  await sampler.stop();
  const tookMs = finished ? Number((await readFile(done, 'utf8')).trim()) - acceptedAt : undefined;
  return { finished, tookMs, states: sampler.states };
}

rootTest.serial('a job computing 1.5 s in the background after its answer finishes before the instance sleeps (idle timeout 300 ms)', async (t) => {
  const inst = await accountedInstance(t);
  const agent = await startAgent(t, { instances: [inst.config({ idleTimeout: '300ms' })] });
  const heldBy = new Set<string>();
  const { finished, tookMs, states } = await backgroundJob(t, inst, () => {
    const reason = agent.detector.get('web')!.heldBy;
    if (reason) heldBy.add(describeHold(reason));
  });
  t.true(finished, 'the job finished within 3 s of being accepted, with no further traffic');
  t.true(tookMs! < 3000, `the job took ${tookMs} ms`);
  t.deepEqual([...states], ['THAWED'], 'never frozen while it computed');
  t.is(agent.detector.get('web')!.sleeps, 0);
  t.true([...heldBy].some((r) => /^busy: \d+ ms CPU in the last \d+ ms$/.test(r)), `held by: ${[...heldBy].join(' | ')}`);
  const transitions: TransitionEvent[] = [];
  agent.detector.on('transition', (e) => transitions.push(e));
  await nextState(agent, 'web', 'sleeping', 2000);
  t.is(await inst.cgroup.freezerState(), 'FROZEN', 'and it sleeps after the job');
  t.regex(transitions.find((e) => e.to === 'pausing')!.reason, /after \d+ ms busy/);
});

/**
 * A 1.5 s background job, from the setup users have: the app's freezer cgroup (and for `make demo` a
 * memory cgroup of the same name) and nothing else; its CPU is counted in the node-wide root of
 * cpuacct, which the guard must not read as the instance's.
 */
async function jobFinishesThenSleeps(t: ExecutionContext, setup: 'readme' | 'demo'): Promise<void> {
  const inst = setup === 'readme' ? await createInstance(t) : await createMemoryInstance(t, 0);
  const agent = await startAgent(t, { instances: [inst.config({ idleTimeout: '500ms', idlePolicy: 'requests', wake: 'retry' })] });
  const { finished, tookMs, states } = await backgroundJob(t, inst);
  t.true(finished, `the job finished within 3 s of being accepted, with no further traffic (freezer states seen: ${[...states].join(', ')})`);
  if (finished) t.true(tookMs! < 3000);
  t.deepEqual([...states], ['THAWED'], 'never frozen while it computed');
  const [view] = (await (await fetch(`http://${agent.address}/api/instances`)).json()) as Array<{ busyGuard: { source: string; processes?: number } }>;
  t.like(view!.busyGuard, { source: 'procfs', processes: 1 });
  await inState(agent, 'web', 'sleeping', 2000);
  t.is(await inst.cgroup.freezerState(), 'FROZEN', 'and it sleeps after the job');
}

rootTest.serial('as the README sets it up (a freezer cgroup, no cpuacct cgroup of its own): a 1.5 s background job finishes within 3 s, then the instance sleeps; the API says the guard reads procfs', (t) => jobFinishesThenSleeps(t, 'readme'));
rootTest.serial('as make demo sets it up (freezer and memory cgroups, no cpuacct cgroup of its own): the same', (t) => jobFinishesThenSleeps(t, 'demo'));

rootTest.serial('an instance whose CPU cannot be read says so in GET /api/instances and on the status page, not only in the log', async (t) => {
  // Its freezer cgroup holds no process yet (a task that has not started): nothing to read.
  const ns = await createNetns(t);
  const cgroup = await createFreezerCgroup(t);
  const agent = await startAgent(t, { instances: [{ id: 'web', address: `${ns.instanceIp}:8080`, interface: ns.hostIf, idleTimeout: '300ms', runtime: { kind: 'freezer', cgroup: cgroup.name } }] });
  const [view] = (await (await fetch(`http://${agent.address}/api/instances`)).json()) as Array<{ busyGuard: { source: string; reason?: string; message?: string } }>;
  t.deepEqual(view!.busyGuard, { source: 'unavailable', reason: 'no-processes', message: 'its cgroup holds no process yet' });
  const page = await (await fetch(`http://${agent.address}/`)).text();
  t.regex(page, /class="warn">busy guard: no CPU reading \(its cgroup holds no process yet\)/);
});

rootTest.serial('a background wait on a timer uses no CPU: not busy, the instance sleeps on time', async (t) => {
  const inst = await accountedInstance(t);
  const agent = await startAgent(t, { instances: [inst.config({ idleTimeout: '300ms' })] });
  const done = doneFile(t);
  const answer = await get(`${inst.app.url}/wait?ms=1500&done=${done}`, 3000);
  const answeredAt = performance.now();
  t.regex(answer.body, /^accepted/);
  await nextState(agent, 'web', 'sleeping', 2000);
  const after = performance.now() - answeredAt;
  t.true(after <= 300 + 100 + 50, `slept ${after.toFixed(0)} ms after the answer (idle timeout 300 ms)`);
  t.false(existsSync(done), 'the timer had not fired yet: the instance slept before it');
});

rootTest.serial('a busy loop that never ends sleeps at maxAwake, and the transition says why', async (t) => {
  const inst = await accountedInstance(t);
  const agent = await startAgent(t, { instances: [inst.config({ idleTimeout: '300ms', maxAwake: '1500ms' })] });
  const transitions: TransitionEvent[] = [];
  agent.detector.on('transition', (e) => transitions.push(e));
  const answer = await get(`${inst.app.url}/spin`, 3000);
  const answeredAt = performance.now();
  t.regex(answer.body, /^accepted/);
  await nextState(agent, 'web', 'sleeping', 4000);
  const after = performance.now() - answeredAt;
  t.true(after >= 1400 && after <= 1500 + 500, `slept ${after.toFixed(0)} ms after the answer (maxAwake 1500 ms)`);
  const pausing = transitions.find((e) => e.to === 'pausing')!;
  t.regex(pausing.reason, /^max_awake: no packet for \d+ ms despite busy: \d+ ms CPU in the last \d+ ms$/);
  t.is(await inst.cgroup.freezerState(), 'FROZEN');
});

rootTest.serial('busyCpu 0 turns the guard off: a computing instance sleeps at its idle timeout', async (t) => {
  const inst = await accountedInstance(t);
  const agent = await startAgent(t, { instances: [inst.config({ idleTimeout: '300ms', busyCpu: 0 })] });
  await get(`${inst.app.url}/spin`, 3000);
  const answeredAt = performance.now();
  await nextState(agent, 'web', 'sleeping', 2000);
  t.true(performance.now() - answeredAt <= 300 + 100 + 50);
});
