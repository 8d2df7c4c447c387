import { chmod, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { messageOf } from '../../shared/errors.js';
import { JsonLinesChannel } from './json-lines-channel.js';
import { ownerRequestSchema, type OwnerRequest, type OwnerState, type OwnerStatus } from './owner-protocol.js';

/** What the control socket's requests act on: the owner. */
export interface OwnerOperations {
  readonly state: OwnerState;
  /** A stop is under way: sleeps and wakes are refused. */
  readonly isStopping: boolean;
  status(): OwnerStatus;
  sleep(deadlineMs: number): Promise<OwnerStatus>;
  wake(deadlineMs: number): Promise<OwnerStatus>;
}

/** A request that names no deadline is bounded by this. */
const DEFAULT_DEADLINE_MS = 30_000;
/** More than this waiting for a newline is not a request: the connection is dropped. */
const MAX_BUFFERED_CHARS = 65536;

/** The server side of owner-protocol.ts, on `<state dir>/control.sock` (mode 0600). */
export class OwnerControlServer {
  private readonly clients = new Set<JsonLinesChannel<OwnerRequest>>();

  private constructor(private readonly server: Server, private readonly owner: OwnerOperations) {
    server.on('connection', (socket) => this.serve(socket));
  }

  /** Listens on `path` (replacing a stale socket file). */
  static async listen(path: string, owner: OwnerOperations): Promise<OwnerControlServer> {
    await rm(path, { force: true });
    const server = createServer();
    const control = new OwnerControlServer(server, owner);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => {
        server.off('error', reject);
        resolve();
      });
    });
    await chmod(path, 0o600);
    return control;
  }

  /** Drops every client and stops listening. */
  async close(): Promise<void> {
    for (const client of this.clients) client.close();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private serve(socket: Socket): void {
    // The peer's requests answer nothing of ours: every valid one is a `message`.
    const channel = new JsonLinesChannel(socket, { schema: ownerRequestSchema, answers: () => undefined, maxBufferedChars: MAX_BUFFERED_CHARS });
    this.clients.add(channel);
    channel.on('close', () => this.clients.delete(channel));
    channel.on('invalid', (_line, _error, raw) => {
      if (raw === undefined) return channel.send({ id: null, ok: false, code: 'E_PROTOCOL', error: 'not JSON' });
      const id = typeof raw === 'object' && raw !== null && 'id' in raw ? (raw as { id: unknown }).id : null;
      channel.send({ id: typeof id === 'number' || typeof id === 'string' ? id : null, ok: false, code: 'E_PROTOCOL', error: 'expected {"id", "op": "sleep" | "wake" | "status", "deadlineMs"?}' });
    });
    channel.on('message', ({ id, op, deadlineMs }) => {
      if (op === 'status') return channel.send({ id, ok: true, ...this.owner.status() });
      if (this.owner.isStopping) return channel.send({ id, ok: false, code: 'E_OWNER_STOPPING', error: 'doze vm is stopping', state: this.owner.state });
      const work = op === 'sleep' ? this.owner.sleep(deadlineMs ?? DEFAULT_DEADLINE_MS) : this.owner.wake(deadlineMs ?? DEFAULT_DEADLINE_MS);
      work.then(
        (status) => channel.send({ id, ok: true, ...status }),
        (error: unknown) => channel.send({ id, ok: false, code: (error as { code?: string }).code ?? 'E_OWNER', error: messageOf(error), state: this.owner.state }),
      );
    });
  }
}
