import { EventEmitter } from 'node:events';
import { QmpClient, QmpError, type QmpEvent } from './qmp-client.js';
import { ReconnectingConnection } from './reconnecting-connection.js';

export interface QmpSessionEvents {
  event: [QmpEvent];
}

/**
 * The one QMP connection doze keeps per VM: opened on first use, reopened
 * after QEMU went away (restart, restore), never two at once (QEMU serves one
 * client per monitor).
 */
export class QmpSession extends EventEmitter<QmpSessionEvents> {
  private readonly kept: ReconnectingConnection<QmpClient>;

  constructor(readonly path: string) {
    super();
    this.kept = new ReconnectingConnection({
      open: (deadlineMs) => QmpClient.connect(path, deadlineMs),
      isClosedError: (error) => error instanceof QmpError && error.code === 'E_QMP_CLOSED',
      closedError: () => new QmpError('E_QMP_CLOSED', `QMP session ${path} was closed`),
      opened: (client) => client.on('event', (event) => this.emit('event', event)),
    });
  }

  get connected(): boolean {
    return this.kept.connected;
  }

  connection(deadlineMs: number): Promise<QmpClient> {
    return this.kept.connection(deadlineMs);
  }

  /**
   * Runs an idempotent command within `deadlineMs` (connecting included). A
   * connection found dead on use (QEMU restarted since the last command) is
   * reopened once.
   */
  execute<T = unknown>(command: string, args: Record<string, unknown> | undefined, deadlineMs: number): Promise<T> {
    return this.kept.call(deadlineMs, (client, leftMs) => client.execute<T>(command, args, leftMs));
  }

  close(): void {
    this.kept.close();
  }
}
