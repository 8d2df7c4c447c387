import { EventEmitter } from 'node:events';
import { QmpClient, QmpError, type QmpEvent } from './qmp-client.js';

export interface QmpSessionEvents {
  event: [QmpEvent];
}

/**
 * The one QMP connection doze keeps per VM: opened on first use, reopened
 * after QEMU went away (restart, restore), never two at once (QEMU serves one
 * client per monitor).
 */
export class QmpSession extends EventEmitter<QmpSessionEvents> {
  private client: QmpClient | undefined;
  private connecting: Promise<QmpClient> | undefined;
  private closed = false;

  constructor(readonly path: string) {
    super();
  }

  get connected(): boolean {
    return this.client?.isOpen ?? false;
  }

  async connection(deadlineMs: number): Promise<QmpClient> {
    if (this.closed) throw new QmpError('E_QMP_CLOSED', `QMP session ${this.path} was closed`);
    if (this.client?.isOpen) return this.client;
    this.connecting ??= QmpClient.connect(this.path, deadlineMs)
      .then((client) => {
        if (this.closed) {
          client.close();
          throw new QmpError('E_QMP_CLOSED', `QMP session ${this.path} was closed`);
        }
        this.client = client;
        client.on('event', (event) => this.emit('event', event));
        return client;
      })
      .finally(() => {
        this.connecting = undefined;
      });
    return this.connecting;
  }

  /**
   * Runs an idempotent command within `deadlineMs` (connecting included). A
   * connection found dead on use (QEMU restarted since the last command) is
   * reopened once.
   */
  async execute<T = unknown>(command: string, args: Record<string, unknown> | undefined, deadlineMs: number): Promise<T> {
    const until = performance.now() + deadlineMs;
    const remaining = () => Math.max(1, Math.round(until - performance.now()));
    const hadClient = this.client?.isOpen ?? false;
    const client = await this.connection(remaining());
    try {
      return await client.execute<T>(command, args, remaining());
    } catch (error) {
      if (!(hadClient && error instanceof QmpError && error.code === 'E_QMP_CLOSED') || this.closed) throw error;
      return (await this.connection(remaining())).execute<T>(command, args, remaining());
    }
  }

  close(): void {
    this.closed = true;
    this.client?.close();
    this.client = undefined;
  }
}
