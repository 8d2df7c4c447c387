/**
 * Consul check runner DOUBLE (not Consul): runs HTTP, TCP and gRPC checks the
 * way a Consul agent does, so doze's stub, marking and redirect can be tested
 * against the behaviour that decides whether Nomad restarts an allocation.
 *
 * Faithful to hashicorp/consul agent/checks (check.go, grpc.go):
 *  - each check loops: first probe after a random stagger in [0, interval),
 *    then `interval` after the previous probe FINISHED (not a fixed rate);
 *  - timeout 10 s unless set; HTTP GET (method configurable) with
 *    `User-Agent: Consul Health Check`, `Accept: text/plain, text/*, *\/*`,
 *    keep-alives off (every probe is a new TCP connection, `Connection:
 *    close`), Go's `Accept-Encoding: gzip`, redirects followed up to 10;
 *    2xx passing, 429 warning, anything else, an error or a timeout critical;
 *    output `HTTP GET <url>: <status> Output: <body>` keeping the LAST 4 KiB
 *    of the body (Consul's circular buffer keeps the tail, not the head);
 *  - TCP: connect within the timeout = passing, then close;
 *  - gRPC: grpc.health.v1.Health/Check on `host:port[/service]`, passing only
 *    on SERVING;
 *  - success_before_passing / failures_before_warning /
 *    failures_before_critical exactly as Consul's StatusHandler (counters
 *    start at the threshold, so the first result after registration counts).
 *  - checks start `critical` unless an initial status is given.
 * Checker identity: with `uid`, probes run in a long-lived child node process
 * spawned with that uid/gid (probe-worker.mjs), so their sockets are owned by
 * that user and `-m owner --uid-owner` marks them as it would mark the
 * consul user's. With `sourceAddress`, probe sockets bind to that address
 * (Consul in a container, seen by source). Without either, probes run
 * in-process as the test's own user.
 *
 * TLS (agent/checks/check.go with the agent's TLS config): an https URL or
 * GRPCUseTLS verifies the server's certificate against `caPem` (Consul's
 * ca_file; none given: node's default roots) for TLSServerName, else the
 * URL's host, unless TLSSkipVerify.
 *
 * Not covered: TCPUseTLS, UDP, H2PING, script/docker/OS-service/alias checks, Connect-proxied checks
 * (ProxyHTTP/ProxyGRPC), the 1 s minimum interval (Consul raises shorter
 * intervals to 1 s; the double allows them so tests can probe every 100 ms),
 * `check_update_interval` output de-duplication, IPv6 Happy Eyeballs, and
 * exact Go error texts (outputs are close, not byte-identical).
 */
import { spawn } from 'node:child_process';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import readline from 'node:readline';
import { DozeError } from '../../../agent/shared/errors.js';
import { DEFAULT_OUTPUT_MAX, DEFAULT_TIMEOUT_MS, probe as probeInProcess } from './probes.mjs';
import type { CheckStatus, ProbeRequest, ProbeResult } from './probes.mjs';

export type { CheckStatus, ProbeRequest, ProbeResult } from './probes.mjs';
export type CheckKind = 'http' | 'tcp' | 'grpc';

export interface CheckDefinition {
  id: string;
  kind: CheckKind;
  /** http: URL; tcp: host:port; grpc: host:port[/service]. */
  target: string;
  intervalMs: number;
  /** Default 10 s, as Consul. */
  timeoutMs?: number;
  method?: string;
  header?: Record<string, string[]>;
  body?: string;
  disableRedirects?: boolean;
  tlsSkipVerify?: boolean;
  tlsServerName?: string;
  grpcUseTls?: boolean;
  /** Default 4096 bytes, as Consul. */
  outputMaxSize?: number;
  successBeforePassing?: number;
  failuresBeforeCritical?: number;
  /** Defaults to failuresBeforeCritical, as Consul. */
  failuresBeforeWarning?: number;
  /** Default `critical`, as Consul. */
  initialStatus?: CheckStatus;
}

/** One probe, as recorded in `history`. */
export interface CheckResult {
  checkId: string;
  kind: CheckKind;
  /** Epoch ms when the probe finished. */
  at: number;
  durationMs: number;
  /** What this probe alone said. */
  probe: CheckStatus;
  /** The check's status after the thresholds: what Consul would report. */
  status: CheckStatus;
  output: string;
}

/** A status update Consul's StatusHandler would pass on to the agent's state. */
export interface CheckUpdate {
  checkId: string;
  status: CheckStatus;
  output: string;
}

export interface CheckRunnerOptions {
  /** Run probes as this user (needs root). */
  uid?: number;
  /** Group for the probe worker; defaults to `uid`. */
  gid?: number;
  /** Bind probe sockets to this source address. */
  sourceAddress?: string;
  /** The CA (PEM) TLS checks verify against, as Consul's ca_file. */
  caPem?: string;
  /** Random first delay in [0, interval), as Consul. Default true. */
  stagger?: boolean;
  /** Oldest results are dropped beyond this many. Default 100 000. */
  historyLimit?: number;
  /** Called with worker or scheduling errors (never with check failures, which are results). */
  onError?: (error: Error) => void;
}

interface RunningCheck {
  definition: CheckDefinition;
  timer: NodeJS.Timeout | undefined;
  status: CheckStatus;
  output: string;
  successCounter: number;
  failuresCounter: number;
}

interface Pending {
  resolve: (result: ProbeResult & { ms: number }) => void;
  reject: (error: Error) => void;
}

const WORKER = path.join(path.dirname(fileURLToPath(import.meta.url)), 'probe-worker.mjs');
const WORKER_START_MS = 5000;

export class CheckRunner {
  /** Every probe result, oldest first. */
  readonly history: CheckResult[] = [];
  private readonly checks = new Map<string, RunningCheck>();
  private readonly listeners = new Set<(update: CheckUpdate) => void>();
  private readonly pending = new Map<number, Pending>();
  private worker: ChildProcessWithoutNullStreams | undefined;
  /** Set once the worker died: probes must never fall back to the test's own identity. */
  private workerError: Error | undefined;
  private workerUid: number | undefined;
  private seq = 0;
  private stopped = false;

  constructor(private readonly options: CheckRunnerOptions = {}) {}

  /** A started runner. */
  static async create(options: CheckRunnerOptions = {}): Promise<CheckRunner> {
    const runner = new CheckRunner(options);
    await runner.start();
    return runner;
  }

  /** Spawns the probe worker when a uid is configured; resolves once it reports its identity. */
  async start(): Promise<void> {
    if (this.options.uid === undefined || this.worker) return;
    const uid = this.options.uid;
    const gid = this.options.gid ?? uid;
    const child = spawn(process.execPath, [WORKER], {
      uid,
      gid,
      cwd: path.dirname(WORKER),
      // A service user's plain environment: no NODE_OPTIONS loaders (tsx) leak in.
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.worker = child;
    this.workerError = undefined;
    child.stdin.on('error', () => undefined); // a dead worker is reported by 'exit'
    let stderr = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => (stderr = (stderr + chunk).slice(-2000)));

    const ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new DozeError('E_CHECKER_WORKER', `probe worker did not start within ${WORKER_START_MS} ms: ${stderr}`)), WORKER_START_MS);
      child.once('error', (error) => {
        clearTimeout(timer);
        reject(new DozeError('E_CHECKER_WORKER', `cannot spawn probe worker as uid ${uid}: ${error.message}`, { cause: error }));
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        const error = new DozeError('E_CHECKER_WORKER', `probe worker exited (${signal ?? code}): ${stderr}`);
        this.workerError = error;
        reject(error);
        this.failPending(error);
        if (!this.stopped) this.options.onError?.(error);
      });
      const lines = readline.createInterface({ input: child.stdout });
      lines.on('line', (line) => {
        let message: { ready?: boolean; uid?: number; seq?: number; result?: ProbeResult; ms?: number };
        try {
          message = JSON.parse(line) as typeof message;
        } catch {
          return;
        }
        if (message.ready) {
          clearTimeout(timer);
          this.workerUid = message.uid;
          if (message.uid !== uid) reject(new DozeError('E_CHECKER_WORKER', `probe worker runs as uid ${message.uid}, not ${uid}`));
          else resolve();
          return;
        }
        if (message.seq === undefined || !message.result) return;
        const waiter = this.pending.get(message.seq);
        this.pending.delete(message.seq);
        waiter?.resolve({ ...message.result, ms: message.ms ?? 0 });
      });
    });
    try {
      await ready;
    } catch (error) {
      await this.stop();
      throw error;
    }
  }

  /** The worker's pid, while probes run in a separate process. */
  get workerPid(): number | undefined {
    return this.worker?.pid;
  }

  /** The uid the worker reported for itself. */
  get probeUid(): number | undefined {
    return this.worker ? this.workerUid : process.getuid?.();
  }

  /** Starts (or replaces) a check's loop. */
  add(definition: CheckDefinition): void {
    if (this.stopped) throw new DozeError('E_CHECKER_STOPPED', 'check runner is stopped');
    if (!(definition.intervalMs > 0)) throw new DozeError('E_CHECK_INVALID', `check ${definition.id}: interval must be > 0`);
    this.remove(definition.id);
    const successBeforePassing = definition.successBeforePassing ?? 0;
    const failuresBeforeCritical = definition.failuresBeforeCritical ?? 0;
    const check: RunningCheck = {
      definition,
      timer: undefined,
      status: definition.initialStatus ?? 'critical',
      output: '',
      // Consul's NewStatusHandler: counters start at their thresholds.
      successCounter: successBeforePassing,
      failuresCounter: failuresBeforeCritical,
    };
    this.checks.set(definition.id, check);
    const first = this.options.stagger === false ? 0 : Math.random() * definition.intervalMs;
    this.schedule(check, first);
  }

  remove(checkId: string): void {
    const check = this.checks.get(checkId);
    if (!check) return;
    clearTimeout(check.timer);
    this.checks.delete(checkId);
  }

  /** The status Consul would report for the check. */
  status(checkId: string): CheckStatus | undefined {
    return this.checks.get(checkId)?.status;
  }

  output(checkId: string): string | undefined {
    return this.checks.get(checkId)?.output;
  }

  /** Recorded results of one check (or all). */
  results(checkId?: string): CheckResult[] {
    return checkId === undefined ? [...this.history] : this.history.filter((r) => r.checkId === checkId);
  }

  /** Receives every update the StatusHandler passes on; returns an unsubscribe function. */
  subscribe(listener: (update: CheckUpdate) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** One probe under the runner's identity, outside any check loop (no thresholds, no history). */
  async probe(request: ProbeRequest): Promise<ProbeResult & { ms: number }> {
    if (this.stopped) throw new DozeError('E_CHECKER_STOPPED', 'check runner is stopped');
    const withSource = { ...request, localAddress: request.localAddress ?? this.options.sourceAddress };
    if (this.workerError) throw this.workerError;
    const worker = this.worker;
    if (!worker && this.options.uid !== undefined) throw new DozeError('E_CHECKER_WORKER', 'check runner not started: call start() before probing as a uid');
    if (!worker) {
      const started = performance.now();
      const result = await probeInProcess(withSource);
      return { ...result, ms: performance.now() - started };
    }
    const seq = ++this.seq;
    return new Promise((resolve, reject) => {
      this.pending.set(seq, { resolve, reject });
      worker.stdin.write(`${JSON.stringify({ seq, probe: withSource })}\n`);
    });
  }

  /** Stops every loop and kills the worker. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const id of [...this.checks.keys()]) this.remove(id);
    const worker = this.worker;
    this.worker = undefined;
    this.failPending(new DozeError('E_CHECKER_STOPPED', 'check runner stopped'));
    if (!worker || worker.exitCode !== null || worker.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
    worker.stdin.end();
    const kill = setTimeout(() => worker.kill('SIGKILL'), 1000);
    await exited;
    clearTimeout(kill);
  }

  private tlsOf(d: CheckDefinition): { skipVerify: boolean; serverName?: string; caPem?: string } {
    return { skipVerify: d.tlsSkipVerify === true, ...(d.tlsServerName ? { serverName: d.tlsServerName } : {}), ...(this.options.caPem ? { caPem: this.options.caPem } : {}) };
  }

  private schedule(check: RunningCheck, delayMs: number): void {
    check.timer = setTimeout(() => void this.runOnce(check), delayMs);
  }

  private async runOnce(check: RunningCheck): Promise<void> {
    const d = check.definition;
    const timeoutMs = d.timeoutMs !== undefined && d.timeoutMs > 0 ? d.timeoutMs : DEFAULT_TIMEOUT_MS;
    const request: ProbeRequest =
      d.kind === 'http' ? {
        kind: 'http', url: d.target, method: d.method, header: d.header, body: d.body,
        disableRedirects: d.disableRedirects, timeoutMs, outputMaxSize: d.outputMaxSize ?? DEFAULT_OUTPUT_MAX,
        tls: this.tlsOf(d),
      }
      : d.kind === 'tcp' ? { kind: 'tcp', address: d.target, timeoutMs }
      : { kind: 'grpc', target: d.target, timeoutMs, ...(d.grpcUseTls ? { tls: this.tlsOf(d) } : {}) };
    let result: ProbeResult & { ms: number };
    try {
      result = await this.probe(request);
    } catch (error) {
      // The double broke, not the check: record nothing, report, stop this loop.
      if (!this.stopped) this.options.onError?.(error instanceof Error ? error : new Error(String(error)));
      return;
    }
    if (this.checks.get(d.id) !== check) return; // removed or replaced meanwhile
    this.apply(check, result);
    this.schedule(check, d.intervalMs);
  }

  /** Consul's StatusHandler.updateCheck. */
  private apply(check: RunningCheck, result: ProbeResult & { ms: number }): void {
    const d = check.definition;
    const successBeforePassing = d.successBeforePassing ?? 0;
    const failuresBeforeCritical = d.failuresBeforeCritical ?? 0;
    const failuresBeforeWarning = d.failuresBeforeWarning ?? failuresBeforeCritical;
    let update: CheckStatus | undefined;
    if (result.status === 'passing' || result.status === 'warning') {
      check.successCounter++;
      check.failuresCounter = 0;
      if (check.successCounter >= successBeforePassing) update = result.status;
    } else {
      check.failuresCounter++;
      check.successCounter = 0;
      if (check.failuresCounter >= failuresBeforeCritical) update = result.status;
      else if (check.failuresCounter >= failuresBeforeWarning) update = 'warning';
    }
    if (update !== undefined) {
      check.status = update;
      check.output = result.output;
    }
    this.history.push({
      checkId: d.id, kind: d.kind, at: Date.now(), durationMs: result.ms,
      probe: result.status, status: check.status, output: result.output,
    });
    const limit = this.options.historyLimit ?? 100_000;
    if (this.history.length > limit) this.history.splice(0, this.history.length - limit);
    if (update !== undefined) {
      for (const listener of this.listeners) listener({ checkId: d.id, status: update, output: result.output });
    }
  }

  private failPending(error: Error): void {
    for (const waiter of this.pending.values()) waiter.reject(error);
    this.pending.clear();
  }
}
