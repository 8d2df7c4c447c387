import type { ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import type { TransitionEvent } from '../../agent/detector/detector.js';
import { inState, startAgent } from '../helpers/agent.js';
import { createInstance } from '../helpers/instance.js';
import { createAllocationEnv, createNomadCgroupRoot } from '../helpers/nomad-alloc.js';
import { rootTest } from '../helpers/root.js';

/**
 * What `nomad alloc exec` does to a task's cgroup (runc's setns process writes the new pid
 * into cgroup.procs, then execs the command): here a bash that stamps the time, writes itself
 * into the sleeping instance's freezer cgroup, stamps it again and execs `true`. A process
 * written into a frozen cgroup freezes at once, so the second stamp comes only after the thaw.
 */
function enter(procsFile: string): Promise<{ exitCode: number | null; enteredAtMs: number; entryToRunningMs: number; totalMs: number }> {
  const started = performance.now();
  const child = spawn('bash', ['-c', `echo $EPOCHREALTIME; echo $$ > ${procsFile}; echo $EPOCHREALTIME; exec true`], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`the process that entered the cgroup did not finish within 5 s (printed ${JSON.stringify(out)})`));
    }, 5000);
    child.once('exit', (exitCode) => {
      clearTimeout(timer);
      const [before, after] = out.trim().split('\n').map(Number);
      resolve({ exitCode, enteredAtMs: before! * 1000, entryToRunningMs: (after! - before!) * 1000, totalMs: performance.now() - started });
    });
  });
}

/** A freezer instance on cgroup2 (cgroup.freeze), laid out as Nomad's v2 task cgroups. */
async function v2Instance(t: ExecutionContext) {
  const cgroups = await createNomadCgroupRoot(t, 2);
  const env = await createAllocationEnv(t, cgroups);
  const agent = await startAgent(t, { instances: [{ id: 'web', address: env.app.address, interface: env.ns.hostIf, idleTimeout: '300ms', runtime: { kind: 'freezer', cgroup: env.cgroup.dir } }] });
  await inState(agent, 'web', 'sleeping', 3000);
  t.is(await env.cgroup.freezerState(), 'FROZEN');
  return { agent, env, web: agent.detector.get('web')! };
}

// The README's setup: an app in a freezer cgroup, nothing else.
rootTest.serial('a process started into a sleeping instance\'s cgroup (as nomad alloc exec does) runs to completion within 1 s, and the instance wakes once', async (t) => {
  const inst = await createInstance(t);
  const agent = await startAgent(t, { instances: [inst.config({ idleTimeout: '300ms' })] });
  await inState(agent, 'web', 'sleeping', 3000);
  t.is(await inst.cgroup.freezerState(), 'FROZEN');
  const web = agent.detector.get('web')!;
  const wakesBefore = web.wakes;
  const transitions: TransitionEvent[] = [];
  agent.detector.on('transition', (e) => transitions.push(e));
  const entry = await enter(inst.cgroup.procsFile);
  t.is(entry.exitCode, 0);
  t.true(entry.totalMs < 1000, `ran to completion in ${entry.totalMs.toFixed(0)} ms`);
  // The thawed process may finish before the agent has declared the wake done.
  await inState(agent, 'web', 'running', 1000);
  t.is(web.wakes, wakesBefore + 1, 'one wake');
  const wakes = transitions.filter((e) => e.to === 'waking');
  t.is(wakes.length, 1);
  t.regex(wakes[0]!.reason, /a process entered its cgroup/);
  // Soon after the write the instance is thawed (`running`: the runtime's wake is done). The
  // process itself runs when the kernel schedules it (it printed its second stamp then).
  const awakeMs = transitions.find((e) => e.to === 'running')!.at - entry.enteredAtMs;
  t.log(`entered → instance running ${awakeMs.toFixed(1)} ms, → the process running again ${entry.entryToRunningMs.toFixed(1)} ms`);
  // The 100 ms target is held on the median of 20 entries (next test); one sample on a machine at
  // load average 20 (2 cores) reached 144 ms, so a single one gets that margin.
  t.true(awakeMs < 250, `entered → instance running in ${awakeMs.toFixed(1)} ms`);
  // Nothing else woke it: it sleeps again on its idle timeout.
  await inState(agent, 'web', 'sleeping', 3000);
  t.is(web.wakes, wakesBefore + 1);
});

rootTest.serial('process-entry wake latency over 20 entries (p50 under 100 ms; the figures are logged)', async (t) => {
  const inst = await createInstance(t);
  // 300 ms: a shorter idle timeout could put the instance back to sleep before the entered
  // process has finished on a loaded machine (it is then an awake instance's process, frozen at
  // its idle timeout like any other).
  const agent = await startAgent(t, { instances: [inst.config({ idleTimeout: '300ms' })] });
  const web = agent.detector.get('web')!;
  const awake: number[] = [];
  const resumed: number[] = [];
  let runningAt = 0;
  agent.detector.on('transition', (e) => e.to === 'running' && (runningAt = e.at));
  for (let i = 0; i < 20; i++) {
    await inState(agent, 'web', 'sleeping', 3000);
    const wakes = web.wakes;
    const entry = await enter(inst.cgroup.procsFile);
    t.is(entry.exitCode, 0, `entry ${i}: exit code`);
    await inState(agent, 'web', 'running', 1000);
    t.is(web.wakes, wakes + 1, `entry ${i}: one wake (state ${web.state})`);
    awake.push(runningAt - entry.enteredAtMs);
    resumed.push(entry.entryToRunningMs);
  }
  const summary = (values: number[]) => {
    const sorted = [...values].sort((a, b) => a - b);
    return { p50: sorted[Math.floor(sorted.length / 2)]!, max: sorted.at(-1)! };
  };
  const a = summary(awake);
  const r = summary(resumed);
  t.log(`20 entries: entered → instance running p50 ${a.p50.toFixed(1)} ms, max ${a.max.toFixed(1)} ms; → the process running again p50 ${r.p50.toFixed(1)} ms, max ${r.max.toFixed(1)} ms`);
  t.true(a.p50 < 100, `p50 ${a.p50.toFixed(1)} ms`);
});

rootTest.serial('cgroup2: a process written into a sleeping instance\'s cgroup runs to completion within 1 s, with one wake', async (t) => {
  const { agent, env, web } = await v2Instance(t);
  const wakes = web.wakes;
  const entry = await enter(env.cgroup.procsFile);
  t.is(entry.exitCode, 0);
  t.true(entry.totalMs < 1000, `ran to completion in ${entry.totalMs.toFixed(0)} ms`);
  await inState(agent, 'web', 'running', 1000);
  t.is(web.wakes, wakes + 1);
  await inState(agent, 'web', 'sleeping', 3000);
  t.is(web.wakes, wakes + 1, 'no second wake');
});

