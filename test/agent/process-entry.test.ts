import { spawn } from 'node:child_process';
import type { TransitionEvent } from '../../agent/detector/detector.js';
import { inState, startAgent } from '../helpers/agent.js';
import { createInstance } from '../helpers/instance.js';
import { rootTest } from '../helpers/root.js';

/**
 * What `nomad alloc exec` does to a task's cgroup (runc's setns process writes the new pid
 * into cgroup.procs, then execs the command): here a bash that stamps the time, writes itself
 * into the sleeping instance's freezer cgroup, stamps it again and execs `true`. A process
 * written into a frozen cgroup freezes at once, so the second stamp comes only after the thaw.
 */
function enter(procsFile: string): Promise<{ exitCode: number | null; entryToRunningMs: number; totalMs: number }> {
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
      resolve({ exitCode, entryToRunningMs: (after! - before!) * 1000, totalMs: performance.now() - started });
    });
  });
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
  t.true(entry.entryToRunningMs < 100, `entered → running again in ${entry.entryToRunningMs.toFixed(1)} ms`);
  t.is(web.wakes, wakesBefore + 1, 'one wake');
  const wakes = transitions.filter((e) => e.to === 'waking');
  t.is(wakes.length, 1);
  t.regex(wakes[0]!.reason, /a process entered its cgroup/);
  // Nothing else woke it: it sleeps again on its idle timeout.
  await inState(agent, 'web', 'sleeping', 3000);
  t.is(web.wakes, wakesBefore + 1);
});

rootTest.serial('process-entry wake latency over 20 entries (p50 under 100 ms; the figures are logged)', async (t) => {
  const inst = await createInstance(t);
  const agent = await startAgent(t, { instances: [inst.config({ idleTimeout: '100ms' })] });
  const web = agent.detector.get('web')!;
  const latencies: number[] = [];
  for (let i = 0; i < 20; i++) {
    await inState(agent, 'web', 'sleeping', 3000);
    const wakes = web.wakes;
    const entry = await enter(inst.cgroup.procsFile);
    t.is(entry.exitCode, 0);
    t.is(web.wakes, wakes + 1);
    latencies.push(entry.entryToRunningMs);
  }
  latencies.sort((a, b) => a - b);
  const p50 = latencies[Math.floor(latencies.length / 2)]!;
  t.log(`entry → running again, 20 entries: p50 ${p50.toFixed(2)} ms, max ${latencies.at(-1)!.toFixed(2)} ms (all: ${latencies.map((v) => v.toFixed(1)).join(' ')})`);
  t.true(p50 < 100, `p50 ${p50.toFixed(1)} ms`);
});
