/**
 * The soak's clients (bench/soak.ts): tracked HTTP requests from this process and paced wrk
 * bursts. Every request is registered in its target's `inflight` set from the moment it is on the
 * wire until it is answered, so a sampler can tell a request the agent froze under from one that
 * was sent to an instance already asleep (which is how a wake starts).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';

/** A request's lifetime as the sampler sees it; `sentAt` (epoch ms) stays Infinity until it is on the wire. */
export interface Flight {
  kind: string;
  sentAt: number;
}

export interface Target {
  id: string;
  url: string;
  /** Requests in flight to this instance. */
  inflight: Set<Flight>;
  /** Pooled connection that lives across sleeps (maxSockets 1). */
  keepAlive: http.Agent;
  /** The agent's state for it, as last heard from the agent's events. */
  state: string;
  /** Its last few transitions, for the story around a failure. */
  recent: string[];
}

export interface TrafficTotals {
  sent: number;
  failed: number;
  failures: string[];
  /** Latency of the bench's own quick requests (not the slow ones), split by whether the instance was asleep when each was sent. */
  coldMs: number[];
  warmMs: number[];
  wrkRuns: number;
  wrkRequests: number;
  wrkErrors: number;
}

export function emptyTotals(): TrafficTotals {
  return { sent: 0, failed: 0, failures: [], coldMs: [], warmMs: [], wrkRuns: 0, wrkRequests: 0, wrkErrors: 0 };
}

/** Generous: a wake under this machine's load must not be mistaken for a lost request, a hang must. */
export const REQUEST_TIMEOUT_MS = 10_000;
const KEEP_FAILURES = 20;
const WRK_SCRIPT = fileURLToPath(new URL('./soak.lua', import.meta.url));
/** wrk runs 1 s; past this it is killed and its burst counts as failed. */
const WRK_KILL_MS = 15_000;

function fail(totals: TrafficTotals, what: string): void {
  totals.failed++;
  if (totals.failures.length < KEEP_FAILURES) totals.failures.push(`${new Date().toISOString().slice(11, 23)} ${what}`);
}

/**
 * One GET; resolves (never rejects) once it is answered or has failed. `expect` checks the body:
 * an answer from anything but the app (the health stub, say) is a failure.
 */
export function trackedGet(target: Target, path: string, kind: string, totals: TrafficTotals, expect: RegExp, pooled: boolean): Promise<void> {
  return new Promise((resolve) => {
    const flight: Flight = { kind, sentAt: Number.POSITIVE_INFINITY };
    const cold = target.state !== 'running';
    const started = performance.now();
    let settled = false;
    const done = (error?: string) => {
      if (settled) return;
      settled = true;
      target.inflight.delete(flight);
      totals.sent++;
      if (error !== undefined) fail(totals, `${target.id} ${kind} ${path} (${cold ? 'asleep' : 'awake'} when sent): ${error} [${target.recent.join(' → ')}]`);
      else if (kind !== 'slow') (cold ? totals.coldMs : totals.warmMs).push(performance.now() - started);
      resolve();
    };
    target.inflight.add(flight);
    const req = http.get(`${target.url}${path}`, { agent: pooled ? target.keepAlive : false, timeout: REQUEST_TIMEOUT_MS }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => done(res.statusCode === 200 && expect.test(body) ? undefined : `status ${res.statusCode}: ${body.slice(0, 80).trim()}`));
      res.on('error', (error) => done(error.message));
    });
    // On the wire: a fresh connection once connected (its SYN has passed the tc program by then),
    // a pooled one once the request is written (the same tick it is handed the socket).
    req.on('socket', (socket) => {
      const stamp = () => (flight.sentAt = Date.now());
      if (socket.connecting) socket.once('connect', stamp);
      else setImmediate(stamp);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${REQUEST_TIMEOUT_MS} ms`)));
    req.on('error', (error) => done(error.message));
  });
}

const wrkSummarySchema = z.object({
  requests: z.number(),
  connect: z.number(),
  read: z.number(),
  write: z.number(),
  status: z.number(),
  timeout: z.number(),
  p99us: z.number(),
  maxus: z.number(),
});

/**
 * One paced wrk burst (2 connections, 1 s, a request every 10 ms per connection after each
 * answer). In flight, for the sampler, from its first answer to its exit: the wrk kind is
 * reported apart, since between an answer and the next request nothing is strictly in flight.
 */
export function wrkBurst(target: Target, totals: TrafficTotals, live: Set<ChildProcess>): Promise<void> {
  return new Promise((resolve) => {
    const flight: Flight = { kind: 'wrk', sentAt: Number.POSITIVE_INFINITY };
    const child = spawn('wrk', ['-t1', '-c2', '-d1s', '--timeout', '2s', '-s', WRK_SCRIPT, `${target.url}/`], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, DOZE_SOAK_PACE_MS: '10' },
    });
    live.add(child);
    const kill = setTimeout(() => child.kill('SIGKILL'), WRK_KILL_MS);
    let summary: z.infer<typeof wrkSummarySchema> | undefined;
    let stderr = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => (stderr = (stderr + chunk).slice(-500)));
    readline.createInterface({ input: child.stdout! }).on('line', (line) => {
      if (line === 'first') {
        flight.sentAt = Date.now();
        target.inflight.add(flight);
        return;
      }
      if (!line.startsWith('{')) return;
      try {
        const parsed = wrkSummarySchema.safeParse(JSON.parse(line));
        if (parsed.success) summary = parsed.data;
      } catch {
        // not the summary
      }
    });
    let settled = false;
    const finish = (why?: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(kill);
      live.delete(child);
      target.inflight.delete(flight);
      totals.wrkRuns++;
      if (!summary) {
        fail(totals, `${target.id} wrk: ${why ?? 'no summary'} ${stderr.trim()} [${target.recent.join(' → ')}]`);
      } else {
        const errors = summary.connect + summary.read + summary.write + summary.status + summary.timeout;
        totals.wrkRequests += summary.requests;
        totals.wrkErrors += errors;
        totals.sent += summary.requests;
        if (errors > 0) {
          totals.failed += errors - 1;
          fail(totals, `${target.id} wrk: ${errors} error(s) in ${summary.requests} requests (connect ${summary.connect}, read ${summary.read}, write ${summary.write}, status ${summary.status}, timeout ${summary.timeout}); max ${(summary.maxus / 1000).toFixed(1)} ms [${target.recent.join(' → ')}]`);
        }
      }
      resolve();
    };
    child.once('error', (error) => finish(error.message));
    // 'close', not 'exit': the summary line may still be in the pipe at exit.
    child.once('close', (code, signal) => finish(code === 0 ? undefined : `exited ${signal ?? code}`));
  });
}
