import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { z } from 'zod';
import { DozeError } from '../errors.js';
import { JsonArrayStream } from './json-array-stream.js';
import { decodeWakeEvent, type WakeEvent } from './bpf-records.js';
import { holdsPerfEvent } from './perf-fd.js';

const PERF_RECORD_SAMPLE = 9;
const record = z.looseObject({ type: z.number(), data: z.array(z.number().int().min(0).max(255)).optional() });

export interface WakeEventStreamEvents {
  wake: [WakeEvent];
  /** Records the kernel dropped, or a restart of the reader: the agent rescans instance states. */
  gap: [string];
}

/**
 * Wake events pushed from the perf event array through a long-lived
 * `bpftool map event_pipe` child (no native addon, no polling). The child is
 * restarted with backoff if it dies; each restart is reported as a gap,
 * because events sent while it was down are lost.
 */
export class WakeEventStream extends EventEmitter<WakeEventStreamEvents> {
  private child: ChildProcess | undefined;
  private stopped = false;
  private restartDelayMs = 100;
  private restartTimer: NodeJS.Timeout | undefined;

  constructor(private readonly pinnedPath: string) {
    super();
  }

  start(): void {
    this.stopped = false;
    const parser = new JsonArrayStream((value) => this.onRecord(value), () => {}, ['data', 'lost']);
    const child = spawn('stdbuf', ['-o0', 'bpftool', '-j', 'map', 'event_pipe', 'pinned', this.pinnedPath], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (chunk: string) => {
      this.restartDelayMs = 100;
      parser.push(chunk);
    });
    let stderr = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => {
      stderr = (stderr + chunk).slice(-1000);
    });
    child.on('error', () => {});
    child.on('exit', () => {
      if (this.child !== child || this.stopped) return;
      this.child = undefined;
      this.emit('gap', `wake event reader exited: ${stderr.trim() || 'no message'}`);
      this.restartTimer = setTimeout(() => this.start(), this.restartDelayMs);
      this.restartDelayMs = Math.min(this.restartDelayMs * 2, 5000);
    });
    this.child = child;
  }

  /** Resolves once the reader is subscribed to the perf buffers (bounded wait). */
  async ready(timeoutMs = 3000): Promise<void> {
    const until = Date.now() + timeoutMs;
    while (Date.now() < until) {
      const pid = this.child?.pid;
      if (pid !== undefined && (await holdsPerfEvent(pid))) return;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    throw new DozeError('E_WAKE_EVENTS', `bpftool map event_pipe did not subscribe to ${this.pinnedPath} within ${timeoutMs} ms`);
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.restartTimer);
    this.child?.kill('SIGTERM');
    this.child = undefined;
  }

  private onRecord(value: unknown): void {
    const parsed = record.safeParse(value);
    if (!parsed.success) return;
    if (parsed.data.type !== PERF_RECORD_SAMPLE || !parsed.data.data) {
      this.emit('gap', `perf record of type ${parsed.data.type} (events lost)`);
      return;
    }
    const event = decodeWakeEvent(Buffer.from(parsed.data.data));
    if (event) this.emit('wake', event);
  }
}
