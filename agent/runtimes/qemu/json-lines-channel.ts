import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import type { z } from 'zod';

/*
 * Newline-delimited JSON over a socket, both ways: QMP (qmp-client.ts) and the
 * `doze vm` owner protocol (owner-protocol.ts, owner-control-server.ts). Each
 * line is one JSON value, checked against the protocol's schema. A request the
 * channel sends carries a numeric id; the message that answers it (by that id)
 * settles it, its deadline fails it, and a closing connection fails every
 * request still waiting. Everything else that arrives (events, the peer's own
 * requests) is the protocol's to handle.
 */

/** Why a request failed: made by its sender, so each protocol names its own errors. */
export interface RequestErrors {
  /** No answer within the deadline (a late answer is dropped). */
  deadline(): Error;
  /** The connection closed (or was already closed) before the answer; `cause` is the socket error, if any. */
  closed(cause: Error | undefined): Error;
}

export interface JsonLinesOptions<Message> {
  /** Every message that arrives is checked against this; one that fails is `invalid`. */
  schema: z.ZodType<Message>;
  /** The id of the request this message answers, or undefined when it answers none (an event, a request of the peer's). */
  answers(message: Message): number | undefined;
  /** More than this many characters waiting for a newline: the connection is closed. */
  maxBufferedChars?: number;
}

export interface JsonLinesEvents<Message> {
  /** A valid message that answers no pending request. */
  message: [Message];
  /** A line that is not JSON (`raw` undefined) or does not fit the schema. */
  invalid: [line: string, error: Error, raw: unknown];
  close: [cause: Error | undefined];
}

interface Pending<Message> {
  resolve: (answer: Message) => void;
  reject: (error: Error) => void;
  errors: RequestErrors;
  timer: NodeJS.Timeout;
}

export class JsonLinesChannel<Message> extends EventEmitter<JsonLinesEvents<Message>> {
  private readonly pending = new Map<number, Pending<Message>>();
  private nextId = 1;
  private buffer = '';
  private closed = false;
  private closedWith: Error | undefined;

  /** Takes over the socket's reading; while requests wait the socket keeps the process alive, once none do it does not. */
  constructor(private readonly socket: Socket, private readonly options: JsonLinesOptions<Message>) {
    super();
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('error', (error) => this.onClosed(error));
    socket.on('close', () => this.onClosed(undefined));
  }

  get isOpen(): boolean {
    return !this.closed;
  }

  /** The socket error the connection closed with, if any. */
  get closeCause(): Error | undefined {
    return this.closedWith;
  }

  /** Sends `build(id)` and resolves with the message that answers that id. */
  request(build: (id: number) => object, deadlineMs: number, errors: RequestErrors): Promise<Message> {
    if (this.closed) return Promise.reject(errors.closed(this.closedWith));
    const id = this.nextId++;
    return new Promise<Message>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        this.updateRef();
        reject(errors.deadline());
      }, deadlineMs);
      this.pending.set(id, { resolve, reject, errors, timer });
      this.updateRef();
      this.send(build(id));
    });
  }

  /** Sends one message (an answer, or a request that expects none); dropped when the socket is gone. */
  send(message: object): void {
    if (!this.socket.destroyed) this.socket.write(`${JSON.stringify(message)}\n`);
  }

  close(): void {
    if (this.closed) return;
    this.socket.destroy();
    this.onClosed(undefined);
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    const max = this.options.maxBufferedChars;
    if (max !== undefined && this.buffer.length > max) {
      this.close();
      return;
    }
    for (let nl = this.buffer.indexOf('\n'); nl >= 0 && !this.closed; nl = this.buffer.indexOf('\n')) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      if (line) this.onLine(line);
    }
  }

  private onLine(line: string): void {
    let raw: unknown;
    try {
      raw = JSON.parse(line);
    } catch (error) {
      this.emit('invalid', line, error as Error, undefined);
      return;
    }
    const parsed = this.options.schema.safeParse(raw);
    if (!parsed.success) {
      this.emit('invalid', line, parsed.error, raw);
      return;
    }
    const id = this.options.answers(parsed.data);
    if (id === undefined) {
      this.emit('message', parsed.data);
      return;
    }
    const pending = this.pending.get(id);
    if (!pending) return; // answered after its deadline
    this.pending.delete(id);
    clearTimeout(pending.timer);
    this.updateRef();
    pending.resolve(parsed.data);
  }

  private onClosed(cause: Error | undefined): void {
    if (this.closed) return;
    this.closed = true;
    this.closedWith = cause;
    for (const [id, pending] of this.pending) {
      clearTimeout(pending.timer);
      pending.reject(pending.errors.closed(cause));
      this.pending.delete(id);
    }
    this.emit('close', cause);
  }

  /** An idle connection never keeps the process alive; one with a request in flight does. */
  private updateRef(): void {
    if (this.pending.size > 0) this.socket.ref();
    else this.socket.unref();
  }
}
