import { EventEmitter } from 'node:events';
import { createConnection, type Socket } from 'node:net';
import { z } from 'zod';
import { DeadlineError, DozeError, withDeadline } from '../../errors.js';

/**
 * The QEMU Machine Protocol over a unix socket (QEMU docs/interop/qmp-spec.rst):
 * the server greets with `{"QMP": {...}}`, the client must send
 * `qmp_capabilities` before anything else, then each `{"execute", "arguments", "id"}`
 * gets exactly one `{"return", "id"}` or `{"error": {"class", "desc"}, "id"}`,
 * and `{"event", "data", "timestamp"}` messages arrive at any time. Every message
 * ends with CRLF. QEMU serves one client per monitor at a time, so doze keeps one
 * connection per VM (a client process per command costs ~50 ms here, docs/design.md).
 */

export class QmpError extends DozeError {
  constructor(code: string, message: string, readonly errorClass?: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = 'QmpError';
  }
}

const greetingSchema = z.looseObject({
  QMP: z.looseObject({
    version: z.looseObject({ qemu: z.looseObject({ major: z.number(), minor: z.number(), micro: z.number() }) }),
    capabilities: z.array(z.string()),
  }),
});

const idSchema = z.union([z.string(), z.number()]).optional();
const returnSchema = z.looseObject({ return: z.unknown(), id: idSchema });
const errorSchema = z.looseObject({ error: z.looseObject({ class: z.string(), desc: z.string() }), id: idSchema });
const eventSchema = z.looseObject({
  event: z.string(),
  data: z.record(z.string(), z.unknown()).optional(),
  timestamp: z.looseObject({ seconds: z.number(), microseconds: z.number() }),
});

export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
  /** Wall-clock time QEMU stamped on the event, in ms since the epoch. */
  atMs: number;
}

export interface QmpVersion {
  major: number;
  minor: number;
  micro: number;
}

interface Pending {
  command: string;
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
}

export interface QmpClientEvents {
  event: [QmpEvent];
  close: [Error | undefined];
}

/** One negotiated QMP connection. Commands carry deadlines; a late answer is dropped. */
export class QmpClient extends EventEmitter<QmpClientEvents> {
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private buffer = '';
  private closedWith: Error | undefined;
  private closed = false;

  private constructor(private readonly socket: Socket, readonly path: string, readonly version: QmpVersion) {
    super();
  }

  /** Connects, reads the greeting and negotiates capabilities, all within `deadlineMs`. */
  static async connect(path: string, deadlineMs: number): Promise<QmpClient> {
    const socket = createConnection(path);
    socket.setEncoding('utf8');
    try {
      const client = await withDeadline(`QMP handshake on ${path} (is another client connected?)`, deadlineMs, handshake(socket, path));
      await client.execute('qmp_capabilities', undefined, deadlineMs);
      return client;
    } catch (error) {
      socket.destroy();
      throw error;
    }
  }

  get isOpen(): boolean {
    return !this.closed;
  }

  /** Runs one command; rejects with a QmpError (QEMU said no), a DeadlineError, or E_QMP_CLOSED. */
  execute<T = unknown>(command: string, args: Record<string, unknown> | undefined, deadlineMs: number): Promise<T> {
    if (this.closed) {
      return Promise.reject(new QmpError('E_QMP_CLOSED', `QMP connection ${this.path} is closed${this.closedWith ? `: ${this.closedWith.message}` : ''}`));
    }
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        this.updateRef();
        reject(new DeadlineError(`QMP ${command} on ${this.path}`, deadlineMs));
      }, deadlineMs);
      this.pending.set(id, { command, resolve: resolve as (value: unknown) => void, reject, timer });
      this.updateRef();
      this.socket.write(`${JSON.stringify(args ? { execute: command, arguments: args, id } : { execute: command, id })}\n`);
    });
  }

  close(): void {
    if (this.closed) return;
    this.socket.destroy();
    this.onClosed(undefined);
  }

  /** Called by the handshake once negotiation can start: from here the client parses messages. */
  private attach(rest: string): void {
    this.socket.on('data', (chunk: string) => this.onData(chunk));
    this.socket.on('error', (error) => this.onClosed(error));
    this.socket.on('close', () => this.onClosed(undefined));
    if (rest) this.onData(rest);
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    for (let nl = this.buffer.indexOf('\n'); nl >= 0; nl = this.buffer.indexOf('\n')) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      if (line) this.onMessage(line);
    }
  }

  private onMessage(line: string): void {
    let raw: unknown;
    try {
      raw = JSON.parse(line);
    } catch {
      return; // not JSON: QEMU never sends this; ignore rather than kill the connection
    }
    const event = eventSchema.safeParse(raw);
    if (event.success) {
      const { timestamp } = event.data;
      this.emit('event', { event: event.data.event, data: event.data.data ?? {}, atMs: timestamp.seconds * 1000 + timestamp.microseconds / 1000 });
      return;
    }
    // z.unknown() also accepts a missing key: only a message that has `return` is an answer.
    const answer = typeof raw === 'object' && raw !== null && 'return' in raw ? returnSchema.safeParse(raw) : { success: false as const };
    const failure = answer.success ? undefined : errorSchema.safeParse(raw);
    const id = answer.success ? answer.data.id : failure?.success ? failure.data.id : undefined;
    if (typeof id !== 'number') return; // not ours (every command doze sends has a numeric id)
    const pending = this.pending.get(id);
    if (!pending) return; // answered after its deadline
    this.pending.delete(id);
    clearTimeout(pending.timer);
    this.updateRef();
    if (answer.success) pending.resolve(answer.data.return);
    else if (failure?.success) pending.reject(new QmpError('E_QMP_COMMAND', `QMP ${pending.command}: ${failure.data.error.desc}`, failure.data.error.class));
  }

  private onClosed(error: Error | undefined): void {
    if (this.closed) return;
    this.closed = true;
    this.closedWith = error;
    for (const [id, pending] of this.pending) {
      clearTimeout(pending.timer);
      pending.reject(new QmpError('E_QMP_CLOSED', `QMP ${pending.command}: connection ${this.path} closed${error ? `: ${error.message}` : ''}`, undefined, { cause: error }));
      this.pending.delete(id);
    }
    this.emit('close', error);
  }

  /** An idle connection never keeps the process alive; one with a command in flight does. */
  private updateRef(): void {
    if (this.pending.size > 0) this.socket.ref();
    else this.socket.unref();
  }

  /** @internal used by handshake() */
  static fromGreeting(socket: Socket, path: string, version: QmpVersion, rest: string): QmpClient {
    const client = new QmpClient(socket, path, version);
    client.attach(rest);
    return client;
  }
}

function handshake(socket: Socket, path: string): Promise<QmpClient> {
  return new Promise((resolve, reject) => {
    let buffer = '';
    const cleanup = () => {
      socket.off('data', onData);
      socket.off('error', onError);
      socket.off('close', onClose);
    };
    const onError = (error: Error) => {
      cleanup();
      reject(new QmpError('E_QMP_CONNECT', `cannot connect to QMP socket ${path}: ${(error as NodeJS.ErrnoException).code ?? error.message}`, undefined, { cause: error }));
    };
    const onClose = () => {
      cleanup();
      reject(new QmpError('E_QMP_CONNECT', `QMP socket ${path} closed before its greeting`));
    };
    const onData = (chunk: string) => {
      buffer += chunk;
      const nl = buffer.indexOf('\n');
      if (nl < 0) return;
      cleanup();
      let raw: unknown;
      try {
        raw = JSON.parse(buffer.slice(0, nl));
      } catch {
        reject(new QmpError('E_QMP_PROTOCOL', `${path} did not greet with QMP JSON: ${buffer.slice(0, 80)}`));
        return;
      }
      const greeting = greetingSchema.safeParse(raw);
      if (!greeting.success) {
        reject(new QmpError('E_QMP_PROTOCOL', `${path} sent no QMP greeting (is it a QMP socket, not the human monitor?)`));
        return;
      }
      const { major, minor, micro } = greeting.data.QMP.version.qemu;
      resolve(QmpClient.fromGreeting(socket, path, { major, minor, micro }, buffer.slice(nl + 1)));
    };
    socket.on('data', onData);
    socket.on('error', onError);
    socket.on('close', onClose);
  });
}
