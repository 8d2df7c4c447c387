import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { DozeError } from '../shared/errors.js';
import { decodeWakeEvent, type WakeEvent } from './bpf-records.js';
import { ipv4ToBytes } from './ipv4.js';
import { defaultHelperPath } from './map-client.js';

/**
 * An early thaw the reader does itself, the moment a sleeper's wake event arrives, before the
 * event reaches Node: one write of `value` to `file` (freezer.state THAWED, cgroup.freeze 0).
 * Armed per sleep, one-shot; `sinceNs` is when that sleep began (an older event is stale).
 */
export interface EarlyThaw {
  file: string;
  value: string;
  sinceNs: bigint;
}

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
  /** Early thaws armed, by instance key: sent again to a restarted reader. */
  private readonly armed = new Map<string, EarlyThaw>();
  /** Early thaws allowed until the agent says again (-1: no limit); the reader starts at 0. */
  private room = 0;
  /** Early thaws read from the current reader's lines (its own count starts at 0 too). */
  private thawsSeen = 0;

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
    const child = spawn(this.helperPath, ['events', this.pinnedPath], { stdio: ['pipe', 'pipe', 'pipe'] });
    child.stdin!.on('error', () => {}); // it exited: the exit handler restarts it

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
    this.thawsSeen = 0; // a new reader counts from 0
    this.send(`room ${this.room} 0`);
    for (const [key, thaw] of this.armed) this.send(armLine(key, thaw));
  }

  /**
   * Thaw `key`'s instance at its next wake event (agent/detector/early-thaw.ts decides which).
   * Paths with spaces or newlines cannot be said on the line: such an instance wakes the usual way.
   */
  arm(key: string, thaw: EarlyThaw): boolean {
    if (/\s/.test(thaw.file) || /\s/.test(thaw.value)) return false;
    this.armed.set(key, thaw);
    this.send(armLine(key, thaw));
    return true;
  }

  disarm(key: string): void {
    if (!this.armed.delete(key)) return;
    this.send(`disarm ${keyHex(key)}`);
  }

  /**
   * How many early thaws may happen before the next call (-1: no limit): the node budget's room.
   * The line carries the thaws this side has read from the current reader, which takes off the
   * ones it made since (their lines still in the pipe): a room is never granted twice.
   */
  setRoom(room: number): void {
    this.room = room;
    this.send(`room ${room} ${this.thawsSeen}`);
  }

  private send(line: string): void {
    const stdin = this.child?.stdin;
    if (stdin && !stdin.destroyed) stdin.write(`${line}\n`);
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
      const [hex, outcome, figure] = line.slice(7).split(' ');
      const event = decodeWakeEvent(Buffer.from(hex!, 'hex'));
      if (!event) return;
      // One-shot in the reader: any wake record of the armed sleep ends its arm, thawed or not.
      const armed = this.armed.get(event.instanceAddr);
      if (armed && event.answersWakeNs === undefined && event.tsNs >= armed.sinceNs) this.armed.delete(event.instanceAddr);
      if (outcome !== undefined) {
        if (outcome === 'thawed') {
          event.thaw = { kind: 'thawed', atNs: BigInt(figure!) };
          this.thawsSeen++;
        }
        else if (outcome === 'thaw-failed') event.thaw = { kind: 'failed', errno: Number(figure) };
      }
      this.emit('wake', event);
    } else if (line.startsWith('lost ')) {
      this.emit('gap', `${line.slice(5)} wake events lost by the kernel`);
    }
  }
}

/** An instance key (IPv4 text form) as the wake record's first 4 bytes, in hex. */
function keyHex(key: string): string {
  return ipv4ToBytes(key).toString('hex');
}

function armLine(key: string, thaw: EarlyThaw): string {
  return `arm ${keyHex(key)} ${thaw.sinceNs} ${thaw.file} ${thaw.value}`;
}
