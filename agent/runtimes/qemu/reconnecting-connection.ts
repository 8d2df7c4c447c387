import { Deadline } from '../../shared/deadline.js';

/** What a kept connection must offer. */
export interface Connection {
  readonly isOpen: boolean;
  close(): void;
}

export interface ReconnectingOptions<C extends Connection> {
  /** Opens a new connection within `deadlineMs`. */
  open(deadlineMs: number): Promise<C>;
  /** Whether `error` means the connection was found closed (the peer restarted since the last call). */
  isClosedError(error: unknown): boolean;
  /** What a call fails with after close(). */
  closedError(): Error;
  /** Called with each connection once it is open (to subscribe to its events). */
  opened?(connection: C): void;
}

/**
 * One connection kept to a peer that may restart (a QEMU monitor, a `doze vm` owner):
 * opened on first use, reopened after the peer went away, never two at once.
 */
export class ReconnectingConnection<C extends Connection> {
  private current: C | undefined;
  private opening: Promise<C> | undefined;
  private closed = false;

  constructor(private readonly options: ReconnectingOptions<C>) {}

  get connected(): boolean {
    return this.current?.isOpen ?? false;
  }

  /** The open connection, or a new one within `deadlineMs`. */
  async connection(deadlineMs: number): Promise<C> {
    if (this.closed) throw this.options.closedError();
    if (this.current?.isOpen) return this.current;
    this.opening ??= this.options
      .open(deadlineMs)
      .then((connection) => {
        if (this.closed) {
          connection.close();
          throw this.options.closedError();
        }
        this.current = connection;
        this.options.opened?.(connection);
        return connection;
      })
      .finally(() => {
        this.opening = undefined;
      });
    return this.opening;
  }

  /**
   * Runs an idempotent call within `deadlineMs` (connecting included). A connection
   * found dead on use (the peer restarted since the last call) is reopened once.
   */
  async call<T>(deadlineMs: number, work: (connection: C, leftMs: number) => Promise<T>): Promise<T> {
    const deadline = new Deadline('the call', deadlineMs);
    const remaining = () => Math.max(1, Math.round(deadline.remainingMs()));
    const hadConnection = this.connected;
    const connection = await this.connection(remaining());
    try {
      return await work(connection, remaining());
    } catch (error) {
      if (!(hadConnection && this.options.isClosedError(error)) || this.closed) throw error;
      return work(await this.connection(remaining()), remaining());
    }
  }

  /** Closes the connection; later calls fail. */
  close(): void {
    this.closed = true;
    this.current?.close();
    this.current = undefined;
  }
}
