/**
 * Health stub under load (issue 3): a sleeping freezer instance, the eBPF
 * programs attached, the marking and redirect rules in place, and wrk as the
 * checker uid on loopback-routed traffic to the instance's address, so every
 * check takes the production path (CONNMARK → DNAT → stub). Each check is a
 * new connection, as Consul's are (the stub closes after every answer).
 */
import { execFile } from 'node:child_process';
import { nextState, startAgent } from '../test/helpers/agent.js';
import { CHECKER_UID } from '../test/helpers/checker.js';
import { createInstance } from '../test/helpers/instance.js';
import { Cleanups } from '../test/helpers/teardown.js';
import { verdict } from './stats.js';

function wrk(url: string, connections: number, seconds: number, newConnectionEach: boolean): Promise<string> {
  const args = ['--reuid', String(CHECKER_UID), '--regid', String(CHECKER_UID), '--clear-groups',
    'wrk', '-t2', `-c${connections}`, `-d${seconds}s`, '--latency', '-H', 'User-Agent: Consul Health Check',
    ...(newConnectionEach ? ['-H', 'Connection: close'] : []), url];
  return new Promise((resolve, reject) => {
    execFile('setpriv', args, { timeout: (seconds + 30) * 1000 }, (error, stdout, stderr) => (error ? reject(new Error(stderr || error.message)) : resolve(stdout)));
  });
}

function parseWrk(out: string): { rps: number; p99ms: number; p50ms: number; errors: string } {
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? Number.NaN);
  const ms = (label: string) => {
    const m = new RegExp(`${label}%\\s+([\\d.]+)(us|ms|s)`).exec(out);
    if (!m) return Number.NaN;
    const v = Number(m[1]);
    return m[2] === 'us' ? v / 1000 : m[2] === 's' ? v * 1000 : v;
  };
  const errors = /Socket errors:[^\n]*|Non-2xx[^\n]*/g;
  return { rps, p50ms: ms('50'), p99ms: ms('99'), errors: (out.match(errors) ?? []).join('; ') || 'none' };
}

export async function benchStub(): Promise<string[]> {
  const cleanups = new Cleanups();
  try {
    const inst = await createInstance(cleanups, 'stub');
    const agent = await startAgent(cleanups, { healthChecks: { fromUid: CHECKER_UID }, instances: [inst.config({ idleTimeout: '100ms' })] });
    await nextState(agent, 'stub', 'sleeping', 5000);
    const lines = ['health stub under wrk as the checker uid (CONNMARK → DNAT → stub)'];
    let best = { rps: 0, p99ms: Number.NaN, connections: 0 };
    for (const [connections, fresh] of [[8, false], [16, false], [32, false], [8, true]] as const) {
      const r = parseWrk(await wrk(`${inst.app.url}/health`, connections, 5, fresh));
      lines.push(`${String(connections).padStart(3)} ${fresh ? 'new connection per check' : 'keep-alive connections  '}: ${r.rps.toFixed(0).padStart(6)} checks/s  p50 ${r.p50ms.toFixed(2)} ms  p99 ${r.p99ms.toFixed(2)} ms  errors: ${r.errors}`);
      if (!fresh && r.p99ms < 5 && r.rps > best.rps) best = { rps: r.rps, p99ms: r.p99ms, connections };
    }
    lines.push('(a new connection per check from one address is bounded by TIME_WAIT: 28k ephemeral ports / 60 s; Consul sends one check per instance per interval)');
    const instance = agent.detector.get('stub')!;
    lines.push(`instance stayed ${instance.state} (wakes ${instance.wakes}); stub answered ${instance.checksAnswered} checks`);
    lines.push(verdict(best.rps >= 10_000 && instance.wakes === 0, `target ≥ 10,000 checks/s at p99 < 5 ms (best: ${best.rps.toFixed(0)}/s at ${best.connections} connections)`));
    return lines;
  } finally {
    await cleanups.run();
  }
}
