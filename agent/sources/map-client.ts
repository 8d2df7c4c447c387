import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { DozeError } from '../shared/errors.js';

export interface MapEntry {
  key: Buffer;
  value: Buffer;
}

/** The helper sits beside the eBPF object, in agent/bpf/ (source tree) or dist/agent/bpf/. */
export function defaultHelperPath(): string {
  return fileURLToPath(new URL('../bpf/doze-maps', import.meta.url));
}

/** doze-maps' limit for one lookupn (MAX_KEYS in doze-maps.c); 8192 IPv4 keys make a 74 KiB line. */
export const MAX_KEYS_PER_LOOKUP = 8192;

/** Loading runs the verifier over every program: seconds on a busy node, not a map operation's milliseconds. */
const LOAD_TIMEOUT_MS = 30_000;

interface Pending {
  line: string;
  resolve: (lines: string[]) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
  /** Lines still expected after the "ok N" header; undefined until it arrives. */
  expected?: number;
  lines: string[];
}

/**
 * Reads and writes pinned maps through one long-lived `doze-maps serve`
 * child (agent/bpf/doze-maps.c): a pipe round trip per operation, no
 * process spawn, and a 10,000-entry dump in milliseconds. The same child
 * holds the loaded tc programs and attaches them (tc-programs.ts).
 */
export class MapClient {
  private child: ChildProcessWithoutNullStreams | undefined;
  private readonly pending: Pending[] = [];
  private partial = '';
  private closed = false;
  /** The last `load` asked for: a restarted helper (after a timeout) loads it again before anything else. */
  private loadLine: string | undefined;
  /** A load under way in the helper answers first: requests behind it get its time too (ms, performance.now()). */
  private loadingUntilMs = 0;

  constructor(private readonly helperPath = defaultHelperPath(), private readonly timeoutMs = 5000) {}

  async dump(path: string): Promise<MapEntry[]> {
    return (await this.request(`dump ${path}`)).map(parseEntry);
  }

  async lookup(path: string, key: Buffer): Promise<Buffer | undefined> {
    const lines = await this.request(`lookup ${path} ${key.toString('hex')}`);
    return lines[0] === undefined ? undefined : parseEntry(lines[0]).value;
  }

  /** Many keys in one round trip; absent keys are simply missing from the answer. */
  async lookupMany(path: string, keys: Buffer[]): Promise<MapEntry[]> {
    if (keys.length === 0) return [];
    const entries: MapEntry[] = [];
    // The helper takes lines of any length, but at most MAX_KEYS_PER_LOOKUP keys in one.
    for (let i = 0; i < keys.length; i += MAX_KEYS_PER_LOOKUP) {
      const chunk = keys.slice(i, i + MAX_KEYS_PER_LOOKUP).map((k) => k.toString('hex')).join(' ');
      entries.push(...(await this.request(`lookupn ${path} ${chunk}`)).map(parseEntry));
    }
    return entries;
  }

  async update(path: string, key: Buffer, value: Buffer): Promise<void> {
    await this.request(`update ${path} ${key.toString('hex')} ${value.toString('hex')}`);
  }

  /**
   * Compare-and-swap of a 4-byte value in place (an mmapable array: doze_state): `next` goes in
   * only if `expected` is there. Returns the value found, so the swap happened iff it equals `expected`.
   */
  async compareAndSwap(path: string, key: Buffer, expected: Buffer, next: Buffer): Promise<Buffer> {
    const [line] = await this.request(`cas ${path} ${key.toString('hex')} ${expected.toString('hex')} ${next.toString('hex')}`);
    if (line === undefined) throw new DozeError('E_MAPS', `doze-maps cas ${path}: no value in the answer`);
    return parseEntry(line).value;
  }

  /**
   * Loads the tc programs of `objectPath` once, in the helper (agent/sources/tc-programs.ts): its
   * pinned-by-name maps are made in, or reused from, `pinDir`. Verifying takes longer than a map
   * operation, hence the longer deadline.
   */
  async loadPrograms(objectPath: string, pinDir: string): Promise<void> {
    const line = `load ${objectPath} ${pinDir}`;
    await this.request(line, Math.max(this.timeoutMs, LOAD_TIMEOUT_MS));
    this.loadLine = line;
  }

  /** The loaded program of section tc/<section> on the device's clsact hook, by fd (netlink, no process). */
  async attachProgram(device: string, hook: 'egress' | 'ingress', section: string): Promise<void> {
    await this.request(`attach ${device} ${hook} ${section}`);
  }

  /** doze's filters off both hooks, and the clsact qdisc when nobody's are left; a gone device is fine. */
  async detachPrograms(device: string): Promise<void> {
    await this.request(`detach ${device}`);
  }

  async delete(path: string, key: Buffer): Promise<void> {
    await this.request(`delete ${path} ${key.toString('hex')}`);
  }

  close(): void {
    this.closed = true;
    this.child?.stdin.end();
    this.child = undefined;
  }

  private request(line: string, timeoutMs = this.timeoutMs): Promise<string[]> {
    if (this.closed) return Promise.reject(new DozeError('E_MAPS', 'map client is closed'));
    const child = this.ensureChild();
    // Queued behind a re-load (a restarted helper loads the programs first): its verifier pass is
    // not this request's slowness, and a timeout here would kill the helper and start it again.
    return this.send(child, line, timeoutMs + Math.max(0, this.loadingUntilMs - performance.now()));
  }

  private send(child: ChildProcessWithoutNullStreams, line: string, timeoutMs: number): Promise<string[]> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new DozeError('E_DEADLINE', `doze-maps did not answer "${line}" within ${timeoutMs} ms`));
        child.kill('SIGKILL'); // answers would now be out of step: start over
      }, timeoutMs);
      timer.unref();
      this.pending.push({ line, resolve, reject, timer, lines: [] });
      child.stdin.write(`${line}\n`);
    });
  }

  private ensureChild(): ChildProcessWithoutNullStreams {
    if (this.child) return this.child;
    const child = spawn(this.helperPath, ['serve'], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.partial = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => this.onData(chunk));
    child.stdin.on('error', () => {}); // surfaced through 'exit'
    child.on('error', (error) =>
      this.failAll(new DozeError('E_MISSING_TOOL', `cannot run ${this.helperPath}: ${error.message} (run "make build")`, { cause: error })),
    );
    child.on('exit', (code, signal) => {
      if (this.child === child) this.child = undefined;
      this.failAll(new DozeError('E_MAPS', `doze-maps exited (${signal ?? code})`));
    });
    this.child = child;
    // Attaching needs the programs in this process: a failure shows in the next attach's answer.
    if (this.loadLine !== undefined) {
      const loadTimeoutMs = Math.max(this.timeoutMs, LOAD_TIMEOUT_MS);
      this.loadingUntilMs = performance.now() + loadTimeoutMs;
      void this.send(child, this.loadLine, loadTimeoutMs).catch(() => {}).finally(() => (this.loadingUntilMs = 0));
    }
    return child;
  }

  private onData(chunk: string): void {
    const lines = (this.partial + chunk).split('\n');
    this.partial = lines.pop() ?? '';
    for (const line of lines) {
      const head = this.pending[0];
      if (!head) {
        // An answer nobody asked for: the answers are out of step, and every later one would go
        // to the wrong request. Start over (the exit fails whatever is pending).
        this.child?.kill('SIGKILL');
        return;
      }
      if (head.expected === undefined) {
        if (line.startsWith('err ')) {
          this.settle(head).reject(new DozeError('E_MAPS', `doze-maps ${head.line.split(' ')[0]}: ${line.slice(4)}`));
          continue;
        }
        const match = /^ok (\d+)$/.exec(line);
        if (!match) {
          this.settle(head).reject(new DozeError('E_MAPS', `unexpected doze-maps answer: ${line.slice(0, 80)}`));
          continue;
        }
        head.expected = Number(match[1]);
      } else {
        head.lines.push(line);
        head.expected--;
      }
      if (head.expected === 0) this.settle(head).resolve(head.lines);
    }
  }

  private settle(head: Pending): Pending {
    this.pending.shift();
    clearTimeout(head.timer);
    return head;
  }

  private failAll(error: Error): void {
    for (const p of this.pending.splice(0)) {
      clearTimeout(p.timer);
      p.reject(error);
    }
  }
}

function parseEntry(line: string): MapEntry {
  const [key = '', value = ''] = line.split(' ');
  return { key: Buffer.from(key, 'hex'), value: Buffer.from(value, 'hex') };
}
