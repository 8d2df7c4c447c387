import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { z } from 'zod';
import { DozeError } from '../errors.js';
import { JsonArrayStream } from './json-array-stream.js';

/** One raw map entry as bpftool prints it: byte arrays written as "0x0a" strings. */
const rawEntry = z.looseObject({ key: z.array(z.string()), value: z.array(z.string()) });
const batchReply = z.looseObject({ command: z.array(z.string()), output: z.unknown() });

export interface MapEntry {
  key: Buffer;
  value: Buffer;
}

function bytes(hex: string[]): Buffer {
  return Buffer.from(hex.map((b) => Number.parseInt(b, 16)));
}

function hexArgs(buffer: Buffer): string {
  return [...buffer].map((b) => b.toString(16).padStart(2, '0')).join(' ');
}

interface Pending {
  line: string;
  /** Sentinel entries exist only to flush the previous reply (see command()). */
  sentinel?: boolean;
  resolve: (output: unknown) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
}

/**
 * A long-lived `bpftool -j batch file -` child: map reads and writes cost a
 * pipe round trip instead of a process spawn. bpftool stops a batch at the
 * first failing command, so the child is restarted on demand, and callers
 * avoid commands that fail in normal operation (lookups of missing keys).
 */
export class BpfTool {
  private child: ChildProcessWithoutNullStreams | undefined;
  private readonly pending: Pending[] = [];
  private readonly parser = new JsonArrayStream(
    (value) => this.onReply(value),
    (error) => this.failAll(new DozeError('E_BPFTOOL', `unparseable bpftool output: ${error.message}`)),
  );
  private stderr = '';
  private closed = false;

  constructor(private readonly timeoutMs = 5000) {}

  async dump(pinnedPath: string): Promise<MapEntry[]> {
    const output = await this.command(`map dump pinned ${pinnedPath}`);
    const parsed = z.array(rawEntry).safeParse(output);
    if (!parsed.success) throw new DozeError('E_BPFTOOL', `unexpected map dump shape from ${pinnedPath}: ${parsed.error.message}`);
    return parsed.data.map((entry) => ({ key: bytes(entry.key), value: bytes(entry.value) }));
  }

  async lookup(pinnedPath: string, key: Buffer): Promise<Buffer> {
    const output = await this.command(`map lookup pinned ${pinnedPath} key hex ${hexArgs(key)}`);
    const parsed = rawEntry.safeParse(output);
    if (!parsed.success) throw new DozeError('E_BPFTOOL', `unexpected map lookup shape from ${pinnedPath}`);
    return bytes(parsed.data.value);
  }

  async update(pinnedPath: string, key: Buffer, value: Buffer): Promise<void> {
    await this.command(`map update pinned ${pinnedPath} key hex ${hexArgs(key)} value hex ${hexArgs(value)}`);
  }

  /** Deletes only after a dump proved the key exists: a failed delete would end the batch. */
  async deleteIfPresent(pinnedPath: string, key: Buffer): Promise<void> {
    const entries = await this.dump(pinnedPath);
    if (entries.some((entry) => entry.key.equals(key))) {
      await this.command(`map delete pinned ${pinnedPath} key hex ${hexArgs(key)}`);
    }
  }

  command(line: string): Promise<unknown> {
    if (this.closed) return Promise.reject(new DozeError('E_BPFTOOL', 'bpftool client is closed'));
    const child = this.ensureChild();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new DozeError('E_DEADLINE', `bpftool did not answer "${line}" within ${this.timeoutMs} ms`));
        child.kill('SIGKILL');
      }, this.timeoutMs);
      timer.unref();
      this.pending.push({ line, resolve, reject, timer });
      // bpftool writes the closing brace of a batch reply only when the next
      // command starts, so every command is followed by a cheap `version`.
      this.pending.push({ line: 'version', sentinel: true, resolve: () => {}, reject: () => {}, timer: setTimeout(() => {}, 0) });
      child.stdin.write(`${line}\nversion\n`);
    });
  }

  close(): void {
    this.closed = true;
    this.child?.stdin.end();
    this.child?.kill('SIGTERM');
    this.child = undefined;
  }

  private ensureChild(): ChildProcessWithoutNullStreams {
    if (this.child) return this.child;
    // stdbuf: bpftool's stdout is block-buffered on a pipe (DESIGN.md).
    const child = spawn('stdbuf', ['-o0', 'bpftool', '-j', 'batch', 'file', '-'], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.parser.reset();
    this.stderr = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => this.parser.push(chunk));
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      this.stderr = (this.stderr + chunk).slice(-2000);
    });
    child.stdin.on('error', () => {}); // surfaced through 'exit'
    child.on('error', (error) => this.failAll(new DozeError('E_MISSING_TOOL', `cannot run bpftool (Debian package bpftool): ${error.message}`, { cause: error })));
    child.on('exit', () => {
      if (this.child === child) this.child = undefined;
      this.failAll(new DozeError('E_BPFTOOL', `bpftool exited: ${this.stderr.trim() || 'no message'}`));
    });
    this.child = child;
    return child;
  }

  private onReply(value: unknown): void {
    const next = this.pending.shift();
    if (!next) return;
    clearTimeout(next.timer);
    if (next.sentinel) return;
    const reply = batchReply.safeParse(value);
    if (!reply.success) {
      next.reject(new DozeError('E_BPFTOOL', `unexpected bpftool reply to "${next.line}"`));
      return;
    }
    const output = reply.data.output;
    if (output && typeof output === 'object' && 'error' in output) {
      next.reject(new DozeError('E_BPFTOOL', `bpftool ${next.line}: ${String((output as { error: unknown }).error)}`));
      return;
    }
    next.resolve(output);
  }

  private failAll(error: Error): void {
    for (const p of this.pending.splice(0)) {
      clearTimeout(p.timer);
      p.reject(error);
    }
  }
}
