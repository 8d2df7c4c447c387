import { EventEmitter } from 'node:events';
import { createConnection, type Socket } from 'node:net';
import { z } from 'zod';
import { DeadlineError, DozeError } from '../../errors.js';

/**
 * The control endpoint of a `doze vm run` owner: a unix socket in the VM's state
 * directory (`<state dir>/control.sock`, mode 0600) speaking JSON lines. Any
 * number of clients may connect; `sleep` and `wake` are run one at a time in the
 * order they arrive, `status` is answered at once.
 *
 *   → {"id": 1, "op": "sleep" | "wake" | "status", "deadlineMs": 5000}
 *   ← {"id": 1, "ok": true, "state": "sleeping", "qemuPid": null, "lastSleep": {…}, "lastWake": {…}}
 *   ← {"id": 1, "ok": false, "error": "why", "code": "E_…", "state": "running"}
 *
 * `sleep` on a sleeping VM and `wake` on a running one succeed at once (idempotent).
 */

export const OWNER_STATES = ['starting', 'running', 'saving', 'sleeping', 'restoring', 'stopping', 'failed'] as const;
export type OwnerState = (typeof OWNER_STATES)[number];

export const OWNER_OPS = ['sleep', 'wake', 'status'] as const;
export type OwnerOp = (typeof OWNER_OPS)[number];

export const ownerRequestSchema = z.looseObject({
  id: z.union([z.number(), z.string()]),
  op: z.enum(OWNER_OPS),
  /** How long the caller waits; the owner bounds the operation by it too. */
  deadlineMs: z.number().int().positive().optional(),
});
export type OwnerRequest = z.infer<typeof ownerRequestSchema>;

/** What one sleep cost (ms from the request), as the owner measured it. */
export const sleepTimingsSchema = z.looseObject({
  /** QMP stop returned. */
  stopMs: z.number(),
  /** Device state written (migration completed). */
  savedMs: z.number(),
  /** QEMU exited. */
  exitedMs: z.number(),
  /** RAM file written back and dropped from the page cache: the sleep is done. */
  totalMs: z.number(),
  /** Bytes of device state written. */
  stateBytes: z.number(),
});
export type SleepTimings = z.infer<typeof sleepTimingsSchema>;

export const wakeTimingsSchema = z.looseObject({
  /** A receiving QEMU was already waiting (`--prespawn`). */
  prespawned: z.boolean(),
  /** The receiving QEMU's QMP answered (process start included unless prespawned). */
  qmpMs: z.number(),
  /** Device state loaded (migration completed, VM paused). */
  loadedMs: z.number(),
  /** `cont` returned: the vCPUs run. */
  contMs: z.number(),
});
export type WakeTimings = z.infer<typeof wakeTimingsSchema>;

export const ownerStatusSchema = z.looseObject({
  state: z.enum(OWNER_STATES),
  qemuPid: z.number().nullable(),
  /** A receiving QEMU waiting with `-incoming defer` while asleep (`--prespawn`). */
  receiverPid: z.number().nullable().optional(),
  /** The owner keeps a receiving QEMU waiting while asleep, so the tap has a reader and no SYN is lost. */
  prespawn: z.boolean().optional(),
  lastSleep: sleepTimingsSchema.nullable().optional(),
  lastWake: wakeTimingsSchema.nullable().optional(),
});
export type OwnerStatus = z.infer<typeof ownerStatusSchema>;

export const ownerResponseSchema = z.union([
  ownerStatusSchema.extend({ id: z.union([z.number(), z.string()]), ok: z.literal(true) }),
  z.looseObject({ id: z.union([z.number(), z.string()]).nullable(), ok: z.literal(false), error: z.string(), code: z.string().optional(), state: z.enum(OWNER_STATES).optional() }),
]);

export class OwnerError extends DozeError {
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = 'OwnerError';
  }
}

interface Pending {
  op: OwnerOp;
  resolve: (status: OwnerStatus) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
}

/** One connection to an owner's control socket; requests carry deadlines, a late answer is dropped. */
export class OwnerClient extends EventEmitter<{ close: [] }> {
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private buffer = '';
  private closed = false;

  private constructor(private readonly socket: Socket, readonly path: string) {
    super();
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('error', () => this.onClosed());
    socket.on('close', () => this.onClosed());
    socket.unref();
  }

  static connect(path: string, deadlineMs: number): Promise<OwnerClient> {
    return new Promise((resolve, reject) => {
      const socket = createConnection(path);
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new DeadlineError(`connecting to doze vm control socket ${path}`, deadlineMs));
      }, deadlineMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        resolve(new OwnerClient(socket, path));
      });
      socket.once('error', (error: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(new OwnerError('E_OWNER_CONNECT', `cannot connect to doze vm control socket ${path}: ${error.code ?? error.message} (is "doze vm run" running?)`, { cause: error }));
      });
    });
  }

  get isOpen(): boolean {
    return !this.closed;
  }

  request(op: OwnerOp, deadlineMs: number): Promise<OwnerStatus> {
    if (this.closed) return Promise.reject(new OwnerError('E_OWNER_CLOSED', `control connection ${this.path} is closed`));
    const id = this.nextId++;
    return new Promise<OwnerStatus>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        this.updateRef();
        reject(new DeadlineError(`doze vm ${op} on ${this.path}`, deadlineMs));
      }, deadlineMs);
      this.pending.set(id, { op, resolve, reject, timer });
      this.updateRef();
      this.socket.write(`${JSON.stringify({ id, op, deadlineMs })}\n`);
    });
  }

  close(): void {
    if (this.closed) return;
    this.socket.destroy();
    this.onClosed();
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    for (let nl = this.buffer.indexOf('\n'); nl >= 0; nl = this.buffer.indexOf('\n')) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      if (line) this.onLine(line);
    }
  }

  private onLine(line: string): void {
    let raw: unknown;
    try {
      raw = JSON.parse(line);
    } catch {
      return;
    }
    const parsed = ownerResponseSchema.safeParse(raw);
    if (!parsed.success || typeof parsed.data.id !== 'number') return;
    const pending = this.pending.get(parsed.data.id);
    if (!pending) return;
    this.pending.delete(parsed.data.id);
    clearTimeout(pending.timer);
    this.updateRef();
    const answer = parsed.data;
    if (answer.ok) pending.resolve(answer);
    else pending.reject(new OwnerError(answer.code ?? 'E_OWNER', `doze vm ${pending.op}: ${answer.error}`));
  }

  private onClosed(): void {
    if (this.closed) return;
    this.closed = true;
    for (const [id, pending] of this.pending) {
      clearTimeout(pending.timer);
      pending.reject(new OwnerError('E_OWNER_CLOSED', `doze vm ${pending.op}: control connection ${this.path} closed`));
      this.pending.delete(id);
    }
    this.emit('close');
  }

  private updateRef(): void {
    if (this.pending.size > 0) this.socket.ref();
    else this.socket.unref();
  }
}
