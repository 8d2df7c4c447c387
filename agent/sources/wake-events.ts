import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { DozeError } from '../shared/errors.js';
import { decodeWakeEvent, type WakeEvent } from './bpf-records.js';
import { defaultHelperPath } from './map-client.js';

export interface WakeEventStreamEvents {
  wake: [WakeEvent];
  /** Records the kernel dropped, or a restart of the reader: the agent rescans instance states. */
  gap: [string];
}

/**
 * Wake events pushed from the perf event array through a long-lived
 * `doze-maps events PATH` child (no polling, no native addon). The child
 * exits by itself when the agent dies; if it dies first it is restarted with
 * backoff, and each restart is reported as a gap because events sent while
 * it was down are lost.
 */
export class WakeEventStream extends EventEmitter<WakeEventStreamEvents> {
  private child: ChildProcess | undefined;
  private stopped = false;
  private restartDelayMs = 100;
  private restartTimer: NodeJS.Timeout | undefined;
  private readyWaiters: Array<() => void> = [];
  private isReady = false;
  /** The reader was restarted: once the new one is subscribed, sleepers signalled meanwhile are rescanned. */
  private restarted = false;

  constructor(private readonly pinnedPath: string, private readonly helperPath = defaultHelperPath()) {
    super();
  }

  start(): void {
    // Idempotent: two instances attached at once (Nomad's first list) both find the pins new;
    // a second reader would replace the first in `child` and outlive stop().
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) {
      this.stopped = false;
      return;
    }
    this.stopped = false;
    this.isReady = false;
    const child = spawn(this.helperPath, ['events', this.pinnedPath], { stdio: ['ignore', 'pipe', 'pipe'] });
    let partial = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (chunk: string) => {
      const lines = (partial + chunk).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) this.onLine(line);
    });
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => {
      stderr = (stderr + chunk).slice(-1000);
    });
    child.on('error', () => {});
    child.on('exit', () => {
      if (this.child !== child || this.stopped) return;
      this.child = undefined;
      this.restarted = true;
      this.emit('gap', `wake event reader exited: ${stderr.trim() || partial.trim() || 'no message'}`);
      this.restartTimer = setTimeout(() => this.start(), this.restartDelayMs);
      this.restartDelayMs = Math.min(this.restartDelayMs * 2, 5000);
    });
    this.child = child;
  }

  /** Resolves once the reader is subscribed to the perf buffers: no event can slip past it after that. */
  ready(timeoutMs = 3000): Promise<void> {
    if (this.isReady) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new DozeError('E_WAKE_EVENTS', `wake event reader for ${this.pinnedPath} was not ready within ${timeoutMs} ms`)), timeoutMs);
      this.readyWaiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.restartTimer);
    this.child?.kill('SIGTERM');
    this.child = undefined;
  }

  private onLine(line: string): void {
    if (line === 'ready') {
      this.isReady = true;
      this.restartDelayMs = 100;
      for (const waiter of this.readyWaiters.splice(0)) waiter();
      // Packets that reached a sleeper while no reader was subscribed signalled it in the state
      // map but sent no event anywhere: the rescan at exit ran too early to see them all.
      if (this.restarted) {
        this.restarted = false;
        this.emit('gap', 'wake event reader restarted');
      }
    } else if (line.startsWith('sample ')) {
      const event = decodeWakeEvent(Buffer.from(line.slice(7), 'hex'));
      if (event) this.emit('wake', event);
    } else if (line.startsWith('lost ')) {
      this.emit('gap', `${line.slice(5)} wake events lost by the kernel`);
    }
  }
}
