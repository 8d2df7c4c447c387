import { EventEmitter } from 'node:events';
import { createConnection } from 'node:net';
import { z } from 'zod';
import { DeadlineError, DozeError } from '../../shared/errors.js';
import { withDeadline } from '../../shared/deadline.js';
import { JsonLinesChannel } from './json-lines-channel.js';
import type { ErrorCode } from '../../shared/error-codes.js';

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
  constructor(code: ErrorCode, message: string, readonly errorClass?: string, options?: { cause?: unknown }) {
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
// z.unknown() also accepts a missing key: only a message that has `return` is an answer.
const returnSchema = z.looseObject({ return: z.unknown(), id: idSchema }).refine((message) => 'return' in message);
const errorSchema = z.looseObject({ error: z.looseObject({ class: z.string(), desc: z.string() }), id: idSchema });
const eventSchema = z.looseObject({
  event: z.string(),
  data: z.record(z.string(), z.unknown()).optional(),
  timestamp: z.looseObject({ seconds: z.number(), microseconds: z.number() }),
});
/** Everything a QMP server sends, by kind. */
const messageSchema = z.union([
  greetingSchema.transform(({ QMP }) => ({ kind: 'greeting' as const, version: QMP.version.qemu })),
  eventSchema.transform(({ event, data, timestamp }) => ({ kind: 'event' as const, event: { event, data: data ?? {}, atMs: timestamp.seconds * 1000 + timestamp.microseconds / 1000 } })),
  errorSchema.transform(({ error, id }) => ({ kind: 'error' as const, id, error })),
  returnSchema.transform((message) => ({ kind: 'return' as const, id: message.id, value: message.return })),
]);
type QmpMessage = z.infer<typeof messageSchema>;

/** Every command doze sends has a numeric id: an answer with any other is not ours. */
function answeredId(message: QmpMessage): number | undefined {
  return (message.kind === 'return' || message.kind === 'error') && typeof message.id === 'number' ? message.id : undefined;
}

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

export interface QmpClientEvents {
  event: [QmpEvent];
  close: [Error | undefined];
}

/** One negotiated QMP connection. Commands carry deadlines; a late answer is dropped. */
export class QmpClient extends EventEmitter<QmpClientEvents> {
  private constructor(private readonly channel: JsonLinesChannel<QmpMessage>, readonly path: string, readonly version: QmpVersion) {
    super();
    channel.on('message', (message) => {
      if (message.kind === 'event') this.emit('event', message.event);
    });
    channel.on('close', (error) => this.emit('close', error));
  }

  /** Connects, reads the greeting and negotiates capabilities, all within `deadlineMs`. */
  static async connect(path: string, deadlineMs: number): Promise<QmpClient> {
    // After the greeting a line that is not JSON or fits no schema is ignored (QEMU never sends one) rather than killing the connection.
    const channel = new JsonLinesChannel(createConnection(path), { schema: messageSchema, answers: answeredId });
    try {
      const version = await withDeadline(`QMP handshake on ${path} (is another client connected?)`, deadlineMs, greeting(channel, path));
      const client = new QmpClient(channel, path, version);
      await client.execute('qmp_capabilities', undefined, deadlineMs);
      return client;
    } catch (error) {
      channel.close();
      throw error;
    }
  }

  get isOpen(): boolean {
    return this.channel.isOpen;
  }

  /** Runs one command; rejects with a QmpError (QEMU said no), a DeadlineError, or E_QMP_CLOSED. */
  async execute<T = unknown>(command: string, args: Record<string, unknown> | undefined, deadlineMs: number): Promise<T> {
    if (!this.channel.isOpen) {
      const cause = this.channel.closeCause;
      throw new QmpError('E_QMP_CLOSED', `QMP connection ${this.path} is closed${cause ? `: ${cause.message}` : ''}`);
    }
    const answer = await this.channel.request((id) => (args ? { execute: command, arguments: args, id } : { execute: command, id }), deadlineMs, {
      deadline: () => new DeadlineError(`QMP ${command} on ${this.path}`, deadlineMs),
      closed: (cause) => new QmpError('E_QMP_CLOSED', `QMP ${command}: connection ${this.path} closed${cause ? `: ${cause.message}` : ''}`, undefined, { cause }),
    });
    if (answer.kind === 'error') throw new QmpError('E_QMP_COMMAND', `QMP ${command}: ${answer.error.desc}`, answer.error.class);
    return (answer.kind === 'return' ? answer.value : undefined) as T;
  }

  close(): void {
    this.channel.close();
  }
}

/** The server's first message: `{"QMP": {"version", "capabilities"}}`, before anything is sent. */
function greeting(channel: JsonLinesChannel<QmpMessage>, path: string): Promise<QmpVersion> {
  const noGreeting = () => new QmpError('E_QMP_PROTOCOL', `${path} sent no QMP greeting (is it a QMP socket, not the human monitor?)`);
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      channel.off('message', onMessage);
      channel.off('invalid', onInvalid);
      channel.off('close', onClose);
    };
    const onMessage = (message: QmpMessage) => {
      cleanup();
      if (message.kind !== 'greeting') return reject(noGreeting());
      const { major, minor, micro } = message.version;
      resolve({ major, minor, micro });
    };
    const onInvalid = (line: string, _error: Error, raw: unknown) => {
      cleanup();
      reject(raw === undefined ? new QmpError('E_QMP_PROTOCOL', `${path} did not greet with QMP JSON: ${line.slice(0, 80)}`) : noGreeting());
    };
    const onClose = (error: Error | undefined) => {
      cleanup();
      if (error) reject(new QmpError('E_QMP_CONNECT', `cannot connect to QMP socket ${path}: ${(error as NodeJS.ErrnoException).code ?? error.message}`, undefined, { cause: error }));
      else reject(new QmpError('E_QMP_CONNECT', `QMP socket ${path} closed before its greeting`));
    };
    channel.on('message', onMessage);
    channel.on('invalid', onInvalid);
    channel.on('close', onClose);
  });
}
