import { EventEmitter } from 'node:events';
import { createConnection } from 'node:net';
import { z } from 'zod';
import { DeadlineError, DozeError } from '../../shared/errors.js';
import { JsonLinesChannel } from './json-lines-channel.js';
import { isErrorCode, type ErrorCode } from '../../shared/error-codes.js';

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
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = 'OwnerError';
  }
}

type OwnerResponse = z.infer<typeof ownerResponseSchema>;

/** One connection to an owner's control socket; requests carry deadlines, a late answer is dropped. */
export class OwnerClient extends EventEmitter<{ close: [] }> {
  private constructor(private readonly channel: JsonLinesChannel<OwnerResponse>, readonly path: string) {
    super();
    channel.on('close', () => this.emit('close'));
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
        // An idle control connection never keeps the process alive (the channel refs it while a request waits).
        socket.unref();
        // Answers with another id, or none, are not ours; lines that are not answers are dropped.
        resolve(new OwnerClient(new JsonLinesChannel(socket, { schema: ownerResponseSchema, answers: (answer) => (typeof answer.id === 'number' ? answer.id : undefined) }), path));
      });
      socket.once('error', (error: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(new OwnerError('E_OWNER_CONNECT', `cannot connect to doze vm control socket ${path}: ${error.code ?? error.message} (is "doze vm run" running?)`, { cause: error }));
      });
    });
  }

  get isOpen(): boolean {
    return this.channel.isOpen;
  }

  async request(op: OwnerOp, deadlineMs: number): Promise<OwnerStatus> {
    if (!this.channel.isOpen) throw new OwnerError('E_OWNER_CLOSED', `control connection ${this.path} is closed`);
    const answer = await this.channel.request((id) => ({ id, op, deadlineMs }), deadlineMs, {
      deadline: () => new DeadlineError(`doze vm ${op} on ${this.path}`, deadlineMs),
      closed: () => new OwnerError('E_OWNER_CLOSED', `doze vm ${op}: control connection ${this.path} closed`),
    });
    if (!answer.ok) throw new OwnerError(isErrorCode(answer.code) ? answer.code : 'E_OWNER', `doze vm ${op}: ${answer.error}`);
    return answer;
  }

  close(): void {
    this.channel.close();
  }
}
