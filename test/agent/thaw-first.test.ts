import type { ExecutionContext } from 'ava';
import type { TransitionEvent } from '../../agent/detector/detector.js';
import type { Agent } from '../../agent/agent.js';
import { webJob } from '../doubles/nomad/fixtures.js';
import type { NomadDouble } from '../doubles/nomad/nomad-double.js';
import { startNomadDouble } from '../doubles/nomad/with-double.js';
import { inState, startAgent } from '../helpers/agent.js';
import { createAllocationEnv, createNomadCgroupRoot, type TestAllocation } from '../helpers/nomad-alloc.js';
import { rootTest } from '../helpers/root.js';
import { until } from '../helpers/until.js';
import { describeHold } from '../../agent/detector/reasons.js';

/*
 * Nomad's client kills, restarts and signals a task without changing the allocation's desired
 * status (`nomad alloc restart`, `alloc signal`, a template's change_mode, check_restart). It
 * records a task event first (Killing, Restart Signaled, Signaling) and syncs it to the servers,
 * whose event stream the agent reads. A frozen v1 task takes no signal until it is thawed.
 */

const FAST = { minBackoffMs: 20, maxBackoffMs: 200, pendingMinMs: 20, pendingMaxMs: 200, consulResyncMs: 200 };

async function sleepingAllocation(t: ExecutionContext): Promise<{ nomad: NomadDouble; agent: Agent; env: TestAllocation; id: string }> {
  const nomad = await startNomadDouble(t);
  const job = webJob({ id: 'web', groupMeta: { 'doze.enabled': 'true', 'doze.idle_timeout': '300ms' } });
  const group = (job.TaskGroups as Array<{ Tasks: Array<Record<string, unknown>> }>)[0]!;
  group.Tasks[0]!.Driver = 'exec';
  nomad.registerJob(job);
  const cgroups = await createNomadCgroupRoot(t);
  const env = await createAllocationEnv(t, cgroups);
  const agent = await startAgent(t, { nomad: { address: nomad.url, cgroupRoot: cgroups.root, nodeId: 'node-1' } }, { nomadInstances: FAST });
  const alloc = nomad.addAllocation({ id: env.allocId, jobId: 'web', group: 'web', nodeId: 'node-1', bridgeAddress: env.ns.instanceIp });
  const id = `web.web.${String(alloc.ID).replace(/-/g, '').slice(0, 8)}`;
  await until('the instance', () => agent.detector.get(id), 3000);
  await inState(agent, id, 'sleeping', 3000);
  t.is(await env.cgroup.freezerState(), 'FROZEN');
  return { nomad, agent, env, id };
}

rootTest.serial('a Killing event for a sleeping task thaws it, so the SIGTERM Nomad sent with it lands at once: the task shuts down gracefully within 1 s', async (t) => {
  const { nomad, agent, env, id } = await sleepingAllocation(t);
  const transitions: TransitionEvent[] = [];
  agent.detector.on('transition', (e) => e.instance.id === id && transitions.push(e));
  const exited = new Promise<number | null>((resolve) => env.app.child.once('exit', (code) => resolve(code)));
  const sent = performance.now();
  nomad.taskEvent(env.allocId, env.task, 'Killing', { KillTimeout: 5e9, DisplayMessage: 'Sent interrupt. Waiting 5s before force killing' });
  // The executor sends SIGTERM as the event goes out; the client syncs the event to the servers
  // within 200 ms (allocSyncIntv), so doze sees it after the signal: the frozen task holds it pending.
  env.app.child.kill('SIGTERM');
  await until('thawed', async () => (await env.cgroup.freezerState()) === 'THAWED', { timeoutMs: 1000, everyMs: 2 });
  const thawedMs = performance.now() - sent;
  t.log(`Killing event published → task thawed in ${thawedMs.toFixed(1)} ms`);
  t.true(thawedMs < 500, `thawed ${thawedMs.toFixed(0)} ms after the event`);
  t.regex(transitions.find((e) => e.to === 'waking')?.reason ?? '', /^nomad: Killing \(Sent interrupt/);
  const code = await Promise.race([exited, new Promise<'hung'>((resolve) => setTimeout(() => resolve('hung'), 1000))]);
  t.is(code, 0, 'its SIGTERM handler ran: a graceful exit within 1 s, not a kill at kill_timeout + 15 s');
});

rootTest.serial('after a Killing event the instance stays awake through the task\'s shutdown, past its idle timeout', async (t) => {
  const { nomad, agent, env, id } = await sleepingAllocation(t);
  nomad.taskEvent(env.allocId, env.task, 'Killing', { KillTimeout: 5e9 });
  await inState(agent, id, 'running', 1000);
  // A task draining on SIGTERM (no traffic, little CPU) must not be frozen half way.
  await new Promise((resolve) => setTimeout(resolve, 700));
  t.is(agent.detector.get(id)!.state, 'running');
  t.is(await env.cgroup.freezerState(), 'THAWED');
  t.regex(agent.detector.get(id)!.heldBy ? describeHold(agent.detector.get(id)!.heldBy!) : '', /^nomad: Killing: awake while Nomad stops the task$/);
});

rootTest.serial('Restart Signaled (nomad alloc restart, a template with change_mode restart) and Signaling (alloc signal, change_mode signal) wake a sleeper once each', async (t) => {
  const { nomad, agent, env, id } = await sleepingAllocation(t);
  const instance = agent.detector.get(id)!;
  const wakes = instance.wakes;
  nomad.taskEvent(env.allocId, env.task, 'Signaling', { DisplayMessage: 'Template re-rendered', TaskSignal: 'SIGHUP' });
  await until('awake', () => instance.state === 'running', 1000);
  t.is(instance.wakes, wakes + 1);
  t.is(await env.cgroup.freezerState(), 'THAWED');
  nomad.updateAllocation(env.allocId, { ClientDescription: 'the same events, sent again' });
  nomad.taskEvent(env.allocId, env.task, 'Restart Signaled', { DisplayMessage: 'User requested restart' });
  await new Promise((resolve) => setTimeout(resolve, 300));
  t.is(instance.wakes, wakes + 1, 'awake already: no second wake');
  t.is(instance.state, 'running');
});
